"""The miniature world: the three task families as one stream of chat examples.

    tests = test_sets(profile.world, profile.seed)        # held-out Examples, in a fixed order
    grade(ex.task, response, ex.ground_truth)              # {"correct": ..., (Connect4) "own", "opponent"}
    headline(rows)                                         # Table 1's columns from graded rows

- in-domain reasoning: multi-step arithmetic (tiers = number of steps; the DAPO-Math analog; arithmetic.py)
- prior knowledge / instruction following: string skills (the IFEval analog; skills.py)
- out-of-domain reasoning: Connect4 winning moves (the Connect4 / GPQA analog; spot_utils.connect4, the
  paper's own engine, on a compact board)

Held-out test sets are drawn first from their own seed; pretraining and elicitation never see a
test question (checked by exact question text), so test accuracy is accuracy on unseen questions.
Headline numbers follow the paper's Table 1: In-domain Avg (mean over the arithmetic tiers, the
analog of the six math sets), OOD Avg (Connect4, the mean of its two accuracies), IF (prompt-level
strict accuracy over all skills) and Overall Avg (mean over every benchmark, as in the paper where
Overall = mean of the nine benchmarks).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pandas as pd

from .. import connect4
from ..config import WorldConfig
from . import arithmetic, skills

TASKS = ("arithmetic", "skill", "connect4")
# Offsets keep the random streams of the different uses apart for one profile seed.
TEST_SEED, PRETRAIN_SEED, ELICIT_SEED, PROBE_SEED = 1_000, 2_000, 3_000, 4_000


@dataclass(frozen=True)
class Example:
    id: str
    task: str          # arithmetic | skill | connect4
    tier: str          # "steps=3", a skill name, or "connect4"
    question: str
    answer: str        # the reference answer in the model's own format
    ground_truth: Any  # what the grader compares with (int, str, or a compact board)

    def to_dict(self) -> dict:
        return asdict(self)


def arithmetic_example(rng: random.Random, steps: int, cfg: WorldConfig, id: str) -> Example:
    p = arithmetic.random_problem(rng, steps, cfg.arith_max_value, cfg.arith_max_operand)
    return Example(id, "arithmetic", f"steps={steps}", arithmetic.question_text(p), arithmetic.solution_text(p), p.answer)


def skill_example(rng: random.Random, skill: str, cfg: WorldConfig, id: str) -> Example:
    word = skills.random_word(rng, *cfg.skill_word_len)
    return Example(id, "skill", skill, skills.skill_question(skill, word), skills.skill_answer(skill, word),
                   skills.skill_answer(skill, word))


def connect4_example(board: "connect4.Board", id: str) -> Example:
    return Example(id, "connect4", "connect4", connect4.question_text(board, compact=True),
                   connect4.answer_text(board), connect4.render_compact(board))


def grade(task: str, response: str, ground_truth: Any) -> dict[str, bool]:
    """Grade one response. Returns named booleans (Connect4 has two questions). Never raises."""
    if task == "arithmetic":
        return {"correct": arithmetic.grade_arithmetic(response, ground_truth)}
    if task == "skill":
        return {"correct": skills.grade_skill(response, ground_truth)}
    if task == "connect4":
        mine, theirs = connect4.grade_connect4(response, connect4.parse_compact(ground_truth))
        return {"correct": mine and theirs, "own": mine, "opponent": theirs}
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def headline(rows: pd.DataFrame) -> dict[str, float]:
    """The paper's summary columns (Table 1), in %, from graded rows (evaluation.evaluate)."""
    arith = rows[rows.task == "arithmetic"].groupby("tier")["correct"].mean()
    c4 = rows[rows.task == "connect4"]
    c4_score = (c4["own"].mean() + c4["opponent"].mean()) / 2 if len(c4) else float("nan")
    ifeval = rows[rows.task == "skill"]["correct"].mean()
    benchmarks = list(arith.values) + [c4_score, ifeval]
    return {"In-domain Avg": 100 * arith.mean(), "OOD Avg": 100 * c4_score, "IF": 100 * ifeval,
            "Overall Avg": 100 * sum(benchmarks) / len(benchmarks)}


def test_sets(cfg: WorldConfig, seed: int) -> list[Example]:
    """Every held-out test example of the tiny profile, in a fixed order."""
    return _suite(cfg, seed + TEST_SEED, cfg.test_size_per_tier, cfg.arith_test_steps, cfg.connect4_test_size, "test")


def probe_sets(cfg: WorldConfig, seed: int, size: int, exclude: set[str]) -> list[Example]:
    """A small validation probe (its own seed, no test question) to watch training without touching the test sets."""
    return [ex for ex in _suite(cfg, seed + PROBE_SEED, size, cfg.arith_train_steps, size, "probe")
            if ex.question not in exclude]


def _suite(cfg: WorldConfig, seed: int, size: int, arith_steps: list[int], c4_size: int, tag: str) -> list[Example]:
    rng = random.Random(seed)
    out: list[Example] = []
    for steps in arith_steps:
        seen: set[str] = set()
        while len(seen) < size:
            ex = arithmetic_example(rng, steps, cfg, f"{tag}-arith{steps}-{len(seen)}")
            if ex.question not in seen:
                seen.add(ex.question)
                out.append(ex)
    for skill in cfg.skills:
        seen = set()
        while len(seen) < size:
            ex = skill_example(rng, skill, cfg, f"{tag}-{skill}-{len(seen)}")
            if ex.question not in seen:
                seen.add(ex.question)
                out.append(ex)
    boards = connect4.generate_instances(c4_size, seed, max_no_win_fraction=cfg.connect4_max_no_win_fraction)
    out += [connect4_example(b, f"{tag}-connect4-{i}") for i, b in enumerate(boards)]
    return out


def pretrain_stream(cfg: WorldConfig, mix: dict[str, float], seed: int, exclude: set[str],
                    connect4_pool: int = 20_000) -> Iterator[Example]:
    """An endless, seeded stream of training examples mixed by `mix`, skipping any question in `exclude`."""
    rng = random.Random(seed + PRETRAIN_SEED)
    families = [f for f in ("arithmetic", "skills", "connect4") if mix.get(f, 0) > 0]
    pool = []
    if "connect4" in families:  # its own seed: building the pool never moves `rng`
        boards = connect4.generate_instances(connect4_pool, seed + PRETRAIN_SEED,
                                             max_no_win_fraction=cfg.connect4_max_no_win_fraction)
        pool = [ex for i, b in enumerate(boards)
                if (ex := connect4_example(b, f"pre-c4-{i}")).question not in exclude]
    weights = [mix[f] for f in families]
    i = 0
    while True:
        family = rng.choices(families, weights)[0]
        if family == "arithmetic":
            ex = arithmetic_example(rng, rng.choice(cfg.arith_train_steps), cfg, f"pre-{i}")
        elif family == "skills":
            ex = skill_example(rng, rng.choice(cfg.skills), cfg, f"pre-{i}")
        else:
            ex = rng.choice(pool)
        if ex.question not in exclude:
            yield ex
            i += 1


def elicitation_set(cfg: WorldConfig, n: int, seed: int, exclude: set[str]) -> list[Example]:
    """Fresh in-domain questions (training tiers) for error elicitation: never a test question."""
    rng = random.Random(seed + ELICIT_SEED)
    out, seen = [], set(exclude)
    while len(out) < n:
        ex = arithmetic_example(rng, rng.choice(cfg.arith_train_steps), cfg, f"q{len(out):05d}")
        if ex.question not in seen:
            seen.add(ex.question)
            out.append(ex)
    return out
