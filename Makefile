# GoldFinch pipeline. Run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONFIG ?=
ARGS ?=
NPROC ?= 1
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
MLFLOW_PORT ?= 5000
COMPARE_STEPS ?=
SYSTEM_SITE ?=
GPU_CHECK_OUT ?= runs/gpu-check
GPU_CHECK_ARGS ?=
STAMP := $(VENV)/.installed
# ARGS are split into words and unquoted as a shell would, but with brace expansion and globbing
# off, so `freeze.phases=[{until_step:8,train:[gold]},{train:[all]}]` reaches Python as typed.
LITERAL := set -f +B;
# the default data dir, built on demand (with no ARGS of theirs) by `make train` / `make compare`
# when it is missing and the run reads it: data.path or a data.mix source of CONFIG + ARGS
DEFAULT_DATA := data/default/manifest.json
# $(call default-data,train|compare,--config FILE): `make data` if DEFAULT_DATA is missing and read
define default-data
+@test -f $(DEFAULT_DATA) || { need=$$($(LITERAL) $(PY) -m pipeline.data.default_needed $(1) $(2) $(ARGS)) \
	|| exit $$?; [ "$$need" = no ] || $(MAKE) --no-print-directory data ARGS=; }
endef
# TORCH_SPEC is pip arguments (a requirement, then options such as --index-url): split on
# whitespace only, never through a shell, so `torch>=2.4` is not a redirect.
export TORCH_SPEC

.PHONY: help setup test data train eval compare bench gpu-check mlflow-ui clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install the project (TORCH_SPEC picks the torch build; SYSTEM_SITE=1 reuses an installed torch)

$(STAMP): pyproject.toml
	@command -v g++ >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && apt-get install -y -qq g++; } \
		|| { echo "make setup: DeepSpeed builds a small C++ op on first use: install g++" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(if $(filter 1,$(SYSTEM_SITE)),--system-site-packages )$(VENV)
	@$(PY) -c 'import torch' 2>/dev/null || { read -ra spec <<<"$$TORCH_SPEC" \
		&& $(PY) -m pip install -q "$${spec[@]}"; }
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: setup  ## the whole test suite (Triton interpreted where there is no CUDA device; TEST_WORKERS=2 processes)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

data: setup  ## build data/default from the Python standard library (ARGS="key=value ...")
	$(LITERAL) $(PY) -m data_prep $(ARGS)

train: setup  ## the default tiny GoldFinch run (CONFIG=, ARGS=, NPROC=; several nodes: NNODES= NODE_RANK= MASTER_ADDR= MASTER_PORT= or HOSTFILE=, see launch/train.sh)
	$(call default-data,train,$(if $(CONFIG),--config $(CONFIG)))
	$(LITERAL) NPROC=$(NPROC) CONFIG=$(CONFIG) bash launch/train.sh $(ARGS)

eval: setup  ## lm-evaluation-harness on a run (ARGS="--run runs/<name> --tasks lambada_openai,piqa [--step N] [--limit N]")
	$(LITERAL) $(PY) -m pipeline.lm_eval $(ARGS)

compare: setup  ## GoldFinch vs Finch vs Llama on the same data and tokens -> docs/RESULTS.md (COMPARE_STEPS=, ARGS=)
	$(call default-data,compare)
	$(LITERAL) COMPARE_STEPS=$(COMPARE_STEPS) $(PY) -m pipeline.compare $(ARGS)

bench: setup  ## benchmarks that print side-by-side ratios (results: docs/BENCHMARKS.md)
	$(PY) benchmarks/prefill.py
	$(PY) benchmarks/train_overhead.py
	$(PY) benchmarks/arch_speed.py
	$(PY) benchmarks/kernels.py
	$(PY) benchmarks/data_prep.py
	$(PY) benchmarks/lm_eval_reuse.py --docs 16 --repeats 3
	$(PY) benchmarks/peft_finetune.py
	$(PY) benchmarks/trainer_start.py

gpu-check:  ## one-shot GPU check -> $(GPU_CHECK_OUT)/gpu_check.jsonl (no setup: works without a package index)
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

mlflow-ui: setup  ## MLflow UI over the store `make train` writes (mlruns/), on 127.0.0.1:$(MLFLOW_PORT)
	@mkdir -p mlruns
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

clean:  ## remove the venv and caches (keeps data/, runs/, mlruns/)
	rm -rf $(VENV) build *.egg-info .pytest_cache
