"""The miniature world: the task families as one stream of chat examples.

    tests = test_sets(profile.world, profile.seed)        # held-out Examples, in a fixed order
    grade(ex.task, response, ex.ground_truth)              # {"correct": ..., (Connect4) "own", "opponent"}
    headline(rows)                                         # Table 1's columns from graded rows

- in-domain reasoning: multi-step arithmetic (tiers = number of steps; the DAPO-Math analog; arithmetic.py),
  each step in one of several phrasings (the model's own style)
- prior knowledge / instruction following: one to three string instructions per prompt (the IFEval
  analog; skills.py)
- out-of-domain reasoning: multiple-choice arithmetic after a chain of thought (the GPQA-Diamond analog;
  choice.py) and continuing a number sequence (the Connect4 analog, a rule to find; sequence.py).
  Connect4 winning moves (spot_utils.connect4, the paper's own engine, on a compact board) can join
  with `connect4_test_size`; this model does not learn them (sequence.py says why)

Held-out test sets are drawn first from their own seed; pretraining and elicitation never see a
test question (checked by exact text, and for arithmetic by the expression, so a multiple-choice test
question is never trained in its "Compute:" form either), so test accuracy is accuracy on unseen questions.
Headline numbers follow the paper's Table 1: In-domain Avg (mean over the arithmetic tiers, the
analog of the six math sets), OOD Avg (mean of the OOD benchmarks; Connect4's score is the mean of its
two accuracies), IF (prompt-level strict accuracy over all prompts) and Overall Avg (mean over every
benchmark, as in the paper where Overall = mean of the nine benchmarks).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pandas as pd

from .. import connect4
from ..config import WorldConfig
from . import arithmetic, choice, sequence, skills

TASKS = ("arithmetic", "skill", "choice", "sequence", "connect4")
OOD_TASKS = ("choice", "sequence", "connect4")  # the OOD Avg, in column order
FAMILY_TASK = {"arithmetic": "arithmetic", "skills": "skill", "choice": "choice", "sequence": "sequence",
               "connect4": "connect4"}
# Offsets keep the random streams of the different uses apart for one profile seed.
TEST_SEED, PRETRAIN_SEED, ELICIT_SEED, PROBE_SEED, STYLE_SEED = 1_000, 2_000, 3_000, 4_000, 5_000


@dataclass(frozen=True)
class Example:
    id: str
    task: str          # arithmetic | skill | choice | sequence | connect4
    tier: str          # "steps=3", "instructions=2", or the task's name
    question: str
    answer: str        # the reference answer in the model's own format
    ground_truth: Any  # what the grader compares with (int, str, or a compact board)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """What "the same question" means: the arithmetic expression for arithmetic and multiple choice
        (one problem in two formats is one question), the text otherwise."""
        if self.task == "choice":
            return arithmetic.QUESTION_PREFIX + self.question[len(choice.QUESTION_PREFIX):].split(" ")[0]
        return self.question


def _styles(style_rng: random.Random | None, steps: int, cfg: WorldConfig) -> list[str]:
    """Phrasings of the step lines: drawn from their own stream (the questions do not move with them), or
    the first style when there is no stream (reference answers of held-out sets)."""
    if style_rng is None:
        return [cfg.step_styles[0]] * steps
    return arithmetic.random_styles(style_rng, steps, cfg.step_styles)


def arithmetic_example(rng: random.Random, steps: int, cfg: WorldConfig, id: str,
                       style_rng: random.Random | None = None) -> Example:
    p = arithmetic.random_problem(rng, steps, cfg.arith_max_value, cfg.arith_max_operand)
    return Example(id, "arithmetic", f"steps={steps}", arithmetic.question_text(p),
                   arithmetic.solution_text(p, _styles(style_rng, steps, cfg)), p.answer)


def choice_example(rng: random.Random, steps: int, cfg: WorldConfig, id: str,
                   style_rng: random.Random | None = None) -> Example:
    p = arithmetic.random_problem(rng, steps, cfg.arith_max_value, cfg.arith_max_operand)
    options = choice.random_options(rng, p.answer, cfg.choice_spread)
    return Example(id, "choice", "choice", choice.question_text(p, options),
                   choice.solution_text(p, _styles(style_rng, steps, cfg)), p.answer)


def sequence_example(rng: random.Random, cfg: WorldConfig, id: str, style_rng: random.Random | None = None) -> Example:
    s = sequence.random_sequence(rng)
    return Example(id, "sequence", "sequence", sequence.question_text(s),
                   sequence.solution_text(s, _styles(style_rng, sequence.STEPS, cfg)), s.answer)


def skill_example(rng: random.Random, k: int, cfg: WorldConfig, id: str) -> Example:
    """A prompt of k instructions (distinct skills of the world, in random order) on a random word."""
    names, word = skills.random_chain(rng, k, cfg.skills), skills.random_word(rng, *cfg.skill_word_len)
    answer = skills.chain_answer(names, word)
    return Example(id, "skill", f"instructions={k}", skills.chain_question(names, word), answer, answer)


def instruction_counts(cfg: WorldConfig) -> list[int]:
    lo, hi = cfg.skill_chain
    return list(range(lo, hi + 1))


def connect4_example(board: "connect4.Board", id: str) -> Example:
    return Example(id, "connect4", "connect4", connect4.question_text(board, compact=True),
                   connect4.answer_text(board), connect4.render_compact(board))


def grade(task: str, response: str, ground_truth: Any) -> dict[str, bool]:
    """Grade one response. Returns named booleans (Connect4 has two questions). Never raises."""
    if task == "arithmetic":
        return {"correct": arithmetic.grade_arithmetic(response, ground_truth)}
    if task == "skill":
        return {"correct": skills.grade_skill(response, ground_truth)}
    if task == "choice":
        return {"correct": choice.grade_choice(response, ground_truth)}
    if task == "sequence":
        return {"correct": sequence.grade_sequence(response, ground_truth)}
    if task == "connect4":
        mine, theirs = connect4.grade_connect4(response, connect4.parse_compact(ground_truth))
        return {"correct": mine and theirs, "own": mine, "opponent": theirs}
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def accuracy(part: pd.DataFrame, task: str) -> float:
    """Accuracy (0-1) of one task's graded rows; Connect4's is the mean of its two questions, as in the paper."""
    return (part["own"].mean() + part["opponent"].mean()) / 2 if task == "connect4" else part["correct"].mean()


def _ood_scores(rows: pd.DataFrame) -> dict[str, float]:
    """Accuracy (0-1) per OOD benchmark present in `rows`, in OOD_TASKS order."""
    return {task: accuracy(rows[rows.task == task], task) for task in OOD_TASKS if (rows.task == task).any()}


def headline(rows: pd.DataFrame) -> dict[str, float]:
    """The paper's summary columns (Table 1), in %, from graded rows (evaluation.evaluate)."""
    arith = rows[rows.task == "arithmetic"].groupby("tier")["correct"].mean()
    ood = list(_ood_scores(rows).values())
    ifeval = rows[rows.task == "skill"]["correct"].mean()
    benchmarks = list(arith.values) + ood + [ifeval]
    return {"In-domain Avg": 100 * arith.mean(), "OOD Avg": 100 * sum(ood) / len(ood) if ood else float("nan"),
            "IF": 100 * ifeval, "Overall Avg": 100 * sum(benchmarks) / len(benchmarks)}


def benchmarks(rows: pd.DataFrame) -> dict[str, float]:
    """Accuracy (%) per benchmark behind the headline: each arithmetic tier ("arith steps=2"), then each OOD
    benchmark ("choice", the GPQA-D analog; "sequence", the Connect4 analog; "connect4")."""
    out = {f"arith {t}": 100 * v for t, v in rows[rows.task == "arithmetic"].groupby("tier")["correct"].mean().items()}
    return out | {task: 100 * v for task, v in _ood_scores(rows).items()}


def scores(rows: pd.DataFrame) -> dict[str, float]:
    """The headline columns, then the benchmarks behind them (what a run reports, like suite_eval's scores)."""
    return {**headline(rows), **benchmarks(rows)}


def test_sets(cfg: WorldConfig, seed: int) -> list[Example]:
    """Every held-out test example of the tiny profile, in a fixed order."""
    return _suite(cfg, seed + TEST_SEED, cfg.test_size_per_tier, cfg.arith_test_steps, cfg.choice_test_size,
                  cfg.sequence_test_size, cfg.connect4_test_size, "test")


def probe_sets(cfg: WorldConfig, seed: int, size: int, exclude: set[str]) -> list[Example]:
    """A small validation probe (its own seed, no test question: `exclude` holds their keys) to watch
    training without touching the test sets."""
    return [ex for ex in _suite(cfg, seed + PROBE_SEED, size, cfg.arith_train_steps, size if cfg.choice_test_size else 0,
                                size if cfg.sequence_test_size else 0, size if cfg.connect4_test_size else 0, "probe")
            if ex.key not in exclude]


def keys(examples) -> set[str]:
    """The keys (Example.key) of examples: what a training stream must never show."""
    return {ex.key for ex in examples}


def _distinct(make, size: int) -> list[Example]:
    """`size` examples of `make(i)` with distinct keys, in draw order."""
    out, seen = [], set()
    while len(out) < size:
        ex = make(len(out))
        if ex.key not in seen:
            seen.add(ex.key)
            out.append(ex)
    return out


def _suite(cfg: WorldConfig, seed: int, size: int, arith_steps: list[int], choice_size: int, sequence_size: int,
           c4_size: int, tag: str) -> list[Example]:
    rng = random.Random(seed)
    out: list[Example] = []
    for steps in arith_steps:
        out += _distinct(lambda i: arithmetic_example(rng, steps, cfg, f"{tag}-arith{steps}-{i}"), size)
    for k in instruction_counts(cfg):
        out += _distinct(lambda i: skill_example(rng, k, cfg, f"{tag}-if{k}-{i}"), size)
    taken = keys(out)
    out += [ex for ex in _distinct(lambda i: choice_example(rng, rng.choice(cfg.arith_train_steps), cfg,
                                                            f"{tag}-choice-{i}"), choice_size + len(taken))
            if ex.key not in taken][:choice_size]
    out += _distinct(lambda i: sequence_example(rng, cfg, f"{tag}-sequence-{i}"), sequence_size)
    boards = connect4.generate_instances(c4_size, seed, max_no_win_fraction=cfg.connect4_max_no_win_fraction)
    out += [connect4_example(b, f"{tag}-connect4-{i}") for i, b in enumerate(boards)]
    return out


def pretrain_stream(cfg: WorldConfig, mix: dict[str, float], seed: int, exclude: set[str],
                    connect4_pool: int = 20_000) -> Iterator[Example]:
    """An endless, seeded stream of training examples mixed by `mix`, skipping any example whose key
    (Example.key) is in `exclude`. Step phrasings come from a stream of their own."""
    rng, style_rng = random.Random(seed + PRETRAIN_SEED), random.Random(seed + STYLE_SEED)
    families = [f for f in FAMILY_TASK if mix.get(f, 0) > 0]
    pool = []
    if "connect4" in families:  # its own seed: building the pool never moves `rng`
        boards = connect4.generate_instances(connect4_pool, seed + PRETRAIN_SEED,
                                             max_no_win_fraction=cfg.connect4_max_no_win_fraction)
        pool = [ex for i, b in enumerate(boards)
                if (ex := connect4_example(b, f"pre-c4-{i}")).key not in exclude]
    weights = [mix[f] for f in families]
    i = 0
    while True:
        family = rng.choices(families, weights)[0]
        if family == "arithmetic":
            ex = arithmetic_example(rng, rng.choice(cfg.arith_train_steps), cfg, f"pre-{i}", style_rng)
        elif family == "choice":
            ex = choice_example(rng, rng.choice(cfg.arith_train_steps), cfg, f"pre-{i}", style_rng)
        elif family == "sequence":
            ex = sequence_example(rng, cfg, f"pre-{i}", style_rng)
        elif family == "skills":
            ex = skill_example(rng, rng.choice(instruction_counts(cfg)), cfg, f"pre-{i}")
        else:
            ex = rng.choice(pool)
        if ex.key not in exclude:
            yield ex
            i += 1


def elicitation_set(cfg: WorldConfig, n: int, seed: int, exclude: set[str]) -> list[Example]:
    """Fresh in-domain questions (training tiers) for error elicitation: never a test question (`exclude`:
    their keys)."""
    rng = random.Random(seed + ELICIT_SEED)
    out, seen = [], set(exclude)
    while len(out) < n:
        ex = arithmetic_example(rng, rng.choice(cfg.arith_train_steps), cfg, f"q{len(out):05d}")
        if ex.key not in seen:
            seen.add(ex.key)
            out.append(ex)
    return out
