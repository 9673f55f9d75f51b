"""The Makefile runs every notebook, in an order where each one finds what it reads."""
import re

from spot_utils.config import REPO_ROOT


def makefile_notebooks() -> list[str]:
    """The notebooks in the order `make reproduce` runs them (its loop, as make expands it)."""
    loop = re.search(r"for nb in (.*?); do", _dry("reproduce")).group(1)
    return [name.removeprefix("notebooks/") for name in loop.split()]


def test_every_notebook_runs_once():
    on_disk = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(makefile_notebooks()) == on_disk


def test_notebooks_run_in_name_order():
    assert makefile_notebooks() == sorted(makefile_notebooks())


def test_pairs_are_made_before_they_are_trained_on():
    order = makefile_notebooks()
    made_by = {"base": "00_setup_and_base_model.ipynb", "pairs": "01_oracle_rectification.ipynb",
               "runs": "03_spot_training.ipynb"}
    assert order.index(made_by["base"]) < order.index(made_by["pairs"]) < order.index("02_implicit_regularization.ipynb")
    assert order.index("02_implicit_regularization.ipynb") < order.index(made_by["runs"]) < order.index("04_results_tables.ipynb")


def _dry(*args):
    import subprocess

    done = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_dry_run_prints_the_plan_and_starts_no_notebook():
    out = _dry("reproduce", "PROFILE=paper", "DRY_RUN=1")
    assert "-m spot_utils.plan --profile paper --dry-run" in out and "papermill" not in out


def test_a_pretrained_model_profile_is_checked_before_its_first_notebook():
    out = _dry("reproduce", "PROFILE=paper")
    assert out.index("-m spot_utils.plan --profile paper --check-only") < out.index("papermill")
    assert "--check-only" not in _dry("reproduce")  # tiny: nothing to check
