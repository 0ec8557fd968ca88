"""``softclip report RUNS... --out reports/NAME``: argument set-up and entry point (cli.py registers them)."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
from importlib import metadata

from softclip.report.discover import ReportError
from softclip.report.hardware import this_machine
from softclip.report.index import build_report
from softclip.report.paper import DEFAULT_REFERENCE

PACKAGES = ("softclip", "numpy", "pandas", "scipy", "matplotlib", "seaborn")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``softclip report``."""
    p.add_argument("runs", nargs="+", metavar="RUNS",
                   help="run folders, folders to search recursively (e.g. runs/ablations), or quoted globs")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder, e.g. reports/quick")
    p.add_argument("--title", default="softclip report", help="title of report.md / report.html")
    p.add_argument("--baseline", default=None,
                   help="variant every ablation that has it is compared with (default: each variant's own)")  # fmt: skip
    p.add_argument("--metrics", default=None,
                   help="comma-separated benchmark/metric table columns (default: the headline set)")  # fmt: skip
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples per comparison (default 10000)")
    p.add_argument("--paper-reference", default=str(DEFAULT_REFERENCE), help="YAML of the paper's numbers")
    p.add_argument("--ablations", default="ablations",
                   help="folder of ablation files whose primary families apply when the runs carry none")  # fmt: skip


def machine_info() -> dict[str, str]:
    """Where the report was built: platform, CPU model and instruction-set level, Python, CPU count and the
    versions of the packages it used."""
    info = {"platform": platform.platform(), **this_machine(), "python": platform.python_version(),
            "cpus": str(os.cpu_count())}  # fmt: skip
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    return info


def command_line(args: argparse.Namespace) -> str:
    """The command as it would be typed again (options at their defaults left out)."""
    words = ["softclip", "report", *args.runs, "--out", args.out]
    for flag, value, default in (("--title", args.title, "softclip report"), ("--baseline", args.baseline, None),
                                 ("--metrics", args.metrics, None), ("--n-boot", args.n_boot, 10000),
                                 ("--paper-reference", args.paper_reference, str(DEFAULT_REFERENCE)),
                                 ("--ablations", getattr(args, "ablations", "ablations"), "ablations")):  # fmt: skip
        if value != default:
            words += [flag, str(value)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """Build the report; prints the path of report.md. Raises ReportError on bad input (exit 2 in the CLI)."""
    if args.n_boot < 1:
        raise ReportError(f"--n-boot must be >= 1, got {args.n_boot}")
    path = build_report(
        args.runs, args.out, title=args.title, baseline=args.baseline, metrics=args.metrics,
        command=command_line(args), machine=machine_info(), n_boot=args.n_boot,
        paper_reference=args.paper_reference, ablations=getattr(args, "ablations", "ablations"),
    )  # fmt: skip
    print(path)
    return 0
