"""Stand-ins for the paper profile's downloads, written locally: the assets of the paper_smoke profile.

The paper profile loads Qwen/Qwen3-8B and open-r1/DAPO-Math-17k-Processed from the hub. A CPU (and CI,
offline) can run neither, so this module writes look-alikes in the same formats, with no download:

* model/        a small Qwen3ForCausalLM (float32, the profile's CPU dtype), randomly initialised and then
                tuned for a few seconds to answer the paper's math prompt in its format and end the answer
                (see tune_stand_in), and a Qwen3-style tokenizer (byte-level BPE, Qwen3's special tokens
                and chat rendering), both saved with save_pretrained: what AutoModelForCausalLM /
                AutoTokenizer.from_pretrained load
* dapo_math_17k_smoke/  a local copy of the hub dataset's layout (README.md declaring config "en",
                en/dapo_math_smoke.parquet with the hub's columns), so `load_dataset(dir, "en", split="train")`
                reads it exactly as the paper's `load_dataset("open-r1/DAPO-Math-17k-Processed", "en")`

Same seed, same bytes (tokenizer.json, the parquet, the weights). Usage:

    python -m spot_utils.smoke_assets --out runs/paper_smoke/assets
"""
from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path

import torch

from .config import REPO_ROOT

ENDOFTEXT, IM_START, IM_END, THINK, END_THINK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"
BPE_VOCAB = 1000          # byte-level BPE entries (256 bytes + merges); the special tokens come after them
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "paper"
MODEL_DIR, DATASET_DIR, DATASET_CONFIG = "model", "dapo_math_17k_smoke", "en"
PARQUET = "dapo_math_smoke.parquet"
DAPO_ROWS = 40

# Qwen3-8B's architecture, shrunk: the same kind of every part (grouped-query attention with
# 2 query heads per kv head, q/k RMSNorm, untied embeddings, SiLU MLP of 3x the width), tiny widths.
MODEL_SIZE = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)

# Qwen2/Qwen3's pre-tokenizer split (GPT-4 style, but one digit per token: numbers split into digits).
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3's chat rendering (ChatML), as its model card documents it:
#   <|im_start|>system\n{system}<|im_end|>\n            (only when a system message is given)
#   <|im_start|>user\n{question}<|im_end|>\n
#   <|im_start|>assistant\n{answer}<|im_end|>\n        (earlier turns: the think block is dropped)
#   <|im_start|>assistant\n<think>\n{thought}\n</think>\n\n{answer}<|im_end|>\n   (a turn after the last
#                                                       user message; an empty thought gives "<think>\n\n</think>\n\n")
#   <|im_start|>assistant\n                             (add_generation_prompt)
#   <|im_start|>assistant\n<think>\n\n</think>\n\n      (add_generation_prompt, enable_thinking=False:
#                                                       the non-thinking mode is an empty think block)
# Tools are not rendered (the paper uses none): any other role is an error, not a silent skip.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' or m['role'] == 'user' -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] -%}{%- set thought = '' -%}"
    "{%- if m['reasoning_content'] is defined and m['reasoning_content'] is string -%}"
    "{%- set thought = m['reasoning_content'] -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set thought = content.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set content = content.split('</think>')[-1] -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user and (loop.last or thought) -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n')"
    " + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + content.lstrip('\\n') + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{- raise_exception('this chat template renders system, user and assistant messages only') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

# Text the BPE learns from besides the fixtures and the DAPO questions: the English, LaTeX and answer
# formats the pipeline's prompts, Oracle replies and graders use, so common pieces get merges.
BUILTIN_TEXT = """\
Solve the following math problem step by step. Think carefully and show your work.
Therefore, the final answer is: $\\boxed{42}$. I hope it is correct.
Let x be a real number such that x^2 + 2x + 1 = 0. Then (x + 1)^2 = 0, so x = -1.
We have $\\frac{a}{b} + \\frac{c}{d} = \\frac{ad + bc}{bd}$ and $\\sqrt{16} = 4$, $2^{10} = 1024$.
The sum of the first n positive integers is $\\frac{n(n+1)}{2}$; for n = 100 it is 5050.
The area of a circle of radius r is $\\pi r^2$, and its circumference is $2 \\pi r$.
Compute $3 \\times 7 + 12 \\div 4 - 5$. First, $3 \\times 7 = 21$. Then $12 \\div 4 = 3$. So $21 + 3 - 5 = 19$.
How many positive divisors does 36 have? Since $36 = 2^2 \\cdot 3^2$, it has $(2+1)(2+1) = 9$ divisors.
The remainder when 100 is divided by 7 is 2, because $100 = 7 \\cdot 14 + 2$.
If $\\angle A = 90^\\circ$ in triangle ABC, then $AB^2 + AC^2 = BC^2$ by the Pythagorean theorem.
The answer is correct. The answer is wrong. This step contains an error; here is the corrected step.
You are a careful teacher. Rewrite the response with the smallest change that fixes the mistake.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 50 75 100 1000
"""


def _fixture_text() -> list[str]:
    """Every string of the committed paper fixtures (questions, solutions, answers), in a fixed order."""
    out: list[str] = []

    def walk(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for path in sorted(FIXTURES.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                walk(json.loads(line))
    return out


# -----------------------------------------------------------------------------
# DAPO-Math-17k-Processed look-alike

DAPO_INSTRUCTION = ("Solve the following math problem step by step. The last line of your response should be of "
                    "the form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_REMINDER = "\n\nRemember to put your answer on its own line after \"Answer:\"."


def _math_question(rng: random.Random, kind: int) -> tuple[str, int, str]:
    """One simple question with an integer answer, and a one-line worked solution whose last result is
    the placeholder ANSWER (the stand-in's tuning fills it in); `kind` picks the template (all kinds take
    turns). The same draws whatever the caller keeps, so the parquet does not depend on the solutions."""
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(1, 50)
    if kind == 0:
        return (f"Compute ${a} \\times {b} + {c}$.", a * b + c,
                f"First, ${a} \\times {b} = {a * b}$, and then ${a * b} + {c} = ANSWER$.")
    if kind == 1:
        return (f"If $x$ satisfies ${b}x + {c} = {b * a + c}$, what is $x$?", a,
                f"Subtracting ${c}$ from both sides gives ${b}x = {b * a}$, so $x = ANSWER$.")
    if kind == 2:
        n = a * b + c
        return (f"What is the remainder when ${n}$ is divided by ${b}$?", n % b,
                f"Dividing, ${n} = {b} \\cdot {n // b} + ANSWER$.")
    if kind == 3:
        return (f"Find the sum of the first ${a}$ positive integers.", a * (a + 1) // 2,
                f"The sum is $\\frac{{{a} \\cdot {a + 1}}}{{2}} = ANSWER$.")
    if kind == 4:
        return (f"A rectangle has length ${a}$ and width ${b}$. What is its area?", a * b,
                f"The area is length times width: ${a} \\times {b} = ANSWER$.")
    n = a * b
    return (f"How many positive divisors does ${n}$ have?", sum(1 for d in range(1, n + 1) if n % d == 0),
            f"Counting the divisors of ${n}$ one by one gives ANSWER.")


def dapo_rows(seed: int = 0, n: int = DAPO_ROWS) -> list[dict]:
    """`n` distinct questions in DAPO-Math-17k-Processed's columns. As on the hub, `prompt` is the question
    and `solution` the reference answer as a string; `source_prompt` keeps DAPO's original user message;
    `reward_model`, `ability`, `data_source` and `extra_info` are DAPO's (the index a uuid)."""
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        question, answer, _ = _math_question(rng, len(rows) % 6)
        if question in seen:  # the processed set is deduplicated on the prompt
            continue
        seen.add(question)
        rows.append({
            "prompt": question,
            "solution": str(answer),
            "data_source": "math_dapo",
            "source_prompt": [{"content": DAPO_INSTRUCTION + question + DAPO_REMINDER, "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": str(answer), "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": str(uuid.UUID(int=rng.getrandbits(128), version=4))},
        })
    return rows


def write_dapo_parquet(rows: list[dict], out_dir: Path) -> Path:
    """The hub's layout: README.md declares config "en" -> en/*.parquet. Written with pyarrow and an
    explicit schema (no timestamps), so the same rows give the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.string()
    schema = pa.schema([
        ("prompt", text), ("solution", text), ("data_source", text),
        ("source_prompt", pa.list_(pa.struct([("content", text), ("role", text)]))),
        ("ability", text),
        ("reward_model", pa.struct([("ground_truth", text), ("style", text)])),
        ("extra_info", pa.struct([("index", text)])),
    ])
    (out_dir / DATASET_CONFIG).mkdir(parents=True, exist_ok=True)
    path = out_dir / DATASET_CONFIG / PARQUET
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    (out_dir / "README.md").write_text(
        "---\nconfigs:\n"
        f"- config_name: {DATASET_CONFIG}\n  data_files:\n  - split: train\n    path: {DATASET_CONFIG}/*.parquet\n"
        "---\n\nA generated stand-in for open-r1/DAPO-Math-17k-Processed (spot_utils.smoke_assets).\n")
    return path


# -----------------------------------------------------------------------------
# tokenizer and model

def build_tokenizer(corpus: list[str]):
    """A Qwen3-style tokenizer: NFC, Qwen's split regex, byte-level BPE trained here on `corpus`; the
    special tokens come after the BPE vocabulary, as in Qwen3. <think>/</think> are added but NOT
    special (as in Qwen3), so skip_special_tokens keeps them in decoded text. No BOS token."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    # every byte is in the alphabet, so any text encodes (no unknown token, like Qwen3)
    # min_frequency 1: the small corpus still fills BPE_VOCAB (a pair seen once may merge)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus, trainer=trainer)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, IM_START, IM_END)])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK, END_THINK)])
    # Qwen3's tokenizer_config: no BOS, no unk, eos <|im_end|>, pad <|endoftext|>, 131,072 positions
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=IM_END, pad_token=ENDOFTEXT, bos_token=None,
                                  unk_token=None, extra_special_tokens=[IM_START, IM_END],
                                  model_max_length=131072, clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(tokenizer, seed: int = 0, size: dict | None = None):
    """A random Qwen3ForCausalLM of MODEL_SIZE (or `size`, e.g. scripts/gpu_check.py's wider one). The embedding rows are len(tokenizer) rounded up to 128,
    as Qwen3-8B's 151,936 rows exceed its 151,669 tokens; the ids match its config (eos <|im_end|>,
    bos id <|endoftext|> though the tokenizer adds no BOS) and generation_config (eos <|im_end|> or
    <|endoftext|>, pad <|endoftext|>, its sampling defaults)."""
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    pad, eos = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    config = Qwen3Config(
        vocab_size=-(-len(tokenizer) // 128) * 128, **(size or MODEL_SIZE),
        hidden_act="silu", max_position_embeddings=40960, rms_norm_eps=1e-6, attention_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, use_sliding_window=False,
        tie_word_embeddings=False, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, dtype="float32")
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad,
                                               do_sample=True, temperature=0.6, top_p=0.95, top_k=20)
    return model


# -----------------------------------------------------------------------------
# a short instruction tuning, so that the stand-in ends its answers

# A random Qwen3 never emits <|im_end|>: every answer would run to max_new_tokens, and the pipeline keeps
# only the answers that end (finish_reason "stop"). A few seconds of supervised tuning teach the stand-in
# the shape of an answer to the paper's math prompt: a worked line, the boxed final line, <|im_end|>.
# The questions are fresh ones of the parquet's kinds, never the parquet's own (nothing elicited is
# memorised), and a share of the answers carries a slip in the last step, as a base model's do.
# What 100 steps of a model this small learn is the shape, not the arithmetic: on the parquet's
# questions its final numbers are right 3-5% of the time (mostly the small remainders and divisor
# counts), so the smoke's elicitation gets many errors (y-) and a few correct answers (RFT).
TUNE_EXAMPLES = 1600           # 100 steps of 16, each example seen once; ~12 s on one core
TUNE_BATCH = 16
TUNE_LR = 3e-3                 # AdamW, linear warm-up over 10 steps, then cosine decay to 10%
TUNE_WRONG = 0.25              # the share of examples whose last step has a slip
SLIPS = (-10, -2, -1, 1, 2, 10)
ANSWER_LINE = "Therefore, the final answer is: $\\boxed{%s}$."   # what paper_suites.MATH_INSTRUCTION asks for


def tuning_examples(seed: int, exclude: set[str], n: int = TUNE_EXAMPLES) -> list[tuple[str, str]]:
    """`n` (question, answer) pairs of the parquet's question kinds, no question in `exclude`. The answer
    is the worked line and the boxed final line, its result right or (a share TUNE_WRONG) off by a slip."""
    rng, out = random.Random(f"smoke-tuning:{seed}"), []
    while len(out) < n:
        question, answer, work = _math_question(rng, len(out) % 6)
        if question in exclude:
            continue
        if rng.random() < TUNE_WRONG:
            answer += rng.choice([d for d in SLIPS if answer + d >= 0])
        out.append((question, work.replace("ANSWER", str(answer)) + "\n" + ANSWER_LINE % answer))
    return out


def tune_stand_in(model, tokenizer, examples: list[tuple[str, str]], batch: int = TUNE_BATCH,
                  lr: float = TUNE_LR) -> list[float]:
    """Supervised tuning on `examples` in order, `batch` at a time: each question asked as the paper
    profile asks it (paper_suites.math_prompt through the chat template, non-thinking), the loss on the
    answer and its <|im_end|> only. One thread and no dropout: same examples, same weights. Returns the
    loss of every step."""
    from .paper_suites import math_prompt
    from .tiny.pretrain import IGNORE, collate, encode_pair, lr_at  # the tiny base's loop helpers, reused

    steps = len(examples) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    threads, losses = torch.get_num_threads(), []
    torch.set_num_threads(1)  # the float sums in one order: the same bytes on every run
    model.train()
    try:
        for step in range(steps):
            rows = [encode_pair(tokenizer, math_prompt(q), a) for q, a in examples[step * batch:(step + 1) * batch]]
            inputs = collate(rows, tokenizer.pad_token_id)  # right padding: no real token sees a pad
            for group in opt.param_groups:
                group["lr"] = lr * lr_at(step, steps, warmup=10, min_ratio=0.1)
            # next-token loss on the answer tokens only, their logits alone computed (the prompt's 3/4 skipped)
            hidden = model.model(input_ids=inputs["input_ids"], use_cache=False).last_hidden_state[:, :-1]
            targets = inputs["labels"][:, 1:]
            answer = targets != IGNORE
            loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[answer]), targets[answer])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return losses


def write_smoke_assets(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the model folder (weights + tokenizer) and the DAPO look-alike under `out_dir`; return their
    paths: model, dataset (the folder to give load_dataset with config "en"), parquet (the file)."""
    from .paper_suites import math_prompt

    out = Path(out_dir)
    rows = dapo_rows(seed)
    examples = tuning_examples(seed, exclude={r["prompt"] for r in rows})
    # the BPE also learns from the questions as the pipeline asks them and from answers in the tuned format
    corpus = (_fixture_text() + [r["source_prompt"][0]["content"] for r in rows] + BUILTIN_TEXT.splitlines()
              + [math_prompt(r["prompt"]) for r in rows] + [a for _, a in examples[:60]])
    tokenizer = build_tokenizer(corpus)
    model = build_model(tokenizer, seed)
    tune_stand_in(model, tokenizer, examples)
    model_dir = out / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)  # float32 safetensors: the smoke profile loads float32 (CPU)
    tokenizer.save_pretrained(model_dir)
    parquet = write_dapo_parquet(rows, out / DATASET_DIR)
    return {"model": model_dir, "dataset": out / DATASET_DIR, "parquet": parquet}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/paper_smoke/assets", help="folder to write (relative: to the cwd)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_smoke_assets(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
