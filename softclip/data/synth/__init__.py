"""SynthScenes: the built-in synthetic benchmark (scenes of coloured shapes, many-to-many captions, a simulated
detector), written in the real datasets' formats. Entry point: ``generate(out_dir, spec, seed)``."""

from softclip.data.synth.card import VERSION
from softclip.data.synth.generate import cached_card, generate
from softclip.data.synth.spec import COLOURS, SHAPES, SIZES, SYNTH_PRESETS, DetectorConfig, SynthConfig

__all__ = [
    "COLOURS", "SHAPES", "SIZES", "SYNTH_PRESETS", "VERSION", "DetectorConfig", "SynthConfig", "cached_card", "generate",
]
