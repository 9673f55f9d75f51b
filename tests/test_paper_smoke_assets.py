"""The paper_smoke profile's stand-in assets (spot_utils.smoke_assets) and the profile file itself.

The assets replace Qwen/Qwen3-8B and open-r1/DAPO-Math-17k-Processed on a CPU without network, so the
checks are that they load through the very calls that load the real ones and behave like them where the
pipeline depends on it: Qwen3's chat rendering, eos/pad/no BOS, a Qwen3ForCausalLM with grouped-query
attention, DAPO's columns; that the tuned stand-in ends its answers to the elicitation prompts (the
pipeline drops truncated ones) with both right and wrong final answers, and the nine smoke suites run on
it; and that a rewrite is byte-identical.
"""
import random
import re
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spot_utils import smoke_assets
from spot_utils.config import load_profile

DAPO_COLUMNS = ["prompt", "solution", "data_source", "source_prompt", "ability", "reward_model", "extra_info"]


def _no_network(*args, **kwargs):
    raise AssertionError(f"smoke assets must be written without network (tried to connect: {args})")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Written twice with seed 0 (once through the CLI) and once with seed 1, every socket connect refused.
    The seed-1 write runs between two draws of seeded global RNGs, to see that writing leaves them alone."""
    root = tmp_path_factory.mktemp("smoke_assets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        first = smoke_assets.write_smoke_assets(root / "a", seed=0)
        smoke_assets.main(["--out", str(root / "b"), "--seed", "0"])
        torch.manual_seed(123)
        random.seed(123)
        expected = (torch.rand(3), random.random())
        torch.manual_seed(123)
        random.seed(123)
        other = smoke_assets.write_smoke_assets(root / "c", seed=1)
        drawn = (torch.rand(3), random.random())
    again = {k: root / "b" / v.relative_to(root / "a") for k, v in first.items()}
    return {"paths": first, "again": again, "other": other, "root": root, "rng": (expected, drawn)}


@pytest.fixture(scope="module")
def tokenizer(assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets["paths"]["model"])


@pytest.fixture(scope="module")
def model(assets):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(assets["paths"]["model"], dtype=torch.float32)


# -----------------------------------------------------------------------------
# tokenizer


def test_chat_template_renders_qwen3_non_thinking_prompt(tokenizer):
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is $2+3$?"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is $2+3$?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # thinking mode (the template's default) opens the assistant turn only
    assert tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nWhat is $2+3$?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_through_the_pipelines_prompt_call(tokenizer):
    from spot_utils.modeling import prompt_text

    assert prompt_text(tokenizer, "Compute $3 \\times 4$.", enable_thinking=False) == (
        "<|im_start|>user\nCompute $3 \\times 4$.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_chat_template_history_drops_earlier_thoughts(tokenizer):
    conversation = [{"role": "user", "content": "Q1"},
                    {"role": "assistant", "content": "<think>\nscratch\n</think>\n\nA1"},
                    {"role": "user", "content": "Q2"},
                    {"role": "assistant", "content": "A2"}]
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n")


def test_special_tokens_eos_pad_and_no_bos(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None and tokenizer.bos_token_id is None
    text = "Find $x$ if $2x + 6 = 10$."
    assert tokenizer(text).input_ids == tokenizer.encode(text, add_special_tokens=False)  # nothing prepended
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    ids = tokenizer.convert_tokens_to_ids(specials)
    assert ids == list(range(smoke_assets.BPE_VOCAB, smoke_assets.BPE_VOCAB + 5))  # after the BPE entries
    assert len(tokenizer) == smoke_assets.BPE_VOCAB + 5
    for token, i in zip(specials, ids):
        assert tokenizer.encode(token, add_special_tokens=False) == [i]
    # as in Qwen3: the role markers are skipped when decoding, the think tags are not
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think></think>"
    # byte-level BPE: any text round-trips, and numbers are split into digits
    odd = "Ünïcode ∑ 12345 \\frac{1}{2}\n\ttab"
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd
    assert tokenizer.tokenize("2024") == ["2", "0", "2", "4"]


# -----------------------------------------------------------------------------
# model


def test_model_is_a_qwen3_with_grouped_query_attention(model, tokenizer):
    from transformers import Qwen3ForCausalLM

    c = model.config
    assert isinstance(model, Qwen3ForCausalLM) and model.dtype == torch.float32
    assert c.num_key_value_heads < c.num_attention_heads and c.num_attention_heads % c.num_key_value_heads == 0
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == c.num_key_value_heads * c.head_dim
    assert attn.q_proj.out_features == c.num_attention_heads * c.head_dim
    assert not c.tie_word_embeddings  # Qwen3-8B does not tie
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert c.vocab_size >= len(tokenizer) and c.vocab_size % 128 == 0  # padded rows, as Qwen3-8B's
    assert c.eos_token_id == tokenizer.eos_token_id and c.pad_token_id == tokenizer.pad_token_id
    g = model.generation_config
    assert g.pad_token_id == tokenizer.pad_token_id and tokenizer.eos_token_id in g.eos_token_id


def test_model_generates(model, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                                           add_generation_prompt=True, enable_thinking=False)
    enc = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                         temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, enc["input_ids"].shape[1] + 4)
    assert isinstance(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True), str)


# -----------------------------------------------------------------------------
# the tuned stand-in: it ends its answers, some right and some wrong

ANSWER_END = re.compile(r"\nTherefore, the final answer is: \$\\boxed\{\d+\}\$\.$")


def _solve(question: str) -> int:
    """The answer of a smoke question, worked out here from its numbers (independently of smoke_assets)."""
    v = [int(x) for x in re.findall(r"\d+", question)]
    if question.startswith("Compute"):
        return v[0] * v[1] + v[2]
    if question.startswith("If $x$"):
        return (v[2] - v[1]) // v[0]
    if question.startswith("What is the remainder"):
        return v[0] % v[1]
    if question.startswith("Find the sum"):
        return v[0] * (v[0] + 1) // 2
    if question.startswith("A rectangle"):
        return v[0] * v[1]
    return sum(1 for d in range(1, v[0] + 1) if v[0] % d == 0)


def test_tuning_examples_are_fresh_questions_of_the_parquets_kinds():
    from spot_utils.math_grader import grade_math
    from spot_utils.oracle import DEFAULT_ANSWER_FORMAT

    rows = smoke_assets.dapo_rows(0)
    assert all(_solve(r["prompt"]) == int(r["solution"]) for r in rows)
    parquet = {r["prompt"] for r in rows}
    examples = smoke_assets.tuning_examples(0, exclude=parquet)
    assert len(examples) == smoke_assets.TUNE_EXAMPLES and examples == smoke_assets.tuning_examples(0, parquet)
    assert not parquet & {q for q, _ in examples}  # nothing the pipeline elicits is trained on
    assert {q.split("$")[0] for q, _ in examples} == {r["prompt"].split("$")[0] for r in rows}  # the six kinds
    assert smoke_assets.ANSWER_LINE % 7 == DEFAULT_ANSWER_FORMAT.replace("ANSWER", "7")  # what the Oracle writes
    assert all(ANSWER_END.search(a) and a.count("\n") == 1 for _, a in examples)  # a worked line, the box
    # right for most, a slip for the others (TUNE_WRONG of them), graded as the pipeline grades
    right = [grade_math(a, str(_solve(q))) for q, a in examples[:600]]
    assert abs(1 - sum(right) / len(right) - smoke_assets.TUNE_WRONG) < 0.06


def test_tuning_trains_on_the_prompt_the_pipeline_asks(tokenizer):
    """The tuning's token ids are the elicitation's prompt (math_prompt, chat template, non-thinking,
    no special tokens added), then the answer and <|im_end|>; the loss is on the answer part alone."""
    from spot_utils.generation import _render
    from spot_utils.paper_suites import math_prompt
    from spot_utils.tiny.pretrain import IGNORE, encode_pair

    question, answer = smoke_assets.tuning_examples(0, set(), n=1)[0]
    ids, labels = encode_pair(tokenizer, math_prompt(question), answer)
    prompt = tokenizer.encode(_render(tokenizer, math_prompt(question), None, False), add_special_tokens=False)
    response = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert ids == prompt + response and labels == [IGNORE] * len(prompt) + response
    assert tokenizer.decode(ids).endswith("<think>\n\n</think>\n\n" + answer + "<|im_end|>")


@pytest.fixture(scope="module")
def elicited(assets):
    """The stand-in sampled on the parquet's questions as spot_utils.pipeline.elicit asks them (the
    paper_smoke profile's backend, temperature, top-p, max_new_tokens, seed, batch size and thinking
    mode; the prompt math_prompt(question)), 4 samples per question, graded with the pipeline's grader."""
    from spot_utils import pipeline
    from spot_utils.generation import generate
    from spot_utils.paper_suites import math_prompt

    profile = load_profile("paper_smoke", **{"rectification.dataset": str(assets["paths"]["dataset"])})
    questions = pipeline.elicitation_questions(profile)  # the parquet, read as the pipeline reads it
    g = profile.generation
    texts, reasons = generate(str(assets["paths"]["model"]), [math_prompt(q["question"]) for q in questions],
                              backend=g.backend, n=4, temperature=g.temperature, top_p=g.top_p,
                              max_new_tokens=g.max_new_tokens, seed=profile.seed, batch_size=g.batch_size,
                              enable_thinking=profile.model.enable_thinking, progress=False,
                              return_finish_reasons=True)
    return [{"text": t, "reason": r, "correct": pipeline.grade_answer(profile, t, q["ground_truth"])}
            for q, ts, rs in zip(questions, texts, reasons) for t, r in zip(ts, rs)]


def test_the_stand_in_ends_its_answers(elicited):
    # a truncated answer is set apart by the pipeline (no y-, no RFT answer): almost none may be
    assert len(elicited) == 4 * smoke_assets.DAPO_ROWS
    stopped = [s for s in elicited if s["reason"] == "stop"]
    assert len(stopped) >= 0.9 * len(elicited), f"{len(stopped)} of {len(elicited)} answers ended"
    # and an ended answer has the final line the graders and the Oracle read
    assert sum(bool(ANSWER_END.search(s["text"])) for s in stopped) >= 0.9 * len(stopped)


def test_the_stand_in_is_right_sometimes_and_wrong_mostly(elicited):
    # errors for the Oracle (y-) and correct answers for RFT: both must occur among the ended answers.
    # On these new questions the stand-in is right 3-5% of the time (it learned the format, not the
    # arithmetic), hence 4 samples per question: 7 of 160 right with seed 0 (2 of 40 with one sample)
    right = sum(s["correct"] for s in elicited if s["reason"] == "stop")
    wrong = sum(not s["correct"] for s in elicited if s["reason"] == "stop")
    assert right >= 2 and wrong >= 0.5 * len(elicited), (right, wrong)


def test_the_smoke_suites_run_on_the_stand_in(assets, tmp_path):
    """The nine suites on the committed fixtures (eval.suite_dir), as notebook 00 evaluates the base."""
    import pandas as pd

    from spot_utils import paper_suites, suite_eval

    profile = load_profile("paper_smoke", run_dir=str(tmp_path / "run"),
                           **{"model.name_or_path": str(assets["paths"]["model"])})
    scores = suite_eval.evaluate_base(profile, progress=False)
    rows = pd.read_csv(tmp_path / "run" / "base" / suite_eval.BASE_ROWS_FILE)
    assert set(rows["suite"]) == set(paper_suites.SUITES)
    assert {paper_suites.get_spec(n).display for n in paper_suites.SUITES} <= scores.keys()
    assert all(0 <= v <= 100 for v in scores.values())


# -----------------------------------------------------------------------------
# DAPO look-alike


def test_parquet_has_dapo_columns_and_loads_through_datasets(assets, tmp_path):
    from datasets import load_dataset

    paths = assets["paths"]
    ds = load_dataset("parquet", data_files=str(paths["parquet"]), split="train", cache_dir=str(tmp_path))
    assert ds.column_names == DAPO_COLUMNS and len(ds) == smoke_assets.DAPO_ROWS
    # the pipeline's call shape: load_dataset(rectification.dataset, rectification.dataset_config)
    hub_like = load_dataset(str(paths["dataset"]), "en", split="train", cache_dir=str(tmp_path))
    assert hub_like.column_names == DAPO_COLUMNS and hub_like["prompt"] == ds["prompt"]
    assert len(set(ds["prompt"])) == len(ds)  # deduplicated on the prompt, as the processed set is
    for row in ds:
        assert int(row["solution"]) == int(row["reward_model"]["ground_truth"])  # an integer answer
        assert row["prompt"] in row["source_prompt"][0]["content"] and row["source_prompt"][0]["role"] == "user"
        assert row["data_source"] == "math_dapo" and row["ability"] == "MATH"


def test_dapo_answers_are_right():
    rows = smoke_assets.dapo_rows(0)
    by_start = {r["prompt"].split("$")[0]: r for r in rows}
    assert len(by_start) == 6  # every question kind occurs
    area = next(r for r in rows if r["prompt"].startswith("A rectangle"))
    a, b = [int(x) for x in area["prompt"].split("$")[1::2]]
    assert int(area["solution"]) == a * b


# -----------------------------------------------------------------------------
# determinism


def test_same_seed_same_bytes(assets):
    first, again = assets["paths"], assets["again"]
    model_a, model_b = first["model"], again["model"]
    assert (model_a / "tokenizer.json").read_bytes() == (model_b / "tokenizer.json").read_bytes()
    assert first["parquet"].read_bytes() == again["parquet"].read_bytes()
    wa, wb = load_file(model_a / "model.safetensors"), load_file(model_b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in sorted(p.name for p in model_a.iterdir()):  # every file of the model folder, in fact
        assert (model_a / name).read_bytes() == (model_b / name).read_bytes(), name


def test_other_seed_other_weights_and_rows(assets):
    wa = load_file(assets["paths"]["model"] / "model.safetensors")
    wc = load_file(assets["other"]["model"] / "model.safetensors")
    assert not torch.equal(wa["lm_head.weight"], wc["lm_head.weight"])
    assert assets["paths"]["parquet"].read_bytes() != assets["other"]["parquet"].read_bytes()


def test_writing_leaves_the_global_rng_alone(assets):
    (torch_expected, random_expected), (torch_drawn, random_drawn) = assets["rng"]
    assert torch.equal(torch_drawn, torch_expected) and random_drawn == random_expected



# -----------------------------------------------------------------------------
# the profile

# What paper_smoke may change from paper_qwen3_8b: what a CPU / no network forces (see the file's comments).
SMOKE_CHANGES = {
    "name", "source_file", "model.name_or_path", "model.dtype",
    "generation.backend", "generation.max_new_tokens", "generation.batch_size", "generation.tensor_parallel_size",
    "eval.n_samples", "eval.suite_dir",
    "rectification.dataset", "rectification.questions", "rectification.oracle.base_url", "rectification.oracle.model",
    "training.max_steps", "training.gradient_accumulation_steps", "training.bf16", "training.logging_steps",
    "training.save_steps", "training.deepspeed", "experiments.train_examples", "experiments.launcher",
}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("lr", "extra_body"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_paper_smoke_profile_loads_and_copies_the_paper_profile():
    smoke, paper = load_profile("paper_smoke"), load_profile("paper_qwen3_8b")
    assert not smoke.is_tiny and smoke.model.source == "pretrained"
    s, p = _flat(smoke.to_dict()), _flat(paper.to_dict())
    changed = {k for k in s.keys() | p.keys() if s.get(k) != p.get(k)}
    assert changed <= SMOKE_CHANGES, f"paper_smoke drifted from paper_qwen3_8b: {sorted(changed - SMOKE_CHANGES)}"
    assert smoke.model.dtype == "float32" and smoke.generation.backend == "hf" and not smoke.training.deepspeed
    assert smoke.rectification.oracle.base_url == "" and smoke.eval.suite_dir == "tests/fixtures/paper"
    # the paper's global batch of 32 with 2 launched processes (training.check_launch checks the same)
    t = smoke.training
    assert 2 * t.per_device_batch_size * t.gradient_accumulation_steps == 32


def test_profile_points_at_what_the_cli_writes():
    smoke = load_profile("paper_smoke")
    out = Path("runs/paper_smoke/assets")  # the CLI's default --out, relative to the repository root
    assert Path(smoke.model.name_or_path) == out / smoke_assets.MODEL_DIR
    assert Path(smoke.rectification.dataset) == out / smoke_assets.DATASET_DIR
    assert smoke.rectification.dataset_config == smoke_assets.DATASET_CONFIG
    assert smoke.rectification.questions <= smoke_assets.DAPO_ROWS
    assert (Path(smoke_assets.REPO_ROOT) / smoke.eval.suite_dir).is_dir()
