"""build_train_loader: determinism, exact resume, rank split, workers, resampling, epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softclip.config import DataConfig
from softclip.data import loader as loader_mod
from softclip.data.badsamples import DataError
from softclip.data.loader import buffer_order, build_train_loader
from softclip.data.readers import webdataset as wds_mod
from tests.unit.data.readers_fixtures import D, HashTokenizer, key_of, preprocess, write_shards

B = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    write_shards(root / "train", n_shards=4, per_shard=10)  # 40 samples
    return root


LOADER_ARGS = ("preprocess", "tokenizer", "batch_size", "roi_dim", "seed", "sidecars", "rank", "world_size", "shuffle", "drop_last", "epoch", "start_batch", "pin_memory")


def _loader(root, **kw):
    args = dict(preprocess=preprocess, tokenizer=HashTokenizer(), batch_size=B, roi_dim=D, seed=7)
    section = {"source": "wds", "root": str(root), "kmax": 3, "shuffle_buffer": 8}
    for key, value in kw.items():
        (args if key in LOADER_ARGS else section)[key] = value
    return build_train_loader(DataConfig(**section), **args)


def _keys(loader):
    return [batch["key"] for batch in loader]


def test_buffer_order_is_a_bounded_permutation():
    order = buffer_order(50, 8, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(50))
    assert (order - np.arange(50) <= 8).all()  # nothing leaves the buffer more than its size early
    assert buffer_order(5, 0, np.random.default_rng(0)).tolist() == list(range(5))


def test_same_seed_same_batches_and_shapes(shards):
    a = _loader(shards)
    first = _keys(a)
    assert a.batches_per_epoch == 10 and a.samples_per_epoch == 40 and len(first) == 10
    assert all(len(k) == B for k in first)
    assert sorted(k for keys in first for k in keys) == [key_of(i) for i in range(40)]
    assert first == _keys(_loader(shards))
    assert first != _keys(_loader(shards, seed=8))
    batch = next(iter(_loader(shards)))
    assert batch["roi"].shape == (B, 3, D) and batch["roi_mask"].dtype == torch.bool
    assert batch["image"].shape == (B, 3, 4, 4) and batch["text"].shape == (B, 6)


def test_epochs_advance_and_differ(shards):
    ld = _loader(shards)
    e0, e1 = _keys(ld), _keys(ld)
    assert ld.state_dict() == {"epoch": 2, "batch": 0}
    assert e0 != e1 and sorted(sum(e0, [])) == sorted(sum(e1, []))
    assert e1 == _keys(_loader(shards, epoch=1))


def test_start_batch_is_the_exact_tail_without_decoding_the_head(shards, monkeypatch):
    full = list(_loader(shards))
    reads = []
    real_read = wds_mod.read_data
    monkeypatch.setattr(wds_mod, "read_data", lambda f, m: reads.append(m.name) or real_read(f, m))
    decoded = []
    tail = list(_loader(shards, start_batch=6, preprocess=lambda im: decoded.append(1) or preprocess(im)))
    assert [b["key"] for b in tail] == [b["key"] for b in full[6:]]
    for got, want in zip(tail, full[6:], strict=True):  # augmentation randomness is reproduced too
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["roi"], want["roi"])
    assert len(decoded) == 4 * B  # only the tail's samples were decoded ...
    assert {n.split(".")[0] for n in reads} == set(sum((b["key"] for b in tail), []))  # ... or even read


def test_state_dict_resume_mid_epoch(shards):
    ld = _loader(shards)
    it = iter(ld)
    head = [next(it)["key"] for _ in range(3)]
    state = ld.state_dict()
    assert state == {"epoch": 0, "batch": 3}
    resumed = _loader(shards)
    resumed.load_state_dict(state)
    assert head + _keys(resumed) == _keys(_loader(shards))


def test_ranks_are_disjoint_and_cover_the_epoch(shards):
    per_rank = [_keys(_loader(shards, rank=r, world_size=2)) for r in range(2)]
    flat = [set(sum(keys, [])) for keys in per_rank]
    assert len(per_rank[0]) == len(per_rank[1]) == 5
    assert not flat[0] & flat[1] and flat[0] | flat[1] == {key_of(i) for i in range(40)}


def test_workers_do_not_change_the_stream_or_the_callers_rng(shards):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    single = list(_loader(shards))
    torch.manual_seed(123)
    multi = list(_loader(shards, workers=2))
    assert torch.equal(torch.rand(3), expected_next)  # the trainer's global RNG stream is untouched
    assert [b["key"] for b in multi] == [b["key"] for b in single]
    assert all(torch.equal(m["image"], s["image"]) for m, s in zip(multi, single, strict=True))
    tail = _keys(_loader(shards, workers=2, start_batch=7))
    assert tail == [b["key"] for b in single[7:]]


def test_resampled_epochs_and_epoch_samples(shards):
    ld = _loader(shards, resampled=True, epoch_samples=24)
    keys = _keys(ld)
    assert ld.batches_per_epoch == 6 and len(keys) == 6
    assert keys == _keys(_loader(shards, resampled=True, epoch_samples=24))
    assert set(sum(keys, [])) <= {key_of(i) for i in range(40)}
    big = _loader(shards, resampled=True, epoch_samples=100)
    assert big.batches_per_epoch == 25
    with pytest.raises(DataError, match="resampled"):
        _loader(shards, epoch_samples=100)
    short = _loader(shards, epoch_samples=20)
    assert short.batches_per_epoch == 5


def test_bad_arguments(shards):
    with pytest.raises(DataError, match="fewer than batch_size"):
        _loader(shards, batch_size=64)
    with pytest.raises(ValueError, match="start_batch"):
        _loader(shards, start_batch=11)
    with pytest.raises(KeyError, match="data.source"):
        bad = DataConfig.model_construct(**{**DataConfig(root=str(shards)).model_dump(), "source": "tfrecord"})
        build_train_loader(bad, preprocess=preprocess, tokenizer=HashTokenizer(), batch_size=B, roi_dim=D, seed=0)
    assert loader_mod.epoch_length(41, None, False, 2) == 20
