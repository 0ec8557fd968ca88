"""Evaluation on CUDA: a trained run's embeddings on the GPU against the CPU, and FAISS search over them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from softclip.checkpoint import checkpoint_path

from .conftest import ON_CUDA

pytestmark = pytest.mark.gpu

STEPS = 10
FP32_ATOL = 1e-4  # max |difference| of L2-normalised fp32 embeddings, GPU vs CPU (TF32 off)
BF16_MIN_COS = 0.99  # the Embedder's bf16 autocast on CUDA vs CPU fp32 (CPU bf16 autocast measured >= 0.997)
K = 5
TIE = 2e-4  # score gap below which two gallery items may swap places between devices


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """Full fp32 matrix products and convolutions (cuDNN's default allows TF32 convolutions: the patch embedding)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def retrieval_set(data_root: Path) -> tuple[list[Path], list[str]]:
    """The smoke SynthScenes retrieval images and each one's first caption."""
    folder = data_root / "retrieval"
    images = json.loads((folder / "dataset.json").read_text())["images"]
    return [folder / i["filepath"] / i["filename"] for i in images], [i["sentences"][0]["raw"] for i in images]


def _cos_min(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(1).min())


def _same_topk(ids_a: np.ndarray, ids_b: np.ndarray, ref_scores: np.ndarray) -> float:
    """Fraction of rows whose top-K sets agree; rows whose K-th and (K+1)-th reference scores are within TIE of each
    other count as agreeing (a near tie may go either way)."""
    tie = (ref_scores[:, K - 1] - ref_scores[:, K]) < TIE
    same = np.array([set(a[:K]) == set(b[:K]) for a, b in zip(ids_a, ids_b, strict=True)])
    return float((same | tie).mean())


def test_embeddings_and_search_match_cpu(trained: Callable[..., Path], smoke_data: Any, device: torch.device,
                                         record: Callable, no_tf32: None) -> None:  # fmt: skip
    """A run trained on the device (smoke profile, fp32, 10 steps), loaded with the library's ``load_run_model``.

    1. fp32: ``encode_image`` / ``encode_text`` of 40 retrieval images and captions on the device match the CPU's
       within ``FP32_ATOL`` = 1e-4 (max |difference| of unit vectors, TF32 off; fp32 reduction order alone is ~1e-6).
    2. The evaluation ``Embedder`` (bf16 autocast on CUDA) agrees with CPU fp32: every row's cosine >= 0.99.
    3. Search (``softclip.evaluation.search.GalleryIndex``, text -> image, top-5): the device embeddings in FAISS
       (GPU FAISS when the installed faiss sees a GPU, else CPU FAISS; recorded) return the top-5 of the CPU
       embeddings, and so does an exact torch search on the device; near ties (gap < 2e-4) may swap.
    """
    import faiss

    from softclip.evaluation.embed import Embedder
    from softclip.evaluation.harness import load_run_model
    from softclip.evaluation.search import GalleryIndex, SearchConfig, gpu_available

    run = trained("smoke", "fp32", STEPS)
    weights = run / checkpoint_path("checkpoints", STEPS)
    cpu_model, preprocess, tokenizer, _ = load_run_model(run, weights, "cpu")
    dev_model, _, _, _ = load_run_model(run, weights, str(device))
    paths, captions = retrieval_set(Path(smoke_data.root))
    images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    tokens = tokenizer(captions)
    with torch.no_grad():
        img_cpu = cpu_model.encode_image(images).numpy()
        txt_cpu = cpu_model.encode_text(tokens).numpy()
        img_dev = dev_model.encode_image(images.to(device)).cpu().numpy()
        txt_dev = dev_model.encode_text(tokens.to(device)).cpu().numpy()
    fp32_diff = float(max(np.abs(img_cpu - img_dev).max(), np.abs(txt_cpu - txt_dev).max()))
    record("n_images", len(paths))
    record("fp32_max_abs_diff", fp32_diff)
    record("fp32_tolerance", FP32_ATOL)

    embedder = Embedder(preprocess, tokenizer, device=str(device), batch_size=16)
    img_emb, txt_emb = embedder.images(dev_model, paths), embedder.texts(dev_model, captions)
    cos = min(_cos_min(img_emb, img_cpu), _cos_min(txt_emb, txt_cpu))
    record("embedder_autocast", "bf16" if device.type == "cuda" else "none (CPU)")
    record("embedder_min_cosine", cos)

    cpu_index = GalleryIndex(img_cpu, SearchConfig(gpu=False))
    dev_index = GalleryIndex(img_dev, SearchConfig())
    ref_scores, ref_ids = cpu_index.search(txt_cpu, K + 1)
    dev_scores, dev_ids = dev_index.search(txt_dev, K + 1)
    q, g = torch.from_numpy(txt_dev).to(device), torch.from_numpy(img_dev).to(device)
    torch_ids = (q @ g.T).topk(K, dim=1).indices.cpu().numpy()
    agree_faiss = _same_topk(dev_ids, ref_ids, ref_scores)
    agree_torch = _same_topk(torch_ids, ref_ids, ref_scores)
    record("faiss_version", faiss.__version__)
    record("faiss_sees_gpu", gpu_available())
    record("faiss_index_device", dev_index.device)
    record("search", "GPU FAISS on GPU embeddings" if dev_index.device == "cuda" else
           f"CPU FAISS on {'GPU' if ON_CUDA else 'CPU'} embeddings")  # fmt: skip
    record("top5_agreement_faiss", agree_faiss)
    record("top5_agreement_torch_on_device", agree_torch)
    record("search_max_abs_score_diff", float(np.abs(dev_scores[:, :K] - ref_scores[:, :K]).max()))

    assert fp32_diff <= FP32_ATOL, f"fp32 embeddings differ by {fp32_diff:.3g} > {FP32_ATOL}"
    assert cos >= BF16_MIN_COS, f"Embedder (bf16 on CUDA) vs CPU fp32: min cosine {cos:.4f} < {BF16_MIN_COS}"
    assert agree_faiss == 1.0 and agree_torch == 1.0, (agree_faiss, agree_torch)
    if dev_index.device == "cuda":  # GPU FAISS: the same index on the CPU must return the same
        cpu_scores, cpu_ids = GalleryIndex(img_dev, SearchConfig(gpu=False)).search(txt_dev, K + 1)
        assert _same_topk(dev_ids, cpu_ids, cpu_scores) == 1.0
