"""Out-of-domain reasoning in another format: multiple-choice arithmetic (the GPQA-Diamond analog).

    p = arithmetic.random_problem(rng, 3)
    options, letter = random_options(rng, p.answer)
    question_text(p, options)       # "Choose: 37+45-18 from 66 (A), 64 (B), 63 (C), 71 (D)"
    solution_text(p, options)       # the chain of thought, then "Answer: 64 (B)"
    grade_choice(response, letter)

Four options, one letter, reached after a chain of thought as the paper's models reason before they
answer GPQA. The wrong options lie within `spread` of the right value, so a guess near the answer does
not help: the letter is right when the arithmetic is. Each option's letter follows its value, the four
values end in four different digits, and the answer line restates the value before the letter: a model
that has computed the value finds its letter by copying what follows that value's last digit in the prompt.
"""
from __future__ import annotations

import random
import re

from . import arithmetic

LETTERS = "ABCD"
QUESTION_PREFIX = "Choose: "
ANSWER_RE = re.compile(r"Answer:.*\(([A-D])\)\s*$")


def random_options(rng: random.Random, answer: int, spread: int = 10) -> tuple[tuple[int, ...], str]:
    """Three wrong values within `spread` of the answer (none negative), the four ending in four different
    digits, shuffled in with it."""
    options = [answer]
    wrong = [v for v in range(answer - spread, answer + spread + 1) if v >= 0 and v != answer]
    for v in rng.sample(wrong, len(wrong)):
        if len(options) < len(LETTERS) and v % 10 not in {o % 10 for o in options}:
            options.append(v)
    rng.shuffle(options)
    return tuple(options), LETTERS[options.index(answer)]


def question_text(p: arithmetic.Problem, options: tuple[int, ...]) -> str:
    expression = arithmetic.question_text(p)[len(arithmetic.QUESTION_PREFIX):]
    return QUESTION_PREFIX + expression + " from " + ", ".join(f"{v} ({L})" for L, v in zip(LETTERS, options))


def solution_text(p: arithmetic.Problem, options: tuple[int, ...], styles: list[str] | None = None) -> str:
    """The model's own chain of thought, then the value it computed and that option's letter."""
    steps = arithmetic.solution_text(p, styles).splitlines()[:-1]
    return "\n".join(steps + [f"Answer: {p.answer} ({LETTERS[options.index(p.answer)]})"])


def extract_letter(response: str) -> str | None:
    """The letter of the last 'Answer: ... (X)' line, or None. Never raises."""
    if not isinstance(response, str):
        return None
    for line in reversed(response.strip().splitlines()):
        if m := ANSWER_RE.search(line.strip()):
            return m.group(1)
    return None


def grade_choice(response: str, letter: str) -> bool:
    return extract_letter(response) == letter
