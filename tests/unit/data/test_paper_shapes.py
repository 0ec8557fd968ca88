"""Paper-shaped rehearsal data: the training sidecars parse with independent code (numpy, tarfile, json
only) at VinVL's shapes, and every benchmark of eval/paper.yaml plans and loads from it at the real class and
query counts."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from softclip.data.readers import TRAIN_READERS, SourcePaths
from softclip.data.synth.paper_shapes import PAPER_VARS, PaperShapes, write_paper_shapes
from softclip.evaluation.base import EVALUATORS
from softclip.evaluation.suite import plan_suite, read_suite
from tests.unit.data.readers_fixtures import preprocess

ROOT = Path(__file__).resolve().parents[3]
SPEC = PaperShapes(n_train=12, samples_per_shard=8, retrieval_images=4, revisitop_db=10, copydays_originals=157,
                   copydays_distractors=3, copydays_whitening=3, eval_size=24)  # fmt: skip


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    write_paper_shapes(root, SPEC)
    return root


def test_sidecars_parse_with_independent_code(paper_root):
    sizes = json.loads((paper_root / "train" / "sizes.json").read_text())
    assert sizes == {"00000.tar": 8, "00001.tar": 4}
    ks = []
    for name in sizes:
        with tarfile.open(paper_root / "train" / name) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        keys = sorted({n.split(".", 1)[0] for n in members})
        assert len(keys) == sizes[name] and all(len(k) == 9 and k.isdigit() for k in keys)
        for key in keys:
            roi = np.load(io.BytesIO(members[f"{key}.roi.npy"]), allow_pickle=False)
            tags = json.loads(members[f"{key}.tags.json"])
            meta = json.loads(members[f"{key}.json"])
            assert roi.dtype == np.float16 and roi.ndim == 2 and roi.shape[1] == 2048 + 6
            assert len(tags["tags"]) == len(tags["boxes"]) == roi.shape[0] <= 50
            geo = roi[:, -6:].astype(np.float32)
            assert np.all((geo >= 0) & (geo <= 1))
            assert np.allclose(geo[:, 4], geo[:, 2] - geo[:, 0], atol=2e-3)  # w/W = x2/W - x1/W
            assert members[f"{key}.jpg"][:2] == b"\xff\xd8" and meta["width"] == meta["height"] == 224
            assert members[f"{key}.txt"].decode() == meta["caption"]
            ks.append(roi.shape[0])
    assert max(ks) == 50 and min(ks) == 0


def test_the_webdataset_reader_decodes_the_shards(paper_root):
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(paper_root / "train")), roi_dim=2054)
    stream = src.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=src.num_samples, shuffle=False,
                              resampled=False)  # fmt: skip
    samples = [src.decode(raw, preprocess) for _, raw in src.read(stream, np.arange(src.num_samples))]
    assert len(samples) == 12 and max(s.roi.shape[0] for s in samples) == 50


def test_csv_variant_reads_the_same_regions(paper_root):
    src = TRAIN_READERS.get("csv")(SourcePaths(csv=str(paper_root / "csv" / "train.csv"),
                                               features_tsv=str(paper_root / "csv" / "features.tsv"),
                                               labels_tsv=str(paper_root / "csv" / "labels.tsv")), roi_dim=2054)  # fmt: skip
    stream = src.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=12, shuffle=False, resampled=False)
    got = [src.decode(raw, preprocess) for _, raw in src.read(stream, np.arange(12))]
    wds = TRAIN_READERS.get("wds")(SourcePaths(train=str(paper_root / "train")), roi_dim=2054)
    wstream = wds.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=12, shuffle=False, resampled=False)
    ref = [wds.decode(raw, preprocess) for _, raw in wds.read(wstream, np.arange(12))]
    for a, b in zip(got, ref, strict=True):
        assert a.key == b.key and a.tags == b.tags and np.array_equal(a.roi.numpy(), b.roi.numpy())


def test_paper_suite_plans_and_loads_at_real_counts(paper_root, monkeypatch):
    for var, sub in PAPER_VARS.items():
        monkeypatch.setenv(var, str(paper_root / sub))
    plans = {p.name: p for p in plan_suite(*read_suite(ROOT / "eval" / "paper.yaml"), None)}
    assert set(plans) == {"imagenet", "flickr30k", "coco", "roxford5k", "rparis6k", "copydays"}
    data = {n: EVALUATORS.get(p.evaluator).load(p.path, p.options) for n, p in plans.items()}
    assert len(data["imagenet"].classnames) == 1000 and data["imagenet"].classnames[0] == "tench"
    for name in ("flickr30k", "coco"):
        assert len(data[name].image_paths) == 4 and len(data[name].captions) == 20  # 5 per image, test only
    for name in ("roxford5k", "rparis6k"):
        assert len(data[name].queries) == 70
    assert len(data["copydays"].database) == 157 + 3
    periodic = plan_suite(*read_suite(ROOT / "eval" / "paper_periodic.yaml"), None)
    assert [p.name for p in periodic] == ["imagenet_light", "coco_light"]


@pytest.mark.parametrize("action", ["paper", "synth"])
def test_data_commands_need_out(action, capsys):
    from softclip import cli

    assert cli.main(["data", action]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_synth_unknown_preset_is_one_line(tmp_path, capsys):
    from softclip import cli

    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--preset", "papr"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'papr'" in err and "paper" in err


def test_rehearsal_data_is_written_once_and_the_suite_variables_point_at_it(tmp_path, monkeypatch):
    from softclip.data.badsamples import DataError
    from softclip.data.synth.paper_shapes import ensure_rehearsal_data

    monkeypatch.setenv("IMAGENET_ROOT", "/somewhere/else")
    for var in set(PAPER_VARS) - {"IMAGENET_ROOT"}:
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "rehearsal"
    env = ensure_rehearsal_data([root, str(root)], SPEC)
    assert env == {var: str(root / sub) for var, sub in PAPER_VARS.items()}
    assert all(os.environ[var] == value for var, value in env.items())  # the rehearsal's own sets
    card = root / "card.json"
    stamp = card.stat().st_mtime_ns
    assert ensure_rehearsal_data([root], SPEC) == env and card.stat().st_mtime_ns == stamp  # not rewritten
    other = tmp_path / "cc3m"
    (other / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no card.json"):  # someone else's data is never written over
        ensure_rehearsal_data([other], SPEC)
    assert list(other.iterdir()) == [other / "train"]
