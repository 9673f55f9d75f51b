"""Paper-profile defects of generation and elicitation (issue 12): finish reasons, the tensor-parallel
check, one BOS on every path for a Llama-style tokenizer, and elicitation asking the evaluation's
math prompt. No GPU, no vllm, no hub: vLLM is replaced by a stand-in that tokenizes text prompts the
way vLLM does (special tokens added)."""
import contextlib
import json
import random
import string
import sys
import types

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from spot_utils import generation, pipeline, training
from spot_utils.config import load_profile
from spot_utils.data import read_jsonl
from spot_utils.modeling import prompt_text
from spot_utils.tiny import arithmetic
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

BOS = "<|begin_of_text|>"
DAPO_HEAD = ("Solve the following math problem step by step. The last line of your response should be of the "
             "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-3.1's BOS arrangement on a character vocabulary: the post-processor prepends
    <|begin_of_text|> and the chat template starts with {{ bos_token }} as well."""
    special = [BOS, "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>", "<unk>"]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(special + list(string.printable))}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(special)
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                        special_tokens=[(BOS, 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token="<|eot_id|>",
                                  pad_token="<|finetune_right_pad_id|>", unk_token="<unk>")
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                         "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
                         "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    return tok


class ScriptedModel:
    """Stands in for a causal LM in generation._generate_hf: records the input ids it is given and
    appends the scripted new tokens, one row per returned sequence."""

    device, training = torch.device("cpu"), False

    def __init__(self, tails):
        self.tails, self.seen = tails, []

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask, num_return_sequences, **kwargs):
        self.seen.append(input_ids.clone())
        rows = input_ids.repeat_interleave(num_return_sequences, dim=0)
        return torch.cat([rows, torch.tensor(self.tails[: len(rows)])], dim=1)


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module whose LLM tokenizes text prompts with special tokens added (as vLLM does) and
    takes {"prompt_token_ids": ...} as they are; every second sample of a prompt ends at the limit."""
    fed, built = [], []

    class LLM:
        def __init__(self, model, **kwargs):
            built.append(kwargs)

        def get_tokenizer(self):
            return fake.tokenizer

        def generate(self, prompts, params):
            for p in prompts:
                fed.append(p["prompt_token_ids"] if isinstance(p, dict) else fake.tokenizer(p)["input_ids"])
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f"a{k}", finish_reason=("stop", "length")[k % 2])
                                                   for k in range(params.n)]) for _ in prompts]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: types.SimpleNamespace(**kw)
    fake.tokenizer, fake.fed, fake.built = llama_tokenizer(), fed, built
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return fake


# --- finish reasons -----------------------------------------------------------------------------

def test_hf_finish_reason_is_length_when_no_eos_was_generated():
    tok = build_char_tokenizer()
    a, eos, pad = tok.convert_tokens_to_ids("a"), tok.eos_token_id, tok.pad_token_id
    # rows: prompt 0 x 2 samples, then prompt 1 x 2 (prompts sorted by length, one batch)
    model = ScriptedModel([[a, eos, pad], [a, a, a], [eos, pad, pad], [a, a, eos]])
    texts, reasons = generation.generate(model, ["1+1", "12+34"], n=2, max_new_tokens=3, tokenizer=tok,
                                         progress=False, return_finish_reasons=True)
    assert texts == [["a", "aaa"], ["", "aa"]]
    assert reasons == [["stop", "length"], ["stop", "stop"]]
    # the default return value is unchanged: the completions only
    assert generation.generate(model, ["1+1", "12+34"], n=2, max_new_tokens=3, tokenizer=tok, progress=False) == texts


def test_hf_finish_reasons_leave_a_real_models_samples_unchanged(tiny_profile):
    tok = build_char_tokenizer()
    model = build_tiny_model(tiny_profile.model, tok, seed=0)
    prompts = [arithmetic.question_text(arithmetic.random_problem(random.Random(i), 2)) for i in range(5)]
    kw = dict(n=2, max_new_tokens=6, seed=3, tokenizer=tok, progress=False, batch_size=4)
    texts, reasons = generation.generate(model, prompts, return_finish_reasons=True, **kw)
    assert texts == generation.generate(model, prompts, **kw)
    assert [len(r) for r in reasons] == [2] * 5 and {x for r in reasons for x in r} <= {"stop", "length"}


def test_vllm_finish_reasons_come_from_the_completion_outputs(fake_vllm):
    texts, reasons = generation.generate("some/model", ["q1", "q2"], backend="vllm", n=2, progress=False,
                                         tensor_parallel_size=2, return_finish_reasons=True)
    assert texts == [["a0", "a1"], ["a0", "a1"]] and reasons == [["stop", "length"], ["stop", "length"]]
    assert generation.generate("some/model", ["q1"], backend="vllm", n=2, tensor_parallel_size=2) == [["a0", "a1"]]
    assert fake_vllm.built[0]["tensor_parallel_size"] == 2


def tiny_questions(k):
    rng = random.Random(7)
    problems = [arithmetic.random_problem(rng, 2) for _ in range(k)]
    return problems, [{"id": f"q{i}", "question": arithmetic.question_text(p), "ground_truth": p.answer,
                       "tier": "steps=2"} for i, p in enumerate(problems)]


def test_elicit_keeps_truncated_answers_apart(tiny_profile, monkeypatch):
    tok = build_char_tokenizer()
    problems, questions = tiny_questions(3)
    right = [arithmetic.solution_text(p) for p in problems]
    # q0 right and finished, q1 wrong and finished, q2 right so far but cut at the token limit
    scripted = ([[right[0]], ["Answer: -1"], [right[2]]], [["stop"], ["stop"], ["length"]])

    def fake_generate(model, prompts, return_finish_reasons=False, **kwargs):
        return scripted if return_finish_reasons else scripted[0]

    monkeypatch.setattr(pipeline, "generate", fake_generate)
    stats = pipeline.elicit(tiny_profile, None, tok, questions, progress=False)
    out = pipeline.data_dir(tiny_profile)
    correct, errors, truncated = (read_jsonl(out / f) for f in ("correct.jsonl", "errors.jsonl", "truncated.jsonl"))
    assert [r["id"] for r in correct] == ["q0-s0"] and [r["id"] for r in errors] == ["q1-s0"]
    assert [r["id"] for r in truncated] == ["q2-s0"]
    for rec, q in zip(correct + errors + truncated, questions):  # one record format, as before (tiny unchanged)
        assert list(rec) == ["id", "question", "response", "ground_truth", "tier", "prompt"]
        assert rec["question"] == q["question"] and rec["prompt"] == prompt_text(tok, q["question"])
    assert stats == {"samples": 3, "errors": 1, "correct": 1, "truncated": 1, "accuracy": 1 / 3}


# --- tensor_parallel_size -----------------------------------------------------------------------

def test_tensor_parallel_size_is_checked_against_the_visible_gpus():
    generation.check_tensor_parallel_size(2, visible=2)
    for size, visible in ((8, 2), (0, 8), (-1, 8), (1, 0), (1.5, 8)):
        with pytest.raises(ValueError, match=rf"generation\.tensor_parallel_size is {size!r} but {visible} CUDA"):
            generation.check_tensor_parallel_size(size, visible=visible)


def test_vllm_backend_checks_tensor_parallel_size_before_needing_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # vllm not installed (import raises ImportError)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="tensor_parallel_size is 8 but 0 CUDA device.*needs a GPU"):
        generation.generate("Qwen/Qwen3-8B", ["q"], backend="vllm", tensor_parallel_size=8)


# --- one BOS on every path ----------------------------------------------------------------------

def bos_count(ids, tok):
    return list(ids).count(tok.bos_token_id)


def test_llama_tokenizer_stand_in_adds_a_bos_and_its_template_writes_one():
    tok = llama_tokenizer()
    text = prompt_text(tok, "1+1?")
    assert text.startswith(BOS)  # stored prompts are rendered, BOS included
    assert bos_count(tok(text)["input_ids"], tok) == 2  # what text tokenized with special tokens gets
    assert bos_count(tok(text, add_special_tokens=False)["input_ids"], tok) == 1


def test_hf_generation_feeds_one_bos():
    tok = llama_tokenizer()
    eos = tok.eos_token_id
    model = ScriptedModel([[eos]] * 2)
    generation.generate(model, ["1+1?", "a longer question"], max_new_tokens=1, tokenizer=tok, progress=False)
    assert [bos_count(row, tok) for row in model.seen[0]] == [1, 1]


def test_vllm_generation_feeds_token_ids_with_one_bos(fake_vllm):
    tok = fake_vllm.tokenizer
    generation.generate("meta-llama/Llama-3.1-8B-Instruct", ["1+1?", "2+2?"], backend="vllm", tensor_parallel_size=1)
    assert [bos_count(ids, tok) for ids in fake_vllm.fed] == [1, 1]
    # the same ids as the hf backend's
    expected = tok(prompt_text(tok, "1+1?"), add_special_tokens=False)["input_ids"]
    assert fake_vllm.fed[0] == expected
    assert generation.vllm_prompts(tok, ["1+1?"], None, False) == [{"prompt_token_ids": expected}]


@pytest.mark.parametrize("record", [
    {"prompt": None, "chosen": "1+1=2\nAnswer: 2", "rejected": "1+1=3\nAnswer: 3"},
    {"prompt": None, "response": "1+1=2\nAnswer: 2"},
    {"question": "1+1?", "response": "1+1=2\nAnswer: 2"},
])
def test_training_feeds_one_bos(record):
    """to_dataset -> TRL 1.16's own dataset preparation (DPOTrainer._prepare_dataset): the model's
    training sequences hold one BOS with a Llama-style tokenizer, none with the tiny tokenizer."""
    from trl import DPOTrainer

    def prepared(tok):
        rec = {**record, "prompt": prompt_text(tok, "1+1?")} if "prompt" in record else record
        dataset, _ = training.to_dataset("sft_plus" if "chosen" in rec else "sft", [rec], tok)
        args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
        trainer = types.SimpleNamespace(_tokenizer=tok)
        return dataset, DPOTrainer._prepare_dataset(trainer, dataset, tok, args, "train")[0]

    tok = llama_tokenizer()
    _, row = prepared(tok)
    assert bos_count(row["prompt_ids"], tok) == 1 and row["prompt_ids"][0] == tok.bos_token_id
    assert bos_count(row["chosen_ids"] + row["rejected_ids"], tok) == 0
    assert row["prompt_ids"] == tok(prompt_text(tok, "1+1?"), add_special_tokens=False)["input_ids"]

    tiny = build_char_tokenizer()  # no BOS anywhere: the prompt text goes to TRL as it was rendered
    dataset, row = prepared(tiny)
    assert dataset[0]["prompt"] == prompt_text(tiny, "1+1?")
    assert row["prompt_ids"] == tiny(prompt_text(tiny, "1+1?"), add_special_tokens=False)["input_ids"]


# --- elicitation asks the evaluation's math prompt ----------------------------------------------

def test_paper_elicitation_prompt_is_the_math_suites_prompt(monkeypatch, tmp_path):
    import datasets

    from spot_utils import paper_suites

    problem = "Find $x$ if $2x + 1 = 11$."
    rows = {"prompt": [DAPO_HEAD + problem + DAPO_TAIL], "solution": ["5"]}  # DAPO-Math-17k-Processed's columns
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict(rows))
    profile = load_profile("paper", run_dir=str(tmp_path / "runs"))
    questions = pipeline.elicitation_questions(profile)
    assert [q["question"] for q in questions] == [problem]  # bare: DAPO's own answer format is dropped

    asked = {}

    def fake_generate(model, prompts, return_finish_reasons=False, **kwargs):
        asked.setdefault("prompts", list(prompts))
        asked.setdefault("kwargs", kwargs)
        texts = [["2x = 10, so x = 5.\nTherefore, the final answer is: $\\boxed{5}$."] for _ in prompts]
        return (texts, [["stop"] for _ in prompts]) if return_finish_reasons else texts

    tok = llama_tokenizer()
    monkeypatch.setattr(pipeline, "generate", fake_generate)
    monkeypatch.setattr(pipeline, "stage_engine", lambda profile, model: contextlib.nullcontext())  # no vLLM here
    stats = pipeline.elicit(profile, None, tok, questions, progress=False)
    assert stats["correct"] == 1
    (suite_file := tmp_path / "math500.jsonl").write_text(
        json.dumps({"problem": problem, "answer": "5", "unique_id": "m0"}) + "\n")
    record = paper_suites.load_suite("math500", path=suite_file)[0]
    assert asked["prompts"] == [record.prompt] == [paper_suites.math_prompt(problem)]

    seen = {}
    paper_suites.evaluate_suite("math500", "model", [record], profile=profile, progress=False,
                                generate_fn=lambda m, prompts, **kw: seen.update(prompts=prompts, kw=kw) or [["x"]])
    assert seen["prompts"] == asked["prompts"]  # the very prompt evaluation sends, with the same settings
    assert seen["kw"]["enable_thinking"] == asked["kwargs"]["enable_thinking"]
    rec = read_jsonl(pipeline.data_dir(profile) / "correct.jsonl")[0]
    assert rec["question"] == problem  # the Oracle's prompt embeds the bare question
    assert rec["prompt"] == prompt_text(tok, record.prompt, enable_thinking=profile.model.enable_thinking)
    assert bos_count(tok(rec["prompt"], add_special_tokens=False)["input_ids"], tok) == 1
