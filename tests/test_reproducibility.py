"""Same seed, same numbers on any x86-64 CPU: the numerics are pinned wherever notebooks run, the
install is locked, nbval checks result cells, and running the tests leaves committed files alone."""
import json
import os
import re
import subprocess
import sys
import warnings
from importlib import metadata

import pytest

from spot_utils import environment
from spot_utils.config import REPO_ROOT, load_profile
from spot_utils.environment import NUMERICS_PINS
from spot_utils.progress import LineBar
from spot_utils.tiny import portable

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAKEFILE = (REPO_ROOT / "Makefile").read_text()
# an absolute path into the repository (whatever machine made it): /any/dirs/{configs,runs,...}/
MACHINE_PATH = re.compile(r"/[\w.-]+(/[\w.-]+)*/(configs|runs|notebooks|spot_utils|results|figures)/")
KERNEL_SPEC = REPO_ROOT / ".venv" / "share" / "jupyter" / "kernels" / "spot-repro" / "kernel.json"


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        parts += ["".join(v) if isinstance(v, list) else str(v) for v in out.get("data", {}).values()]
    return "\n".join(parts)


# -----------------------------------------------------------------------------
# pinned numerics


def test_makefile_exports_the_pins():
    for name, value in NUMERICS_PINS.items():
        assert re.search(rf"^export {name} := {value}$", MAKEFILE, re.M), name


def test_the_registered_kernel_carries_the_pins():
    # make setup registers the kernel that papermill, nbval and JupyterLab start: it must set the pins
    # itself, or a notebook opened by hand would compute other numbers on an AVX-512 CPU
    if not KERNEL_SPEC.exists():
        pytest.skip("no .venv kernel (run make setup)")
    env = json.loads(KERNEL_SPEC.read_text()).get("env", {})
    assert {k: env.get(k) for k in NUMERICS_PINS} == NUMERICS_PINS


def test_a_process_started_without_the_pins_is_told_so():
    code = "import json; from spot_utils import environment; print(json.dumps(environment.numerics_problems()))"
    env = {k: v for k, v in os.environ.items() if k not in NUMERICS_PINS}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    problems = json.loads(out)
    assert any("ATEN_CPU_CAPABILITY=(unset)" in p for p in problems)
    assert any("OPENBLAS_CORETYPE=(unset)" in p for p in problems)


def test_unpinned_numerics_warn_loudly(monkeypatch):
    monkeypatch.setattr(environment, "numerics_problems", lambda: ["OPENBLAS_CORETYPE=(unset) (want Haswell)"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        environment.warn_if_numerics_unpinned()
    assert len(caught) == 1 and "not pinned" in str(caught[0].message) and "OPENBLAS_CORETYPE=Haswell" in str(caught[0].message)


def test_this_process_runs_pinned():  # make unit exports the pins; a bare pytest run is told why this fails
    assert environment.numerics_problems() == [], "run the tests through make (it exports the pins)"


def test_environment_report_shows_the_pins():
    report = environment.environment_report()
    assert {k: report[k] for k in NUMERICS_PINS} == NUMERICS_PINS
    assert report["torch CPU kernels"] in ("AVX2", "DEFAULT")


# -----------------------------------------------------------------------------
# locked versions


def lock_pins(path=REPO_ROOT / "requirements" / "cpu.lock") -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split(";")[0].strip().split("==") for line in lines if line and not line.startswith("#"))


def test_setup_installs_from_the_lock():
    assert "-c $(LOCK) -e '.[$(EXTRAS)]'" in MAKEFILE and "-c $(LOCK) torch" in MAKEFILE
    assert "LOCK := $(if $(GPU),requirements/gpu.lock,requirements/cpu.lock)" in MAKEFILE
    assert "EXTRAS := $(if $(GPU),dev$(COMMA)gpu,dev)" in MAKEFILE
    assert lock_pins()["torch"] == "2.13.0"


def test_the_gpu_lock_has_what_vllm_pins_and_no_cpu_torch():
    pins = lock_pins(REPO_ROOT / "requirements" / "gpu.lock")
    assert {"vllm", "deepspeed", "trl", "papermill"} <= pins.keys()
    assert pins["torch"] != "2.13.0" and "+cpu" not in pins["torch"]  # the CUDA build vLLM was built for
    major, minor = (int(x) for x in pins["transformers"].split(".")[:2])
    assert (5, 0) <= (major, minor) < (5, 21)  # pyproject's lower bound, vLLM 0.33's upper one


def test_the_environment_matches_the_lock():
    installed = {}
    for name, version in lock_pins().items():
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    wrong = {n: (v, installed[n]) for n, v in lock_pins().items() if (installed[n] or "").split("+")[0] != v}
    assert not wrong, f"installed versions differ from requirements/cpu.lock (make setup): {wrong}"


# -----------------------------------------------------------------------------
# nbval checks results, and leaves the tree alone


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_checked_numeric_output(path):
    checked = [c for c in code_cells(path) if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert any(re.search(r"\d+\.\d", output_text(c)) for c in checked), f"{path.name}: no checked number"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_are_plain_text_and_carry_no_machine_path(path):
    for i, cell in enumerate(code_cells(path)):
        for out in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), \
                f"{path.name} code cell {i}: a progress widget (renders as '0%' outside a live Jupyter)"
        text = output_text(cell)
        where = MACHINE_PATH.search(text)
        assert not where, f"{path.name} code cell {i}: prints a path of the machine that ran it: {where.group(0)}"
        assert not re.search(r"np\.float64\(", text), f"{path.name} code cell {i}: a numpy repr"


def test_nbval_writes_figures_and_tables_under_runs():
    rule = MAKEFILE.split("\nnbval:")[1].split("\n\n")[0]
    assert "SPOT_OUTPUT_ROOT=$(CURDIR)/runs/nbval" in rule and "--nbval-sanitize-with" in rule


def test_output_root_redirects_figures_and_tables(tmp_path, monkeypatch):
    from spot_utils.plots import figure_dir
    from spot_utils.tables import tables_dir

    cfg = load_profile("tiny")
    assert figure_dir(cfg) == REPO_ROOT / "figures"
    monkeypatch.setenv("SPOT_OUTPUT_ROOT", str(tmp_path))
    assert figure_dir(cfg) == tmp_path / "figures" and tables_dir(cfg) == tmp_path / "results" / "tiny"


def test_repo_relative_paths():
    assert environment.repo_relative(REPO_ROOT / "runs" / "tiny") == "runs/tiny"
    assert environment.repo_relative("/somewhere/else") == "/somewhere/else"


# -----------------------------------------------------------------------------
# text progress bars


def test_a_line_bar_prints_a_few_whole_lines(capsys):
    for _ in LineBar(range(1000), desc="work"):
        pass
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "\r" not in "".join(lines)  # 0%, 25%, 50%, 75%, 100%
    assert lines[0].startswith("work:   0%") and "1000/1000" in lines[-1]


def test_a_line_bar_prints_where_it_stopped(capsys):
    with LineBar(total=10, desc="work") as bar:
        bar.update(3)
    assert "3/10" in capsys.readouterr().out.splitlines()[-1]


def test_the_numerics_fingerprint_is_the_same_bits_every_time():
    assert portable.numerics_fingerprint(threads=1) == portable.numerics_fingerprint(threads=1)


def test_numerics_probe_is_repeatable_and_matches_the_saved_machines():
    """scripts/numerics_probe.py: the same bits twice in one process (so a differing line on another machine
    is the CPU, not the probe), and the operations of the saved AMD hashes are the ones it probes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("numerics_probe", REPO_ROOT / "scripts" / "numerics_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    first = probe.hashes(threads=(2,))
    assert probe.hashes(threads=(2,)) == first
    for saved in (REPO_ROOT / "results" / "numerics").glob("probe_*.json"):
        names = set(json.loads(saved.read_text())["hashes"])
        assert {n for n in names if n.endswith("| 2 thread(s)")} == set(first), saved
