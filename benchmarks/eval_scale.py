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
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from softclip.config import ModelConfig
    from softclip.models import build_model

    model, _, preprocess, tokenizer = build_model(ModelConfig(name="RN50"))
    model.eval()
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
    }  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval_scale.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
