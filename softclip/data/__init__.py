"""Data: the SynthScenes generator and readers for the real formats (training and evaluation)."""
