"""Out-of-domain reasoning in another format: multiple-choice arithmetic (the GPQA-Diamond analog).

    p = arithmetic.random_problem(rng, 3)
    options = random_options(rng, p.answer)
    question_text(p, options)       # "Choose: 37+45-18 from 66, 64, 63, 71"
    solution_text(p)                # the chain of thought, then "Answer: 64" (the chosen option)
    grade_choice(response, 64)      # right when the chosen option is the right one

Four options, reached after a chain of thought as the paper's models reason before they answer GPQA. The
wrong options lie within `spread` of the right value, so a guess near the answer does not help. The
model names its choice by value, not by letter: in calibration (issue 16) every letter format tried
(letter first, letter after the value, a written scan of the options, four distinct last digits, twice
the share of pretraining, 1,200 steps) stayed at chance (22-31% against 28% for the best constant
letter) while the value in the chain of thought was right about half the time: this model does not
learn to look a letter up. A value that is not one of the options is wrong.
"""
from __future__ import annotations

import random
import re

from . import arithmetic

QUESTION_PREFIX = "Choose: "
N_OPTIONS = 4


def random_options(rng: random.Random, answer: int, spread: int = 10) -> tuple[int, ...]:
    """The answer and three distinct wrong values within `spread` of it (none negative), shuffled."""
    wrong = [v for v in range(answer - spread, answer + spread + 1) if v >= 0 and v != answer]
    options = [answer] + rng.sample(wrong, N_OPTIONS - 1)
    rng.shuffle(options)
    return tuple(options)


def question_text(p: arithmetic.Problem, options: tuple[int, ...]) -> str:
    expression = arithmetic.question_text(p)[len(arithmetic.QUESTION_PREFIX):]
    return QUESTION_PREFIX + expression + " from " + ", ".join(map(str, options))


def options_of(question: str) -> tuple[int, ...]:
    """The options of a question_text, in order; raises ValueError naming the question if malformed."""
    m = re.fullmatch(re.escape(QUESTION_PREFIX) + r"\S+ from (\d+(?:, \d+)*)", question.strip())
    if not m:
        raise ValueError(f"not a multiple-choice question ({QUESTION_PREFIX!r}... from a, b, c, d): {question!r}")
    return tuple(int(v) for v in m.group(1).split(", "))


def solution_text(p: arithmetic.Problem, styles: list[str] | None = None) -> str:
    """The model's own chain of thought; its answer line names the chosen option."""
    return arithmetic.solution_text(p, styles)


def grade_choice(response: str, answer: int | str) -> bool:
    """Right when the last 'Answer: N' line names the right option. Never raises."""
    return arithmetic.grade_arithmetic(response, answer)
