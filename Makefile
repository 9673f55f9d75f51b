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

.PHONY: setup reproduce test unit nbval bench tune figures clean distclean

setup: $(VENV)/.setup-done

# torch is pinned and installed first: on this kind of machine 2.13.0 is a local CPU wheel, and an
# unpinned torch (pulled in by a dependency) would download a multi-GB CUDA build.
$(VENV)/.setup-done: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (SPoT repro)" >/dev/null
	touch $@

# Tiny: executed in place (the committed notebooks carry the tiny outputs).
# Any other profile: executed copies go to runs/<profile>/notebooks/, committed ones stay untouched.
reproduce: setup
	@mkdir -p runs/$(PROFILE)/notebooks
	@set -e; for nb in $(NOTEBOOKS); do \
	  if [ "$(PROFILE)" = "tiny" ]; then out=$$nb; else out=runs/$(PROFILE)/notebooks/$$(basename $$nb); fi; \
	  echo "== $$nb -> $$out (profile $(PROFILE))"; \
	  $(BIN)/papermill $$nb $$out -k $(KERNEL) --cwd notebooks -p profile $(PROFILE) --no-progress-bar; \
	done

test: setup unit nbval

unit: setup
	$(BIN)/python -m pytest tests -q

nbval: setup
	$(BIN)/python -m pytest -q --nbval-lax --nbval-kernel-name $(KERNEL) $(NOTEBOOKS)

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
