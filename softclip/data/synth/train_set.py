"""Training shards: webdataset tars in img2dataset layout plus ROI sidecars (``{key}.roi.npy``, ``{key}.tags.json``).

One caption per image. With probability ``spec.noise`` the caption is the one of another, uniformly drawn
training image (its owner is recorded in the sample's ``.json``). Each sample's stream yields its scene and
caption first, so another image's caption is recomputed without drawing that image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from softclip.data.layout import ROI_EXT, SIZES_FILE, TAGS_EXT, TRAIN_DIR
from softclip.data.synth.base import OutputSet, chunks, register
from softclip.data.synth.captions import Caption, describes, make_caption
from softclip.data.synth.card import false_negative_stats, region_stats
from softclip.data.synth.detector import Detector
from softclip.data.synth.determinism import TarWriter, jpeg_bytes, json_bytes, npy_bytes, rng_for, write_json
from softclip.data.synth.scenes import Obj, draw_scene, sample_scene
from softclip.data.synth.spec import SynthConfig


def key_of(index: int) -> str:
    """Sample key of training index ``index`` ('000000123')."""
    return f"{index:09d}"


def shard_name(shard: int) -> str:
    return f"{shard:05d}.tar"


@dataclass(frozen=True)
class TrainPlan:
    """What one training sample shows and says, before drawing."""

    objs: list[Obj]
    caption: Caption
    owner: int  # index of the image the caption was written for (== own index unless noisy)


def _scene_and_caption(spec: SynthConfig, seed: int, index: int) -> tuple[np.random.Generator, list[Obj], Caption]:
    rng = rng_for(seed, "train", index)
    objs = sample_scene(rng, spec, spec.image_size)
    return rng, objs, make_caption(rng, spec, objs)[0]


def plan_sample(spec: SynthConfig, seed: int, index: int) -> tuple[TrainPlan, np.random.Generator]:
    """Scene and (possibly swapped) caption of training sample ``index``, and its stream for drawing."""
    rng, objs, caption = _scene_and_caption(spec, seed, index)
    owner = index
    if spec.n_train > 1 and rng.random() < spec.noise:
        owner = (index + 1 + int(rng.integers(spec.n_train - 1))) % spec.n_train
        caption = _scene_and_caption(spec, seed, owner)[2]
    return TrainPlan(objs, caption, owner), rng


def _units(spec: SynthConfig, seed: int) -> list[Any]:
    return [(shard, a, b) for shard, (a, b) in enumerate(chunks(spec.n_train, spec.samples_per_shard))]


def _metadata(spec: SynthConfig, index: int, plan: TrainPlan, true: bool) -> dict[str, Any]:
    size = spec.image_size
    return {
        "key": key_of(index), "caption": plan.caption.text, "url": None, "status": "success",
        "error_message": None, "width": size, "height": size, "original_width": size, "original_height": size,
        "objects": [o.to_json() for o in plan.objs],
        "caption_mentions": plan.caption.to_json(),
        "caption_owner": key_of(plan.owner),
        "caption_noisy": plan.owner != index,
        "caption_describes_image": true,
    }


def _run_unit(spec: SynthConfig, seed: int, root: Path, unit: Any) -> dict[str, Any]:
    shard, start, stop = unit
    detector = Detector(spec.detector, spec)
    size = spec.image_size
    samples = []
    with TarWriter(root / TRAIN_DIR / shard_name(shard)) as tar:
        for index in range(start, stop):
            plan, rng = plan_sample(spec, seed, index)
            image = draw_scene(rng, spec, plan.objs, size)
            det = detector.detect(rng, plan.objs, size)
            true = describes(plan.caption, plan.objs)
            key = key_of(index)
            tar.add(f"{key}.jpg", jpeg_bytes(image, spec.jpeg_quality))
            tar.add(f"{key}.txt", plan.caption.text.encode("utf-8"))
            tar.add(f"{key}.json", json_bytes(_metadata(spec, index, plan, true)))
            tar.add(f"{key}.{ROI_EXT}", npy_bytes(det.features))
            tar.add(f"{key}.{TAGS_EXT}", json_bytes({"tags": det.tags, "boxes": det.boxes}))
            samples.append((plan.objs, plan.caption, plan.owner != index, true, len(det.tags), det.n_true))
    n = stop - start
    stats = {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0,
             "status_dict": {"success": n}}
    write_json(root / TRAIN_DIR / shard_name(shard).replace(".tar", "_stats.json"), stats, indent=2)
    return {"shard": shard_name(shard), "samples": samples}


def _finalize(spec: SynthConfig, seed: int, root: Path, results: list[Any]) -> dict[str, Any]:
    write_json(root / TRAIN_DIR / SIZES_FILE, {r["shard"]: len(r["samples"]) for r in results}, indent=2)
    samples = [s for r in results for s in r["samples"]]
    n = len(samples)
    scenes = [s[0] for s in samples]
    captions = [s[1] for s in samples]
    return {
        "samples": n,
        "shards": len(results),
        "noisy_caption_fraction": sum(s[2] for s in samples) / n,
        "caption_describes_own_image_fraction": sum(s[3] for s in samples) / n,
        "subset_caption_fraction": sum(c.subset for c in captions) / n,
        "objects_per_image": sum(len(o) for o in scenes) / n,
        "regions": region_stats([s[4] for s in samples], [s[5] for s in samples]),
        "false_negatives": false_negative_stats(captions, scenes, rng_for(seed, "card/false_negatives")),
    }


TRAIN = register(OutputSet("train", TRAIN_DIR, _units, _run_unit, _finalize))
