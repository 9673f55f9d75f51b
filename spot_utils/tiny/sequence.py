"""Out-of-domain reasoning outside plain arithmetic: continue a number sequence (the Connect4 analog).

    s = random_sequence(rng)              # 2, 5, 10, 17: first differences 3, 5, 7, second difference 2
    question_text(s)                      # "Continue: 2, 5, 10, 17"
    solution_text(s)                      # the differences, the rule, the next term, then "Answer: 26"
    grade_sequence(response, s.answer)

The paper's second OOD benchmark is a puzzle (Connect4 winning moves) that asks for a rule found in the
question, not a procedure the question spells out. This is the miniature's puzzle of that kind: the
model must find how the sequence grows (its differences and how they change: a constant second
difference, zero for an arithmetic progression) and extend it. The chain of thought is written in the
step lines of the in-domain task, so improving arithmetic can transfer, but the plan is new. Connect4
itself stayed below its trivial answer in this model (issue 2: 26% after four times the whole
pretraining on Connect4 alone; scripts/connect4_learnability.py), so the tiny world uses this task in
its place; the paper profile keeps Connect4.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from . import arithmetic

QUESTION_PREFIX = "Continue: "
TERMS = 4           # terms shown; the model writes the fifth
MAX_VALUE = 99      # every term, shown or answered, stays a two-digit number


@dataclass(frozen=True)
class Sequence:
    start: int
    step: int       # the first difference
    change: int     # the second difference (0: an arithmetic progression)

    def terms(self, n: int = TERMS + 1) -> list[int]:
        out, d = [self.start], self.step
        for _ in range(n - 1):
            out.append(out[-1] + d)
            d += self.change
        return out

    @property
    def answer(self) -> int:
        return self.terms()[-1]


def random_sequence(rng: random.Random, max_start: int = 30, max_step: int = 12, max_change: int = 3) -> Sequence:
    """A growing sequence whose next term is at most MAX_VALUE (redrawn until it is)."""
    while True:
        s = Sequence(rng.randint(1, max_start), rng.randint(1, max_step), rng.randint(0, max_change))
        if s.answer <= MAX_VALUE:
            return s


def question_text(s: Sequence) -> str:
    return QUESTION_PREFIX + ", ".join(map(str, s.terms(TERMS)))


def solution_text(s: Sequence, styles: list[str] | None = None) -> str:
    """The differences of the shown terms, how they change, the next difference and the next term, one
    step line each (in phrasings styles[i], default compact), then the answer line."""
    t = s.terms(TERMS)
    diffs = [b - a for a, b in zip(t, t[1:])]
    steps = [(b, "-", a) for a, b in zip(t, t[1:])]                       # 5-2=3, 10-5=5, 17-10=7
    steps += [(diffs[-1], "-", diffs[-2]), (diffs[-1], "+", s.change), (t[-1], "+", diffs[-1] + s.change)]
    styles = styles or ["compact"] * len(steps)
    lines = [arithmetic.step_line(a, op, b, style) for (a, op, b), style in zip(steps, styles)]
    return "\n".join(lines + [f"Answer: {s.answer}"])


STEPS = TERMS + 2   # step lines in a solution: TERMS - 1 differences, their change, next difference, next term


def parse_question(text: str) -> Sequence:
    """Inverse of question_text; raises ValueError naming what is wrong."""
    m = re.fullmatch(re.escape(QUESTION_PREFIX) + r"(\d+(?:, \d+){%d})" % (TERMS - 1), text.strip())
    if not m:
        raise ValueError(f"not a sequence question ({QUESTION_PREFIX!r} and {TERMS} terms): {text!r}")
    t = [int(v) for v in m.group(1).split(", ")]
    s = Sequence(t[0], t[1] - t[0], t[2] - 2 * t[1] + t[0])
    if s.terms(TERMS) != t:
        raise ValueError(f"the terms of {text!r} do not have a constant second difference")
    return s


def grade_sequence(response: str, ground_truth: int | str) -> bool:
    """Right when the last 'Answer: N' line gives the next term. Never raises."""
    return arithmetic.grade_arithmetic(response, ground_truth)
