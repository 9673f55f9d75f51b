"""What `make smoke` (make reproduce PROFILE=paper_smoke) must leave in runs/paper_smoke/: the paper
profile's five notebooks executed on CPU, every run of Tables 1-3 trained by its own 2-process launch
and evaluated on the nine suites, and the tables written. Run by `make smoke` after the notebooks
(not collected by `make unit`: it reads what they wrote)."""
import json
from pathlib import Path

import pandas as pd

from spot_utils import claims, experiments, paper_suites
from spot_utils.config import load_profile

PROFILE = load_profile("paper_smoke")
RUNS = PROFILE.runs
NOTEBOOKS = ("00_setup_and_base_model", "01_oracle_rectification", "02_implicit_regularization",
             "03_spot_training", "04_results_tables")


def test_every_notebook_ran_to_the_end_without_an_error():
    for name in NOTEBOOKS:
        nb = json.loads((RUNS / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert all(c.get("execution_count") for c in code), f"{name}: a code cell did not run"


def test_notebook00_loaded_the_stand_in_and_notebook01_made_pairs_from_its_errors():
    nb00 = (RUNS / "notebooks" / "00_setup_and_base_model.ipynb").read_text()
    assert "weights on this machine: YES" in nb00 and "Overall Avg" in nb00
    data = RUNS / "data"
    errors = [json.loads(line) for line in (data / "errors.jsonl").read_text().splitlines()]
    assert errors and (data / "correct.jsonl").read_text().strip()  # the stand-in gets some right, some wrong
    assert "\\boxed" in errors[0]["prompt"]  # asked with the evaluation's math instruction
    assert (data / "pairs_gamma0.6.jsonl").read_text().strip(), "no rectified pair survived"
    assert (data / "sft_direct.jsonl").read_text().strip()


def test_the_base_and_every_run_are_scored_on_the_nine_suites():
    suites = set(paper_suites.SUITES)
    assert set(pd.read_csv(RUNS / "base" / "eval_rows.csv")["suite"]) == suites
    specs = experiments.table_specs(PROFILE) + [experiments.RunSpec("sft_plus", "hot_pairs", 0)]
    for spec in specs:
        folder = experiments.run_dir(PROFILE, spec)
        summary = json.loads((folder / experiments.RUN_FILE).read_text())
        assert set(pd.read_csv(folder / "eval_test.csv")["suite"]) == suites, spec.name
        assert "Overall Avg" in summary["headline"] and summary["steps"] == PROFILE.training.max_steps, spec.name
        log = (folder / "launch.log").read_text()  # launched as the paper launches: one job of 2 processes
        assert log.startswith("$ ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 "), spec.name
        commands = [line for line in log.splitlines() if line.startswith("$ ")]  # then scored by one plain process
        assert commands[0].endswith(" --skip-eval") and commands[1].startswith("$ python -m spot_utils.experiments ")
        assert commands[1].endswith(" --eval-only") and len(commands) == 2 and summary["evaluated"], spec.name
        assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"], spec.name


def test_fig2_comes_from_ifeval_on_the_kept_checkpoints_and_every_figure_is_drawn():
    for method in ("sft_plus", "dpo", "reward_sft"):  # notebook 02's runs
        folder = experiments.run_dir(PROFILE, experiments.RunSpec(method, "pairs"))
        rows = pd.read_csv(folder / "checkpoint-1" / "eval_ifeval.csv")
        assert set(rows["suite"]) == {"ifeval"}, method
    figures = {p.stem for p in (RUNS / "figures").glob("*.png")}
    assert {"02_fig2_skills_over_steps", "02_fig3_training_loss", "02_fig4_rewards", "02_tether",
            "03_bce_vs_bco_delta", "03_where_the_update_lands", "04_summary"} <= figures, sorted(figures)


def test_every_claim_is_decided_on_the_paper_path():
    table = pd.read_csv(RUNS / "results" / "claims.csv", keep_default_na=False)
    assert {"T1.1", "T2.9", "T3.3", "F2.1", "F3.1", "F4.7", "S4.1", "S4.2"} <= set(table.id)
    assert set(table.verdict) <= set(claims.VERDICTS)


def test_delta_is_traced_on_every_step():
    bco = json.loads((experiments.run_dir(PROFILE, experiments.RunSpec("spot_bco", "pairs")) / experiments.RUN_FILE).read_text())
    assert [row["step"] for row in bco["delta_trace"]] == list(range(1, PROFILE.training.max_steps + 1))


def test_the_tables_are_written_beside_the_paper_numbers():
    results = RUNS / "results"
    t1 = pd.read_csv(results / "table1.csv", index_col=0)
    assert list(t1.index) == ["base", "sft@sft_direct", "rft@correct", "sft_plus@pairs", "spot_bco@pairs"]
    assert t1.loc["spot_bco@pairs", "paper In-domain Avg"] == 52.1  # Qwen3-8B's row of the paper's Table 1
    for name in ("table2.csv", "table3.csv", "per_run.csv", "tables.md"):
        assert (results / name).stat().st_size > 0, name
    assert not (Path(__file__).resolve().parent.parent / "results" / PROFILE.name).exists()  # nothing in the committed tree
