"""``softclip data vinvl``: VinVL feature/label TSVs become per-sample sidecars in existing shards, which the
webdataset reader then decodes; samples without rows are counted; a failed rewrite leaves the shard as it was."""

from __future__ import annotations

import base64
import json
import tarfile

import numpy as np
import pytest

from softclip import cli
from softclip.data.attach import attach_vinvl
from softclip.data.badsamples import BadSample, DataError
from softclip.data.readers import TRAIN_READERS, SourcePaths
from tests.unit.data.readers_fixtures import jpeg_bytes, key_of, preprocess, write_shards

D = 2054


def plain_parts(idx: int) -> dict[str, bytes]:
    """What img2dataset writes: jpg, txt, json (with an extra image_id column)."""
    meta = {"key": key_of(idx), "caption": f"caption {idx}", "width": 12, "height": 12, "image_id": f"img{idx}"}
    return {"jpg": jpeg_bytes(idx), "txt": f"caption {idx}".encode(), "json": json.dumps(meta).encode()}


def features(idx: int) -> np.ndarray:
    return np.random.default_rng(idx).standard_normal((idx % 5, D)).astype(np.float32)


def write_tsvs(folder, ids, have) -> tuple:
    feat, lab = folder / "features.tsv", folder / "labels.tsv"
    with open(feat, "w") as f, open(lab, "w") as g:
        for idx in have:
            x = features(idx)
            f.write(f"{ids(idx)}\t{len(x)}\t{base64.b64encode(x.tobytes()).decode()}\n")
            objs = [{"class": f"thing{j}", "rect": [j, j, j + 4, j + 5], "conf": 0.9} for j in range(len(x))]
            g.write(f"{ids(idx)}\t{json.dumps(objs)}\n")
    return feat, lab


@pytest.mark.parametrize("id_field", ["key", "image_id"])
def test_attached_sidecars_decode_through_the_reader(tmp_path, id_field):
    shards = write_shards(tmp_path / "train", n_shards=2, per_shard=4, parts=plain_parts)
    have = [0, 1, 2, 3, 5, 6, 7]  # sample 4 has no VinVL rows
    ids = key_of if id_field == "key" else (lambda i: f"img{i}")
    feat, lab = write_tsvs(tmp_path, ids, have)
    argv = ["data", "vinvl", "--shards", str(tmp_path / "train" / "{00000..00001}.tar"), "--features-tsv",
            str(feat), "--labels-tsv", str(lab), "--id-field", id_field]  # fmt: skip
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "train" / "vinvl_attach.json").read_text())
    assert report["total"] == {"samples": 8, "attached": 7, "missing_features": 1}
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path / "train")), roi_dim=D)
    stream = src.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=8, shuffle=False, resampled=False)
    for pos, raw in src.read(stream, np.arange(8)):
        if pos == 4:
            with pytest.raises(BadSample, match="missing_sidecar"):
                src.decode(raw, preprocess)
            continue
        s = src.decode(raw, preprocess)
        want = features(pos).astype(np.float16).astype(np.float32)
        assert np.array_equal(s.roi.numpy(), want) and s.tags == [f"thing{j}" for j in range(pos % 5)]
        assert s.caption == f"caption {pos}"
    with tarfile.open(shards[0]) as tar:  # every original member is still there, in order, before its sidecars
        names = tar.getnames()
    assert names[:5] == ["000000.jpg", "000000.txt", "000000.json", "000000.roi.npy", "000000.tags.json"]


def test_out_dir_leaves_the_input_untouched(tmp_path):
    shards = write_shards(tmp_path / "in", n_shards=1, per_shard=3, parts=plain_parts)
    before = shards[0].read_bytes()
    feat, lab = write_tsvs(tmp_path, key_of, [0, 1, 2])
    out = attach_vinvl(shards, feat, lab, tmp_path / "out")
    assert out["total"]["attached"] == 3 and shards[0].read_bytes() == before
    assert json.loads((tmp_path / "out" / "sizes.json").read_text()) == {"00000.tar": 3}


def test_unreadable_shard_is_one_error_and_left_as_it_was(tmp_path):
    bad = tmp_path / "00000.tar"
    bad.write_bytes(b"not a tar" * 100)
    feat, lab = write_tsvs(tmp_path, key_of, [0])
    with pytest.raises(DataError, match="00000.tar"):
        attach_vinvl([bad], feat, lab)
    assert bad.read_bytes() == b"not a tar" * 100
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_vinvl_needs_its_inputs(tmp_path, capsys):
    assert cli.main(["data", "vinvl", "--shards", str(tmp_path)]) == 2
    assert "--features-tsv" in capsys.readouterr().err
