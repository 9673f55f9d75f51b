"""The shared-prefix pair forward against two rows per pair: stock TRL, this project without and with it.

Why: a pair's y+ and y- begin with the same prompt and, for SPoT's minimal edits, much of the same answer;
`training.shared_prefix` computes that beginning once per pair (spot_utils.shared_prefix). Side by side,
in one process at one thread (as every tiny run trains), on the same model, pairs and micro-batches:
  (a) TRL 1.16's DPOTrainer as it ships (loss_type sigmoid, precomputed reference): one forward of the
      2 x batch rows, padded to the longest;
  (b) SPoTTrainer's DPO, two rows per pair, in forwards of similar-length rows (training.length_group_rows);
  (c) the same with one packed row per pair (training.shared_prefix).
Each optimizer step is forward + backward + AdamW step; best of a few interleaved rounds (other tenants of
the machine only ever slow a round down). Tokens are what the forwards carry, padding included.
It also estimates (c) over (a) for paper-shaped pairs (under ASSUMPTIONS, below) and
writes everything to benchmarks/results.json under "shared_prefix".

Uses the tiny base and pairs when `make reproduce` has made them (runs/tiny), else a random-init model of
the same shape on synthetic pairs. Run: python benchmarks/bench_shared_prefix.py
"""
import copy
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch

os.environ["TQDM_DISABLE"] = "1"  # TRL's reference-pass bar
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout too
from trl import DPOConfig, DPOTrainer  # noqa: E402

from bench_training_step import synthetic_pairs  # noqa: E402
from spot_utils import shared_prefix, training  # noqa: E402
from spot_utils.config import load_profile  # noqa: E402
from spot_utils.data import read_jsonl  # noqa: E402
from spot_utils.environment import cpu_model  # noqa: E402
from spot_utils.modeling import base_dir  # noqa: E402
from spot_utils.rectify import common_prefix_length  # noqa: E402
from spot_utils.tasks import load_base  # noqa: E402
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model  # noqa: E402

BATCHES, ROUNDS = 8, 3
RESULTS = ROOT / "benchmarks" / "results.json"
# paper-shaped pairs (ASSUMPTIONS): prompt tokens, mean answer tokens (make plan's estimate for Qwen3-8B),
# and App. C's per-device batch of 2 pairs
PAPER_PROMPT, PAPER_BATCH = 200, 2
PAPER_ANSWER = load_profile("paper").plan.answer_tokens


def pairs_and_model(profile):
    pairs_file = profile.runs / "data" / f"pairs_gamma{profile.rectification.gamma:g}.jsonl"
    if (base_dir(profile) / "model.safetensors").exists() and pairs_file.exists():
        model, tok = load_base(profile)
        return model, tok, read_jsonl(pairs_file), f"{pairs_file.relative_to(ROOT)}, the tiny base"
    tok = build_char_tokenizer()
    return (build_tiny_model(profile.model, tok, seed=0), tok, synthetic_pairs(),
            "synthetic pairs, a random-init tiny model (run `make reproduce` first for real ones)")


def stock_trl(profile, records, model, tok, folder):
    settings = training.trainer_settings("dpo", profile)
    args = DPOConfig(output_dir=folder, seed=profile.seed, disable_tqdm=True, loss_type="sigmoid", **settings)
    dataset, _ = training.to_dataset("dpo", records, tok)
    return DPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=dataset, processing_class=tok)


def ours(profile, records, model, tok, folder, shared):
    profile = copy.deepcopy(profile)
    profile.training.shared_prefix = shared
    return training.build_trainer("dpo", records, profile, folder, model=model, tokenizer=tok, progress=False)


def tokens_carried(trainer, batch) -> int:
    """Tokens the trainer's forwards carry for one micro-batch, padding included."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not isinstance(trainer, training.SPoTTrainer):
        return ids.numel()  # one forward of every row, at the batch's longest length
    if trainer.shared_prefix:
        lengths = torch.tensor([shared_prefix.packed_length(*s) for s in shared_prefix.pair_spans(ids, mask)])
        groups = training.groups_by_length(lengths, torch.arange(len(lengths)), trainer.group_rows)
    else:
        groups = training.length_groups(mask, torch.arange(len(ids)), trainer.group_rows)
    return sum(len(rows) * length for rows, length in groups)


def step_seconds(trainer, batches) -> float:
    """Mean seconds of one optimizer step (forward, backward, AdamW) over `batches`."""
    model = trainer.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    start = time.perf_counter()
    for batch in batches:
        trainer.compute_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / len(batches)


def pair_lengths(trainer, records):
    """(prompt, y+, y-, common prefix of the answers) token counts per pair, as the trainer tokenised them."""
    out = []
    for row in trainer.train_dataset.select(range(len(records))):
        p, c, r = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
        common = common_prefix_length(c, r)
        out.append((len(p), len(c), len(r), common))
    return out


ASSUMPTIONS = (
    "a step's time is proportional to the tokens its forwards carry, padding included (an 8B model's linear "
    "layers dominate; attention, which grows faster with length, would favour (c) further); answers keep the "
    "tiny pairs' proportions (y+, y- and their common prefix scaled together to a mean of {answer} tokens, "
    "make plan's plan.answer_tokens); prompts of {prompt} tokens; micro-batches of {batch} random pairs (App. C); "
    "stock TRL pads the {rows} rows of a micro-batch to the longest, (c) pads the {batch} packed rows to the longest")


def paper_estimate(lengths, seed=0) -> dict:
    """(c) over (a) for paper-shaped pairs, from the tiny pairs' shapes, under ASSUMPTIONS."""
    scale = PAPER_ANSWER / (sum(c + r for _, c, r, _ in lengths) / (2 * len(lengths)))
    shaped = [(PAPER_PROMPT, round(c * scale), round(r * scale), round(k * scale)) for _, c, r, k in lengths]
    random.Random(seed).shuffle(shaped)
    stock = packed = 0
    for i in range(0, len(shaped) - PAPER_BATCH + 1, PAPER_BATCH):
        batch = shaped[i:i + PAPER_BATCH]
        stock += 2 * PAPER_BATCH * max(p + max(c, r) for p, c, r, _ in batch)
        packed += PAPER_BATCH * max(shared_prefix.packed_length(p + c, p + r, p + k) for p, c, r, k in batch)
    return {"speedup_c_over_a": round(stock / packed, 2), "prompt_tokens": PAPER_PROMPT,
            "mean_answer_tokens": PAPER_ANSWER, "pairs_per_micro_batch": PAPER_BATCH,
            "assumptions": ASSUMPTIONS.format(answer=PAPER_ANSWER, prompt=PAPER_PROMPT, batch=PAPER_BATCH,
                                              rows=2 * PAPER_BATCH)}


def main():
    datasets.disable_progress_bars()  # TRL's tokenisation bars
    torch.set_num_threads(1)
    profile = load_profile("tiny")
    model, tok, records, source = pairs_and_model(profile)
    batch = profile.training.per_device_batch_size
    records = records[:BATCHES * batch]
    print(f"data: {source}; {BATCHES} micro-batches of {batch} pairs, 1 thread, DPO loss in all three")
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {"a: stock TRL DPOTrainer": stock_trl(profile, records, model, tok, f"{tmp}/a"),
                    "b: ours, two rows per pair": ours(profile, records, model, tok, f"{tmp}/b", shared=False),
                    "c: ours, shared prefix": ours(profile, records, model, tok, f"{tmp}/c", shared=True)}
        torch.utils.deterministic.fill_uninitialized_memory = False  # as SPoTTrainer runs: the same for all three
        # the same micro-batches for all three (TRL's collator; the same tokenisation)
        loader = trainers["a: stock TRL DPOTrainer"].get_train_dataloader()
        batches = [b for _, b in zip(range(BATCHES), loader)]
        for b in batches:
            assert b["input_ids"].size(0) == 2 * batch
        tokens = {name: sum(tokens_carried(t, b) for b in batches) for name, t in trainers.items()}
        real = [shared_prefix.token_counts(shared_prefix.pair_spans(b["input_ids"], b["attention_mask"]))
                for b in batches]
        best = {name: float("inf") for name in trainers}
        for _ in range(ROUNDS):
            for name, trainer in trainers.items():
                best[name] = min(best[name], step_seconds(trainer, batches))
        lengths = pair_lengths(trainers["c: ours, shared prefix"], records)
    a, b, c = (best[name] for name in trainers)
    print(f"{'':30} {'s / step':>9} {'tokens / step':>14}")
    for name in trainers:
        print(f"{name:30} {best[name]:>9.3f} {tokens[name] / BATCHES:>14.0f}")
    print(f"real tokens per step: {sum(r['separate'] for r in real) / BATCHES:.0f} in two rows per pair, "
          f"{sum(r['shared_prefix'] for r in real) / BATCHES:.0f} in one packed row")
    print(f"speed-up of (c): {a / c:.2f}x over (a) (target 1.5x), {b / c:.2f}x over (b) (target 1.25x)")
    n = len(lengths)
    means = [sum(x[i] for x in lengths) / n for i in range(4)]
    print(f"pairs: prompt {means[0]:.1f}, y+ {means[1]:.1f}, y- {means[2]:.1f} tokens, first {means[3]:.1f} "
          "of the answers in common")
    estimate = paper_estimate(lengths)
    print(f"paper-shaped pairs (estimate): (c) over (a) {estimate['speedup_c_over_a']:.2f}x; "
          f"assumptions: {estimate['assumptions']}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["shared_prefix"] = {
        "cpu": cpu_model(), "threads": 1, "data": source,
        "micro_batches": BATCHES, "pairs_per_micro_batch": batch, "rounds": ROUNDS,
        "seconds_per_step": {name: round(best[name], 3) for name in trainers},
        "tokens_per_step": {name: tokens[name] / BATCHES for name in trainers},
        "speedup_c_over_a": round(a / c, 2), "speedup_c_over_b": round(b / c, 2),
        "targets": {"c_over_a": 1.5, "c_over_b": 1.25},
        "tiny_pair_tokens": dict(zip(("prompt", "chosen", "rejected", "common_answer_prefix"),
                                     (round(m, 1) for m in means))),
        "paper_estimate": estimate}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
