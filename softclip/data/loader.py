"""The training loader: deterministic, exactly resumable batches from a training source.

Order. For each epoch a *plan* is computed from indices alone (no data is read): the source lays out the
rank's ``n`` samples in read order (shards permuted by (seed, epoch), rank ``r`` taking the ``r``-th equal
slice; or shards drawn with replacement when ``resampled``), then a simulated shuffle buffer of
``shuffle_buffer`` samples permutes them (tar sources only; CSV rows are fully permuted already). Batch ``b``
is plan slice ``[b*B, (b+1)*B)``. So the sample sequence is a pure function of (seed, epoch, rank,
world_size, epoch_samples, shuffle, shuffle_buffer, resampled, the shard list and sizes); ``batch_size`` only
groups it into batches; ``workers`` changes nothing (neither does a resume).
Worker ``w`` of ``W`` builds batches ``start_batch + w, start_batch + w + W, ...``: it walks the headers of
the rank's shards (~5 us a member) and reads the data of its own samples only; torch's DataLoader returns the
workers' batches round-robin, i.e. in order.

Resume. ``start_batch=b`` (or ``load_state_dict``) yields exactly the tail of the epoch from batch ``b``
without decoding the skipped samples. Augmentations are reproducible too: each sample's preprocess runs with
torch's and Python's global RNGs seeded from (seed, epoch, rank, plan position), restored afterwards.

Bad samples. A bad sample is dropped from its batch (so that batch has fewer than ``batch_size`` samples:
batch boundaries never move, which keeps resume exact; under DDP, ranks may then differ in batch size for a
step, so a cross-rank gather must allow that), counted in ``loader.bad`` and logged; a batch whose samples are
all bad is skipped. ``loader.bad`` raises DataError past ``max_bad_fraction``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from softclip.data import readers  # noqa: F401  (registers the sources)
from softclip.data.badsamples import LOGGER, BadRecord, BadSample, BadSamples, DataError
from softclip.data.collate import CachedTokenizer, Tokenizer, collate
from softclip.data.readers.base import TRAIN_READERS, Preprocess, SourcePaths, TrainSource, rng_for

BatchResult = tuple[int, "dict | None", list[BadRecord], int]  # (batch index, batch, bad records, planned samples)


def buffer_order(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Simulate a shuffle buffer of ``size`` over a stream of ``n`` items: int64 [n], plan pos -> input pos.

    Fill the buffer; then each new item replaces a uniformly drawn buffered item, which is emitted; at the end
    the remaining buffer is emitted in random order. An item is emitted at most ``size`` places early.
    """
    if size <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    size = min(size, n)
    buf = list(range(size))
    out = []
    for i, j in enumerate(rng.integers(size, size=n - size).tolist()):
        out.append(buf[j])
        buf[j] = size + i
    tail = np.asarray(buf, dtype=np.int64)
    rng.shuffle(tail)
    return np.concatenate([np.asarray(out, dtype=np.int64), tail])


def _sample_seed(seed: int, epoch: int, rank: int, pos: int) -> int:
    return (((seed * 1_000_003 + epoch) * 1_000_033 + rank) * 10_000_019 + pos) % (2**63 - 1)


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    """Let per-sample seeding touch the global torch / Python RNGs without changing the caller's streams."""
    py_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)


class TrainStream(IterableDataset):
    """Batches of one rank; iterating it in a DataLoader worker yields that worker's share (in order).

    Yields ``(batch index, batch dict or None, bad records, planned samples)``.
    """

    def __init__(
        self, source: TrainSource, preprocess: Preprocess, tokenizer: Tokenizer, *, batch_size: int, kmax: int,
        seed: int, rank: int, world_size: int, n: int, shuffle: bool, shuffle_buffer: int, resampled: bool,
        drop_last: bool,
    ) -> None:
        super().__init__()
        self.source, self.preprocess, self.tokenizer = source, preprocess, tokenizer
        self.tag_tokenizer = CachedTokenizer(tokenizer)  # tag prompts repeat; captions rarely do
        self.batch_size, self.kmax, self.seed = batch_size, kmax, seed
        self.rank, self.world_size, self.n = rank, world_size, n
        self.shuffle, self.shuffle_buffer, self.resampled = shuffle, shuffle_buffer, resampled
        self.num_batches = n // batch_size if drop_last else -(-n // batch_size)
        self.epoch, self.start_batch = 0, 0
        self._plan: tuple[int, Any, np.ndarray] | None = None

    def plan(self, epoch: int) -> tuple[Any, np.ndarray]:
        """(source stream, order) for ``epoch``; ``order[p]`` is the stream position at plan position ``p``."""
        if self._plan is None or self._plan[0] != epoch:
            stream = self.source.input_stream(
                seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size, n=self.n,
                shuffle=self.shuffle, resampled=self.resampled,
            )
            size = self.shuffle_buffer if (self.shuffle and self.source.sequential) else 0
            order = buffer_order(self.n, size, rng_for(self.seed, epoch, self.rank, "buffer"))
            self._plan = (epoch, stream, order)
        return self._plan[1], self._plan[2]

    def __iter__(self) -> Iterator[BatchResult]:
        info = torch.utils.data.get_worker_info()
        return self.iter_batches(info.id, info.num_workers) if info else self.iter_batches(0, 1)

    def iter_batches(self, worker: int, num_workers: int) -> Iterator[BatchResult]:
        """This worker's batches ``start_batch + worker + k * num_workers``, in order."""
        own = list(range(self.start_batch + worker, self.num_batches, num_workers))
        if not own:
            return
        stream, order = self.plan(self.epoch)
        slices = [order[b * self.batch_size : (b + 1) * self.batch_size] for b in own]
        needs = [int(s.max()) for s in slices]
        store: dict[int, Any] = {}
        k = 0
        for pos, item in self.source.read(stream, np.unique(np.concatenate(slices))):
            store[pos] = item
            while k < len(own) and needs[k] <= pos:
                yield self._make_batch(own[k], slices[k], store)
                k += 1
        for b, positions in zip(own[k:], slices[k:], strict=True):
            yield self._make_batch(b, positions, store)

    def _make_batch(self, b: int, positions: np.ndarray, store: dict[int, Any]) -> BatchResult:
        samples, bad = [], []
        with _isolated_rng():
            for j, q in enumerate(positions.tolist()):
                item = store.pop(q, None)
                if item is None:
                    bad.append(BadRecord("missing_sample", f"#{q}", self.source.name, "the reader skipped it"))
                    continue
                if isinstance(item, BadRecord):
                    bad.append(item)
                    continue
                s = _sample_seed(self.seed, self.epoch, self.rank, b * self.batch_size + j)
                torch.default_generator.manual_seed(s)  # torch.manual_seed also reseeds every device: slow
                random.seed(s)
                try:
                    samples.append(self.source.decode(item, self.preprocess))
                except BadSample as err:
                    bad.append(BadRecord(err.reason, item.key, item.source, err.detail))
        batch = collate(samples, self.tokenizer, self.kmax, self.tag_tokenizer) if samples else None
        return b, batch, bad, len(positions)


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32  # base seed from the loader's own generator, + worker id
    random.seed(s)
    np.random.seed(s)


class TrainLoader:
    """Iterable over one epoch of batches per ``iter``; advances the epoch when an epoch is exhausted.

    Attributes:
        batches_per_epoch: batches this rank yields per epoch (all ranks equal).
        samples_per_epoch: planned samples this rank yields per epoch (``batches_per_epoch * batch_size``
            with ``drop_last``), before bad samples are dropped.
        bad: the BadSamples counter (over the loader's life).
        epoch, next_batch: the position; ``state_dict()`` holds it for checkpoints.
    """

    def __init__(
        self, dataset: TrainStream, *, workers: int, bad: BadSamples, pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        self.dataset, self.workers, self.bad = dataset, workers, bad
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self.batches_per_epoch = dataset.num_batches
        self.samples_per_epoch = min(dataset.n, dataset.num_batches * dataset.batch_size)
        self.epoch, self.next_batch = 0, 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Position the loader at batch ``start_batch`` of ``epoch`` (0 <= start_batch <= batches_per_epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch={start_batch} outside [0, {self.batches_per_epoch}]")
        self.epoch, self.next_batch = int(epoch), int(start_batch)

    def state_dict(self) -> dict[str, int]:
        """The data position: the next batch to yield."""
        return {"epoch": self.epoch, "batch": self.next_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(state["epoch"], state["batch"])

    def _results(self) -> Iterator[BatchResult]:
        ds = self.dataset
        ds.epoch, ds.start_batch = self.epoch, self.next_batch
        if self.workers == 0:
            return ds.iter_batches(0, 1)
        gen = torch.Generator().manual_seed(_sample_seed(ds.seed, self.epoch, ds.rank, 2**40))
        return iter(DataLoader(
            ds, batch_size=None, num_workers=self.workers, worker_init_fn=_seed_worker, generator=gen,
            pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor, persistent_workers=False,
        ))

    def __iter__(self) -> Iterator[dict]:
        for b, batch, records, planned in self._results():
            self.bad.merge(records, planned)
            self.next_batch = b + 1
            if batch is not None:
                yield batch
        self.epoch, self.next_batch = self.epoch + 1, 0


def epoch_length(num_samples: int, epoch_samples: int | None, resampled: bool, world_size: int) -> int:
    """Samples per rank per epoch; DataError when ``epoch_samples`` exceeds a finite source."""
    total = num_samples if epoch_samples is None else int(epoch_samples)
    if not resampled and total > num_samples:
        raise DataError(
            f"data.epoch_samples={total} exceeds the {num_samples} training samples; "
            "set data.resampled=true to draw shards with replacement"
        )
    return total // world_size


def build_train_loader(
    data: Any, *, preprocess: Preprocess, tokenizer: Tokenizer, batch_size: int, roi_dim: int, seed: int,
    sidecars: bool | None = None, scenes: bool = False, rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
    epoch: int = 0, start_batch: int = 0, pin_memory: bool = False, log: logging.Logger | None = None,
) -> TrainLoader:
    """Build the training loader of a ``data`` config section (:class:`softclip.config.DataConfig`).

    The section says where the data lives and how it is read (``source``, ``root``, ``train``, ``csv``,
    ``features_tsv``, ``labels_tsv``, ``images_root``, ``kmax``, ``workers``, ``shuffle_buffer``, ``resampled``,
    ``epoch_samples``, ``max_bad_fraction``, ``sidecars``); its defaults live there alone. ``source=synth``
    reads the generated SynthScenes shards (``wds``). The arguments are what the section cannot know.

    Args:
        data: the ``data`` section (duck-typed: this package imports nothing of the suite above it).
        preprocess: PIL image -> float [3, H, W] (e.g. open_clip's train transform).
        tokenizer: open_clip tokenizer, list[str] -> long [B, L].
        batch_size, roi_dim: per-rank micro-batch B (the global batch split over ranks and accumulation) and
            region width D (from ``data.roi_dim`` or the detector).
        seed: data seed. rank, world_size: this process's slice of each epoch.
        sidecars: read ROI/tag sidecars (default ``data.sidecars``; the trainer turns them off when no loss
            uses them).
        scenes: read each sample's scene annotations (batches then carry ``scene_image``/``scene_text``
            codes; the ``oracle`` target).
        shuffle: shard permutation + buffer (tar sources). drop_last: drop a final short batch.
        epoch, start_batch: the position to start from (resume).
        pin_memory: pin batches (GPU training with workers). log: logger (default ``softclip.data``).

    Returns:
        A TrainLoader (iterate for batches of :func:`softclip.data.collate.collate`).
    """
    source = "wds" if data.source == "synth" else data.source
    sidecars = data.sidecars if sidecars is None else sidecars
    kmax, workers, resampled, epoch_samples = data.kmax, data.workers, data.resampled, data.epoch_samples
    log = log or LOGGER
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} outside [0, world_size={world_size})")
    paths = SourcePaths(data.root, data.train, data.csv, data.features_tsv, data.labels_tsv, data.images_root)
    src: TrainSource = TRAIN_READERS.get(source)(paths, roi_dim=roi_dim, sidecars=sidecars, scenes=scenes, log=log)
    n = epoch_length(src.num_samples, epoch_samples, resampled, world_size)
    if n < batch_size and (drop_last or n == 0):
        raise DataError(f"{src.name}: {n} samples per rank per epoch, fewer than batch_size={batch_size}")
    ds = TrainStream(
        src, preprocess, tokenizer, batch_size=batch_size, kmax=kmax, seed=seed, rank=rank,
        world_size=world_size, n=n, shuffle=shuffle, shuffle_buffer=data.shuffle_buffer, resampled=resampled,
        drop_last=drop_last,
    )
    bad = BadSamples(max_fraction=data.max_bad_fraction, logger=log)
    loader = TrainLoader(ds, workers=workers, bad=bad, pin_memory=pin_memory)
    loader.set_epoch(epoch, start_batch)
    log.info(
        "training data %s: %d samples, %d per rank per epoch, %d batches of %d (rank %d/%d, %d workers)",
        src.name, src.num_samples, n, loader.batches_per_epoch, batch_size, rank, world_size, workers,
    )
    return loader
