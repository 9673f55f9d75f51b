"""spot_utils.experiments (equal-budget data sets, the cached run grid), spot_utils.analysis (Eq. 6,
shared vs divergent tokens) and spot_utils.tuning (the learning-rate choice behind configs/tiny.yaml)."""
import random
import shutil

import pandas as pd
import pytest
import torch

from spot_utils import analysis, experiments, tuning
from spot_utils.config import METHODS, REPO_ROOT, ConfigError, load_profile
from spot_utils.data import read_jsonl, write_jsonl
from spot_utils.modeling import prompt_text
from spot_utils.tasks import tasks_of
from spot_utils.tiny import arithmetic
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model


def fake_rectification_output(profile, n_pairs=10, n_all=12, n_correct=20):
    """What notebook 01 writes, in miniature: pairs at gamma, all pairs, direct answers, correct answers."""
    tok = build_char_tokenizer()
    rng = random.Random(0)
    out = profile.runs / "data"
    pairs, direct, correct = [], [], []
    for i in range(max(n_all, n_correct)):
        p = arithmetic.random_problem(rng, 2)
        q = arithmetic.question_text(p)
        base = {"id": f"q{i:03d}", "prompt": prompt_text(tok, q), "question": q, "ground_truth": p.answer}
        wrong = arithmetic.solution_text(p).replace("Answer: ", "Answer: 1")
        pairs.append({**base, "chosen": arithmetic.solution_text(p), "rejected": wrong, "change_ratio": 0.1,
                      "source": "oracle_rectified"})
        direct.append({**base, "response": arithmetic.direct_solution_text(p), "source": "oracle_direct"})
        correct.append({**base, "response": arithmetic.solution_text(p)})
    write_jsonl(out / "pairs_all.jsonl", pairs[:n_all])
    write_jsonl(out / f"pairs_gamma{profile.rectification.gamma:g}.jsonl", pairs[:n_pairs])
    write_jsonl(out / "sft_direct.jsonl", direct[1:n_all])  # q000 has no verified direct answer
    write_jsonl(out / "correct.jsonl", correct[:n_correct])
    return pairs[:n_pairs]


def test_table_datasets_equal_budget(tiny_profile):
    pairs = fake_rectification_output(tiny_profile)
    paths = experiments.table_datasets(tiny_profile)
    sizes = {name: len(read_jsonl(p)) for name, p in paths.items()}
    assert sizes == {"pairs": 10, "sft_direct": 9, "correct": 10, "direct_pairs": 9, "half": 5, "gamma1": 10}
    direct_pairs = read_jsonl(paths["direct_pairs"])
    assert [p["id"] for p in direct_pairs] == [p["id"] for p in pairs[1:]]
    assert all(" plus " in p["chosen"] or " minus " in p["chosen"] or " times " in p["chosen"] for p in direct_pairs)
    assert read_jsonl(paths["sft_direct"])[0]["question"] == pairs[1]["question"]  # same questions as the pairs
    before = {n: p.read_bytes() for n, p in paths.items()}
    mtimes = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    paths = experiments.table_datasets(tiny_profile)  # deterministic, and not rewritten when unchanged
    assert {n: p.read_bytes() for n, p in paths.items()} == before
    assert {n: p.stat().st_mtime_ns for n, p in paths.items()} == mtimes


def test_table_datasets_missing_input_names_notebook(tiny_profile):
    with pytest.raises(FileNotFoundError, match="01_oracle_rectification"):
        experiments.table_datasets(tiny_profile)


def test_run_spec_names_and_overrides(tiny_profile):
    spec = experiments.RunSpec("dpo", "pairs", 1, beta=0.3, lr=1e-4)
    assert spec.name == "dpo@pairs_beta0.3_lr0.0001"
    p = spec.profile(tiny_profile)
    assert p.training.beta_of("dpo") == 0.3 and p.training.lr["dpo"] == 1e-4 and p.training.beta_of("sft") == tiny_profile.training.beta
    assert tiny_profile.training.lr["dpo"] != 1e-4 or tiny_profile.training.beta_of("dpo") != 0.3  # the original is untouched
    assert experiments.RunSpec("sft", "sft_direct").name == "sft@sft_direct"


def test_table_specs_cover_tables_with_seeds():
    profile = load_profile("tiny")
    specs = experiments.table_specs(profile)
    names = {s.name for s in specs}
    for table in (experiments.TABLE_1, experiments.TABLE_2, experiments.TABLE_3):
        assert {f"{m}@{d}" for m, d in table} <= names
    seeds = {m: {s.seed for s in specs if s.method == m and s.data == experiments.METHOD_DATA[m]}
             for m in experiments.KEY_METHODS}
    assert all(v == set(profile.experiments.seeds) for v in seeds.values())
    assert len(specs) == len(set(specs))


@pytest.mark.slow
def test_run_grid_trains_evaluates_and_caches(tiny_profile):
    from spot_utils.tiny.pretrain import pretrain_base

    fake_rectification_output(tiny_profile)
    pretrain_base(tiny_profile, progress=False)
    t = tiny_profile.training
    t.max_steps, t.per_device_batch_size, t.logging_steps = 2, 4, 1
    tiny_profile.experiments.probe_every, tiny_profile.experiments.probe_methods = 1, ["spot_bco"]
    specs = [experiments.RunSpec("spot_bco", "pairs", 0), experiments.RunSpec("sft", "sft_direct", 0)]
    frame = experiments.run_grid(tiny_profile, specs, workers=1, progress=False)
    assert list(frame.name) == ["spot_bco@pairs", "sft@sft_direct"] and (frame.steps == 2).all()
    assert {"In-domain Avg", "OOD Avg", "IF", "Overall Avg"} <= set(frame.columns)
    run = experiments.load_run(tiny_profile, specs[0])
    assert run["delta"] is not None and len(run["delta_trace"]) == 2
    curves = experiments.curves([run])
    assert set(curves.step) == {0, 1, 2} and curves["probe/skill"].notna().any()
    assert "probe/skill" not in experiments.curves([experiments.load_run(tiny_profile, specs[1])])  # not probed
    assert len(experiments.eval_rows(tiny_profile, specs[0])) == len(tasks_of(tiny_profile).evaluation_set("test"))
    weights = experiments.run_dir(tiny_profile, specs[0]) / "final" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = experiments.run_grid(tiny_profile, specs, workers=1, progress=False)  # cached: nothing retrains
    assert weights.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(frame, again)
    tiny_profile.training.beta = 0.5  # a changed setting is a new key: the run is redone
    experiments.run_grid(tiny_profile, specs[:1], workers=1, progress=False)
    assert weights.stat().st_mtime_ns != stamp
    assert list((tiny_profile.runs / "cache" / "ref_logps").glob("*.pt"))  # the reference pass was cached


@pytest.mark.slow
def test_reference_pass_is_shared_by_methods_and_seeds(tiny_profile):
    from spot_utils.tiny.pretrain import pretrain_base

    assert tiny_profile.training.shared_prefix  # pair and token methods then score pairs differently

    fake_rectification_output(tiny_profile)
    pretrain_base(tiny_profile, progress=False)
    tiny_profile.training.max_steps, tiny_profile.training.per_device_batch_size = 1, 4
    cache = experiments.reference_cache(tiny_profile)
    experiments.reference_pass(tiny_profile, experiments.RunSpec("dpo", "pairs", 0), threads=1)
    entries = {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(entries) == 1
    experiments.run_one(tiny_profile, experiments.RunSpec("spot_bce", "pairs", 1), threads=1)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == entries  # read, never recomputed
    experiments.reference_pass(tiny_profile, experiments.RunSpec("sft_plus", "pairs", 2), threads=1)
    assert len(list(cache.glob("*.pt"))) == 2  # a token method scores pairs as plain rows: its own entry
    experiments.reference_pass(tiny_profile, experiments.RunSpec("dft", "pairs", 0), threads=1)
    assert len(list(cache.glob("*.pt"))) == 2  # ... shared by every token method
    experiments.reference_pass(tiny_profile, experiments.RunSpec("dpo", "half", 0), threads=1)
    assert len(list(cache.glob("*.pt"))) == 3  # another data set: its own entry


@pytest.mark.slow
def test_parallel_grid_with_an_extra_data_set(tiny_profile, tmp_path):
    """workers=2 (spawned single-thread processes): one reference pass per data set, then its runs;
    an analysis's own pairs (data=) train like a table data set and are cached the same way."""
    from spot_utils.tiny.pretrain import pretrain_base

    fake_rectification_output(tiny_profile)
    pretrain_base(tiny_profile, progress=False)
    tiny_profile.training.max_steps, tiny_profile.training.per_device_batch_size = 1, 4
    extra = tmp_path / "hot.jsonl"
    write_jsonl(extra, read_jsonl(experiments.table_datasets(tiny_profile)["pairs"])[:8])
    specs = [experiments.RunSpec("dpo", "pairs", 0), experiments.RunSpec("sft_plus", "hot", 0),
             experiments.RunSpec("spot_bce", "pairs", 1)]
    frame = experiments.run_grid(tiny_profile, specs, workers=2, progress=False, data={"hot": extra})
    assert list(frame.name) == ["dpo@pairs", "sft_plus@hot", "spot_bce@pairs"] and (frame.steps == 1).all()
    assert frame.set_index("name").loc["sft_plus@hot", "examples"] == 8
    assert len(list(experiments.reference_cache(tiny_profile).glob("*.pt"))) == 2  # pairs and hot
    again = experiments.run_grid(tiny_profile, specs, workers=2, progress=False, data={"hot": extra})
    pd.testing.assert_frame_equal(frame, again)  # all cached
    # One worker, in this process, computes the same runs to the bit (each run is single-threaded).
    weights = {s: (experiments.run_dir(tiny_profile, s) / "final" / "model.safetensors").read_bytes() for s in specs}
    for spec in specs:
        shutil.rmtree(experiments.run_dir(tiny_profile, spec))
    shutil.rmtree(experiments.reference_cache(tiny_profile))
    torch.set_num_threads(2)
    alone = experiments.run_grid(tiny_profile, specs, workers=1, progress=False, data={"hot": extra})
    assert torch.get_num_threads() == 2  # the caller's thread count is given back
    timings = ["train_s", "eval_s"]
    pd.testing.assert_frame_equal(frame.drop(columns=timings), alone.drop(columns=timings))
    for spec in specs:
        assert (experiments.run_dir(tiny_profile, spec) / "final" / "model.safetensors").read_bytes() == weights[spec], spec
    with pytest.raises(ValueError, match="taken by table_datasets"):
        experiments.data_sets(tiny_profile, {"pairs": extra})


def test_paper_profile_grid_says_how_to_launch_a_missing_run(tmp_path):
    # a profile without experiments.launcher (the paper profiles set one: see tests/test_launch.py)
    profile = load_profile("paper_qwen3_8b", run_dir=str(tmp_path / "runs"), **{"experiments.launcher": ""})
    fake_rectification_output(profile)
    hot = tmp_path / "hot.jsonl"
    write_jsonl(hot, [])
    with pytest.raises(RuntimeError, match=r"accelerate launch .* --method dpo --data pairs --seed 1"):
        experiments.run_grid(profile, [experiments.RunSpec("dpo", "pairs", 1)])
    with pytest.raises(RuntimeError, match=rf"--method sft_plus --data hot --seed 0 --data-file {hot.resolve()}"):
        experiments.run_grid(profile, [experiments.RunSpec("sft_plus", "hot", 0)], data={"hot": hot})


def test_mean_and_spread_shows_no_spread_for_a_single_seed():
    frame = pd.DataFrame({"name": ["a", "a", "a", "b"], "IF": [1.0, 2.0, 3.0, 5.0], "In-domain Avg": [0.0] * 4,
                          "OOD Avg": [0.0] * 4, "Overall Avg": [0.0] * 4})
    out = experiments.mean_and_spread(frame)
    assert out.loc["a", "IF"] == "2.0 ± 1.0" and out.loc["b", "IF"] == "5.0"
    assert out.loc["a", "seeds"] == 3 and out.loc["b", "seeds"] == 1


def test_curves_merge_trainer_logs_and_probe_rows():
    run = {"method": "dpo", "name": "dpo@pairs", "seed": 0, "log_history": [
        {"step": 0, "probe/skill": 1.0}, {"step": 5, "loss": 0.6, "rewards/chosen": 0.1},
        {"step": 5, "probe/skill": 0.5}, {"step": 5, "train_runtime": 3.0}]}
    c = experiments.curves([run])
    assert list(c.step) == [0, 5]
    assert c.loc[c.step == 5, "probe/skill"].item() == 50.0 and c.loc[c.step == 5, "loss"].item() == 0.6


# -----------------------------------------------------------------------------
# analysis


@pytest.fixture(scope="module")
def two_models():
    from spot_utils.config import ModelConfig

    tok = build_char_tokenizer()
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return build_tiny_model(cfg, tok, seed=0), build_tiny_model(cfg, tok, seed=1), tok


def pair(tok, chosen="12+3=15\nAnswer: 15", rejected="12+3=16\nAnswer: 16"):
    return {"id": "p", "prompt": prompt_text(tok, "Compute: 12+3"), "chosen": chosen, "rejected": rejected}


def test_gradient_identity_eq6_holds_on_a_model(two_models):
    policy, reference, tok = two_models
    table = analysis.gradient_identity(policy, reference, tok, [pair(tok), pair(tok, "7*2=14\nAnswer: 14")], beta=0.7)
    assert (table["r"].abs() > 1e-3).all()  # different weights: r != 0, so lambda != 1/2
    assert table.rel_err.max() < 1e-6  # float32 rounding: Qwen3RMSNorm computes in float32 even in float64
    assert next(policy.parameters()).dtype == torch.float32  # the models are given back in float32


def test_gradient_identity_detects_a_wrong_scale(two_models, monkeypatch):
    policy, reference, tok = two_models
    monkeypatch.setattr(analysis.losses, "tether", lambda r: 0.5 * (1 - torch.sigmoid(r)))  # a broken tether
    table = analysis.gradient_identity(policy, reference, tok, [pair(tok)], beta=1.0)
    assert table.rel_err.max() > 0.5


def three_pairs(tok):
    return [dict(pair(tok, chosen), id=name) for name, chosen in
            [("a", "12+3=15\nAnswer: 15"), ("b", "7*2=14\nAnswer: 14"), ("c", "1+1=2\nAnswer: 2")]]


def test_eq6_cannot_be_read_off_a_saturated_reward(two_models):
    # Why eq6_check exists: at beta 100 pair "c" has r ~ 117, lambda ~ 1e-51, and the float32 segments of
    # the model flush the scaled gradient, so the plain ratio reports a large "deviation" (the
    # notebook's Eq. 6 assert once tripped on such a pair, r = 132).
    policy, reference, tok = two_models
    table = analysis.gradient_identity(policy, reference, tok, three_pairs(tok), beta=100.0)
    assert table.set_index("id").loc["c", "lambda"] < 1e-40 and table.set_index("id").loc["c", "rel_err"] > 0.1


def test_eq6_check_uses_representable_pairs_and_reports_saturated_ones_apart(two_models):
    policy, reference, tok = two_models
    checked, saturated = analysis.eq6_check(policy, reference, tok, three_pairs(tok), beta=100.0, n=2)
    assert list(checked.id) == ["a"] and checked.rel_err.max() < 1e-6  # r ~ -20: lambda ~ 1
    assert list(saturated.id) == ["b", "c"] and (saturated["lambda"] < analysis.MIN_CHECKABLE_LAMBDA).all()
    checked, saturated = analysis.eq6_check(policy, reference, tok, three_pairs(tok), beta=1.0, n=2)
    assert list(checked.id) == ["a", "b"] and saturated.empty  # stops after n checked pairs


def test_token_logps_batch_equals_one_at_a_time(two_models):
    policy, _, tok = two_models
    items = [(prompt_text(tok, f"Compute: {a}+{b}"), f"{a}+{b}={a + b}" + "\nAnswer: 1" * (a % 3))
             for a, b in [(12, 3), (7, 15), (99, 1), (5, 5), (40, 2)]]
    batched = analysis.token_logps_batch(policy, tok, items, batch_size=2)  # ragged batches, sorted by length
    for (prompt, completion), got in zip(items, batched):
        with torch.no_grad():
            want = analysis.token_logps(policy, tok, prompt, completion)
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def test_logp_change_by_region(two_models):
    policy, reference, tok = two_models
    p = pair(tok)
    assert analysis.common_prefix_tokens(tok, p["chosen"], p["rejected"]) == len("12+3=1")
    same = analysis.logp_change_by_region(reference, reference, tok, [p])
    assert (same[["change_shared", "change_divergent", "change_total"]].abs() < 1e-6).all().all()
    diff = analysis.logp_change_by_region(policy, reference, tok, [p])
    assert diff.change_total.values == pytest.approx((diff.change_shared + diff.change_divergent).values, abs=1e-5)
    # the shared prefix is the same tokens in the same context: identical change in y+ and y-
    assert diff.change_shared.iloc[0] == pytest.approx(diff.change_shared.iloc[1], abs=1e-5)
    total = (analysis.token_logps(policy, tok, p["prompt"], p["chosen"]).sum()
             - analysis.token_logps(reference, tok, p["prompt"], p["chosen"]).sum())
    assert diff.change_total.iloc[0] == pytest.approx(float(total), abs=1e-4)
    summary = analysis.region_summary(diff)
    assert list(summary.index) == ["y+", "y-"]


# -----------------------------------------------------------------------------
# tuning


def test_best_learning_rate_criterion_and_ties():
    sweep = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 2, "lr": [3e-4, 1e-4, 1e-3, 1e-4, 3e-4],
                          "In-domain Avg": [50.0, 50.0, 40.0, 10.0, 30.0], "IF": [0.0, 100.0, 100.0, 100.0, 0.0]})
    assert tuning.best_learning_rates(sweep) == {"a": 1e-4, "b": 3e-4}  # IF is not the criterion


def test_a_best_value_at_an_edge_of_the_grid_asks_for_the_next_value_out():
    ladder = (1.0, 2.0, 3.0, 4.0, 5.0)
    sweep = pd.DataFrame({"method": ["low"] * 3 + ["mid"] * 3 + ["top"] * 2 + ["end"] * 2,
                          "x": [2.0, 3.0, 4.0] * 2 + [3.0, 4.0, 4.0, 5.0],
                          "In-domain Avg": [9, 5, 1, 5, 9, 1, 1, 9, 1, 9]})
    assert tuning.unbracketed(sweep, "x", ladder) == {"low": 1.0, "top": 5.0}  # "end" is at the ladder's end


def test_tiny_profile_uses_the_tuned_learning_rates_and_betas():
    """configs/tiny.yaml must hold what `make tune` chose (results/tiny/tuning_lr.csv, tuning_beta.csv),
    and every choice must be bracketed: a worse value tried on both sides, or the ladder's end."""
    profile = load_profile("tiny")
    sweep = pd.read_csv(REPO_ROOT / "results" / "tiny" / "tuning_lr.csv")
    assert set(sweep.method) == set(METHODS) and set(tuning.LR_GRID) <= set(sweep.lr) <= set(tuning.LR_LADDER)
    assert tuning.best_learning_rates(sweep) == profile.training.lr
    assert tuning.unbracketed(sweep, "lr", tuning.LR_LADDER) == {}
    betas = pd.read_csv(REPO_ROOT / "results" / "tiny" / "tuning_beta.csv")
    assert set(betas.method) == set(tuning.BETA_METHODS) and set(tuning.BETA_GRID) <= set(betas.beta)
    assert tuning.best_betas(betas) == profile.training.beta_by_method
    assert tuning.unbracketed(betas, "beta", tuning.BETA_LADDER) == {}


def test_experiments_config_is_validated(tmp_path):
    bad = (REPO_ROOT / "configs" / "tiny.yaml").read_text().replace("seeds: [0, 1, 2]", "seeds: []")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError, match="seeds"):
        load_profile(path)


@pytest.mark.parametrize("written", ["tables.md", "base.md"])
def test_readme_shows_what_the_notebooks_wrote(written):
    """The README's Results tables (notebook 04) and its base section (notebook 00) are the notebooks'
    output under results/tiny/, verbatim."""
    text = (REPO_ROOT / "results" / "tiny" / written).read_text().strip()
    assert text in (REPO_ROOT / "README.md").read_text()


def test_grid_workers_default_to_one_per_core(tiny_profile):
    import os

    tiny_profile.experiments.workers = 0
    assert experiments.grid_workers(tiny_profile) == len(os.sched_getaffinity(0))
    assert experiments.grid_workers(tiny_profile, 3) == 3
    with pytest.raises(ValueError, match="workers must be >= 0"):
        experiments.grid_workers(tiny_profile, -1)
