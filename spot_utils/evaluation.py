"""Evaluation: generate answers for a list of examples, grade them, and aggregate per task and tier.

    rows = evaluate_profile(model, tokenizer, profile, examples)   # one row per (example, sample)
    accuracy_table(rows)                                           # accuracy (%) per task and tier

An example is anything with id, task, tier, question and ground_truth (the miniature's
spot_utils.tiny.world.Example); `grade(task, response, ground_truth)` returns named booleans, at least
"correct" (the profile's tasks hand theirs out: tiny.world.grade). The miniature's headline columns
are tiny.world.headline; the paper's nine suites are scored by spot_utils.suite_eval.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from .generation import generate
from .tasks import tasks_of

Grade = Callable[[str, str, object], dict]  # (task, response, ground_truth) -> {"correct": bool, ...}


def evaluate(model, tokenizer, examples: Sequence, grade: Grade, n: int = 1, temperature: float = 0.7,
             top_p: float = 0.8, max_new_tokens: int = 96, seed: int = 0, batch_size: int = 128,
             progress: bool = True, desc: str = "evaluate") -> pd.DataFrame:
    """One row per (example, sample) with the response and its grades."""
    completions = generate(model, [ex.question for ex in examples], n=n, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, tokenizer=tokenizer,
                           progress=progress, desc=desc)
    rows = []
    for ex, outs in zip(examples, completions):
        for k, text in enumerate(outs):
            grades = grade(ex.task, text, ex.ground_truth)
            rows.append({"id": ex.id, "task": ex.task, "tier": ex.tier, "sample": k, "response": text, **grades})
    return pd.DataFrame(rows)


def evaluate_profile(model, tokenizer, profile, examples, desc: str = "evaluate", progress: bool = True) -> pd.DataFrame:
    """evaluate with the profile's sampling settings and its tasks' grader."""
    g = profile.generation
    return evaluate(model, tokenizer, examples, tasks_of(profile).grade, n=profile.eval.n_samples,
                    temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens, seed=profile.seed,
                    batch_size=g.batch_size, progress=progress, desc=desc)


def greedy_accuracy(model, tokenizer, examples, grade: Grade, max_new_tokens: int = 96,
                    batch_size: int = 256) -> dict[str, float]:
    """Greedy (temperature 0) accuracy per task family, keyed "probe/<task>": the training-time probe
    behind the accuracy-across-steps curves (pretraining in notebook 00, post-training in 02/03)."""
    outs = generate(model, [ex.question for ex in examples], temperature=0, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, tokenizer=tokenizer, progress=False)
    correct: dict[str, list[bool]] = {}
    for ex, (text,) in zip(examples, outs):
        correct.setdefault(ex.task, []).append(grade(ex.task, text, ex.ground_truth)["correct"])
    return {f"probe/{task}": sum(v) / len(v) for task, v in correct.items()}


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per task and tier, averaged over samples (avg@n); Connect4 also per question."""
    cols = [c for c in ("correct", "own", "opponent") if c in rows]
    table = rows.groupby(["task", "tier"], sort=False)[cols].mean().mul(100).round(1)
    table["n"] = rows.groupby(["task", "tier"], sort=False).size()
    return table
