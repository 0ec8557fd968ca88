"""The YAML that ships with the package: ablation, sweep and evaluation files, the paper's reference numbers.

In a checkout they are the top-level ``ablations/``, ``sweeps/``, ``eval/`` and ``reports/paper_reference.yaml``;
an installed wheel carries the same files as package data (``softclip/_files/``, links to those folders in the
checkout). A path the user gives that exists always wins.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: the folders (and files) shipped as package data, relative to a checkout's root
SHIPPED = ("ablations", "sweeps", "eval", "reports/paper_reference.yaml")


def data_file(relative: str | Path) -> Path:
    """The shipped file ``relative`` (e.g. ``ablations/main.yaml``): the checkout's copy when there is one,
    else the installed package data."""
    checkout = Path(__file__).resolve().parents[1] / relative
    if checkout.exists():
        return checkout
    return Path(str(importlib.resources.files("softclip").joinpath("_files", *Path(relative).parts)))


def resolve(path: str | Path) -> Path:
    """``path`` when it exists (a user's file wins), else the shipped file of that relative name when it is one
    (``eval/synthetic.yaml`` run outside a checkout), else ``path`` unchanged (the caller reports it missing)."""
    given = Path(path)
    if given.exists() or given.is_absolute() or not any(given.as_posix().startswith(s) for s in SHIPPED):
        return given
    shipped = data_file(given)
    return shipped if shipped.exists() else given
