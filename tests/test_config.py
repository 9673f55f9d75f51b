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
