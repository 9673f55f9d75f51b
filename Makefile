# SPoT reproduction. A new user needs two commands: `make reproduce` and `make test`.
PROFILE ?= tiny
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
KERNEL  := spot-repro
# Run order, not name order: notebook 01 (the analysis of Sec. 3) trains on the pairs notebook 02 makes.
NOTEBOOKS := $(addprefix notebooks/,00_setup_and_base_model.ipynb 02_oracle_rectification.ipynb \
	01_implicit_regularization.ipynb 03_spot_training.ipynb 04_results_tables.ipynb)

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
# Pinned CPU numerics: the same bits on every x86-64 CPU with AVX2 (an AVX-512 CPU would otherwise run
# other kernels and MKL code paths, and train another base from the same seed). Read when torch loads.
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := AVX2
# No widget progress bars from transformers ("Loading weights") in executed notebooks.
export HF_HUB_DISABLE_PROGRESS_BARS := 1
# The kernel that notebooks run on carries the same variables, so a notebook opened in JupyterLab
# computes what `make reproduce` computes.
KERNEL_ENV := $(foreach v,ATEN_CPU_CAPABILITY MKL_CBWR PYTHONHASHSEED HF_HUB_DISABLE_PROGRESS_BARS TOKENIZERS_PARALLELISM,--env $(v) $($(v)))
# The CPU install's versions: every package, direct and transitive, as they made the committed outputs.
LOCK := requirements/cpu.lock

.PHONY: setup lock reproduce smoke-assets smoke test unit nbval bench tune figures clean distclean

setup: $(VENV)/.setup-done

# torch is pinned and installed first: on this kind of machine 2.13.0 is a local CPU wheel, and an
# unpinned torch (pulled in by a dependency) would download a multi-GB CUDA build. Everything else
# comes at the versions of the lock.
$(VENV)/.setup-done: pyproject.toml $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) torch
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (SPoT repro)" $(KERNEL_ENV) >/dev/null
	touch $@

# Refresh the lock: the newest versions pyproject.toml allows, resolved in a scratch venv. The tiny
# profile's numbers may change with them: run `make reproduce` and commit the outputs with the lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# CPU install of spot_utils[dev] (make setup installs with -c this file). Made by 'make lock';"; \
	  echo "# the committed notebook outputs were computed with exactly these versions."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK)
	rm -rf .lock-venv

# Tiny: executed in place (the committed notebooks carry the tiny outputs).
# Any other profile: executed copies go to runs/<profile>/notebooks/, committed ones stay untouched.
reproduce: setup $(if $(filter paper_smoke,$(PROFILE)),smoke-assets)
	@mkdir -p runs/$(PROFILE)/notebooks
	@set -e; for nb in $(NOTEBOOKS); do \
	  if [ "$(PROFILE)" = "tiny" ]; then out=$$nb; else out=runs/$(PROFILE)/notebooks/$$(basename $$nb); fi; \
	  echo "== $$nb -> $$out (profile $(PROFILE))"; \
	  $(BIN)/papermill $$nb $$out -k $(KERNEL) --cwd notebooks -p profile $(PROFILE) --no-progress-bar; \
	done

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

# How the tiny profile's learning rates were chosen (about 25 minutes; tables in results/<profile>/).
tune: setup
	$(BIN)/python -m spot_utils.tuning --profile $(PROFILE)

figures: reproduce

clean:
	rm -rf runs .pytest_cache .ipython .jupyter .mplconfig
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
