"""What the numbers were computed on: the CPU model and instruction-set level of this machine, and the threads,
devices and hosts the runs' ``meta.json`` recorded. Results are bit-exact only on the same CPU family and
thread count; elsewhere they agree within their intervals."""

from __future__ import annotations

import json
import platform
from collections import Counter
from pathlib import Path

from softclip import runfiles
from softclip.report.runs import Collection

# Highest first: the level is the first whose every flag /proc/cpuinfo lists.
ISA_LEVELS = (("x86-64-v4 (AVX-512)", ("avx512f", "avx512bw", "avx512vl")), ("x86-64-v3 (AVX2)", ("avx2", "fma")),
              ("x86-64-v2 (SSE4.2)", ("sse4_2",)))  # fmt: skip



def cpuinfo(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def isa_level(flags: str) -> str:
    """The x86-64 micro-architecture level the ``flags`` line supports (or "unknown")."""
    have = set(flags.split())
    return next((name for name, need in ISA_LEVELS if set(need) <= have), "unknown")


def this_machine(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """CPU model and instruction-set level of the machine building the report."""
    info = cpuinfo(path)
    model = info.get("model name") or platform.processor() or platform.machine()
    return {"cpu": model or "unknown", "isa": isa_level(info.get("flags", "")) if info else platform.machine()}


def runs_hardware(collection: Collection) -> dict[str, str]:
    """Threads, devices and hosts of the runs, as their ``meta.json`` recorded them (counted over runs)."""
    threads: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    hosts: Counter[str] = Counter()
    unknown = 0
    for run in collection.runs:
        path = run.path / runfiles.META
        try:
            meta = json.loads(path.read_text(encoding="utf-8")) if not run.meta_source.startswith("frame:") else None
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            unknown += 1
            continue
        threads[str(meta.get("torch_threads", meta.get("threads", "?")))] += 1
        dev = meta.get("device") if isinstance(meta.get("device"), dict) else {}
        devices[str(dev.get("name") or dev.get("type") or "?")] += 1
        hosts[str(meta.get("host", "?"))] += 1
    said = lambda c: ", ".join(f"{k} ({n} runs)" for k, n in sorted(c.items())) or "not recorded"  # noqa: E731
    out = {"run threads": said(threads), "run devices": said(devices), "run hosts": said(hosts)}
    if unknown:
        out["runs without meta.json"] = f"{unknown} (a saved frame keeps no hardware record)"
    return out
