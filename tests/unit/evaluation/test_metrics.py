"""Metric math against hand-computed answers and brute-force float64 references (ties included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softclip.evaluation import metrics as M


def brute_order(scores_row: np.ndarray) -> list[int]:
    """Gallery ids by descending score, ties by lower id (the project's documented order)."""
    return sorted(range(len(scores_row)), key=lambda j: (-float(scores_row[j]), j))


def brute_topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.array([brute_order(row)[:k] for row in scores], dtype=np.int64)


# ------------------------------------------------------------------------------------ retrieval recalls


def test_retrieval_recalls_hand_built():
    text_to_image = np.array([0, 0, 1, 1, 2, 2])
    i2t = np.array([[2, 0, 5], [3, 1, 0], [0, 1, 2]])  # first hit at 1, 0, none
    t2i = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [1, 2, 0], [0, 1, 2], [0, 1, -1]])
    out = M.retrieval_recalls(i2t, t2i, text_to_image, ks=(1, 2, 3))
    expected = {"i2t_r1": 100 / 3, "i2t_r2": 200 / 3, "i2t_r3": 200 / 3,
                "t2i_r1": 100 * 2 / 6, "t2i_r2": 100 * 3 / 6, "t2i_r3": 100 * 5 / 6}  # fmt: skip
    assert list(out) == list(expected)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value)


def test_retrieval_recalls_default_keys_and_k_check():
    t2im = np.arange(4).repeat(2)
    i2t = np.tile(np.arange(10), (4, 1))
    t2i = np.tile(np.arange(10) % 4, (8, 1))
    out = M.retrieval_recalls(i2t, t2i, t2im)
    assert set(out) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    with pytest.raises(ValueError, match="exceeds"):
        M.retrieval_recalls(i2t[:, :5], t2i, t2im)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_recalls_match_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_img, per = 12, 3
    t2im = rng.permutation(np.arange(n_img).repeat(per))
    scores = rng.integers(0, 4, size=(n_img, n_img * per)).astype(np.float64)  # many ties
    ks = (1, 5, 10)
    out = M.retrieval_recalls(brute_topk(scores, 10), brute_topk(scores.T, 10), t2im, ks)
    for k in ks:
        i2t_hits = [any(t2im[j] == i for j in brute_order(scores[i])[:k]) for i in range(n_img)]
        t2i_hits = [t2im[t] in brute_order(scores[:, t])[:k] for t in range(n_img * per)]
        assert out[f"i2t_r{k}"] == pytest.approx(100 * np.mean(i2t_hits))
        assert out[f"t2i_r{k}"] == pytest.approx(100 * np.mean(t2i_hits))


def test_rank_statistics_and_rsum():
    out = M.rank_statistics(np.array([1, 2, 7, 30]), ks=(1, 5, 10), prefix="i2t_")
    assert out == {"i2t_r1": 25.0, "i2t_r5": 50.0, "i2t_r10": 75.0, "i2t_mean_rank": 10.0, "i2t_median_rank": 4.5}
    rec = {"i2t_r1": 10, "i2t_r5": 20, "i2t_r10": 30, "t2i_r1": 1, "t2i_r5": 2, "t2i_r10": 3}
    assert M.rsum(rec) == 66.0
    with pytest.raises(ValueError):
        M.rank_statistics(np.array([0, 1]))


def test_rank_statistics_agree_with_topk_recalls():
    rng = np.random.default_rng(5)
    n_img, per = 10, 2
    t2im = np.arange(n_img).repeat(per)
    scores = rng.integers(0, 3, size=(n_img, n_img * per)).astype(float)
    first = [1 + min(brute_order(scores[i]).index(t) for t in np.flatnonzero(t2im == i)) for i in range(n_img)]
    t2i_first = [1 + brute_order(scores[:, t]).index(t2im[t]) for t in range(n_img * per)]
    rec = M.retrieval_recalls(brute_topk(scores, 10), brute_topk(scores.T, 10), t2im)
    for prefix, ranks in (("i2t_", first), ("t2i_", t2i_first)):
        stats = M.rank_statistics(np.array(ranks), prefix=prefix)
        for k in (1, 5, 10):
            assert stats[f"{prefix}r{k}"] == pytest.approx(rec[f"{prefix}r{k}"])


# ------------------------------------------------------------------------------------------- zero-shot


def test_topk_accuracy_and_mean_per_class_recall_hand_built():
    topk = np.array([[0, 1], [1, 0], [2, 0], [0, 2], [1, 2]])
    labels = np.array([0, 0, 1, 2, 1])
    assert M.topk_accuracy(topk, labels, ks=(1, 2)) == {"top1": 40.0, "top2": 80.0}
    # top-1 recall per class: class 0 1 of 2, class 1 1 of 2, class 2 0 of 1
    assert M.mean_per_class_recall(topk[:, 0], labels) == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)
    # a class without samples is left out of the mean
    assert M.mean_per_class_recall(np.array([3, 0]), np.array([0, 0])) == 50.0


def test_zeroshot_metrics_match_brute_force():
    rng = np.random.default_rng(3)
    n, c = 60, 7
    labels = rng.integers(0, c, n)
    scores = rng.integers(0, 5, size=(n, c)).astype(float)
    topk = brute_topk(scores, 5)
    acc = M.topk_accuracy(topk, labels, ks=(1, 5))
    assert acc["top1"] == pytest.approx(100 * np.mean([brute_order(s)[0] == y for s, y in zip(scores, labels, strict=True)]))
    assert acc["top5"] == pytest.approx(100 * np.mean([y in brute_order(s)[:5] for s, y in zip(scores, labels, strict=True)]))
    recalls = [np.mean([brute_order(scores[i])[0] == y for i in np.flatnonzero(labels == y)]) for y in set(labels)]
    assert M.mean_per_class_recall(topk[:, 0], labels) == pytest.approx(100 * np.mean(recalls))


def test_attribute_accuracy():
    attrs = [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "red"},
             {"shape": "circle", "colour": "blue"}]  # fmt: skip
    pred = np.array([1, 2, 0, 0])
    labels = np.array([0, 0, 0, 1])
    out = M.attribute_accuracy(pred, labels, attrs)
    # (square vs circle: colour right), (blue circle vs red circle: shape right), exact, (red circle vs red square)
    assert out == {"colour_acc": 75.0, "shape_acc": 50.0}


def test_prompt_ensemble_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 8))
    scaled = x * rng.uniform(0.1, 10, size=(4, 3, 1))  # per-template norms must not matter
    out = M.prompt_ensemble(scaled)
    ref = np.stack([np.mean([t / np.linalg.norm(t) for t in cls], axis=0) for cls in x])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


# -------------------------------------------------------------------------------------- semantic / AP


def test_average_precision_hand_built():
    assert M.average_precision(np.array([3, 1]), 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert M.average_precision(np.array([2]), 3) == pytest.approx((1 / 2) / 3)  # two relevant never retrieved
    out = M.semantic_retrieval([np.array([1, 3]), np.array([4]), np.array([])], ks=(1, 5), prefix="x_")
    assert out == pytest.approx({"x_r1": 50.0, "x_r5": 100.0, "x_map": 100 * ((1 + 2 / 3) / 2 + 1 / 4) / 2})


def test_semantic_map_matches_brute_force():
    rng = np.random.default_rng(7)
    nq, ng = 15, 40
    scores = rng.integers(0, 6, size=(nq, ng)).astype(float)
    relevant = [rng.choice(ng, rng.integers(1, 6), replace=False) for _ in range(nq)]
    ranks = [np.array([1 + brute_order(scores[q]).index(t) for t in rel]) for q, rel in enumerate(relevant)]
    aps = []
    for q, rel in enumerate(relevant):
        order, hits, total = brute_order(scores[q]), 0, 0.0
        for pos, j in enumerate(order, 1):
            if j in rel:
                hits += 1
                total += hits / pos
        aps.append(total / len(rel))
    out = M.semantic_retrieval(ranks, ks=(1,))
    assert out["map"] == pytest.approx(100 * np.mean(aps))


# ---------------------------------------------------------------------------------------- revisitop


def _revisitop_reference(ranks, gnd, kappas):
    """An independent port of revisitop's compute_map loops (ok/junk per query already chosen)."""
    aps, prs = [], []
    for i, g in enumerate(gnd):
        qgnd, qjunk = list(g["ok"]), list(g["junk"])
        if not qgnd:
            continue
        pos = [p for p in range(ranks.shape[0]) if ranks[p, i] in qgnd]
        junk = [p for p in range(ranks.shape[0]) if ranks[p, i] in qjunk]
        k = ij = 0
        for ip in range(len(pos)):
            while ij < len(junk) and pos[ip] > junk[ij]:
                k, ij = k + 1, ij + 1
            pos[ip] -= k
        ap = 0.0
        for j, rank in enumerate(pos):
            p0 = 1.0 if rank == 0 else j / rank
            ap += (p0 + (j + 1) / (rank + 1)) / (2 * len(qgnd))
        aps.append(ap)
        r = [p + 1 for p in pos]
        prs.append([sum(x <= min(max(r), kk) for x in r) / min(max(r), kk) if r else 0.0 for kk in kappas])
    return 100 * np.mean(aps), 100 * np.mean(prs, axis=0)


def test_revisitop_map_hand_built():
    ranks = np.array([[2, 1, 3, 0, 4], [0, 1, 2, 3, 4]]).T  # [n_db, n_q]
    gnd = [{"easy": [0], "hard": [1], "junk": [2]}, {"easy": [], "hard": [3], "junk": []}]
    easy = M.revisitop_map(ranks, gnd, "easy")
    medium = M.revisitop_map(ranks, gnd, "medium")
    hard = M.revisitop_map(ranks, gnd, "hard")
    # query 1 has no easy positive and is left out of Easy
    assert easy == pytest.approx({"map": 25.0, "mp1": 0.0, "mp5": 50.0, "mp10": 50.0})
    assert medium == pytest.approx({"map": 100 * (19 / 24 + 1 / 8) / 2, "mp1": 50.0,
                                    "mp5": 100 * (2 / 3 + 1 / 4) / 2, "mp10": 100 * (2 / 3 + 1 / 4) / 2})  # fmt: skip
    assert hard == pytest.approx({"map": 56.25, "mp1": 50.0, "mp5": 62.5, "mp10": 62.5})


@pytest.mark.parametrize("protocol", ["easy", "medium", "hard"])
def test_revisitop_map_matches_reference(protocol):
    rng = np.random.default_rng({"easy": 0, "medium": 1, "hard": 2}[protocol])
    n_db, n_q = 60, 9
    scores = rng.integers(0, 8, size=(n_q, n_db)).astype(float)
    ranks = brute_topk(scores, n_db).T
    gnd = []
    for _ in range(n_q):
        ids = rng.permutation(n_db)
        ne, nh, nj = rng.integers(0, 4, size=3)
        gnd.append({"easy": ids[:ne], "hard": ids[ne : ne + nh], "junk": ids[ne + nh : ne + nh + nj]})
    out = M.revisitop_map(ranks, gnd, protocol, kappas=(1, 5, 10))
    ref_map, ref_pr = _revisitop_reference(ranks, M.protocol_gnd(gnd, protocol), (1, 5, 10))
    assert out["map"] == pytest.approx(ref_map)
    assert [out["mp1"], out["mp5"], out["mp10"]] == pytest.approx(list(ref_pr))


def test_revisitop_truncated_ranking_and_errors():
    gnd = [{"easy": [5], "hard": [], "junk": []}]
    assert M.revisitop_map(np.array([[0], [1]]), gnd, "easy") == {"map": 0.0, "mp1": 0.0, "mp5": 0.0, "mp10": 0.0}
    with pytest.raises(ValueError, match="protocol"):
        M.revisitop_map(np.array([[0]]), gnd, "extreme")


def test_copy_detection_map_hand_built():
    topk = np.array([[3, 1, 2], [0, 1, 3], [0, 1, 2]])
    out = M.copy_detection_map(topk, [[3], [3], [7]])
    assert out == pytest.approx(100 * (1 + (0 / 2 + 1 / 3) / 2 + 0) / 3)


# ---------------------------------------------------------------------------------------------- InfoNCE


def test_info_nce_matches_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(37, 16, generator=g, dtype=torch.float64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(37, 16, generator=g, dtype=torch.float64), dim=-1)
    logits = 14.3 * u @ v.T
    labels = torch.arange(37)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels))
    assert M.info_nce(u.numpy(), v.numpy(), 14.3, chunk=8) == pytest.approx(float(ref), rel=1e-9)
