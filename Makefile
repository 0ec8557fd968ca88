# softclip — the two commands a new user needs: `make demo` and `make test`.
# Each creates or refreshes the virtual environment in .venv first (idempotent: it reinstalls only when
# pyproject.toml or constraints.txt changed).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-integration test-rehearsal test-slurm test-slurm-rehearsal test-all demo lint clean

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -m pip --version >/dev/null 2>&1 || bash tools/venv.sh $(PYTHON) $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make test: the default (unit) tier, minutes on a laptop CPU
test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

## make test-integration: end-to-end tiers (torchrun, subprocess training, CLI runs)
test-integration: venv
	$(PY) -m pytest -q -m integration --ignore=tests/integration/test_rehearsal.py $(PYTEST_ARGS); rc=$$?; \
	  [ $$rc -eq 5 ] && exit 0 || exit $$rc

## make test-rehearsal: `softclip reproduce --profile rehearsal` as from a fresh clone: the paper path (RN50 and
## ViT-B-32 at 224 px, MHSA over 50 regions, the whole paper suite with ImageNet's 80,000 prompts) for 3 steps
## on paper-shaped data, 2 of its 4 runs through the local processes launcher (~30 min on 2 cores)
test-rehearsal: venv
	$(PY) -m pytest -q -m integration tests/integration/test_rehearsal.py $(PYTEST_ARGS)

## make test-slurm: sweeps on the single-node SLURM cluster and PostgreSQL storage
## (start them first: bash .ci/slurm/up.sh && bash .ci/postgres/up.sh; .ci/run does this)
test-slurm: venv
	$(PY) -m pytest -q -m "slurm and not slurm_rehearsal" tests/slurm $(PYTEST_ARGS)

## make test-slurm-rehearsal: `softclip reproduce --profile rehearsal` through the SLURM launcher, the RN50 CLIP
## run as a 2-task DDP job (gloo) scoring the whole paper suite (~20-30 min on 2 cores; services as for test-slurm)
test-slurm-rehearsal: venv
	$(PY) -m pytest -q -m "slurm_rehearsal" tests/slurm $(PYTEST_ARGS)

test-all: test test-integration test-rehearsal test-slurm test-slurm-rehearsal

## make demo: the main table on the built-in synthetic benchmark (quick profile): generate SynthScenes, train CLIP
## and SoftCLIP in the paper's configuration (ROI/tag self-similarity, MHSA aggregation) x 5 seeds (10 runs, one per
## core), evaluate all four benchmarks, write the report (about 12-15 min on 2 cores; re-runs skip finished runs).
## The full quick report, with the calibration curve at 10 seeds and every ablation, is reports/quick/.
demo: venv
	$(VENV)/bin/softclip reproduce --profile quick --only main --out runs/reports/demo
	@echo "demo report: runs/reports/demo/report.md and findings.md; runs: runs/ablations/quick/"

lint: venv
	$(VENV)/bin/ruff check softclip tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
