#!/usr/bin/env bash
# Download, on this machine, the wheels the GPU machine lacks into .whl/ (git-ignored through .git/info/exclude).
#
# The GPU machine has Python 3.12 with torch (CUDA), timm (hence torchvision, pillow, pyyaml, huggingface_hub,
# safetensors, tqdm), pandas, seaborn, numpy, pytest, cloudpickle and no network; everything else softclip imports
# travels as cp312 manylinux / pure-python wheels, pinned to the versions of this checkout's .venv, and
# benchmarks/gpu_check.sh installs them with `pip install --no-index --no-deps --target /tmp/site`.
#
# faiss: faiss-cpu. faiss-gpu-cu12 1.14.1.post1 is a 46 MiB cp312 wheel (over the 40 MiB this folder can spare) and
# needs the CUDA 12 cuBLAS wheel (nvidia-cublas-cu12, 554 MiB), which a cu130 torch does not bring; faiss-gpu 1.15.1
# is 129 MiB. So search runs in CPU FAISS on GPU-computed embeddings there (tests/gpu records which).
#
#   bash benchmarks/gpu_wheels.sh            # needs PyPI; prints every wheel and the total (must stay < 50 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_PIP=${VENV_PIP:-.venv/bin/pip}
DEST=.whl
LIMIT_MIB=50
# distributions to ship (names as in `pip freeze`, compared case- and separator-insensitively)
PACKAGES=(
  open_clip_torch ftfy wcwidth regex
  pydantic pydantic-core annotated-types typing-inspection typing_extensions
  faiss-cpu webdataset braceexpand
  optuna alembic sqlalchemy colorlog Mako MarkupSafe submitit
  pytest-timeout
)

PY=python3
if ! "$PY" -m pip --version >/dev/null 2>&1; then PY=.venv/bin/python; fi

freeze=$("$VENV_PIP" freeze 2>/dev/null)
specs=()
for pkg in "${PACKAGES[@]}"; do
  # the pinned line whose name matches, case- and separator-insensitively (PEP 503 normalisation)
  line=$(awk -F'==' -v want="$pkg" '
    function norm(s) { s = tolower(s); gsub(/[-_.]+/, "-", s); return s }
    NF == 2 && norm($1) == norm(want) { print; exit }' <<<"$freeze")
  if [[ -z "$line" ]]; then
    echo "gpu_wheels: $pkg is not installed in .venv (pip freeze); cannot pin it" >&2
    exit 1
  fi
  specs+=("$line")
done

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
echo "downloading ${#specs[@]} wheels for cp312 manylinux x86_64 into $DEST/: ${specs[*]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${specs[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
grep -qxF '/.whl/' "$exclude" || echo '/.whl/' >>"$exclude"

count=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [[ "$count" -ne "${#specs[@]}" ]]; then
  echo "gpu_wheels: expected ${#specs[@]} wheels, found $count" >&2
  exit 1
fi
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 1048576, $9}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
awk -v w="$total" -v t="$tree" -v lim="$LIMIT_MIB" 'BEGIN {
  printf "total: %.2f MiB of wheels (limit %d MiB); working tree %.2f MiB; together %.2f MiB of the 64 MiB a device run carries\n",
         w / 1048576, lim, t / 1048576, (w + t) / 1048576
  exit (w / 1048576 > lim || (w + t) / 1048576 > 64) ? 1 : 0 }'
