"""The paper profile's evaluation is wired: one call (and one CLI) samples a saved model on the nine
suites and writes the rows the tiny profile writes (base/eval_rows.csv, <run>/eval_test.csv).
Here on CPU with the HF backend, a small random Qwen3 and the committed suite fixtures."""
import json

import pandas as pd
import pytest

from spot_utils import paper_suites, suite_eval
from spot_utils.config import ModelConfig, load_profile
from spot_utils.modeling import save_model
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

FIXTURES = "tests/fixtures/paper"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tok = build_char_tokenizer()
    save_model(build_tiny_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                            intermediate_size=64), tok), tok, path)
    return path


def _profile(tmp_path, model, **more):
    return load_profile("paper", **{"generation.backend": "hf", "generation.max_new_tokens": 4,
                                    "eval.suite_dir": FIXTURES, "model.name_or_path": str(model),
                                    "run_dir": str(tmp_path / "runs"), **more})


def test_base_on_all_nine_suites_writes_rows_and_headline(tmp_path, saved_model):
    profile = _profile(tmp_path, saved_model)
    scores = suite_eval.evaluate_base(profile, progress=False)
    rows = pd.read_csv(profile.runs / "base" / suite_eval.BASE_ROWS_FILE)
    assert set(rows["suite"]) == set(paper_suites.SUITES)
    # every question of every suite, with the suite's own avg@n (16 for AIME24/25 and AMC23, else 5)
    for name, part in rows.groupby("suite"):
        spec = paper_suites.get_spec(name)
        assert part.groupby("id").size().eq(spec.n_samples).all()
        assert part["id"].nunique() == len(suite_eval.suite_records(profile, name))
    assert {spec.display for spec in paper_suites.SUITES.values()} <= set(scores)
    assert {"In-domain Avg", "OOD Avg", "IF", "Overall Avg"} <= set(scores)
    assert suite_eval.scores_from_rows(rows) == pytest.approx(scores)


def test_a_run_is_evaluated_from_its_final_model(tmp_path, saved_model):
    profile = _profile(tmp_path, saved_model)
    folder = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="has the run finished"):
        suite_eval.evaluate_run(profile, folder, suites=["math500"], progress=False)
    import shutil
    shutil.copytree(saved_model, folder / "final")
    scores = suite_eval.evaluate_run(profile, folder, suites=["math500", "ifeval"], progress=False)
    assert set(scores) == {"MATH-500", "IFEval"}  # a subset: no headline (it needs all nine)
    assert set(pd.read_csv(folder / suite_eval.ROWS_FILE)["suite"]) == {"math500", "ifeval"}


def test_cli_evaluates_the_base(tmp_path, saved_model, capsys, monkeypatch):
    profile = _profile(tmp_path, saved_model)
    import spot_utils.config as config
    monkeypatch.setattr(config, "load_profile", lambda name: profile)
    suite_eval.main(["--model", "base", "--suites", "gpqa_diamond", "connect4"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"GPQA-D", "Connect4"}
    with pytest.raises(KeyError, match="unknown suite"):
        suite_eval.main(["--model", "base", "--suites", "nope"])


def test_a_missing_suite_file_names_the_folder(tmp_path, saved_model):
    profile = _profile(tmp_path, saved_model, **{"eval.suite_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="has no aime24.jsonl"):
        suite_eval.suite_records(profile, "aime24")


def test_tiny_is_not_evaluated_on_the_suites(tmp_path):
    with pytest.raises(ValueError, match="miniature test sets"):
        suite_eval.evaluate_model(load_profile("tiny"), "x", tmp_path / "rows.csv")
