"""Print softclip's import graph by room (top-level module or subpackage): ``room -> rooms it imports``.

Run from the repository root: ``python tools/import_graph.py`` (rooms) or ``python tools/import_graph.py
--modules`` (every module). The graph is read from the source (lazy imports included) by the same code that
``tests/unit/test_imports.py`` uses to refuse import cycles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.unit.test_imports import module_graph  # noqa: E402


def room(module: str) -> str:
    """``softclip.objective.targets`` -> ``objective``; ``softclip.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="one line per module instead of per room")
    args = parser.parse_args(argv)
    graph = module_graph()
    if not args.modules:
        rooms: dict[str, set[str]] = {}
        for mod, deps in graph.items():
            rooms.setdefault(room(mod), set()).update(room(d) for d in deps)
        graph = {k: v - {k} for k, v in rooms.items()}
    for name in sorted(graph):
        print(f"{name} -> {', '.join(sorted(graph[name])) or '(nothing)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
