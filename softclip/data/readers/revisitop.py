"""Instance retrieval sets in revisitop's layout (rOxford5k, rParis6k and SynthScenes' instance set).

``gnd_{name}.pkl`` (in ``root`` or ``root/{name}``) holds ``{"imlist": [str], "qimlist": [str], "gnd": [{"bbx",
"easy", "hard", "junk"}]}``; images are ``jpg/{name}.jpg`` beside it (all must exist). The pickle is read with a restricted
unpickler that resolves only builtin containers/scalars and numpy arrays, dtypes and scalars: anything else
(e.g. ``os.system``) is refused before it is ever called, so loading a file never executes code.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softclip.data.badsamples import DataError
from softclip.data.readers.base import EVAL_READERS, check_exist, require

_BUILTINS = frozenset(
    {"list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes", "bytearray", "bool"}
)
_NUMPY = {  # pickled name -> (module candidates, attribute)
    "_reconstruct": (("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct"),
    "scalar": (("numpy._core.multiarray", "numpy.core.multiarray"), "scalar"),
    "_frombuffer": (("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer"),
}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric"}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


def _numpy_attr(name: str) -> Any:
    modules, attr = _NUMPY[name]
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    raise RefusedGlobal(modules[0], attr)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only builtin containers/scalars and numpy arrays/dtypes/scalars."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in _NUMPY_MODULES and name in _NUMPY:
            return _numpy_attr(name)
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles carry bytes (numpy array data)
            import codecs

            return codecs.encode
        raise RefusedGlobal(module, name)


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only builtins and numpy arrays; DataError naming the file otherwise."""
    path = require(Path(path), "pickle file")
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding="latin1").load()
        except RefusedGlobal as err:
            raise DataError(
                f"{path}: refused to unpickle global {err.module}.{err.name}: only builtin containers/scalars "
                "and numpy arrays are allowed (the file was not executed)"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise DataError(f"{path}: not a readable pickle: {type(err).__name__}: {err}") from None


@dataclass
class RevisitopData:
    """Database images, query images and per-query ground truth (``bbx`` float64 [4], ``easy``/``hard``/
    ``junk`` int64 index arrays into ``images``)."""

    name: str
    root: Path
    imlist: list[str]
    qimlist: list[str]
    images: list[Path]
    queries: list[Path]
    gnd: list[dict[str, np.ndarray]]


def _ground_truth(entry: Any, n_db: int, where: str) -> dict[str, np.ndarray]:
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a dict, got {type(entry).__name__}")
    out = {"bbx": np.asarray(entry.get("bbx", []), dtype=np.float64).reshape(-1)}
    for key in ("easy", "hard", "junk"):
        idx = np.asarray(entry.get(key, []), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_db):
            raise DataError(f"{where}: '{key}' holds an index outside [0, {n_db})")
        out[key] = idx
    return out


@EVAL_READERS.register("revisitop")
def read_revisitop(root: str | Path, name: str) -> RevisitopData:
    """Read ``gnd_{name}.pkl`` and resolve image paths under ``jpg/`` beside it."""
    root = Path(root)
    pkl = next((p for p in (root / f"gnd_{name}.pkl", root / name / f"gnd_{name}.pkl") if p.is_file()), None)
    if pkl is None:
        raise DataError(f"revisitop ground truth not found: {root / f'gnd_{name}.pkl'}")
    doc = restricted_load(pkl)
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("imlist", "qimlist", "gnd")):
        raise DataError(f"{pkl}: expected a dict with lists 'imlist', 'qimlist' and 'gnd'")
    imlist, qimlist = [str(x) for x in doc["imlist"]], [str(x) for x in doc["qimlist"]]
    if len(doc["gnd"]) != len(qimlist):
        raise DataError(f"{pkl}: {len(doc['gnd'])} ground-truth entries for {len(qimlist)} queries")
    gnd = [_ground_truth(g, len(imlist), f"{pkl} gnd[{i}]") for i, g in enumerate(doc["gnd"])]
    jpg = require(pkl.parent / "jpg", "revisitop image folder")
    images, queries = [jpg / f"{n}.jpg" for n in imlist], [jpg / f"{n}.jpg" for n in qimlist]
    check_exist(images + queries, f"{pkl}")
    return RevisitopData(name, pkl.parent, imlist, qimlist, images, queries, gnd)
