"""The FAISS wrapper: exact top-k equals brute force (ids and scores, ties by lower id), approximate indexes
stay above a stated recall, and the BLAS switch is set and restored."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from softclip.evaluation.search import (
    BLAS_THRESHOLD_IS_PRODUCT,
    GalleryIndex,
    SearchConfig,
    blas_settings,
    default_nlist,
    ranks_of,
    search,
)


def brute(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 scores, order by (-score, id)."""
    s = queries.astype(np.float64) @ gallery.astype(np.float64).T
    ids = np.array([sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in s], dtype=np.int64)
    return np.take_along_axis(s, ids, 1), ids


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_matches_brute_force_random():
    rng = np.random.default_rng(0)
    gallery, queries = unit(rng.normal(size=(500, 24))), unit(rng.normal(size=(60, 24)))
    scores, ids = search(queries, gallery, 10)
    ref_s, ref_i = brute(queries, gallery, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (60, 10)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)


@pytest.mark.parametrize("query_batch", [4096, 7])
def test_exact_ties_break_by_lower_id(query_batch):
    rng = np.random.default_rng(1)
    gallery = rng.integers(-2, 3, size=(300, 8)).astype(np.float32)  # integer dots: exact ties in float32
    gallery[100:110] = gallery[5]  # duplicates of item 5
    queries = rng.integers(-2, 3, size=(40, 8)).astype(np.float32)
    queries[0] = gallery[5]
    scores, ids = search(queries, gallery, 25, SearchConfig(query_batch=query_batch))
    ref_s, ref_i = brute(queries, gallery, 25)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s.astype(np.float32))


def test_tie_group_wider_than_the_fetch_margin():
    gallery = np.ones((200, 4), np.float32)  # every item ties with every other
    gallery[150] = 2.0
    scores, ids = search(np.ones((3, 4), np.float32), gallery, 5)
    np.testing.assert_array_equal(ids, np.tile([150, 0, 1, 2, 3], (3, 1)))
    np.testing.assert_array_equal(scores[:, 0], 8.0)


def test_k_larger_than_gallery_pads():
    rng = np.random.default_rng(2)
    gallery = unit(rng.normal(size=(5, 8)))
    scores, ids = search(gallery[:2], gallery, 8)
    assert ids.shape == (2, 8) and (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert sorted(ids[0, :5]) == list(range(5)) and ids[0, 0] == 0


def test_empty_gallery_and_empty_queries():
    scores, ids = search(np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32), 4)
    assert ids.shape == (2, 4) and (ids == -1).all() and np.isneginf(scores).all()
    scores, ids = search(np.zeros((0, 3), np.float32), np.ones((5, 3), np.float32), 4)
    assert ids.shape == (0, 4)


def test_input_checks():
    index = GalleryIndex(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="d=2"):
        index.search(np.zeros((1, 2), np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 3), np.float32), 0)


def clustered(rng: np.random.Generator, n: int, d: int, centres: int) -> np.ndarray:
    c = rng.normal(size=(centres, d))
    return unit(c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, d)))


@pytest.mark.parametrize("kind,min_recall", [("ivf", 0.95), ("hnsw", 0.95)])
def test_approximate_index_recall(kind, min_recall):
    """Above exact_max_gallery an approximate index answers; R@10 overlap with exact stays >= min_recall."""
    rng = np.random.default_rng(3)
    gallery, queries = clustered(rng, 8000, 32, 64), clustered(rng, 100, 32, 64)
    cfg = SearchConfig(exact_max_gallery=1000, approximate=kind, ivf_nprobe=16)
    index = GalleryIndex(gallery, cfg)
    assert not index.exact and index.kind == kind
    _, ids = index.search(queries, 10)
    _, ref = search(queries, gallery, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref, strict=True)])
    assert overlap >= min_recall


def test_default_nlist():
    assert default_nlist(1_000_000) == 4096
    assert default_nlist(100) == 2
    assert default_nlist(1) == 1


def test_blas_threshold_is_set_and_restored():
    before = faiss.cvar.distance_compute_blas_threshold
    before_bs = faiss.cvar.distance_compute_blas_database_bs
    with blas_settings(8 * 512, 512, 2048):
        inside = faiss.cvar.distance_compute_blas_threshold
        assert faiss.cvar.distance_compute_blas_database_bs == 2048
    assert faiss.cvar.distance_compute_blas_threshold == before
    assert faiss.cvar.distance_compute_blas_database_bs == before_bs
    assert inside == (8 * 512 if BLAS_THRESHOLD_IS_PRODUCT else 8)
    with blas_settings(1000, 512):  # a count threshold rounds up: 2 queries
        assert faiss.cvar.distance_compute_blas_threshold == (1000 if BLAS_THRESHOLD_IS_PRODUCT else 2)


def test_wrapper_uses_the_blas_path_from_its_threshold():
    """BLAS and the SIMD scan round differently; from blas_threshold on the wrapper must give BLAS's bits."""
    rng = np.random.default_rng(4)
    gallery, queries = rng.normal(size=(2000, 64)).astype(np.float32), rng.normal(size=(4, 64)).astype(np.float32)
    flat = faiss.IndexFlatIP(64)
    flat.add(gallery)
    cfg = SearchConfig(blas_threshold=4 * 64)
    old = faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs
    try:
        faiss.cvar.distance_compute_blas_database_bs = cfg.blas_database_block
        faiss.cvar.distance_compute_blas_threshold = 0
        blas_s, _ = flat.search(queries, 5)
        faiss.cvar.distance_compute_blas_threshold = 2**31 - 1
        simd_s, _ = flat.search(queries, 5)
    finally:
        faiss.cvar.distance_compute_blas_threshold, faiss.cvar.distance_compute_blas_database_bs = old
    if np.array_equal(blas_s, simd_s):
        pytest.skip("this faiss build rounds both paths identically; the path cannot be told apart")
    scores, _ = GalleryIndex(gallery, cfg).search(queries, 5)
    np.testing.assert_array_equal(scores, blas_s)
    scores3, _ = GalleryIndex(gallery, cfg).search(queries[:3], 5)  # below the switch: the SIMD scan
    np.testing.assert_array_equal(scores3, simd_s[:3])


def test_ranks_of_matches_brute_force_with_ties():
    rng = np.random.default_rng(5)
    gallery = rng.integers(-1, 2, size=(120, 6)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(9, 6)).astype(np.float32)
    targets = [rng.choice(120, n, replace=False) for n in (1, 3, 40, 0, 5, 33, 2, 120, 1)]  # both code paths
    out = ranks_of(queries, gallery, targets, max_block=250)  # 2 query rows per block
    _, order = brute(queries, gallery, 120)
    for q, t in enumerate(targets):
        expected = [1 + list(order[q]).index(j) for j in t]
        np.testing.assert_array_equal(out[q], expected)
    _, top1 = search(queries, gallery, 1)
    assert all(ranks_of(queries, gallery, [np.array([i]) for i in top1[:, 0]])[q][0] == 1 for q in range(9))


def test_exact_search_holds_the_callers_gallery_not_a_copy():
    """The exact path searches the caller's float32 array in place (a 1M x 1024 gallery is held once): a row
    changed after the index was built is what the search sees."""
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((500, 16)).astype(np.float32)
    query = rng.standard_normal((1, 16)).astype(np.float32)
    index = GalleryIndex(gallery, SearchConfig(gpu=False))
    before = index.search(query, 1)[1][0, 0]
    target = 7 if before != 7 else 8
    gallery[target] = 100 * query[0]
    assert index.search(query, 1)[1][0, 0] == target
