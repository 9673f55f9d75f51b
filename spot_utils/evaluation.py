"""Evaluation: generate answers for a suite of examples, grade them, and aggregate like the paper.

Headline numbers follow the paper's Table 1: In-domain Avg (mean over the arithmetic tiers, the
analog of the six math sets), OOD Avg (Connect4, the mean of its two accuracies), IF (prompt-level
strict accuracy over all skills) and Overall Avg (mean over every benchmark, as in the paper where
Overall = mean of the nine benchmarks).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from . import world
from .generation import generate


def evaluate(model, tokenizer, examples: Sequence["world.Example"], n: int = 1, temperature: float = 0.7,
             top_p: float = 0.8, max_new_tokens: int = 96, seed: int = 0, batch_size: int = 128,
             progress: bool = True, desc: str = "evaluate") -> pd.DataFrame:
    """One row per (example, sample) with the response and its grades."""
    completions = generate(model, [ex.question for ex in examples], n=n, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, tokenizer=tokenizer,
                           progress=progress, desc=desc)
    rows = []
    for ex, outs in zip(examples, completions):
        for k, text in enumerate(outs):
            grades = world.grade(ex.task, text, ex.ground_truth)
            rows.append({"id": ex.id, "task": ex.task, "tier": ex.tier, "sample": k, "response": text, **grades})
    return pd.DataFrame(rows)


def evaluate_profile(model, tokenizer, profile, examples, desc: str = "evaluate", progress: bool = True) -> pd.DataFrame:
    g = profile.generation
    return evaluate(model, tokenizer, examples, n=profile.eval.n_samples, temperature=g.temperature, top_p=g.top_p,
                    max_new_tokens=g.max_new_tokens, seed=profile.seed, batch_size=g.batch_size,
                    progress=progress, desc=desc)


def greedy_accuracy(model, tokenizer, examples, max_new_tokens: int = 96, batch_size: int = 256) -> dict[str, float]:
    """Greedy (temperature 0) accuracy per task family, keyed "probe/<task>": the training-time probe
    behind the accuracy-across-steps curves (pretraining in notebook 00, post-training in 01/03)."""
    outs = generate(model, [ex.question for ex in examples], temperature=0, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, tokenizer=tokenizer, progress=False)
    correct: dict[str, list[bool]] = {}
    for ex, (text,) in zip(examples, outs):
        correct.setdefault(ex.task, []).append(world.grade(ex.task, text, ex.ground_truth)["correct"])
    return {f"probe/{task}": sum(v) / len(v) for task, v in correct.items()}


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per task and tier, averaged over samples (avg@n); Connect4 also per question."""
    cols = [c for c in ("correct", "own", "opponent") if c in rows]
    table = rows.groupby(["task", "tier"], sort=False)[cols].mean().mul(100).round(1)
    table["n"] = rows.groupby(["task", "tier"], sort=False).size()
    return table


def headline(rows: pd.DataFrame) -> dict[str, float]:
    """The paper's summary columns, in %."""
    arith = rows[rows.task == "arithmetic"].groupby("tier")["correct"].mean()
    c4 = rows[rows.task == "connect4"]
    c4_score = (c4["own"].mean() + c4["opponent"].mean()) / 2 if len(c4) else float("nan")
    ifeval = rows[rows.task == "skill"]["correct"].mean()
    benchmarks = list(arith.values) + [c4_score, ifeval]
    return {"In-domain Avg": 100 * arith.mean(), "OOD Avg": 100 * c4_score, "IF": 100 * ifeval,
            "Overall Avg": 100 * sum(benchmarks) / len(benchmarks)}
