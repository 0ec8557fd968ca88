"""CSV pairs joined with VinVL feature and label TSVs by image id."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from softclip.config import DataConfig
from softclip.data.badsamples import BadRecord, BadSample, DataError
from softclip.data.loader import build_train_loader
from softclip.data.readers import TRAIN_READERS, SourcePaths
from softclip.data.readers.vinvl import decode_features, decode_labels
from tests.unit.data.readers_fixtures import HashTokenizer, jpeg_bytes, preprocess

D = 10
N = 12


def _feat(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((i % 3, D)).astype(np.float32)


def _objects(i: int) -> list[dict]:
    return [{"class": f"cls{i}_{j}", "rect": [0, 0, 5, 5], "conf": 0.9 - 0.1 * j} for j in range(i % 3)]


def make_vinvl(root, n=N, sep=",", lineidx=False, objects_dict=False):
    img = root / "imgs"
    img.mkdir(parents=True)
    rows = ["filepath" + sep + "caption"]
    feats, labels = [], []
    for i in range(n):
        (img / f"im{i}.jpg").write_bytes(jpeg_bytes(i))
        rows.append(f"im{i}.jpg{sep}a photo number {i}")
        f = _feat(i)
        feats.append(f"im{i}\t{len(f)}\t{base64.b64encode(f.tobytes()).decode()}\n")
        objs = {"image_h": 12, "objects": _objects(i)} if objects_dict else _objects(i)
        labels.append(f"im{i}\t{json.dumps(objs)}\n")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    (root / "feats.tsv").write_text("".join(feats))
    (root / "labels.tsv").write_text("".join(labels))
    if lineidx:
        offsets = np.cumsum([0] + [len(x.encode()) for x in feats[:-1]])
        (root / "feats.lineidx").write_text("\n".join(map(str, offsets)) + "\n")
    return SourcePaths(root=str(root), csv="pairs.csv", features_tsv="feats.tsv", labels_tsv="labels.tsv",
                       images_root="imgs")


@pytest.mark.parametrize("variant", [dict(), dict(sep="\t", lineidx=True, objects_dict=True)])
def test_round_trip(tmp_path, variant):
    src = TRAIN_READERS.get("csv")(make_vinvl(tmp_path, **variant), roi_dim=D)
    assert src.num_samples == N and not src.sequential
    stream = src.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=N, shuffle=False, resampled=False)
    for pos, raw in src.read(stream, np.arange(N)):
        s = src.decode(raw, preprocess)
        assert s.key == f"im{pos}" and s.caption == f"a photo number {pos}" and s.source == "pairs.csv"
        assert torch.equal(s.roi, torch.from_numpy(_feat(pos)))
        assert s.tags == [o["class"] for o in _objects(pos)]


def test_loader_over_csv(tmp_path):
    paths = make_vinvl(tmp_path)
    data = DataConfig(source="csv", kmax=2, **{k: v for k, v in paths.__dict__.items() if v is not None})
    kw = dict(preprocess=preprocess, tokenizer=HashTokenizer(), batch_size=4, roi_dim=D, seed=1)
    keys = [b["key"] for b in build_train_loader(data, **kw)]
    assert sorted(sum(keys, [])) == sorted(f"im{i}" for i in range(N))
    tail = [b["key"] for b in build_train_loader(data, start_batch=1, **kw)]
    assert tail == keys[1:]
    r = [set(sum((b["key"] for b in build_train_loader(data, rank=k, world_size=2, **kw)), [])) for k in (0, 1)]
    assert not r[0] & r[1] and len(r[0] | r[1]) == 8  # 6 per rank, one short batch of 2 dropped each


def test_missing_rows_and_files_are_bad_samples(tmp_path):
    paths = make_vinvl(tmp_path)
    (tmp_path / "imgs" / "im3.jpg").unlink()
    lines = (tmp_path / "feats.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "feats.tsv").write_text("".join(lines[:5] + lines[6:]))  # no features for im5
    src = TRAIN_READERS.get("csv")(paths, roi_dim=D)
    stream = np.arange(N)
    items = dict(src.read(stream, np.arange(N)))
    assert isinstance(items[3], BadRecord) and items[3].reason == "missing_image" and items[3].key == "im3"
    with pytest.raises(BadSample, match="feats.tsv") as err:
        src.decode(items[5], preprocess)
    assert err.value.reason == "missing_sidecar"


def test_decoders_reject_malformed_rows():
    good = np.ones((2, D), np.float32)
    b64 = base64.b64encode(good.tobytes()).decode()
    assert decode_features(["x", "2", b64], D).shape == (2, D)
    assert decode_features(["x", "0", ""], D).shape == (0, D)
    for fields, match in [(["x", "3", b64], "num_boxes"), (["x", "2", "!!"], "undecodable"), (["x", "2"], "fields")]:
        with pytest.raises(BadSample, match=match):
            decode_features(fields, D)
    with pytest.raises(BadSample, match="roi_dim"):
        decode_features(["x", "1", b64], D)  # 2*D floats read as one row of width 2*D
    with pytest.raises(BadSample) as err:
        decode_labels(["x", json.dumps([{"class": "a"}])], 2)
    assert err.value.reason == "sidecar_mismatch"
    with pytest.raises(BadSample, match="malformed"):
        decode_labels(["x", "{not json"], 0)


def test_structural_errors_name_the_path(tmp_path):
    paths = make_vinvl(tmp_path)
    with pytest.raises(DataError, match="nope.tsv"):
        TRAIN_READERS.get("csv")(SourcePaths(**{**paths.__dict__, "features_tsv": "nope.tsv"}), roi_dim=D)
    (tmp_path / "bad.csv").write_text("path,caption\na.jpg,x\n")
    with pytest.raises(DataError, match="bad.csv.*filepath"):
        TRAIN_READERS.get("csv")(SourcePaths(**{**paths.__dict__, "csv": "bad.csv"}), roi_dim=D)
    with pytest.raises(DataError, match="missing.csv"):
        TRAIN_READERS.get("csv")(SourcePaths(**{**paths.__dict__, "csv": "missing.csv"}), roi_dim=D)
