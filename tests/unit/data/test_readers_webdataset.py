"""Webdataset shards with ROI sidecars: discovery, sizes, member grouping, round trip, end-of-shard samples."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from softclip.data.badsamples import DataError
from softclip.data.readers import TRAIN_READERS, SourcePaths
from softclip.data.readers.tarstream import TarFormatError, iter_members, read_data
from softclip.data.readers.webdataset import RawSample, count_samples, expand_shards, split_member
from tests.unit.data.readers_fixtures import (
    TAGS,
    D,
    key_of,
    preprocess,
    roi_for,
    sample_parts,
    write_shards,
    write_tar,
)


def _read_all(src):
    stream = src.input_stream(seed=0, epoch=0, rank=0, world_size=1, n=src.num_samples, shuffle=False, resampled=False)
    return list(src.read(stream, np.arange(src.num_samples)))


def test_split_member():
    assert split_member("000001.jpg") == ("000001", "jpg")
    assert split_member("a/b/000001.roi.npy") == ("a/b/000001", "roi.npy")
    assert split_member("x/000001.TAGS.JSON") == ("x/000001", "tags.json")
    assert split_member("noext") is None and split_member("dir/.hidden") is None


def test_round_trip(tmp_path):
    write_shards(tmp_path / "train", n_shards=2, per_shard=5)
    src = TRAIN_READERS.get("wds")(SourcePaths(root=str(tmp_path)), roi_dim=D)  # default root/train
    assert src.num_samples == 10 and len(src.shards) == 2
    items = _read_all(src)
    assert [pos for pos, _ in items] == list(range(10))
    for pos, raw in items:
        assert isinstance(raw, RawSample) and raw.key == key_of(pos)
        s = src.decode(raw, preprocess)
        k = pos % 4
        assert s.caption == f"caption {pos}" and s.key == key_of(pos)
        assert s.source == f"{pos // 5:05d}.tar"
        assert s.roi.dtype == torch.float16 and s.roi.shape == (k, D)  # kept as stored; the model widens it
        assert torch.equal(s.roi, torch.from_numpy(roi_for(pos, k).astype(np.float32)))
        assert s.tags == [TAGS[(pos + j) % len(TAGS)] for j in range(k)]
        assert s.image.shape == (3, 4, 4)


def test_no_sidecars_mode(tmp_path):
    write_shards(tmp_path, 1, 3)
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path)), roi_dim=D, sidecars=False)
    s = src.decode(_read_all(src)[2][1], preprocess)
    assert s.roi.shape == (0, D) and s.tags == []


def test_shard_specs_and_sizes(tmp_path):
    paths = write_shards(tmp_path / "s", n_shards=3, per_shard=4)
    assert expand_shards(str(tmp_path / "s"), None) == paths
    assert expand_shards("s/{00000..00002}.tar", tmp_path) == paths
    assert expand_shards(str(tmp_path / "s" / "0000[01].tar"), None) == paths[:2]
    assert expand_shards(f"{paths[2]}::{paths[0]}", None) == [paths[2], paths[0]]
    assert expand_shards([str(paths[1])], None) == [paths[1]]
    (tmp_path / "s" / "sizes.json").unlink()  # counted by scanning headers instead
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path / "s")), roi_dim=D)
    assert src.sizes == [4, 4, 4]


def test_missing_shard_raises_naming_path(tmp_path):
    write_shards(tmp_path, 1, 2)
    missing = tmp_path / "00007.tar"
    with pytest.raises(DataError, match="00007.tar"):
        expand_shards([str(tmp_path / "00000.tar"), str(missing)], None)
    with pytest.raises(DataError, match="nothing"):
        expand_shards(str(tmp_path / "*.tgz"), None)
    with pytest.raises(DataError, match="no .tar shards"):
        expand_shards(str((tmp_path / "empty").mkdir() or tmp_path / "empty"), None)


def test_end_of_shard_empty_and_partial_samples(tmp_path):
    members = [(f"{key_of(i)}.{e}", d) for i in range(3) for e, d in sample_parts(i).items()]
    # webdataset writers may leave a key without an image at the end, and stray non-sample members
    members += [("__end__.json", b"{}"), ("README", b"no extension"), (f"{key_of(9)}.txt", b"orphan caption")]
    path = write_tar(tmp_path / "00000.tar", members)
    assert count_samples(path) == 3
    (tmp_path / "sizes.json").write_text(json.dumps({"00000.tar": 3}))
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path)), roi_dim=D)
    items = _read_all(src)
    assert [raw.key for _, raw in items] == [key_of(i) for i in range(3)]
    assert all(isinstance(raw, RawSample) for _, raw in items)


def test_input_stream_rank_slices_and_resampling(tmp_path):
    write_shards(tmp_path, n_shards=3, per_shard=4)
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path)), roi_dim=D)
    kw = dict(seed=3, epoch=1, world_size=2, n=6, shuffle=True)
    s0 = src.input_stream(rank=0, resampled=False, **kw)
    s1 = src.input_stream(rank=1, resampled=False, **kw)
    flat = [(sh, i) for segs in (s0, s1) for sh, a, b in segs for i in range(a, b)]
    assert len(flat) == 12 and len(set(flat)) == 12  # disjoint and covering
    r0 = src.input_stream(rank=0, resampled=True, **kw)
    assert sum(b - a for _, a, b in r0) == 6 and r0 == src.input_stream(rank=0, resampled=True, **kw)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_header_walker_agrees_with_tarfile(tmp_path, fmt):
    deep = "d" * 60 + "/" + "e" * 70  # > 100 characters: ustar prefix, GNU long name or pax path
    names = [f"{deep}/000001.jpg", "plain/000001.txt", "big.bin"] + (["ünï/ćødé.txt"] if fmt == tarfile.PAX_FORMAT else [])
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        folder = tarfile.TarInfo("somedir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)  # non-file members are skipped
        for i, name in enumerate(names):
            data = bytes(range(256)) * (i * 3 + 1)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        want = [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isfile()]
    with open(path, "rb") as f:
        got = list(iter_members(f))
        assert [tuple(m) for m in got] == want
        assert read_data(f, got[1]) == bytes(range(256)) * 4


def test_header_walker_rejects_garbage(tmp_path):
    path = write_tar(tmp_path / "x.tar", [("a.txt", b"hello")])
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # corrupt the name: checksum mismatch
    path.write_bytes(bytes(data))
    with open(path, "rb") as f, pytest.raises(TarFormatError, match="checksum"):
        list(iter_members(f))
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as f, pytest.raises(TarFormatError, match="truncated"):
        list(iter_members(f))


def test_reads_shards_written_by_webdataset(tmp_path):
    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": key_of(i), **sample_parts(i)})
    src = TRAIN_READERS.get("wds")(SourcePaths(train=str(tmp_path)), roi_dim=D)  # no sizes.json: scanned
    samples = [src.decode(raw, preprocess) for _, raw in _read_all(src)]
    assert [s.key for s in samples] == [key_of(i) for i in range(4)]
    assert [len(s.tags) for s in samples] == [0, 1, 2, 3]
