"""How notebooks 02 and 03 launch a run of a pretrained-model profile (experiments.launcher), and how
notebook 04 grades the stored answers of the paper's suites again (suite_eval.regrade)."""
import sys
from pathlib import Path

import pandas as pd
import pytest

from spot_utils import experiments, suite_eval
from spot_utils.config import load_profile


def test_the_launcher_line_becomes_the_paper_launch(tmp_path):
    paper = load_profile("paper_qwen3_8b", run_dir=str(tmp_path))
    cmd = experiments.launch_command(paper, experiments.RunSpec("spot_bco", "pairs", 1))
    # 32 / (2 per device x 2 accumulation) = 8 processes, ZeRO-2 through the accelerate config
    assert cmd.text.startswith("accelerate launch --config_file configs/accelerate_zero2.yaml --num_processes 8 "
                               "-m spot_utils.experiments --profile ")
    assert cmd.text.endswith("--profile-seed 0 --method spot_bco --data pairs --seed 1")
    assert cmd.env == {}


def test_the_smoke_launcher_sets_its_variables_and_uses_this_environment(tmp_path):
    smoke = load_profile("paper_smoke", run_dir=str(tmp_path), seed=3)
    hot = tmp_path / "hot.jsonl"
    cmd = experiments.launch_command(smoke, experiments.RunSpec("sft_plus", "hot", 0, lr=2e-6), data={"hot": hot})
    assert cmd.env == {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}  # without it: 2 undistributed copies
    assert cmd.argv[0] == str(Path(sys.executable).parent / "torchrun")   # not whatever PATH finds first
    assert cmd.argv[1:4] == ["--standalone", "--nproc_per_node", "2"]      # 32 / (2 x 8)
    assert cmd.argv[cmd.argv.index("--profile-seed") + 1] == "3"           # the notebook's seed, not the YAML's
    assert cmd.argv[cmd.argv.index("--data-file") + 1] == str(hot.resolve())
    assert cmd.argv[-2:] == ["--lr", "2e-06"]
    assert cmd.text.startswith("ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 torchrun --standalone")


def test_a_launcher_without_a_program_is_refused(tmp_path):
    smoke = load_profile("paper_smoke", run_dir=str(tmp_path), **{"experiments.launcher": "FOO=1"})
    with pytest.raises(ValueError, match="names no program"):
        experiments.launch_command(smoke, experiments.RunSpec("dpo", "pairs"))


def test_the_launcher_does_not_change_a_run_key():
    a = load_profile("paper_smoke")
    b = load_profile("paper_smoke", **{"experiments.launcher": "torchrun --nproc_per_node {processes}"})
    assert a.section_hash("experiments") == b.section_hash("experiments")
    c = load_profile("paper_smoke", **{"experiments.seeds": [0, 1]})
    assert a.section_hash("experiments") != c.section_hash("experiments")


def test_without_a_launcher_the_grid_prints_the_command_and_launches_nothing(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiments import fake_rectification_output

    smoke = load_profile("paper_smoke", run_dir=str(tmp_path), **{"experiments.launcher": ""})
    fake_rectification_output(smoke)
    with pytest.raises(RuntimeError, match=r"1 run\(s\) of profile 'paper_smoke' are not trained yet.*\n  accelerate "
                                           r"launch --config_file configs/accelerate_zero2.yaml --num_processes 2 "
                                           r"-m spot_utils.experiments .* --method dpo --data pairs --seed 0"):
        experiments.run_grid(smoke, [experiments.RunSpec("dpo", "pairs", 0)])
    assert not (tmp_path / "train").exists()


def test_a_failed_launch_names_the_run_and_shows_its_log(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiments import fake_rectification_output

    # a launcher whose program runs but fails: python -c "..." ignores the arguments after it
    smoke = load_profile("paper_smoke", run_dir=str(tmp_path), **{
        "experiments.launcher": f"{sys.executable} -c \"import sys; print('no GPU here'); sys.exit(3)\""})
    fake_rectification_output(smoke)
    with pytest.raises(RuntimeError, match=r"(?s)run dpo@pairs seed 0 failed \(exit 3\).*no GPU here.*command: "):
        experiments.run_grid(smoke, [experiments.RunSpec("dpo", "pairs", 0)], progress=False)
    log = (tmp_path / "train" / "dpo@pairs" / "seed0" / "launch.log").read_text()
    assert log.startswith("$ ") and "no GPU here" in log


def test_regrade_recomputes_the_grades_from_the_answers():
    smoke = load_profile("paper_smoke")
    record = suite_eval.suite_records(smoke, "math500")[0]
    right = f"So it is.\nTherefore, the final answer is: $\\boxed{{{record.ground_truth}}}$."
    rows = pd.DataFrame([{"id": record.id, "suite": "math500", "sample": 0, "response": right, "correct": False, "score": 0.0},
                         {"id": record.id, "suite": "math500", "sample": 1, "response": "no idea", "correct": True, "score": 1.0}])
    graded = suite_eval.regrade(smoke, rows)
    assert graded["correct"].tolist() == [True, False] and graded["score"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="belong to no question of their suite"):
        suite_eval.regrade(smoke, rows.assign(id="not-an-id"))


def test_training_and_evaluation_flags_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        experiments.main(["--profile", "paper_smoke", "--method", "dpo", "--skip-eval", "--eval-only"])
    assert "--skip-eval and --eval-only exclude each other" in capsys.readouterr().err


def test_eval_only_refuses_a_run_that_was_not_trained(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiments import fake_rectification_output

    path = tmp_path / "smoke.yaml"
    path.write_text((Path(experiments.__file__).parent.parent / "configs" / "paper_smoke.yaml").read_text()
                    + f"run_dir: {tmp_path / 'runs'}\n")
    fake_rectification_output(load_profile(path))
    with pytest.raises(SystemExit, match="holds no current trained run: train it first"):
        experiments.main(["--profile", str(path), "--method", "dpo", "--eval-only"])
