#!/usr/bin/env bash
# A package, not a checkout: build the wheel, install it (not editable) into a fresh venv outside the checkout,
# and run `softclip reproduce --profile smoke` from an empty folder. The fresh venv borrows the dependencies of
# .venv through a .pth file (offline, seconds) but not its editable softclip, so the code under test is the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w "$work/whl" .
.venv/bin/python -m venv "$work/venv"
deps=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/softclip_ci_deps.pth"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "$work"/whl/softclip-*.whl
mkdir "$work/outside" && cd "$work/outside"
found=$("$work/venv/bin/python" -c 'import softclip; print(softclip.__file__)')
case "$found" in "$root"/*) echo "softclip resolved to the checkout ($found), not the wheel" >&2; exit 1;; esac
OMP_NUM_THREADS=1 "$work/venv/bin/softclip" reproduce --profile smoke
test -s reports/smoke/findings.md
echo "== package: softclip reproduce --profile smoke ran from the installed wheel ($found), $SECONDS s"
