"""Score an open_clip model the harness did not train: an architecture name plus a weights file.

``softclip eval --arch ViT-B-32 --weights FILE --suite SUITE --out DIR`` builds the architecture from scratch
(``pretrained=None``: nothing is downloaded), loads the weights with ``torch.load(weights_only=True)`` and runs
the suite exactly as for a trained run (the same towers' ``encode_image``/``encode_text``, the same result
JSON). Accepted files: a plain ``state_dict`` (``model.state_dict()`` of an open_clip model) or an
open_clip_train checkpoint (``{"epoch", "state_dict": {"module.<key>": ...}, ...}``; the DDP ``module.`` and
torch.compile ``_orig_mod.`` prefixes are stripped). Every problem is a one-line :class:`DataError` naming the
file: missing, unreadable, not a state dict, or weights of another architecture (naming the first missing,
unexpected or differently shaped key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from softclip.checkpoint import weights_mismatch
from softclip.data.badsamples import DataError

STRIP_PREFIXES = ("module.", "_orig_mod.")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict or an open_clip_train checkpoint, prefixes stripped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{path}: cannot be read as torch weights ({type(err).__name__}: {first})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: neither a state dict of tensors nor a checkpoint with a 'state_dict'")
    out = {}
    for key, value in state.items():
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def load_open_clip(arch: str, weights: str | Path, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(model in eval mode on ``device``, preprocess_val, tokenizer) of ``arch`` with ``weights`` loaded.

    Raises:
        DataError: the file is missing or unreadable, or its keys/shapes do not fit ``arch``.
    """
    from softclip.models import build_model
    from softclip.schema import ModelConfig

    try:
        model, _, preprocess, tokenizer = build_model(ModelConfig(name=arch))
    except ValueError as err:
        raise DataError(f"--arch: {err}") from None
    state = read_weights(weights)
    mismatch = weights_mismatch(model.clip.state_dict(), state)
    if mismatch is not None:
        raise DataError(f"{weights} does not fit open_clip architecture {arch!r}: {mismatch}")
    model.clip.load_state_dict(state, strict=True)
    return model.to(device).eval(), preprocess, tokenizer


def evaluate_weights(
    arch: str, weights: str | Path, suite: str | Path | dict[str, Any], out_dir: str | Path, *,
    data_root: str | Path | None = None, benchmarks: list[str] | None = None, device: str | None = None,
    force: bool = False, cache: bool = True,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Run ``suite`` on ``arch`` with ``weights``; one result JSON per benchmark in ``out_dir`` (as for a run:
    ``run`` is the weights file's stem, ``checkpoint`` its path, ``config_hash`` ``open_clip:<arch>``)."""
    from softclip.evaluation.harness import run_suite

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, preprocess, tokenizer = load_open_clip(arch, weights, device)
    path = Path(weights).resolve()
    out = Path(out_dir)
    return run_suite(
        model, preprocess, tokenizer, suite, data_root=data_root, out_dir=out, run=path.stem,
        checkpoint=str(path), config_hash=f"open_clip:{arch}", git_sha=None, benchmarks=benchmarks,
        device=device, force=force, cache_dir=out / "cache" if cache else None,
    )  # fmt: skip
