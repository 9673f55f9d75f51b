"""make plan: a pretrained-model profile is checked against the machine before anything runs, and its
cost is stated per notebook from the profile's `plan` assumptions (spot_utils.plan)."""
import dataclasses
import os
import subprocess
import sys
import time

import pytest

from spot_utils import plan
from spot_utils.config import REPO_ROOT, ConfigError, load_profile


def run_plan(*args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "GEMINI_API_KEY": ""}
    env.pop("GEMINI_API_KEY")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "spot_utils.plan", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - start


def test_on_a_machine_without_weights_gpus_or_key_make_plan_fails_in_seconds_naming_each(tmp_path):
    done, seconds = run_plan("--profile", "paper", tmp_path=tmp_path)
    assert done.returncode == 1 and seconds < 60
    message = done.stdout
    assert message.startswith("error: profile 'paper_qwen3_8b' cannot run on this machine: ")
    for part in ("weights: Qwen/Qwen3-8B: not on this machine (fix: huggingface-cli download Qwen/Qwen3-8B)",
                 "open-r1/DAPO-Math-17k-Processed", "google/IFEval", "$GEMINI_API_KEY is not set",
                 "the profile needs 8", "Nothing was started"):
        assert part in message, part


def test_a_dry_run_prints_the_checks_and_the_plan_and_exits_0(tmp_path):
    done, _ = run_plan("--profile", "paper", "--dry-run", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "[MISSING] weights" in out and "GPU-hours" in out and "Oracle USD" in out and "DRY_RUN: nothing was started" in out
    assert "28 min on 8 GPUs per 4k pairs" in out  # the stated assumption behind the training hours


def test_the_cpu_smoke_passes_every_check(tmp_path):
    # where `make smoke-assets` writes the stand-ins (folders are enough: the checks look, they do not load)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # a saved model folder, as from_pretrained needs
    (tmp_path / "dapo").mkdir()
    smoke = load_profile("paper_smoke", **{"model.name_or_path": str(tmp_path / "model"),
                                           "rectification.dataset": str(tmp_path / "dapo")})
    checks = plan.machine_checks(smoke)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]  # stand-ins are local, no GPU needed
    plan.require(smoke, checks)
    missing = load_profile("paper_smoke", **{"model.name_or_path": str(tmp_path / "absent")})
    with pytest.raises(plan.PlanError, match="weights: .*absent: not on this machine"):
        plan.require(missing)


def test_the_plan_is_arithmetic_on_the_stated_assumptions():
    paper = load_profile("paper")
    base = plan.estimate(paper).set_index("notebook")
    # Oracle: every error twice (rectified + direct), 40% of 17,000 samples wrong
    assert base.loc["02 elicitation + Oracle", "Oracle requests"] == pytest.approx(2 * 17000 * 0.4)
    slower = dataclasses.replace(paper, plan=dataclasses.replace(paper.plan, train_minutes_per_4k_pairs=56.0))
    more = plan.estimate(slower).set_index("notebook")
    # training doubles, the base's evaluation and the elicitation do not move
    assert more.loc["00 base model on the nine suites", "GPU-hours"] == base.loc["00 base model on the nine suites", "GPU-hours"]
    assert more.loc["03 the other runs of Tables 1-3", "GPU-hours"] > base.loc["03 the other runs of Tables 1-3", "GPU-hours"]
    total = base.loc["total"]
    assert 50 < total["GPU-hours"] < 300 and 500 < total["Oracle USD"] < 3000  # the audit's orders of magnitude


def test_a_bad_assumption_names_its_line(tmp_path):
    text = (REPO_ROOT / "configs" / "paper_qwen3_8b.yaml").read_text().replace("  correct_rate: 0.6", "  correct_rate: 1.5")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    line = text.splitlines().index("  correct_rate: 1.5          # share of the base's samples that are correct; "
                                   "the rest go to the Oracle twice") + 1
    with pytest.raises(ConfigError, match=rf"line {line}.*'plan.correct_rate' must be in \[0, 1\]"):
        load_profile(path)
