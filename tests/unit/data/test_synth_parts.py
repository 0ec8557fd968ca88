"""SynthScenes building blocks: spec validation, shapes and colours, captions and their truth, detector, tar."""

from __future__ import annotations

import io
import itertools
import tarfile

import numpy as np
import pytest
from pydantic import ValidationError

from softclip.data.layout import BOX_GEOMETRY_DIMS
from softclip.data.synth import COLOURS, SHAPES, SIZES, DetectorConfig, SynthConfig
from softclip.data.synth.captions import (
    COUNT_TEMPLATES,
    LIST_TEMPLATES,
    Caption,
    Mention,
    describes,
    describes_matrix,
    make_caption,
    make_captions,
)
from softclip.data.synth.detector import Detector
from softclip.data.synth.determinism import TarWriter, rng_for
from softclip.data.synth.scenes import PALETTE, SHAPE_DRAWERS, Obj, object_side, sample_scene, shape_mask
from softclip.data.synth.train_set import plan_sample
from softclip.registry import RegistryError


def test_spec_rejects_unknown_and_out_of_range_keys():
    with pytest.raises(ValidationError, match="n_trian"):
        SynthConfig(n_trian=5)
    with pytest.raises(ValidationError, match="noise"):
        SynthConfig(noise=1.5)
    with pytest.raises(ValidationError, match="n_shapes"):
        SynthConfig(n_shapes=len(SHAPES) + 1)
    with pytest.raises(ValidationError, match="feature_nois"):
        SynthConfig(detector={"feature_nois": 0.1})
    with pytest.raises(ValidationError, match="large_size"):
        SynthConfig(small_size=0.3, large_size=0.3)
    with pytest.raises(ValidationError, match="duplicates"):
        SynthConfig(copydays_crop_pcts=(20, 20))


def test_every_field_is_described():
    for model in (SynthConfig, DetectorConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_presets():
    long, quick, smoke, paper = (SynthConfig.preset(n) for n in ("long", "quick", "smoke", "paper"))
    assert long == SynthConfig()
    assert long.image_size == 64 and 16 <= long.n_object_types <= 32 and long.n_retrieval_images >= 1000
    assert 20_000 <= long.n_train <= 40_000 and long.subset_caption_prob == pytest.approx(0.5)
    assert quick.image_size == 32 and 16 <= quick.n_object_types <= 32 and quick.n_retrieval_images * 5 >= 2000
    assert smoke.n_train < 1000 and smoke.image_size == 32
    assert paper.n_shapes == 8 and paper.n_colours == 8 and paper.n_train > quick.n_train
    assert SynthConfig.preset("smoke", noise=0.2).noise == 0.2
    merged = SynthConfig.preset("smoke", detector={"tag_error": 0.5}).detector
    assert merged.tag_error == 0.5 and merged.roi_dim == smoke.detector.roi_dim != DetectorConfig().roi_dim
    with pytest.raises(RegistryError, match="quick"):
        SynthConfig.preset("quik")
    assert SynthConfig.model_validate(quick.model_dump(mode="json")) == quick  # the card's spec round-trips


def test_at_least_eight_shapes_and_colours_are_available_and_distinct():
    assert len(SHAPES) >= 8 and len(COLOURS) >= 8 and set(SHAPE_DRAWERS) == set(SHAPES)
    assert set(PALETTE) == set(COLOURS)
    rgb = np.array([PALETTE[c] for c in COLOURS], dtype=float)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(COLOURS)) * 1e9
    assert dist.min() > 60
    masks = [np.asarray(shape_mask(s, 20)[0]) > 127 for s in range(len(SHAPES))]
    assert all(m.sum() > 20 for m in masks)
    for a, b in itertools.combinations(range(len(SHAPES)), 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        closest = {SHAPES[a], SHAPES[b]} == {"circle", "hexagon"}  # hexagon comes last in the order for this
        assert iou < (0.92 if closest else 0.85), (SHAPES[a], SHAPES[b], iou)


def test_quick_profile_objects_are_big_enough_and_sizes_separate():
    spec = SynthConfig()
    rng = np.random.default_rng(0)
    small = [object_side(rng, spec, 0, spec.image_size) for _ in range(200)]
    large = [object_side(rng, spec, 1, spec.image_size) for _ in range(200)]
    assert 14 <= min(small) and max(small) < min(large) and max(large) <= 28


def test_scenes_hold_distinct_colour_shape_pairs_inside_the_image():
    spec = SynthConfig.preset("smoke")
    for i in range(200):
        objs = sample_scene(rng_for(0, "t", i), spec, spec.image_size)
        assert 1 <= len(objs) <= spec.max_objects
        assert len({(o.shape, o.colour) for o in objs}) == len(objs)
        for o in objs:
            assert o.shape < spec.n_shapes and o.colour < spec.n_colours
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= spec.image_size and 0 <= y1 < y2 <= spec.image_size


def _obj(shape: int, colour: int, size: int) -> Obj:
    return Obj(shape, colour, size, (0, 0, 4, 4), (0, 0, 4))


def test_describes_by_hand():
    scene = [_obj(0, 0, 0), _obj(1, 2, 1)]  # small red circle, large blue square
    def cap(*mentions, count=None):
        return Caption("", tuple(Mention(*m) for m in mentions), count, False)
    assert describes(cap((0, 0, -1)), scene)
    assert describes(cap((0, 0, 0), (1, 2, 1)), scene)
    assert not describes(cap((0, 0, 1)), scene)  # wrong size
    assert not describes(cap((0, 1, -1)), scene)  # wrong colour
    assert describes(cap((1, 2, -1), count=2), scene)
    assert not describes(cap((1, 2, -1), count=1), scene)


def test_describes_matrix_matches_the_scalar_rule():
    spec = SynthConfig(n_shapes=3, n_colours=3, max_objects=3)
    rng = np.random.default_rng(1)
    scenes = [sample_scene(rng, spec, 64) for _ in range(60)]
    caps = [make_caption(rng, spec, scenes[i % 60])[0] for i in range(150)]
    mat = describes_matrix(caps, scenes)
    brute = np.array([[describes(c, s) for s in scenes] for c in caps])
    assert mat.shape == (150, 60) and (mat == brute).all()
    assert 0 < brute.mean() < 1  # both outcomes occur
    assert all(mat[i, i % 60] for i in range(150))  # a caption describes the image it was written for


def test_caption_shares_and_templates():
    spec = SynthConfig(subset_caption_prob=0.5, size_mention_prob=0.5)
    rng = np.random.default_rng(2)
    caps = [make_caption(rng, spec, sample_scene(rng, spec, 64))[0] for _ in range(2000)]
    assert abs(np.mean([c.subset for c in caps]) - 0.5) < 0.05
    sizes_named = [m.size >= 0 for c in caps for m in c.mentions]
    assert abs(np.mean(sizes_named) - 0.5) < 0.05
    assert all(c.count is None for c in caps if c.subset)  # counts only where every object is named
    assert {c.text.split(":")[0] for c in caps if c.count == 2} >= {"two objects", "a photo of two shapes"}
    assert len(LIST_TEMPLATES) >= 5 and COUNT_TEMPLATES
    scene = sample_scene(rng, spec, 64, n_objects=3)
    five = make_captions(rng, spec, scene, 5)
    assert len({c.text for c in five}) == 5 and all(describes(c, scene) for c in five)


def test_caption_noise_rate_and_owners():
    spec = SynthConfig.preset("smoke", n_train=2500, noise=0.3)
    plans = [plan_sample(spec, 7, i)[0] for i in range(2500)]
    noisy = [i for i, p in enumerate(plans) if p.owner != i]
    assert abs(len(noisy) / 2500 - 0.3) < 0.04
    for i in noisy[:50]:  # a swapped caption is the owner's own caption
        owner = plans[i].owner
        if plans[owner].owner == owner:
            assert plans[i].caption == plans[owner].caption
    clean = SynthConfig.preset("smoke", n_train=300)
    assert all(plan_sample(clean, 7, i)[0].owner == i for i in range(300))


def test_detector_shapes_geometry_and_seeding():
    spec = SynthConfig.preset("smoke", detector={"roi_dim": 24, "false_boxes": 1.0})
    det = Detector(spec.detector, spec)
    rng = np.random.default_rng(3)
    objs = sample_scene(rng, spec, 32, n_objects=3)
    out = det.detect(rng, objs, 32)
    k = out.features.shape[0]
    assert out.features.dtype == np.float16 and out.features.shape == (k, 24) and len(out.tags) == len(out.boxes) == k
    geo = out.features[:, -BOX_GEOMETRY_DIMS:].astype(np.float32)
    boxes = np.array(out.boxes).reshape(-1, 4) / 32
    np.testing.assert_allclose(geo[:, :4], boxes, atol=2e-3)
    np.testing.assert_allclose(geo[:, 4:], boxes[:, 2:] - boxes[:, :2], atol=2e-3)
    for tag in out.tags:
        words = tag.split()
        assert words[-1] in SHAPES and words[-2] in COLOURS and (len(words) == 2 or words[0] in SIZES)
    # the projection depends on the detector seed only
    other = SynthConfig.preset("smoke", n_train=9, detector={"roi_dim": 24, "false_boxes": 1.0})
    np.testing.assert_array_equal(Detector(other.detector, other).projection, det.projection)
    reseeded = SynthConfig.preset("smoke", detector={"roi_dim": 24, "seed": 1})
    assert not np.allclose(Detector(reseeded.detector, reseeded).projection, det.projection)
    blind = SynthConfig.preset("smoke", detector={"missed_boxes": 1.0, "false_boxes": 0.0})
    empty = Detector(blind.detector, blind).detect(rng, objs, 32)
    assert empty.features.shape == (0, blind.detector.roi_dim) and empty.tags == [] and empty.boxes == []


def test_detector_tags_follow_tag_error():
    spec = SynthConfig.preset("smoke", detector={"tag_error": 0.0, "false_boxes": 0.0, "missed_boxes": 0.0})
    det = Detector(spec.detector, spec)
    rng = np.random.default_rng(4)
    for _ in range(50):
        objs = sample_scene(rng, spec, 32)
        truth = {f"{COLOURS[o.colour]} {SHAPES[o.shape]}" for o in objs}
        assert {" ".join(t.split()[-2:]) for t in det.detect(rng, objs, 32).tags} == truth


def test_tar_writer_matches_tarfile_ustar(tmp_path):
    members = [("000000001.jpg", b"x" * 1000), ("000000001.txt", b"hi"), ("000000001.roi.npy", b""), ("a" * 100, b"y" * 512)]
    with TarWriter(tmp_path / "mine.tar") as tar:
        for name, data in members:
            tar.add(name, data)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.USTAR_FORMAT) as ref:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
            ref.addfile(info, io.BytesIO(data))
    assert (tmp_path / "mine.tar").read_bytes() == (tmp_path / "ref.tar").read_bytes()
    with pytest.raises(ValueError, match="longer than 100"):
        TarWriter(tmp_path / "x.tar").add("b" * 101, b"")
