"""The one nearest-neighbour search wrapper: inner-product top-k over a gallery, through FAISS.

- Exact search up to ``SearchConfig.exact_max_gallery`` gallery vectors; above it an approximate index
  (``ivf``: IVF-Flat trained with spherical k-means, or ``hnsw``). The exact CPU path searches the caller's
  float32 array in place (``faiss.knn``, the same kernel ``IndexFlatIP`` runs) instead of copying it into an
  index, so a 1M x 1024 gallery is held once (4 GiB), not twice (``benchmarks/search_memory.py``).
- Queries go in batches of ``query_batch``: FAISS's exact search computes scores in fixed-size BLAS blocks, so
  peak memory is O(query_batch * k + gallery), never O(n_query * n_gallery).
- faiss-gpu is used when present (``faiss.get_num_gpus() > 0``) unless ``gpu=False``; selections with k above
  the GPU limit fall back to a CPU copy of the index.
- FAISS's exact path switches between a per-query SIMD scan and BLAS matrix products at
  ``faiss.cvar.distance_compute_blas_threshold`` (a query count in older faiss, query count times dimension in
  recent ones; told apart by its default, 20 vs 128000). The SIMD scan parallelises only over queries, so with
  few cores it is several times slower for mid-sized query sets (``reports/perf/search.md``: on 2 cores BLAS
  wins from n_query x d of about 16k-32k, not 128000). The wrapper sets the switch to ``blas_threshold``,
  scores ``blas_database_block`` gallery rows per BLAS call (4096 rather than faiss's 1024: about 25% faster
  here, a fixed 64 MB block) and restores both globals afterwards.

Ties: results are ordered by descending score, then ascending gallery id; an item tied with the k-th score is
returned before a higher id. FAISS's heaps do not guarantee this, so the wrapper fetches a margin beyond k,
sorts, and widens the fetch for the rare rows whose tie group reaches the margin. Scores are FAISS's float32
inner products, so "tied" means equal in float32 as FAISS computes them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LOGGER = logging.getLogger("softclip.evaluation")
GPU_MAX_K = 2048  # FAISS GPU k-selection limit
_DEFAULT_BLAS_THRESHOLD = int(faiss.cvar.distance_compute_blas_threshold)
# recent faiss compares n_query * d with the threshold (default 128000); older versions n_query (default 20).
BLAS_THRESHOLD_IS_PRODUCT = _DEFAULT_BLAS_THRESHOLD > 1000
_BLAS_LOCK = threading.Lock()


class SearchConfig(BaseModel):
    """Search knobs (the ``search:`` section of an evaluation suite)."""

    model_config = ConfigDict(extra="forbid")

    exact_max_gallery: int = Field(1_000_000, ge=1, description="largest gallery searched exactly")
    approximate: Literal["ivf", "hnsw"] = Field("ivf", description="index above exact_max_gallery")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF lists; default 4*sqrt(n) rounded to 2^k")
    ivf_nprobe: int = Field(32, ge=1, description="IVF lists visited per query")
    ivf_train_per_list: int = Field(64, ge=8, description="k-means training points per list")
    ivf_niter: int = Field(20, ge=1, description="k-means iterations when training the IVF lists")
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)
    query_batch: int = Field(4096, ge=1, description="queries per FAISS call (bounds result memory)")
    blas_threshold: int = Field(32768, ge=1, description="n_query x d per call from which FAISS uses BLAS "
                                "(faiss's default: 128000; see reports/perf/search.md)")
    blas_database_block: int = Field(4096, ge=256, description="gallery rows per BLAS block (faiss: 1024)")
    gpu: bool | None = Field(None, description="None: use faiss-gpu when a GPU is visible")
    seed: int = Field(0, ge=0, description="seed of the IVF training sample and k-means")


def gpu_available() -> bool:
    """True when this faiss build sees at least one GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    return bool(get and get() > 0)


@contextlib.contextmanager
def blas_settings(work: int, d: int, database_block: int | None = None) -> Iterator[None]:
    """Temporarily make FAISS's exact search use BLAS for calls with n_query x d >= ``work`` (and score
    ``database_block`` gallery rows per BLAS call); the globals are restored on exit."""
    value = work if BLAS_THRESHOLD_IS_PRODUCT else -(-work // d)
    cvar = faiss.cvar
    with _BLAS_LOCK:
        old = int(cvar.distance_compute_blas_threshold), int(cvar.distance_compute_blas_database_bs)
        cvar.distance_compute_blas_threshold = int(min(value, 2**31 - 1))
        if database_block is not None:
            cvar.distance_compute_blas_database_bs = int(database_block)
        try:
            yield
        finally:
            cvar.distance_compute_blas_threshold, cvar.distance_compute_blas_database_bs = old


def _as_f32(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {arr.shape}")
    return arr


def default_nlist(n: int) -> int:
    """IVF list count: 4 * sqrt(n) rounded to a power of two, at least 1 and at most n // 39."""
    target = 4.0 * np.sqrt(max(n, 1))
    nlist = 2 ** int(round(np.log2(target)))
    return int(max(1, min(nlist, max(1, n // 39))))


class GalleryIndex:
    """A searchable gallery of vectors (inner product; feed L2-normalised vectors for cosine).

    Args:
        gallery: float [n, d].
        cfg: search knobs.
    """

    def __init__(self, gallery: np.ndarray, cfg: SearchConfig | None = None) -> None:
        self.cfg = cfg or SearchConfig()
        xb = _as_f32(gallery, "gallery")
        self.n, self.d = xb.shape
        self.exact = self.n <= self.cfg.exact_max_gallery
        self.kind = "flat" if self.exact else self.cfg.approximate
        self._xb = xb if self.exact else None  # exact: searched in place, never copied
        self._cpu = None if self.exact else self._build(xb)
        self._gpu = self._to_gpu(xb) if self._use_gpu() else None

    def _use_gpu(self) -> bool:
        want = self.cfg.gpu
        return gpu_available() if want is None else bool(want and gpu_available())

    def _build(self, xb: np.ndarray) -> faiss.Index:
        """The approximate index over ``xb`` (the exact path needs none)."""
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.d, self.cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.cfg.hnsw_ef_construction
            index.hnsw.efSearch = self.cfg.hnsw_ef_search
        else:
            nlist = self.cfg.ivf_nlist or default_nlist(self.n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.d), self.d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.spherical = True
            index.cp.seed = self.cfg.seed
            index.cp.niter = self.cfg.ivf_niter
            n_train = min(self.n, nlist * self.cfg.ivf_train_per_list)
            sample = np.random.default_rng(self.cfg.seed).choice(self.n, n_train, replace=False)
            with blas_settings(self.cfg.blas_threshold, self.d):
                index.train(xb[np.sort(sample)])
            index.nprobe = min(self.cfg.ivf_nprobe, nlist)
        index.add(xb)
        return index

    def _to_gpu(self, xb: np.ndarray) -> faiss.Index | None:
        if self.kind == "hnsw":  # no GPU HNSW in faiss-gpu; keep the CPU graph
            return None
        try:
            self._res = faiss.StandardGpuResources()
            if self._cpu is not None:
                return faiss.index_cpu_to_gpu(self._res, 0, self._cpu)
            index = faiss.index_cpu_to_gpu(self._res, 0, faiss.IndexFlatIP(self.d))
            index.add(xb)  # device memory only; the host keeps the caller's array
            return index
        except (AttributeError, RuntimeError) as err:  # pragma: no cover - depends on the faiss build
            LOGGER.warning("faiss GPU index unavailable (%s); searching on CPU", err)
            return None

    @property
    def device(self) -> str:
        return "cuda" if self._gpu is not None else "cpu"

    def _raw(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search of one query batch (k <= n), scores float32 [b, k] and ids int64 [b, k]."""
        with blas_settings(self.cfg.blas_threshold, self.d, self.cfg.blas_database_block):
            if self._gpu is not None and k <= GPU_MAX_K:
                return self._gpu.search(xq, k)
            if self._cpu is None:
                return faiss.knn(xq, self._xb, k, metric=faiss.METRIC_INNER_PRODUCT)
            return self._cpu.search(xq, k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery items per query, best first, ties by lower id.

        Args:
            queries: float [nq, d].
            k: results per query; when k exceeds the gallery size the rows are padded with id -1 and
                score -inf.

        Returns:
            (scores float32 [nq, k], ids int64 [nq, k]).
        """
        xq = _as_f32(queries, "queries")
        if xq.shape[1] != self.d:
            raise ValueError(f"queries have d={xq.shape[1]}, the gallery d={self.d}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        nq = xq.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        kk = min(k, self.n)
        for lo in range(0, nq if kk else 0, self.cfg.query_batch):
            hi = min(nq, lo + self.cfg.query_batch)
            s, i = self._search_ties(xq[lo:hi], kk)
            scores[lo:hi, :kk], ids[lo:hi, :kk] = s, i
        return scores, ids

    def _search_ties(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search with a margin and resolve the k-th-place ties by id (see the module docstring)."""
        fetch = min(self.n, k + max(16, k // 8))
        s, i = _sort_rows(*self._raw(xq, fetch))
        out_s, out_i = s[:, :k].copy(), i[:, :k].copy()
        open_rows = np.flatnonzero(_tie_cut(s, i, k, fetch < self.n))
        while open_rows.size:
            fetch = min(self.n, 2 * fetch)
            s, i = _sort_rows(*self._raw(xq[open_rows], fetch))
            out_s[open_rows], out_i[open_rows] = s[:, :k], i[:, :k]
            open_rows = open_rows[_tie_cut(s, i, k, fetch < self.n)]
        out_s[out_i < 0] = -np.inf
        return out_s, out_i


def _tie_cut(scores: np.ndarray, ids: np.ndarray, k: int, truncated: bool) -> np.ndarray:
    """bool [b]: rows whose k-th score ties with the last fetched one (the tie group may go on unseen). A row
    whose fetch ran out of candidates (id -1, approximate indexes) has nothing more to see."""
    if not truncated:
        return np.zeros(len(scores), dtype=bool)
    return (scores[:, k - 1] == scores[:, -1]) & (ids[:, -1] >= 0)


def _sort_rows(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by descending score, then ascending id; invalid (-1) ids go last."""
    key_s = np.where(ids < 0, -np.inf, scores)
    key_i = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_i, -key_s.astype(np.float64)), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def search(
    queries: np.ndarray, gallery: np.ndarray, k: int, cfg: SearchConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot top-k inner-product search (see :class:`GalleryIndex`).

    Args:
        queries: float [nq, d]; gallery: float [n, d]; k: results per query.

    Returns:
        (scores float32 [nq, k], ids int64 [nq, k]), best first, ties by lower id.
    """
    return GalleryIndex(gallery, cfg).search(queries, k)


def ranks_of(
    queries: np.ndarray, gallery: np.ndarray, targets: Sequence[np.ndarray], max_block: int = 1 << 24
) -> list[np.ndarray]:
    """Full-gallery 1-based ranks of given gallery items, for rank statistics and AP over all relevant items.

    Same order as :meth:`GalleryIndex.search` on an exact index: descending float32 inner product, ties by
    lower id. Score blocks hold at most ``max_block`` floats, so memory stays bounded.

    Args:
        queries: float [nq, d]; gallery: float [n, d].
        targets: per query, int gallery ids whose ranks are wanted.

    Returns:
        per query, int64 ranks aligned with its ``targets``.
    """
    xq, xb = _as_f32(queries, "queries"), _as_f32(gallery, "gallery")
    if len(targets) != xq.shape[0]:
        raise ValueError(f"{len(targets)} target lists for {xq.shape[0]} queries")
    n = xb.shape[0]
    rows = max(1, max_block // max(n, 1))
    gid = np.arange(n)
    out: list[np.ndarray] = []
    for lo in range(0, xq.shape[0], rows):
        block = xq[lo : lo + rows] @ xb.T
        for r, row in enumerate(block):
            t = np.asarray(targets[lo + r], dtype=np.int64)
            if t.size == 0:
                out.append(np.zeros(0, np.int64))
            elif t.size <= 32:
                st = row[t][:, None]
                before = (row[None, :] > st) | ((row[None, :] == st) & (gid[None, :] < t[:, None]))
                out.append(1 + before.sum(axis=1).astype(np.int64))
            else:
                order = np.argsort(-row.astype(np.float64), kind="stable")
                pos = np.empty(n, np.int64)
                pos[order] = np.arange(1, n + 1)
                out.append(pos[t])
    return out
