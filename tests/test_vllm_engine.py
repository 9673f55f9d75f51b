"""vLLM done right, checked on CPU with a recording stand-in for the `vllm` module (the real engine
is checked on a GPU by `make gpu-check`): one engine per stage, started with the profile's settings,
shut down after the stage, also when the stage fails."""
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from spot_utils import generation, suite_eval
from spot_utils.config import load_profile
from spot_utils.tiny.model import build_char_tokenizer


@pytest.fixture
def fake_vllm(monkeypatch):
    events = []
    tokenizer = build_char_tokenizer()

    class Core:
        def shutdown(self):
            events.append(("shutdown",))

    class LLM:
        def __init__(self, model, **options):
            events.append(("start", model, options))
            self.llm_engine = SimpleNamespace(engine_core=Core())

        def get_tokenizer(self):
            return tokenizer

        def generate(self, inputs, params):
            events.append(("generate", len(inputs)))
            assert all("prompt_token_ids" in x for x in inputs)  # token ids: one BOS, as the hf path
            return [SimpleNamespace(outputs=[SimpleNamespace(text="Therefore, the final answer is: $\\boxed{1}$.",
                                                             finish_reason="stop")] * params.n) for _ in inputs]

    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    return events


def test_the_nine_suites_of_one_model_share_one_engine_with_the_profiles_settings(fake_vllm, tmp_path):
    profile = load_profile("paper_qwen3_8b", run_dir=str(tmp_path), **{"eval.suite_dir": "tests/fixtures/paper"})
    scores = suite_eval.evaluate_model(profile, "some/model", tmp_path / "rows.csv", progress=False)
    assert "Overall Avg" in scores
    starts = [e for e in fake_vllm if e[0] == "start"]
    assert len(starts) == 1 and starts[0][1] == "some/model"
    assert starts[0][2] == {"tensor_parallel_size": 8, "seed": 0, "dtype": "bfloat16", "gpu_memory_utilization": 0.9,
                            "max_model_len": 36864}
    assert [e[0] for e in fake_vllm].count("generate") == 9
    assert fake_vllm[-1] == ("shutdown",)  # freed before whatever comes next (training, the next model)


def test_an_engine_is_shut_down_when_its_stage_fails(fake_vllm):
    with pytest.raises(RuntimeError, match="boom"):
        with generation.VLLMEngine("some/model", tensor_parallel_size=2):
            raise RuntimeError("boom")
    assert fake_vllm[-1] == ("shutdown",)


def test_a_call_without_an_engine_starts_and_stops_its_own(fake_vllm):
    texts = generation.generate("some/model", ["Compute: 1+1"], backend="vllm", n=2, tensor_parallel_size=1)
    assert texts == [["Therefore, the final answer is: $\\boxed{1}$."] * 2]
    assert [e[0] for e in fake_vllm] == ["start", "generate", "shutdown"]


def test_a_tensor_parallel_size_beyond_the_visible_gpus_is_refused_before_vllm_starts(fake_vllm):
    with pytest.raises(ValueError, match="tensor_parallel_size is 16 but 8 CUDA device"):
        with generation.VLLMEngine("some/model", tensor_parallel_size=16):
            pass
    assert fake_vllm == []
