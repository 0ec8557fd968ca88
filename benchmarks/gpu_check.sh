#!/usr/bin/env bash
# The prepared GPU check (issue #17): one command, well under 8 minutes on an H200.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]        # OUT_DIR: default $OUT, else /tmp/gpu_check
#
# 1. installs .whl/*.whl (benchmarks/gpu_wheels.sh downloads them; cp312 manylinux) into /tmp/site, no network;
# 2. prints versions (python, torch, CUDA, the device) and where every package softclip needs is imported from;
# 3. runs the GPU tests: python3 -m pytest -q -m gpu tests/gpu  -> OUT_DIR/pytest.xml, pytest.log, gpu_tests.json;
# 4. runs the benchmark: python3 benchmarks/gpu_bench.py      -> OUT_DIR/gpu_bench.json, bench.log;
# 5. writes OUT_DIR/gpu.md (versions, the tests' table, the benchmark's tables) and a final summary line.
# Every step has its own time limit, and a failing step does not stop the next; the exit status is 0 only if all
# passed. Everything printed also goes to OUT_DIR/check.log (7 files in all, no folders).
#
# --dry-run, or a machine without CUDA: the same steps on the CPU at tiny sizes (SOFTCLIP_GPU_DRY_RUN=1; one thread
# unless OMP_NUM_THREADS says otherwise), ~1-2 minutes on a 2-core CPU. With an interpreter that is not Python 3.12,
# the cp312 wheels are only test-installed (pip --python-version 3.12 into a scratch folder), not put on the path.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=0
OUT_DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $arg" >&2; exit 2 ;;
    *) OUT_DIR=$arg ;;
  esac
done
OUT_DIR=${OUT_DIR:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)

# time limits (seconds): 60 + 60 + 210 + 150 = 480 at most
T_INSTALL=${T_INSTALL:-60}
T_VERSIONS=${T_VERSIONS:-60}
T_TESTS=${T_TESTS:-210}
T_BENCH=${T_BENCH:-150}
T_PER_TEST=${T_PER_TEST:-150}
SITE=${SITE:-/tmp/site}

pick_python() {
  local cand
  for cand in "${PYTHON:-}" python3 .venv/bin/python; do
    if [[ -n "$cand" ]] && "$cand" -c "import torch" >/dev/null 2>&1; then
      echo "$cand"
      return
    fi
  done
  echo python3
}

step() {  # step NAME LIMIT CMD...: CMD under `timeout` (SIGINT to its process group first: pytest still reports)
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc
  echo
  echo "=== $name (limit ${limit}s) ==="
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash (exported with -f)
    timeout -s INT -k 20 "$limit" bash -c "$*"
  else
    timeout -s INT -k 20 "$limit" "$@"
  fi
  rc=$?
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "--- $name: TIMED OUT after ${limit}s"; fi
  STATUS[$name]=$rc
  TIMES[$name]=$((SECONDS - t0))
  echo "--- $name: rc=$rc in ${TIMES[$name]}s"
  return 0
}

install_wheels() {
  rm -f "$SITE/.softclip-gpu-site"  # set again only when this install succeeds
  export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
  shopt -s nullglob
  local wheels=(.whl/*.whl)
  shopt -u nullglob
  if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "no .whl/*.whl: using the interpreter's own packages (run benchmarks/gpu_wheels.sh where PyPI is reachable)"
    return 0
  fi
  local ver
  ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
  if [[ "$ver" != "3.12" ]]; then
    echo "Python $ver here: test-installing the ${#wheels[@]} cp312 wheels into $SITE-cp312-check (not used)"
    "${pip[@]}" --python-version 3.12 --implementation cp --only-binary=:all: --target "$SITE-cp312-check" "${wheels[@]}"
    return $?
  fi
  echo "installing ${#wheels[@]} wheels into $SITE"
  if ! "$PY" -m pip --version >/dev/null 2>&1 || ! "${pip[@]}" --target "$SITE" "${wheels[@]}"; then
    echo "pip failed or is missing: unpacking the wheels into $SITE instead"
    "$PY" - "$SITE" "${wheels[@]}" <<'EOF' || return 1
import sys, zipfile
site = sys.argv[1]
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(site)
    print("unpacked", wheel)
EOF
  fi
  touch "$SITE/.softclip-gpu-site"
}

versions() {
  "$PY" - "$OUT_DIR/gpu.md" <<'EOF'
import importlib, os, platform, sys
lines = [f"python {platform.python_version()} ({sys.executable}); {platform.platform()}"]
try:
    import torch
    lines.append(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                 f"cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
                     f"{torch.cuda.device_count()} visible, bf16 supported: {torch.cuda.is_bf16_supported()}")
except Exception as err:  # noqa: BLE001
    lines.append(f"torch: {type(err).__name__}: {err}")
from importlib import metadata
site = os.environ.get("SITE", "/tmp/site")
repo = os.path.join(os.getcwd(), "softclip")
dists = metadata.packages_distributions()
missing = []
for name in ["torch", "torchvision", "numpy", "PIL", "yaml", "tqdm", "pydantic", "pydantic_core", "typing_extensions",
             "open_clip", "open_clip_train", "timm", "huggingface_hub", "safetensors", "regex", "ftfy", "faiss",
             "webdataset", "braceexpand", "pandas", "scipy", "optuna", "sqlalchemy", "submitit", "cloudpickle",
             "pytest", "pytest_timeout", "softclip"]:
    try:
        mod = importlib.import_module(name)
        where = getattr(mod, "__file__", "") or ""
        origin = ("wheel in " + site if where.startswith(site) else "the repo" if where.startswith(repo)
                  else "preinstalled " + where.split(os.sep + name)[0])
        version = getattr(mod, "__version__", None)
        if not isinstance(version, str):
            try:
                version = metadata.version(dists.get(name, [name])[0])
            except Exception:  # noqa: BLE001
                version = "?"
        extra = f" (GPUs seen: {mod.get_num_gpus()})" if name == "faiss" and hasattr(mod, "get_num_gpus") else ""
        lines.append(f"  {name} {version} from {origin}{extra}")
    except Exception as err:  # noqa: BLE001
        missing.append(name)
        lines.append(f"  {name}: NOT IMPORTABLE ({type(err).__name__}: {str(err)[:120]})")
for mod in ["softclip.train", "softclip.evaluation.search", "softclip.evaluation.harness", "open_clip_train.train"]:
    try:
        importlib.import_module(mod)
    except Exception as err:  # noqa: BLE001
        missing.append(mod)
        lines.append(f"  import {mod} FAILED: {type(err).__name__}: {str(err)[:200]}")
print("\n".join(lines))
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write("## Environment\n\n```\n" + "\n".join(lines) + "\n```\n\n")
sys.exit(1 if missing else 0)
EOF
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv || true
  fi
}

run_tests() {
  local args=(-q -m gpu tests/gpu -p no:cacheprovider -rA --junitxml="$OUT_DIR/pytest.xml" -o junit_family=xunit1)
  if "$PY" -m pytest --help 2>/dev/null | grep -q -- "--timeout="; then
    args+=(--timeout="$T_PER_TEST")
  else
    echo "pytest-timeout not available: no per-test limit (the step's limit still applies)"
  fi
  "$PY" -m pytest "${args[@]}" 2>&1 | tee -i "$OUT_DIR/pytest.log"
  return "${PIPESTATUS[0]}"
}

summarise_tests() {
  "$PY" - "$OUT_DIR/pytest.xml" "$OUT_DIR/gpu_tests.json" "$OUT_DIR/gpu.md" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path
xml, js, md = map(Path, sys.argv[1:4])
KEYS = ["max_rel_diff", "tolerance", "resume_max_abs_diff", "run_to_run_max_abs_diff", "bit_identical", "library_error",
        "fp32_max_abs_diff", "embedder_min_cosine", "search", "max_rel_term_err", "max_rel_grad_err"]
measured = json.loads(js.read_text()).get("tests", {}) if js.is_file() else {}
lines = ["## GPU tests (`pytest -m gpu tests/gpu`)", ""]
counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
if not xml.is_file():
    lines.append("No junit XML: pytest did not finish (see pytest.log).")
    counts["error"] = 1
else:
    lines += ["| test | outcome | s | measured |", "|---|---|---:|---|"]
    for tc in ET.parse(xml).getroot().iter("testcase"):
        outcome, note = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                note = (el.get("message") or "").splitlines()[0][:160] if el.get("message") else ""
        counts[outcome] += 1
        name = tc.get("name")
        got = measured.get(name, {})
        shown = "; ".join(f"{k}={got[k]:.3g}" if isinstance(got[k], float) else f"{k}={got[k]}" for k in KEYS if k in got)
        text = " ".join(x for x in (shown, f"**{note}**" if note else "") if x).replace("|", "/")
        lines.append(f"| {name} | {outcome} | {float(tc.get('time', 0)):.1f} | {text} |")
summary = ", ".join(f"{v} {k}" for k, v in counts.items())
lines += ["", f"Tests: {summary}.", ""]
with md.open("a", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
print("tests:", summary)
EOF
}

main() {
  local t0=$SECONDS
  declare -gA STATUS TIMES
  PY=$(pick_python)
  if [[ $DRY -eq 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "no CUDA device visible to $PY: running the dry run (CPU, tiny sizes)"
    DRY=1
  fi
  export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
  export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1 SOFTCLIP_GPU_OUT="$OUT_DIR" SITE PY OUT_DIR T_PER_TEST
  export -f install_wheels versions run_tests
  local mode="GPU"
  if [[ $DRY -eq 1 ]]; then
    mode="DRY RUN (CPU, tiny sizes)"
    export SOFTCLIP_GPU_DRY_RUN=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  fi
  rm -f "$OUT_DIR"/{pytest.xml,pytest.log,gpu_tests.json,gpu_bench.json,bench.log}
  printf '# GPU check: %s\n\n%s, `bash benchmarks/gpu_check.sh%s`, commit %s\n\n' "$mode" "$(date -u +%FT%TZ)" \
    "$([[ $DRY -eq 1 ]] && echo ' --dry-run')" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$OUT_DIR/gpu.md"
  echo "gpu_check: $mode; python $PY; output in $OUT_DIR"

  step install "$T_INSTALL" install_wheels
  if [[ -f "$SITE/.softclip-gpu-site" && "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "3.12" ]]; then
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  echo "PYTHONPATH=$PYTHONPATH"
  step versions "$T_VERSIONS" versions
  step tests "$T_TESTS" run_tests
  summarise_tests || echo "could not summarise the tests"
  local bench_args=(--out "$OUT_DIR")
  [[ $DRY -eq 1 ]] && bench_args+=(--dry-run)
  step bench "$T_BENCH" bash -c '"$0" benchmarks/gpu_bench.py "$@" 2>&1 | tee -i "$SOFTCLIP_GPU_OUT/bench.log"; exit "${PIPESTATUS[0]}"' \
    "$PY" "${bench_args[@]}"

  local failed=0 parts=() name
  for name in install versions tests bench; do
    local rc=${STATUS[$name]:-none}
    [[ "$rc" == 0 ]] || failed=1
    parts+=("$name=$([[ "$rc" == 0 ]] && echo ok || echo "FAILED(rc=$rc)") ${TIMES[$name]:-?}s")
  done
  local line
  line="GPU CHECK ($mode): $([[ $failed -eq 0 ]] && echo PASSED || echo FAILED): ${parts[*]}; total $((SECONDS - t0))s; files in $OUT_DIR"
  printf '\n## Summary\n\n%s\n' "$line" >>"$OUT_DIR/gpu.md"
  echo
  echo "$line"
  return $failed
}

main 2>&1 | tee "$OUT_DIR/check.log"
exit "${PIPESTATUS[0]}"
