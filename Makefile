# SPoT reproduction. A new user needs two commands: `make reproduce` and `make test`.
PROFILE ?= tiny
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
KERNEL  := spot-repro
# Name order is run order: each notebook reads what the ones before it wrote (README, "Pipeline").
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

# Jupyter, IPython and matplotlib keep their state in the repo, never in $HOME.
export JUPYTER_CONFIG_DIR  := $(CURDIR)/.jupyter/config
export JUPYTER_DATA_DIR    := $(CURDIR)/.jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.jupyter/runtime
export IPYTHONDIR          := $(CURDIR)/.ipython
export MPLCONFIGDIR        := $(CURDIR)/.mplconfig
export JUPYTER_PLATFORM_DIRS := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0
# Pinned CPU numerics: the same bits on every x86-64 CPU with AVX2, Intel or AMD. torch runs its AVX2
# kernels (an AVX-512 CPU would otherwise pick others); the tiny model's matrix products run on numpy's
# OpenBLAS held to its Haswell (AVX2) kernels and one thread, not on MKL, whose code differs by CPU
# vendor whatever MKL_CBWR says (spot_utils/tiny/portable.py); and 2 threads wherever a step does not set its
# own count, since torch's reductions split by thread. Read when torch and numpy load.
export ATEN_CPU_CAPABILITY := avx2
export OPENBLAS_CORETYPE := Haswell
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 2
# No widget progress bars from transformers ("Loading weights") in executed notebooks.
export HF_HUB_DISABLE_PROGRESS_BARS := 1
# The kernel that notebooks run on carries the same variables, so a notebook opened in JupyterLab
# computes what `make reproduce` computes.
KERNEL_ENV := $(foreach v,ATEN_CPU_CAPABILITY OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS OMP_NUM_THREADS PYTHONHASHSEED HF_HUB_DISABLE_PROGRESS_BARS TOKENIZERS_PARALLELISM,--env $(v) $($(v)))
# The CPU install's versions: every package, direct and transitive, as they made the committed outputs.
# GPU=1 (a GPU box, the paper profiles): the `gpu` extra (vLLM, DeepSpeed) with its own lock, whose
# CUDA torch and transformers are the ones vLLM pins; the CPU torch is never forced there.
# A venv set up with GPU=1 stays the GPU install for every later target (make distclean to switch back).
GPU ?= $(if $(wildcard $(VENV)/.setup-gpu),1,)
LOCK := $(if $(GPU),requirements/gpu.lock,requirements/cpu.lock)
COMMA := ,
EXTRAS := $(if $(GPU),dev$(COMMA)gpu,dev)
SETUP_STAMP := $(VENV)/.setup-$(if $(GPU),gpu,cpu)

.PHONY: setup lock reproduce robustness plan gpu-check smoke-assets smoke test unit nbval bench tune figures clean distclean

setup: $(SETUP_STAMP)

# torch is pinned and installed first: on this kind of machine 2.13.0 is a local CPU wheel, and an
# unpinned torch (pulled in by a dependency) would download a multi-GB CUDA build. Everything else
# comes at the versions of the lock.
$(SETUP_STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) torch
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (SPoT repro)" $(KERNEL_ENV) >/dev/null
	touch $@

# Refresh the lock: the newest versions pyproject.toml allows, resolved in a scratch venv. The tiny
# profile's numbers may change with them: run `make reproduce` and commit the outputs with the lock.
# GPU=1: the GPU lock, resolved for Linux x86-64 and Python 3.11 by uv without installing anything
# (no CUDA wheel is downloaded), so it can be refreshed on any machine.
lock:
ifneq ($(GPU),)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet uv
	{ echo "# GPU install of spot_utils[dev,gpu] (make setup GPU=1 installs with -c this file). Made by 'make lock GPU=1':"; \
	  echo "# uv's resolution for Linux x86-64, Python 3.11, CUDA wheels from PyPI (vLLM pins torch and transformers)."; \
	  .lock-venv/bin/uv pip compile pyproject.toml --extra dev --extra gpu --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-header --no-annotate --quiet; } > requirements/gpu.lock
	rm -rf .lock-venv
else
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# CPU install of spot_utils[dev] (make setup installs with -c this file). Made by 'make lock';"; \
	  echo "# the committed notebook outputs were computed with exactly these versions."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK)
	rm -rf .lock-venv
endif

# What only a GPU shows (vLLM, DeepSpeed ZeRO-2 in bf16, the attention kernel, memory), on one GPU in
# minutes: scripts/gpu_check.py; its JSON goes to runs/gpu_check/result.json.
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

# Tiny: executed in place (the committed notebooks carry the tiny outputs).
# Any other profile: executed copies go to runs/<profile>/notebooks/, committed ones stay untouched.
# A pretrained-model profile is checked first (weights, datasets, Oracle key, GPUs: spot_utils.plan), so a
# machine that cannot run it fails in seconds; DRY_RUN=1 prints the checks and the plan and runs nothing.
reproduce: setup $(if $(filter paper_smoke,$(PROFILE)),smoke-assets)
ifneq ($(DRY_RUN),)
	$(BIN)/python -m spot_utils.plan --profile $(PROFILE) --dry-run
else
	$(if $(filter-out tiny,$(PROFILE)),$(BIN)/python -m spot_utils.plan --profile $(PROFILE) --check-only)
	@mkdir -p runs/$(PROFILE)/notebooks
	@set -e; for nb in $(NOTEBOOKS); do \
	  if [ "$(PROFILE)" = "tiny" ]; then out=$$nb; else out=runs/$(PROFILE)/notebooks/$$(basename $$nb); fi; \
	  echo "== $$nb -> $$out (profile $(PROFILE))"; \
	  $(BIN)/papermill $$nb $$out -k $(KERNEL) --cwd notebooks -p profile $(PROFILE) --no-progress-bar; \
	done
endif

# The paper's claims decided on three base models (seeds 0, 1, 2), one post-training seed each: base 0 is
# the one `make reproduce` made (reused when cached), the others are pretrained under runs/<profile>/robustness/.
# Writes results/<profile>/robustness.* (the README shows robustness.md).
robustness: setup
	$(BIN)/python -m spot_utils.tiny.robustness --profile $(PROFILE)

# What a pretrained-model profile needs and costs (GPU-hours, Oracle requests and USD, disk per notebook),
# after checking this machine; exits 1 with one message when something is missing.
plan: setup
	$(BIN)/python -m spot_utils.plan --profile $(PROFILE)

# The paper profile's CPU smoke (configs/paper_smoke.yaml) runs on a stand-in model and question set
# written here, deterministically and without any download.
smoke-assets: setup
	$(BIN)/python -m spot_utils.smoke_assets --out runs/paper_smoke/assets

test: setup unit smoke nbval

# The paper profile's code path on CPU: all five notebooks on paper_smoke (a stand-in Qwen3, the local
# Oracle, every run of Tables 1-3 launched as 2 processes by torchrun), then checks of what they wrote.
smoke: setup
	$(MAKE) --no-print-directory reproduce PROFILE=paper_smoke
	$(BIN)/python -m pytest -q tests/check_paper_smoke.py

unit: setup
	$(BIN)/python -m pytest tests -q

# Under test the notebooks write their figures and tables to runs/nbval/ (SPOT_OUTPUT_ROOT), never over
# the committed ones; nbval compares the cells marked NBVAL_CHECK_OUTPUT with the committed outputs,
# after tests/nbval_sanitize.cfg has masked what legitimately varies (wall times, addresses).
nbval: setup
	SPOT_OUTPUT_ROOT=$(CURDIR)/runs/nbval $(BIN)/python -m pytest -q -p tests.nbval_settings --nbval-lax \
	  --nbval-kernel-name $(KERNEL) --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)
	@# the tables notebook 04 just computed must be the committed ones, byte for byte
	@set -e; for f in runs/nbval/results/tiny/*; do cmp -s "$$f" "results/tiny/$$(basename $$f)" || \
	  { echo "results/tiny/$$(basename $$f) differs from what the notebooks computed ($$f): run make reproduce"; exit 1; }; done

bench: setup
	@set -e; for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

# How the tiny profile's learning rates and betas were chosen (about 9 minutes here; tables in results/<profile>/).
tune: setup
	$(BIN)/python -m spot_utils.tuning --profile $(PROFILE)

figures: reproduce

clean:
	rm -rf runs .pytest_cache .ipython .jupyter .mplconfig
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
