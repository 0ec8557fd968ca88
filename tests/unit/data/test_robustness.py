"""Bad samples: each corruption is skipped, counted with key and shard, logged; the bound fails the run."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from softclip.config import DataConfig
from softclip.data.badsamples import BadSamples, DataError
from softclip.data.loader import build_train_loader
from tests.unit.data.readers_fixtures import (
    D,
    HashTokenizer,
    key_of,
    npy_bytes,
    preprocess,
    sample_parts,
    write_shards,
)

CORRUPT = {  # sample index -> (reason expected, how the sample's members are damaged)
    1: ("corrupt_image", lambda p: {**p, "jpg": p["jpg"][: len(p["jpg"]) // 2]}),
    3: ("corrupt_image", lambda p: {**p, "jpg": b"not a jpeg at all"}),
    5: ("empty_caption", lambda p: {**p, "txt": b"  \n"}),
    7: ("missing_sidecar", lambda p: {k: v for k, v in p.items() if k != "roi.npy"}),
    9: ("missing_sidecar", lambda p: {k: v for k, v in p.items() if k != "tags.json"}),
    11: ("bad_roi", lambda p: {**p, "roi.npy": npy_bytes(np.zeros((3, D), np.int32))}),
    13: ("bad_roi", lambda p: {**p, "roi.npy": npy_bytes(np.zeros(D, np.float16))}),
    15: ("bad_roi", lambda p: {**p, "roi.npy": npy_bytes(np.zeros((2, D + 1), np.float16))}),
    17: ("sidecar_mismatch", lambda p: {**p, "tags.json": json.dumps({"tags": ["x"] * 9, "boxes": []}).encode()}),
    19: ("bad_roi", lambda p: {**p, "roi.npy": b"\x93NUMPY garbage"}),
    21: ("missing_caption", lambda p: {k: v for k, v in p.items() if k != "txt"}),
}


def corrupted_parts(i: int) -> dict[str, bytes]:
    p = sample_parts(i, k=3)
    return CORRUPT[i][1](p) if i in CORRUPT else p


def _loader(root, **kw):
    args = dict(preprocess=preprocess, tokenizer=HashTokenizer(), batch_size=4, roi_dim=D, seed=0)
    section = {"source": "wds", "train": str(root), "kmax": 3, "shuffle_buffer": 6, "max_bad_fraction": 1.0}
    for key, value in kw.items():
        (args if key in ("batch_size", "start_batch", "epoch") else section)[key] = value
    return build_train_loader(DataConfig(**section), **args)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_corruption_is_skipped_counted_and_logged(tmp_path, caplog, workers):
    write_shards(tmp_path, n_shards=2, per_shard=12, parts=corrupted_parts)
    ld = _loader(tmp_path, workers=workers)
    with caplog.at_level(logging.WARNING, logger="softclip.data"):
        batches = list(ld)
    keys = sorted(sum((b["key"] for b in batches), []))
    assert keys == [key_of(i) for i in range(24) if i not in CORRUPT]
    assert sum(len(b["key"]) for b in batches) + ld.bad.total == 24 == ld.bad.seen
    got = {(r.key, r.reason, r.source) for r in ld.bad.examples}
    want = {(key_of(i), reason, f"{i // 12:05d}.tar") for i, (reason, _) in CORRUPT.items()}
    assert got == want
    for i in CORRUPT:
        assert any(key_of(i) in m and f"{i // 12:05d}.tar" in m for m in caplog.messages)
    assert any("dtype int32" in r.detail for r in ld.bad.examples)
    assert any("ndim 1" in r.detail for r in ld.bad.examples)
    assert any("D=9" in r.detail for r in ld.bad.examples)


def test_truncated_tar_skips_and_counts_the_rest_of_the_shard(tmp_path):
    paths = write_shards(tmp_path, n_shards=2, per_shard=10)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    ld = _loader(tmp_path, batch_size=2)
    keys = set(sum((b["key"] for b in ld), []))
    assert {key_of(i) for i in range(10)} <= keys  # the intact shard is read in full
    lost = [r for r in ld.bad.examples if r.reason == "truncated_shard"]
    assert lost and all(r.source == "00001.tar" for r in lost)
    assert len(keys) + ld.bad.total == 20 and 3 <= len(lost) <= 7
    assert any("expected 10" in r.detail or "unreadable" in r.detail for r in lost)


def test_bad_fraction_bound_raises_naming_fraction_bound_and_reasons(tmp_path):
    write_shards(tmp_path, 1, 60, parts=lambda i: corrupted_parts(i % 12))  # 4 of 12 samples per dozen bad
    ld = _loader(tmp_path, max_bad_fraction=0.05)
    with pytest.raises(DataError) as err:
        list(ld)
    msg = str(err.value)
    assert "max_bad_fraction=0.05" in msg and "corrupt_image" in msg and "%" in msg
    assert ld.bad.seen >= 50  # not before the minimum count
    ok = _loader(tmp_path, max_bad_fraction=0.6)
    assert len(list(ok)) > 0 and 0.3 < ok.bad.fraction < 0.6


def test_bad_samples_counter_basics(caplog):
    bad = BadSamples(max_fraction=0.1, min_seen=10, log_first=2)
    with caplog.at_level(logging.DEBUG, logger="softclip.data"):
        for i in range(3):
            bad.add("corrupt_image", f"k{i}", "00000.tar", "truncated")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "further" in warnings[-1].getMessage()  # 2 records + the "further" notice
    bad.merge([], seen=9)
    assert bad.fraction == pytest.approx(3 / 9)  # below min_seen: no error yet
    with pytest.raises(DataError, match="3 of 29"):
        bad.merge([], seen=20)
    assert bad.summary()["reasons"] == {"corrupt_image": 3}
