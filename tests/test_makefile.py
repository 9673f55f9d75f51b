"""The Makefile runs every notebook, in an order where each one finds what it reads."""
import re

from spot_utils.config import REPO_ROOT


def makefile_notebooks() -> list[str]:
    text = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
    names = re.search(r"^NOTEBOOKS := \$\(addprefix notebooks/,(.*)\)$", text, re.M).group(1).split()
    return [n.strip() for n in names]


def test_every_notebook_runs_once():
    on_disk = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(makefile_notebooks()) == on_disk


def test_pairs_are_made_before_they_are_trained_on():
    order = makefile_notebooks()
    made_by = {"base": "00_setup_and_base_model.ipynb", "pairs": "02_oracle_rectification.ipynb",
               "runs": "03_spot_training.ipynb"}
    assert order.index(made_by["base"]) < order.index(made_by["pairs"]) < order.index("01_implicit_regularization.ipynb")
    assert order.index("01_implicit_regularization.ipynb") < order.index(made_by["runs"]) < order.index("04_results_tables.ipynb")
