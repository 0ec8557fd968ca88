# softclip — the two commands a new user needs: `make demo` and `make test`.
# Each creates or refreshes the virtual environment in .venv first (idempotent: it reinstalls only when
# pyproject.toml or constraints.txt changed).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-integration test-slurm test-all demo lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make test: the default (unit) tier, minutes on a laptop CPU
test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

## make test-integration: end-to-end tiers (torchrun, subprocess training, CLI runs)
test-integration: venv
	$(PY) -m pytest -q -m integration $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

## make test-slurm: sweeps on the single-node SLURM cluster and PostgreSQL storage
## (start them first: bash .ci/slurm/up.sh && bash .ci/postgres/up.sh; .ci/run does this)
test-slurm: venv
	$(PY) -m pytest -q -m slurm tests/slurm $(PYTEST_ARGS)

test-all: test test-integration test-slurm

## make demo: the main job on the built-in synthetic benchmark — generate SynthScenes (smoke size), train
## SoftCLIP with the paper's defaults, evaluate on all four benchmarks (≈ 2 min on 2 cores)
demo: venv
	$(VENV)/bin/softclip train ablations/base.yaml --profile smoke --run-dir runs/demo --overwrite train.threads=1
	@echo "demo run: runs/demo (config.yaml, metrics.jsonl, checkpoints/, eval/*.json)"

lint: venv
	$(VENV)/bin/ruff check softclip tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
