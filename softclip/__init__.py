"""softclip: the reference suite for SoftCLIP (arXiv 2303.17561)."""

__version__ = "0.1.0"
