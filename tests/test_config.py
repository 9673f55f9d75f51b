import pytest

from spot_utils.config import ConfigError, load_profile


def write(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def test_tiny_profile_loads_with_types():
    cfg = load_profile("tiny")
    assert cfg.name == "tiny" and cfg.is_tiny
    assert isinstance(cfg.pretrain.lr, float) and cfg.pretrain.steps > 0
    assert cfg.runs.name == "tiny"
    assert cfg.generation.temperature == 0.7 and cfg.generation.top_p == 0.8  # paper App. C


@pytest.mark.parametrize("name", ["paper", "paper_qwen3_8b", "paper_llama31_8b"])
def test_paper_profiles_load(name):
    cfg = load_profile(name)
    assert not cfg.is_tiny and cfg.model.name_or_path
    assert cfg.generation.backend == "vllm" and cfg.generation.max_new_tokens == 32768


def test_unknown_key_names_file_line_key_and_allowed(tmp_path):
    p = write(tmp_path, "name: x\npretrain:\n  steps: 3\n  stepz: 4\n")
    with pytest.raises(ConfigError) as e:
        load_profile(p)
    msg = str(e.value)
    assert str(p) in msg and "line 4" in msg and "pretrain.stepz" in msg and "batch_size" in msg


def test_bad_type_and_bad_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"line 3.*'pretrain.lr' must be of type float"):
        load_profile(write(tmp_path, "name: x\npretrain:\n  lr: fast\n"))
    with pytest.raises(ConfigError, match=r"'generation.backend' is 'tgi'; allowed: hf, vllm"):
        load_profile(write(tmp_path, "name: x\ngeneration:\n  backend: tgi\n"))
    with pytest.raises(ConfigError, match="must be > 0"):
        load_profile(write(tmp_path, "name: x\npretrain:\n  steps: 0\n"))
    with pytest.raises(ConfigError, match="unknown skill 'sort'"):
        load_profile(write(tmp_path, "name: x\nworld:\n  skills: [reverse, sort]\n"))
    with pytest.raises(ConfigError, match="top_p"):
        load_profile(write(tmp_path, "name: x\ngeneration:\n  top_p: 1.5\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_profile(write(tmp_path, "name: x\nmodel: 3\n"))
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        load_profile(write(tmp_path, "seed: 1\n"))


def test_unknown_profile_lists_known():
    with pytest.raises(ConfigError, match="known profiles:.*tiny"):
        load_profile("tinyy")


def test_overrides_and_hash():
    a = load_profile("tiny")
    b = load_profile("tiny", **{"pretrain.steps": 700})
    assert b.pretrain.steps == 700
    with pytest.raises(ConfigError, match="curriculum_steps.*must be in"):
        load_profile("tiny", **{"pretrain.steps": 7})
    assert a.section_hash("pretrain") != b.section_hash("pretrain")
    assert a.section_hash("model") == b.section_hash("model")


# -----------------------------------------------------------------------------
# bad inputs (issue 13): every one is refused naming the file, the line and the key


def assert_names(err, path, line, key):
    msg = str(err.value)
    assert str(path) in msg and f"line {line}" in msg and key in msg, msg


def test_duplicate_key_is_refused(tmp_path):
    p = write(tmp_path, "name: x\nrectification:\n  gamma: 0.6\n  questions: 10\n  gamma: 0.9\n")
    with pytest.raises(ConfigError, match="duplicate key") as e:
        load_profile(p)
    assert_names(e, p, 5, "rectification.gamma")
    assert "first set on line 3" in str(e.value)
    with pytest.raises(ConfigError, match=r"line 2: duplicate key 'pretrain.mix.skills'"):
        load_profile(write(tmp_path, "name: x\npretrain: {mix: {skills: 0.5, skills: 0.2}}\n"))


@pytest.mark.parametrize("section, key, value", [
    ("training", "beta", ".nan"), ("pretrain", "lr", ".nan"), ("generation", "temperature", ".nan"),
    ("rectification", "gamma", ".nan"), ("pretrain", "grad_clip", ".inf"), ("pretrain", "lr", "-.inf"),
])
def test_nan_and_infinity_are_refused(tmp_path, section, key, value):
    p = write(tmp_path, f"name: x\n{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match="must be a finite number") as e:
        load_profile(p)
    assert_names(e, p, 3, f"{section}.{key}")


def test_nan_in_a_per_method_lr_is_refused(tmp_path):
    p = write(tmp_path, "name: x\ntraining:\n  lr:\n    sft: .nan\n")
    with pytest.raises(ConfigError, match=r"'training.lr.sft' must be a finite number") as e:
        load_profile(p)
    assert "line 3" in str(e.value)


@pytest.mark.parametrize("section, key, value, rule", [
    ("rectification:\n  oracle", "max_retries", "-1", "must be >= 0"),
    ("rectification:\n  oracle", "timeout_s", ".inf", "must be a finite number"),
    ("pretrain", "warmup_steps", "-5", "must be >= 0"),
    ("pretrain", "min_lr_ratio", "5", r"must be in \[0, 1\]"),
    ("pretrain", "probe_every", "-1", "must be >= 0"),
    ("pretrain", "weight_decay", "-0.1", "must be >= 0"),
    ("experiments", "probe_every", "-3", "must be >= 0"),
])
def test_out_of_range_values_are_refused(tmp_path, section, key, value, rule):
    indent = "    " if "oracle" in section else "  "
    p = write(tmp_path, f"name: x\n{section}:\n{indent}{key}: {value}\n")
    with pytest.raises(ConfigError, match=rule) as e:
        load_profile(p)
    line = 4 if "oracle" in section else 3
    assert_names(e, p, line, key)


def test_world_settings_that_cannot_produce_the_sets_are_refused(tmp_path):
    # 26 one-letter words cannot make 100 distinct test questions per skill (world.test_sets never finished)
    p = write(tmp_path, "name: x\nworld:\n  skill_word_len: [1, 1]\n")
    with pytest.raises(ConfigError, match="asks for 100 distinct words per skill") as e:
        load_profile(p)
    assert_names(e, p, 3, "world.skill_word_len")
    assert "allows only 26" in str(e.value)
    load_profile(write(tmp_path, "name: x\nworld:\n  skill_word_len: [1, 1]\n  test_size_per_tier: 26\n"
                                 "pretrain:\n  probe_size: 16\n"))
    p = write(tmp_path, "name: x\nworld:\n  arith_max_value: 12\n  arith_max_operand: 1\n")
    with pytest.raises(ConfigError, match=r"distinct 2-step questions, but world.arith_max_value=12") as e:
        load_profile(p)
    assert "line 3" in str(e.value)
    with pytest.raises(ConfigError, match=r"override rectification.questions=1000000000\): .* have only 204529171"):
        load_profile("tiny", **{"rectification.questions": 10**9})
    with pytest.raises(ConfigError, match="must be >= 10"):
        load_profile(write(tmp_path, "name: x\nworld:\n  arith_max_value: 9\n"))
    with pytest.raises(ConfigError, match="'world.arith_test_steps' needs step counts"):
        load_profile(write(tmp_path, "name: x\nworld:\n  arith_test_steps: []\n"))


def test_question_count_matches_the_sampler():
    import random

    from spot_utils.tiny import arithmetic
    from spot_utils.config import _arith_questions

    for max_value, max_operand, steps in [(12, 3, 2), (15, 2, 3), (10, 1, 1), (22, 3, 2), (40, 5, 1)]:
        rng, seen = random.Random(0), set()
        for _ in range(30000):
            seen.add(arithmetic.question_text(arithmetic.random_problem(rng, steps, max_value, max_operand)))
        assert len(seen) == _arith_questions(steps, max_value, max_operand)


def test_a_bad_override_names_the_override_not_a_line():
    with pytest.raises(ConfigError) as e:
        load_profile("tiny", **{"pretrain.lr": float("nan")})
    msg = str(e.value)
    assert "override pretrain.lr=nan" in msg and "line" not in msg and "tiny.yaml" in msg
    with pytest.raises(ConfigError, match=r"override rectification.oracle.max_retries=-2\): .* must be >= 0"):
        load_profile("tiny", **{"rectification.oracle.max_retries": -2})
    with pytest.raises(ConfigError, match=r"override pretrain.stepz=3\): unknown key 'pretrain.stepz'"):
        load_profile("tiny", **{"pretrain.stepz": 3})
    with pytest.raises(ConfigError, match=r"override world.skill_word_len=\[1, 1\]"):
        load_profile("tiny", **{"world.skill_word_len": [1, 1]})
    with pytest.raises(ConfigError, match=r"'seed' is not a section"):
        load_profile("tiny", **{"seed.x": 1})


def test_profile_paths_any_case_and_a_readable_unknown_name(tmp_path):
    p = tmp_path / "mine.YAML"
    p.write_text("name: mine\n")
    assert load_profile(p).name == "mine" and load_profile(str(p)).name == "mine"
    from pathlib import Path

    with pytest.raises(ConfigError, match=r"unknown profile 'nope'; known profiles") as e:
        load_profile(Path("nope"))
    assert "PosixPath" not in str(e.value)


def test_profile_file_is_utf8_whatever_the_locale(tmp_path):
    p = tmp_path / "u.yaml"
    p.write_bytes("\ufeffname: café\n".encode())
    assert load_profile(p).name == "café"
    p.write_bytes(b"name: x\nseed: 1\nrun_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"u.yaml, line 3: not valid UTF-8"):
        load_profile(p)


def test_shipped_profiles_pass_the_stricter_checks():
    for name in ("tiny", "paper_qwen3_8b", "paper_llama31_8b"):
        load_profile(name)


# The tiny profile's cache keys: every cached base model, data set and run (and so every committed
# number) hangs on them. A change here re-trains everything: make it on purpose, then rerun
# `make reproduce` and commit the new outputs together with the new values.
TINY_SECTION_HASHES = {"seed": "de7d7744ccd7722e",
                       "model": "d3b35d88f405e1f9",
                       "world": "b6d7240d5e1c8859",
                       "pretrain": "9b3984d918936f40",
                       # model.portable_numerics (true on tiny) re-keys everything: other bits than MKL's;
                       # training.shared_prefix (true on tiny) re-keys the runs of notebooks 02/03;
                       # training.beta_by_method and experiments.train_examples are set on tiny (issue 16)
                       "training": "d1749d84b1052f89",
                       "experiments": "64115f740abaca10",
                       "generation": "314f90dbe6a31b86",
                       "eval": "a18345bfca881d3b",
                       "rectification": "5cbdfebd2e7aac31"}


def test_new_settings_at_their_default_leave_the_cache_keys_alone():
    tiny = load_profile("tiny")
    for section, value in TINY_SECTION_HASHES.items():
        assert tiny.section_hash(section) == value, section
    # a setting named in _hash_when_set counts once it is set
    assert load_profile("tiny", **{"model.attn_implementation": "eager"}).section_hash("model") != TINY_SECTION_HASHES["model"]
    assert load_profile("tiny", **{"eval.suite_dir": "x"}).section_hash("eval") != tiny.section_hash("eval")
    untuned = load_profile("paper")
    assert untuned.training.beta_by_method == {}  # the paper profiles use one beta: their keys do not move
    assert load_profile("paper", **{"training.beta_by_method": {"dpo": 0.2}}).section_hash("training") \
        != untuned.section_hash("training")


def test_dot_paths_are_relative_to_the_repository_not_the_working_directory(monkeypatch, tmp_path):
    from spot_utils.config import REPO_ROOT, local_or_hub

    monkeypatch.chdir(tmp_path)  # as under papermill --cwd notebooks
    assert local_or_hub("./runs/x/model") == str(REPO_ROOT / "runs" / "x" / "model")
    assert local_or_hub("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"  # a hub id passes through
    smoke = load_profile("paper_smoke")
    assert smoke.model.location == str(REPO_ROOT / "runs" / "paper_smoke" / "assets" / "model")
    assert smoke.rectification.dataset_location.startswith(str(REPO_ROOT))
    assert load_profile("paper").model.location == "Qwen/Qwen3-8B"


def test_tasks_must_match_how_the_model_is_made(tmp_path):
    assert load_profile("tiny").tasks == "miniature" and load_profile("paper").tasks == "paper"
    with pytest.raises(ConfigError, match=r"line 2: 'tasks' is 'paper' but model.source is 'scratch'"):
        load_profile(write(tmp_path, "name: x\ntasks: paper\n"))
    with pytest.raises(ConfigError, match=r"line 2: 'tasks' is 'tiny'; allowed: miniature, paper"):
        load_profile(write(tmp_path, "name: x\ntasks: tiny\n"))


def test_a_per_method_beta_names_known_methods_and_is_positive(tmp_path):
    t = load_profile("tiny").training
    assert t.beta_of("dpo") == t.beta_by_method["dpo"] and t.beta_of("sft") == t.beta
    with pytest.raises(ConfigError, match=r"line 3: 'training.beta_by_method' has unknown method\(s\) ppo"):
        load_profile(write(tmp_path, "name: x\ntraining:\n  beta_by_method: {ppo: 1.0}\n"))
    with pytest.raises(ConfigError, match=r"'training.beta_by_method' must be > 0 for every method named, got dpo: 0"):
        load_profile(write(tmp_path, "name: x\ntraining:\n  beta_by_method: {dpo: 0}\n"))
