"""Instruction-following skills: the miniature analog of IFEval.

Each skill is a string transformation with exactly one correct output, so "prompt-level strict
accuracy" is an exact match. The base model learns them in pretraining and post-training never
trains on them, so any drop after post-training is forgetting, measured directly.
"""
from __future__ import annotations

import random
import string

# name -> (instruction shown in the prompt, the transformation)
SKILLS = {
    "reverse": ("Reverse", lambda w: w[::-1]),
    "upper": ("Uppercase", lambda w: w.upper()),
    "shift": ("Shift letters", lambda w: "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in w)),  # a->b, z->a
    "double": ("Double letters", lambda w: "".join(c + c for c in w)),
}


def skill_question(skill: str, word: str) -> str:
    return f"{SKILLS[skill][0]}: {word}"


def skill_answer(skill: str, word: str) -> str:
    return SKILLS[skill][1](word)


def random_word(rng: random.Random, min_len: int, max_len: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))


def grade_skill(response: str, expected: str) -> bool:
    """Strict: the response, stripped of surrounding whitespace, equals the expected string."""
    return isinstance(response, str) and response.strip() == expected
