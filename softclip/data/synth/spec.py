"""SynthScenes knobs: the typed spec (pydantic, extra=forbid) and its size profiles.

The vocabularies below are the *available* attributes; a spec enables the first ``n_shapes`` shapes and the
first ``n_colours`` colours, ordered so that every prefix stays easy to tell apart at small image sizes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from softclip.registry import Registry

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "diamond", "heart", "crescent", "hexagon",
)
COLOURS: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "purple", "white", "orange", "black", "cyan", "pink", "brown",
)
SIZES: tuple[str, ...] = ("small", "large")

Quality = Annotated[int, Field(ge=1, le=100)]
CropPct = Annotated[int, Field(ge=1, le=95)]


class DetectorConfig(BaseModel):
    """The simulated object-attribute detector (a stand-in for VinVL's boxes, region features and tags)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the fixed feature projection, independent of the scene seed.")
    roi_dim: int = Field(128, ge=16, le=4096, description="Region feature width D, the last 6 being box geometry (VinVL: 2054).")
    feature_noise: float = Field(0.3, ge=0.0, le=10.0, description="Std of the Gaussian noise added to region features.")
    tag_error: float = Field(0.1, ge=0.0, le=1.0, description="Probability that a true region's tag has one wrong attribute.")
    tag_size_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability that a tag names the size ('small red circle').")
    false_boxes: float = Field(0.3, ge=0.0, le=20.0, description="Expected spurious boxes per image (Poisson mean).")
    missed_boxes: float = Field(0.05, ge=0.0, le=1.0, description="Probability that a true object gets no box.")
    box_jitter: float = Field(0.05, ge=0.0, le=0.5, description="Std of box-corner jitter as a fraction of the object size.")


class SynthConfig(BaseModel):
    """Every SynthScenes knob. ``SynthConfig()`` is the ``long`` profile; see ``SynthConfig.preset``."""

    model_config = ConfigDict(extra="forbid")

    # scenes
    n_train: int = Field(32000, ge=1, le=50_000_000, description="Training image-caption pairs.")
    image_size: int = Field(64, ge=16, le=1024, description="Side of every square image in pixels.")
    n_shapes: int = Field(5, ge=2, le=len(SHAPES), description=f"Enabled shapes, a prefix of {', '.join(SHAPES)}.")
    n_colours: int = Field(5, ge=2, le=len(COLOURS), description=f"Enabled colours, a prefix of {', '.join(COLOURS)}.")
    max_objects: int = Field(3, ge=1, le=5, description="Objects per scene are drawn uniformly from 1..max_objects.")
    small_size: float = Field(0.25, ge=0.05, le=0.5, description="Side of a small object as a fraction of the image side.")
    large_size: float = Field(0.4, ge=0.1, le=0.7, description="Side of a large object as a fraction of the image side.")
    size_jitter: float = Field(0.03, ge=0.0, le=0.1, description="Uniform jitter (+-) on the object size fraction.")
    texture: float = Field(0.5, ge=0.0, le=1.0, description="Strength of the background texture (noise, gradient, stripes).")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality of every image except Copydays' jpegqual attacks.")
    # captions
    subset_caption_prob: float = Field(0.5, ge=0.0, le=1.0, description="Share of captions naming only some of their image's objects (multi-object scenes get them).")
    size_mention_prob: float = Field(0.5, ge=0.0, le=1.0, description="Probability that a caption names an object's size.")
    noise: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of training pairs whose caption belongs to another image.")
    # training shards
    samples_per_shard: int = Field(1000, ge=1, le=1_000_000, description="Training samples per webdataset shard.")
    # evaluation sets
    n_zeroshot_per_class: int = Field(40, ge=1, le=100_000, description="Zero-shot test images per colour-shape class.")
    n_retrieval_images: int = Field(1000, ge=1, le=1_000_000, description="Retrieval test images (5 captions each).")
    n_landmarks: int = Field(40, ge=1, le=100_000, description="Instance-retrieval landmarks (one query each).")
    n_easy_views: int = Field(3, ge=1, le=100, description="Easy database views per landmark (small shift/scale/brightness).")
    n_hard_views: int = Field(3, ge=0, le=100, description="Hard database views per landmark (crop, rotation, occlusion, colour).")
    n_junk_views: int = Field(1, ge=0, le=100, description="Junk views per landmark (tiny or heavily occluded).")
    n_instance_distractors: int = Field(400, ge=0, le=1_000_000, description="Instance database scenes of no landmark.")
    n_copydays_originals: int = Field(100, ge=1, le=9999, description="Copydays originals (blocks).")
    n_copydays_strong: int = Field(2, ge=1, le=99, description="Strong attacks per original.")
    copydays_jpeg_qualities: tuple[Quality, ...] = Field((75, 30, 15, 5), min_length=1, description="JPEG qualities of the jpegqual block.")
    copydays_crop_pcts: tuple[CropPct, ...] = Field((20, 40, 60, 80), min_length=1, description="Surface percentages cropped away in the crops block.")
    n_copydays_distractors: int = Field(400, ge=0, le=1_000_000, description="Copy-detection distractor images.")
    n_whitening: int = Field(400, ge=0, le=1_000_000, description="Images of the separate PCA-whitening set.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Simulated detector knobs.")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.large_size - self.size_jitter <= self.small_size + self.size_jitter:
            raise ValueError(
                f"large_size - size_jitter ({self.large_size - self.size_jitter:.3f}) must exceed "
                f"small_size + size_jitter ({self.small_size + self.size_jitter:.3f}) so sizes stay distinct"
            )
        if self.n_shapes * self.n_colours < self.max_objects:
            raise ValueError(f"max_objects={self.max_objects} exceeds n_shapes * n_colours (objects in a scene differ)")
        for key in ("copydays_jpeg_qualities", "copydays_crop_pcts"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key}={list(values)} has duplicates")
        return self

    @property
    def shapes(self) -> tuple[str, ...]:
        """The enabled shapes."""
        return SHAPES[: self.n_shapes]

    @property
    def colours(self) -> tuple[str, ...]:
        """The enabled colours."""
        return COLOURS[: self.n_colours]

    @property
    def n_object_types(self) -> int:
        """Colour-shape combinations (the zero-shot classes); times 2 sizes for full object types."""
        return self.n_shapes * self.n_colours

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SynthConfig:
        """Build a profile (``smoke``, ``quick``, ``long``, ``paper``) with optional overrides (``detector`` merges key-wise)."""
        fields = dict(SYNTH_PRESETS.get(name))
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(fields.get(key), dict):
                value = {**fields[key], **value}
            fields[key] = value
        return cls.model_validate(fields)


SYNTH_PRESETS: Registry[dict[str, Any]] = Registry("data.synth.profile")
QUICK = dict(
    n_train=8000, image_size=32, n_shapes=4, n_colours=4, samples_per_shard=1000, n_zeroshot_per_class=100,
    n_retrieval_images=1000, n_landmarks=20, n_instance_distractors=200, n_copydays_originals=30,
    n_copydays_distractors=200, n_whitening=200, detector=dict(roi_dim=64),
)
SYNTH_PRESETS.register("long")({})  # the defaults: 64 px, 32k pairs (ablations/base.yaml profile long)
SYNTH_PRESETS.register("quick")(QUICK)  # 32 px, 16 object types: one run is ~2 min on a CPU core
SYNTH_PRESETS.register("smoke")(
    dict(
        n_train=512, image_size=32, n_shapes=4, n_colours=4, samples_per_shard=128,
        n_zeroshot_per_class=4, n_retrieval_images=40, n_landmarks=4, n_easy_views=2, n_hard_views=1,
        n_junk_views=1, n_instance_distractors=16, n_copydays_originals=6, n_copydays_strong=1,
        copydays_jpeg_qualities=(50, 10), copydays_crop_pcts=(30, 60), n_copydays_distractors=16,
        n_whitening=16, detector=dict(roi_dim=32),
    )
)
SYNTH_PRESETS.register("paper")(
    dict(
        n_train=200_000, image_size=96, n_shapes=8, n_colours=8, samples_per_shard=5000,
        n_zeroshot_per_class=50, n_retrieval_images=5000, n_landmarks=70, n_easy_views=4, n_hard_views=4,
        n_junk_views=2, n_instance_distractors=5000, n_copydays_originals=157, n_copydays_strong=2,
        copydays_jpeg_qualities=(75, 50, 30, 20, 15, 10, 8, 5, 3), copydays_crop_pcts=(10, 15, 20, 30, 40, 50, 60, 70, 80),
        n_copydays_distractors=5000, n_whitening=2000,
    )
)
