"""The paper suite at its real sizes: measured parts on this CPU and the estimate for one RN50 checkpoint.

Measured (each on one CPU thread, so the numbers are per core):
1. RN50 image tower at 224 px: images per second (batch 16, after a warm-up batch).
2. RN50 text tower: prompts per second over ImageNet prompts (CLIP's 80 templates x class names, batch 128).
3. Decode + evaluation transform (open_clip's RN50 ``preprocess_val``: resize 224, center crop, normalise) per
   image, at ImageNet's typical 500 x 375 and at 1024 x 768 (Copydays / distractor-sized), CPU ms.
4. FAISS through ``GalleryIndex`` in a fresh process each (``benchmarks/search_memory.py``): rOxford's 70 queries
   ranking a gallery of ``--gallery`` random unit vectors of d=1024 (whole-database depth, as the instance
   evaluator ranks it, and top-100), and Copydays' 229 strong queries over 157 + 100k distractors (top 20);
   wall time and peak RSS above the gallery.

The estimate for one H100-class GPU combines the CPU loader rate (3) x the suite's 8 workers with the GPU
forward rate implied by the measured training throughput in reports/perf/gpu.md; see eval_scale.md.

    python benchmarks/eval_scale.py [--gallery 250000] [--out reports/perf]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# images and texts of eval/paper.yaml at the datasets' real sizes
SUITE_IMAGES = {"imagenet": 50_000, "flickr30k": 1_000, "coco": 5_000, "roxford5k": 4_993 + 70,
                "rparis6k": 6_322 + 70, "copydays": 157 + 229 + 10_000 + 20_000}  # fmt: skip
SUITE_TEXTS = {"imagenet_prompts": 80_000, "flickr30k": 5_000, "coco": 25_000}


def image_rate(model, batches: int = 2, batch: int = 16) -> float:
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        model.encode_image(x[:4])
        t0 = time.perf_counter()
        for _ in range(batches):
            model.encode_image(x)
    return batches * batch / (time.perf_counter() - t0)


def text_rate(model, tokenizer, n: int = 256, batch: int = 128) -> float:
    from softclip.evaluation.templates import IMAGENET_TEMPLATES, imagenet1k

    prompts = [t.replace("{}", c) for c in imagenet1k()[:8] for t in IMAGENET_TEMPLATES][:n]
    with torch.no_grad():
        model.encode_text(tokenizer(prompts[:8]))
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            model.encode_text(tokenizer(prompts[i : i + batch]))
    return n / (time.perf_counter() - t0)


def text_encoding(model, tokenizer, n_classes: int = 24, batch: int = 256) -> dict:
    """ImageNet prompts per CPU-second, three ways on the same prompts (``n_classes`` evenly spaced classes x the 80
    templates, in the harness's class order): open_clip's full 77-token pass (one batch: it is ~7x slower), class
    order with each batch cut to its longest prompt (the harness before), and length-sorted batches (now,
    ``Embedder.texts``); plus tokens per prompt that each way pays, on the sample and on all 80,000 prompts."""
    from softclip.evaluation.embed import Embedder
    from softclip.evaluation.templates import IMAGENET_TEMPLATES, imagenet1k

    names = imagenet1k()
    every = [t.replace("{}", c) for c in names for t in IMAGENET_TEMPLATES]
    step = len(names) // n_classes
    prompts = [t.replace("{}", names[i * step]) for i in range(n_classes) for t in IMAGENET_TEMPLATES]
    tokens = tokenizer(prompts)
    embedder = Embedder(preprocess=None, tokenizer=tokenizer, batch_size=batch)

    def class_order(encode, texts: list[str]) -> float:  # prompts per CPU-second, tokenizing included
        def run():
            with torch.inference_mode():
                for i in range(0, len(texts), batch):
                    encode(tokenizer(texts[i : i + batch]))
        return len(texts) / _cpu_seconds(run)

    def paid(lengths: np.ndarray) -> float:  # tokens per prompt when each batch is cut to its longest
        return float(sum(lengths[i : i + batch].max() * len(lengths[i : i + batch])
                         for i in range(0, len(lengths), batch)) / len(lengths))  # fmt: skip

    all_lengths = (tokenizer(every) != 0).sum(dim=1).numpy()
    lengths = (tokens != 0).sum(dim=1).numpy()
    out = {"n_prompts": len(prompts), "batch": batch, "context": int(tokens.shape[1])}
    rounds = []
    for _ in range(2):  # interleaved, so that load on the shared machine falls on every way alike
        rounds.append({
            "full_77": class_order(lambda t: model.clip.encode_text(t, normalize=True), prompts[:batch]),
            "class_order_cut": class_order(lambda t: model.encode_text(t, normalize=True), prompts),
            "sorted_cut": len(prompts) / _cpu_seconds(lambda: embedder.texts(model, prompts)),
        })  # fmt: skip
    for key in rounds[0]:
        out[f"{key}_prompts_per_cpu_s"] = round(max(r[key] for r in rounds), 1)
    out["ratio_sorted_vs_class_order"] = round(out["sorted_cut_prompts_per_cpu_s"]
                                               / out["class_order_cut_prompts_per_cpu_s"], 2)  # fmt: skip
    out["ratio_sorted_vs_full_77"] = round(out["sorted_cut_prompts_per_cpu_s"] / out["full_77_prompts_per_cpu_s"], 2)
    out["tokens_per_prompt_sample"] = {"class_order": paid(lengths), "sorted": paid(np.sort(lengths))}
    out["tokens_per_prompt_80k"] = {"class_order": paid(all_lengths), "sorted": paid(np.sort(all_lengths)),
                                    "full": int(tokens.shape[1])}  # fmt: skip
    return out


def _cpu_seconds(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def decode_ms(preprocess, size: tuple[int, int], n: int = 24) -> float:
    from PIL import Image

    from softclip.data.synth.paper_shapes import _jpeg

    rng = np.random.default_rng(0)
    blobs = [_jpeg(rng, size) for _ in range(n)]
    t0 = time.process_time()
    for b in blobs:
        with Image.open(io.BytesIO(b)) as img:
            preprocess(img.convert("RGB"))
    return 1000 * (time.process_time() - t0) / n


def search(n: int, queries: int, k: int) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "search_memory.py"), "--n", str(n), "--d", "1024",
           "--queries", str(queries), "--k", str(k)]  # fmt: skip
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=250_000, help="rOxford distractor gallery (1M needs 4 GiB)")
    p.add_argument("--out", default=None)
    p.add_argument("--text-only", action="store_true", help="only the text-encoding comparison (merged into the "
                   "existing eval_scale.json under 'text_encoding')")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from softclip.config import ModelConfig
    from softclip.models import build_model

    model, _, preprocess, tokenizer = build_model(ModelConfig(name="RN50"))
    model.eval()
    if args.text_only:
        return _write(args.out, {"text_encoding": text_encoding(model, tokenizer)}, merge=True)
    out = {
        "rn50_images_per_s_cpu_core": round(image_rate(model), 2),
        "rn50_prompts_per_s_cpu_core": round(text_rate(model, tokenizer), 1),
        "decode_preprocess_ms": {f"{w}x{h}": round(decode_ms(preprocess, (w, h)), 2)
                                 for w, h in ((500, 375), (1024, 768))},  # fmt: skip
        "search": {
            "roxford_full_depth": search(args.gallery, 70, args.gallery),
            "roxford_top100": search(args.gallery, 70, 100),
            "copydays_100k": search(100_157, 229, 20),
        },
        "suite_images": SUITE_IMAGES, "suite_texts": SUITE_TEXTS,
        "text_encoding": text_encoding(model, tokenizer),
    }  # fmt: skip
    return _write(args.out, out)


def _write(out_dir: str | None, out: dict, merge: bool = False) -> int:
    print(json.dumps(out, indent=1))
    if out_dir:
        path = Path(out_dir) / "eval_scale.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(path.read_text()) if merge and path.is_file() else {}
        path.write_text(json.dumps({**old, **out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
