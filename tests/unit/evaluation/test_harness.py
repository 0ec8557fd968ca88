"""End to end on the smoke SynthScenes sets with a random tiny model: every benchmark writes its JSON with the
required keys and in-range metrics; re-runs are no-ops; checkpoints rebuild; bad images are skipped."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from softclip.data.badsamples import DataError
from softclip.evaluation import EVALUATORS, flat_metrics, list_evaluators, run_suite
from softclip.evaluation.harness import RESULT_KEYS, evaluate_checkpoint

SUITE = Path(__file__).resolve().parents[3] / "eval" / "synthetic.yaml"
EXPECTED = {
    "zeroshot": {"top1", "top5", "mean_per_class_recall", "shape_acc", "colour_acc"},
    "retrieval": {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum", "i2t_mean_rank",
                  "i2t_median_rank", "t2i_mean_rank", "t2i_median_rank", "i2t_sem_r1", "i2t_sem_map",
                  "t2i_sem_r10", "t2i_sem_map", "val_nce_loss"},
    "instance": {f"{m}_{p}" for m in ("map", "mp1", "mp5", "mp10") for p in ("easy", "medium", "hard")},
    "copydays": {"map_strong", "map_jpegqual", "map_crops"},
}  # fmt: skip


def check_range(key: str, value: float) -> None:
    assert math.isfinite(value), key
    if key.endswith("_rank"):
        assert value >= 1.0, key
    elif key == "val_nce_loss":
        assert value >= 0.0
    elif key == "rsum":
        assert 0.0 <= value <= 600.0
    else:
        assert 0.0 <= value <= 100.0, (key, value)


def run(model_bundle, root, out, **kw):
    model, preprocess, tokenizer = model_bundle
    suite = kw.pop("suite", SUITE)
    args = dict(data_root=root, out_dir=out, run="r0", checkpoint="step_1", config_hash="h", git_sha="abc")
    args.update(kw)
    return run_suite(model, preprocess, tokenizer, suite, **args)


@pytest.fixture(scope="module")
def first_run(tiny_model, smoke_root, tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("eval"), tmp_path_factory.mktemp("cache")
    return out, cache, run(tiny_model, smoke_root, out, cache_dir=cache)


def test_every_benchmark_writes_its_result(first_run):
    out, _, results = first_run
    assert set(results) == set(EXPECTED)
    for bench, keys in EXPECTED.items():
        record = json.loads((out / f"{bench}.json").read_text())
        assert set(RESULT_KEYS) <= set(record)
        assert record["benchmark"] == bench and record["run"] == "r0" and record["checkpoint"] == "step_1"
        assert record["n_items"] > 0 and record["time_s"] >= 0 and record["git_sha"] == "abc"
        assert record["protocol"]["evaluator"] == bench
        assert keys <= set(record["metrics"]), keys - set(record["metrics"])
        assert record["metrics"] == results[bench]
        for key, value in record["metrics"].items():
            check_range(key, value)
    assert json.loads((out / "instance.json").read_text())["protocol"]["query_crop"] is True
    flat = flat_metrics(results)
    assert flat["retrieval/i2t_r1"] == results["retrieval"]["i2t_r1"]


def test_rerun_is_a_no_op_and_force_reuses_the_embedding_cache(first_run, tiny_model, smoke_root):
    out, cache, results = first_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert run(tiny_model, smoke_root, out, cache_dir=cache) == results
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps
    cached = sorted(p.name for p in cache.rglob("*.npy"))
    forced = run(tiny_model, smoke_root, out, cache_dir=cache, force=True, benchmarks=["zeroshot", "instance"])
    assert forced == {b: results[b] for b in ("zeroshot", "instance")}
    assert sorted(p.name for p in cache.rglob("*.npy")) == cached
    assert (out / "zeroshot.json").stat().st_mtime_ns != stamps["zeroshot.json"]
    assert (out / "retrieval.json").stat().st_mtime_ns == stamps["retrieval.json"]


def test_another_checkpoint_recomputes(first_run, tiny_model, smoke_root):
    out, _, _ = first_run
    run(tiny_model, smoke_root, out, checkpoint="step_2", benchmarks=["instance"])
    assert json.loads((out / "instance.json").read_text())["checkpoint"] == "step_2"


def test_evaluators_registry_contract():
    assert list_evaluators() == ["copydays", "instance", "retrieval", "zeroshot"]
    for name in list_evaluators():
        ev = EVALUATORS.get(name)
        assert ev.options.model_config.get("extra") == "forbid"
        assert ev.task and callable(ev.evaluate) and callable(ev.load)


def test_evaluate_checkpoint_rebuilds_the_run_model(first_run, tiny_model, smoke_root, tmp_path):
    import yaml

    from softclip.checkpoint import save_checkpoint
    from softclip.config import Config

    model = tiny_model[0]
    run_dir = tmp_path / "myrun"
    cfg = Config.model_validate({"name": "myrun", "model": {"name": "tiny-vit-32"}, "data": {"root": str(smoke_root)}})
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "meta.json").write_text(json.dumps({"git_sha": "deadbeef"}))
    save_checkpoint({"step": 3, "model": model.state_dict()}, run_dir / "checkpoints" / "step_00000003.pt")
    (run_dir / "done.json").write_text(json.dumps({"step": 3}))  # finished: its results go to eval/
    out = evaluate_checkpoint(run_dir, SUITE, benchmarks=["zeroshot", "instance"], device="cpu")
    assert out == {b: first_run[2][b] for b in ("zeroshot", "instance")}
    record = json.loads((run_dir / "eval" / "zeroshot.json").read_text())
    assert record["run"] == "myrun" and record["git_sha"] == "deadbeef" and record["config_hash"] == cfg.hash()
    assert record["checkpoint"].endswith("step_00000003.pt")
    assert any((run_dir / "eval" / "cache").rglob("*.npy"))
    with pytest.raises(DataError, match="no valid checkpoint"):
        evaluate_checkpoint(tmp_path, SUITE)


def _corrupt_copy(src: Path, dst: Path) -> None:
    for sub in ("zeroshot", "retrieval"):
        shutil.copytree(src / sub, dst / sub)
    next((dst / "zeroshot" / "test").rglob("*.jpg")).write_bytes(b"not a jpeg")
    (dst / "retrieval" / "images" / "000003.jpg").write_bytes(b"\xff\xd8 truncated")


def test_bad_images_are_skipped_counted_and_bounded(tiny_model, smoke_root, tmp_path):
    root = tmp_path / "data"
    _corrupt_copy(smoke_root, root)
    spec = {"name": "bad", "max_bad_fraction": 0.1, "benchmarks": {
        "zeroshot": {"evaluator": "zeroshot", "path": "zeroshot"},
        "retrieval": {"evaluator": "retrieval", "path": "retrieval"}}}  # fmt: skip
    results = run(tiny_model, root, tmp_path / "out", suite=spec)
    for bench in ("zeroshot", "retrieval"):
        record = json.loads((tmp_path / "out" / f"{bench}.json").read_text())
        assert record["protocol"]["n_bad_images"] == 1
        for key, value in results[bench].items():
            check_range(key, value)
    assert json.loads((tmp_path / "out" / "retrieval.json").read_text())["protocol"]["n_texts"] == 95
    spec["max_bad_fraction"] = 0.0
    with pytest.raises(DataError, match="max_bad_fraction"):
        run(tiny_model, root, None, suite=spec, benchmarks=["zeroshot"])


def test_query_crop_cuts_the_box_and_keeps_whole_images_without_one(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from softclip.evaluation.embed import CroppedImageFiles

    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :10] = (255, 0, 0)
    arr[:, 10:] = (0, 0, 255)
    path = tmp_path / "q.png"
    Image.fromarray(arr).save(path)
    ds = CroppedImageFiles([path, path, path], lambda im: torch.from_numpy(np.array(im)),
                           [(10.2, -3, 25, 10), None, (5, 5, 5, 9)])  # fmt: skip
    cropped, whole, empty = (ds[i][0] for i in range(3))
    assert cropped.shape == (10, 10, 3) and (cropped[..., 2] == 255).all() and (cropped[..., 0] == 0).all()
    assert whole.shape == (10, 20, 3) and empty.shape == (10, 20, 3)  # no box / empty box: the whole image
