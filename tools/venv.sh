#!/usr/bin/env bash
# Create the project's virtual environment: `tools/venv.sh PYTHON VENV` (called by `make venv`).
#
# `python -m venv` bootstraps pip through ensurepip, which hides why it failed (a CI machine once stopped here
# with only "ensurepip ... returned non-zero exit status 1"). So each step that can fail says what it tried, and
# the fallbacks need nothing from the network:
#   1. python -m venv VENV                          (the usual way)
#   2. the same with TMPDIR inside the project      (a full or unwritable /tmp breaks ensurepip's wheel copy)
#   3. python -m venv --without-pip VENV, then pip installed into it from the wheel that ships with Python
#      (ensurepip's bundled wheel, --no-index), with pip's own output shown.
# On failure: a one-line error naming the step and the disk/tmp state, exit 1.
set -uo pipefail

PYTHON="${1:?usage: tools/venv.sh PYTHON VENV}"
VENV="${2:?usage: tools/venv.sh PYTHON VENV}"

say() { echo "[venv] $*" >&2; }
has_pip() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }
state() {
  local tmp="${TMPDIR:-/tmp}"
  echo "python=$("$PYTHON" --version 2>&1); free on $(dirname "$VENV"): $(df -Ph "$(dirname "$VENV")" | awk 'NR==2 {print $4}'); free on $tmp: $(df -Ph "$tmp" 2>/dev/null | awk 'NR==2 {print $4}')"
}

if ! "$PYTHON" -c 'import venv' 2>/dev/null; then
  echo "error: $PYTHON has no venv module ($(state)); install it (Debian: python3-venv) or pass PYTHON=..." >&2
  exit 1
fi

# 1. The usual way.
if "$PYTHON" -m venv "$VENV" && has_pip; then exit 0; fi
say "step 1 failed: $PYTHON -m venv $VENV ($(state)); retrying with TMPDIR inside the project"
rm -rf "$VENV"

# 2. A private temporary directory on the project's own disk.
tmp="$(cd "$(dirname "$VENV")" && pwd)/.venv-tmp"
mkdir -p "$tmp"
if TMPDIR="$tmp" "$PYTHON" -m venv "$VENV" && has_pip; then rm -rf "$tmp"; exit 0; fi
say "step 2 failed: TMPDIR=$tmp $PYTHON -m venv $VENV; trying --without-pip and the bundled pip wheel"
rm -rf "$VENV"

# 3. No ensurepip: an empty venv, then pip from the wheel that ships with this Python, run from the wheel itself.
wheel="$("$PYTHON" - <<'EOF'
import glob, os
try:
    import ensurepip
except ImportError:
    raise SystemExit(0)
found = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))
print(found[-1] if found else "")
EOF
)"
if [ -z "$wheel" ]; then
  echo "error: $PYTHON -m venv failed and this Python ships no pip wheel (ensurepip/_bundled) ($(state))" >&2
  rm -rf "$tmp"
  exit 1
fi
if TMPDIR="$tmp" "$PYTHON" -m venv --without-pip "$VENV" \
   && TMPDIR="$tmp" PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" "$wheel/pip" install --no-index --no-cache-dir "$wheel" \
   && has_pip; then
  rm -rf "$tmp"
  say "created $VENV with pip from $(basename "$wheel") (ensurepip failed; see above)"
  exit 0
fi
rm -rf "$tmp"
echo "error: could not create $VENV with $PYTHON: venv, venv with TMPDIR=$tmp and the bundled pip wheel all failed ($(state))" >&2
exit 1
