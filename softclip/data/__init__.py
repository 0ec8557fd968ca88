"""Data: the SynthScenes generator and readers for the real formats (training and evaluation)."""

from softclip.data.badsamples import DataError

__all__ = ["DataError"]
