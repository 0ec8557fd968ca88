"""Evaluation data is parsed, not only located, before the first training step: a Karpathy JSON without the split
or that does not parse, a gnd pickle that does not parse or lacks keys, an empty ImageFolder, a Copydays block
gone — each is one line naming the benchmark and the file, and no step is trained."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from softclip.cli import main
from softclip.data.badsamples import DataError
from softclip.evaluation.suite import preflight

ROOT = Path(__file__).resolve().parents[3]
SUITE = ROOT / "eval" / "synthetic.yaml"


def _karpathy(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "retrieval" / "dataset.json"
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))

    return apply


def _no_test_split(doc: dict) -> None:
    for image in doc["images"]:
        image["split"] = "train"


def _no_filename(doc: dict) -> None:
    del doc["images"][0]["filename"]


def _pickle(obj: object) -> Callable[[Path], None]:
    return lambda root: (root / "instance" / "gnd_synthoxford.pkl").write_bytes(pickle.dumps(obj))


def _empty_imagefolder(root: Path) -> None:
    for image in (root / "zeroshot" / "test").rglob("*.jpg"):
        image.unlink()


FAULTS = {  # damage -> (benchmark, words of the message)
    "karpathy_without_the_split": (_karpathy(_no_test_split), "retrieval", "no images in split 'test'"),
    "karpathy_not_json": (lambda r: (r / "retrieval" / "dataset.json").write_text('{"images": ['), "retrieval",
                          "cannot be parsed: JSONDecodeError"),  # fmt: skip
    "karpathy_entry_without_filename": (_karpathy(_no_filename), "retrieval", "cannot be parsed: KeyError: 'filename'"),
    "gnd_not_a_pickle": (lambda r: (r / "instance" / "gnd_synthoxford.pkl").write_bytes(b"\x80\x04garbage"),
                         "instance", "not a readable pickle"),  # fmt: skip
    "gnd_without_keys": (_pickle({"imlist": ["a"]}), "instance", "expected a dict with lists 'imlist', 'qimlist'"),
    "gnd_not_a_dict": (_pickle([1, 2, 3]), "instance", "expected a dict with lists"),
    "empty_imagefolder": (_empty_imagefolder, "zeroshot", "holds nothing to evaluate"),
    "imagefolder_without_classes": (lambda r: shutil.rmtree(r / "zeroshot" / "test"), "zeroshot", "split 'test' not found"),
    "copydays_block_gone": (lambda r: shutil.rmtree(r / "copydays" / "strong"), "copydays", "copydays"),
}


@pytest.fixture
def data_copy(smoke_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(smoke_data, root)
    return root


def test_the_intact_suite_passes(data_copy: Path) -> None:
    assert [p.name for p in preflight(SUITE, data_copy)] == ["zeroshot", "retrieval", "instance", "copydays"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_broken_evaluation_set_is_one_line_naming_it(data_copy: Path, fault: str) -> None:
    damage, bench, words = FAULTS[fault]
    damage(data_copy)
    with pytest.raises(DataError) as err:
        preflight(SUITE, data_copy)
    msg = str(err.value)
    assert msg.startswith(f"benchmark {bench!r} ({data_copy / bench}): ") and words in msg and "\n" not in msg, msg


def test_train_refuses_before_its_first_step(data_copy: Path, tmp_path: Path, capsys) -> None:
    _karpathy(_no_test_split)(data_copy)
    run = tmp_path / "run"
    argv = ["train", str(ROOT / "ablations" / "base.yaml"), "--profile", "smoke", "--run-dir", str(run),
            f"data.root={data_copy}", "train.steps=2"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "benchmark 'retrieval'" in err[0] and "no images in split 'test'" in err[0], err
    assert not (run / "metrics.jsonl").exists() and not any((run / "checkpoints").iterdir())
    assert not (run / "lock.json").exists()
