"""Instruction following: the miniature analog of IFEval.

    names = random_chain(rng, 2)                 # e.g. ["reverse", "upper"]
    chain_question(names, "abc")                 # "Reverse, then Upper: abc"
    chain_answer(names, "abc")                   # "CBA"

A prompt carries one to three instructions, each a string transformation, applied in order; the
answer is exactly one string, so IFEval's "prompt-level strict accuracy" is an exact match on it.
Chains make the suite hard enough that the base is not at its ceiling (IFEval's base is 83, not 100),
so forgetting can show. The base learns them in pretraining and post-training never trains on them:
any drop after post-training is forgetting, measured directly.
"""
from __future__ import annotations

import random
import string


def _shift(word: str) -> str:
    """Each letter to the next one (a->b, z->a), keeping its case."""
    out = []
    for c in word:
        base = 65 if c.isupper() else 97
        out.append(chr((ord(c) - base + 1) % 26 + base) if c.isalpha() else c)
    return "".join(out)


# name -> (instruction shown in the prompt, the transformation)
SKILLS = {
    "reverse": ("Reverse", lambda w: w[::-1]),
    "upper": ("Upper", lambda w: w.upper()),
    "shift": ("Shift", _shift),
    "double": ("Double", lambda w: "".join(c + c for c in w)),
}


def chain_question(names: list[str], word: str) -> str:
    return ", then ".join(SKILLS[n][0] for n in names) + f": {word}"


def chain_answer(names: list[str], word: str) -> str:
    for n in names:
        word = SKILLS[n][1](word)
    return word


def skill_question(skill: str, word: str) -> str:
    return chain_question([skill], word)


def skill_answer(skill: str, word: str) -> str:
    return chain_answer([skill], word)


def random_chain(rng: random.Random, k: int, names: list[str] | None = None) -> list[str]:
    """k distinct instructions in random order (a repeat would be trivial: reverse twice is the word)."""
    return rng.sample(list(names or SKILLS), k)


def random_word(rng: random.Random, min_len: int, max_len: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(min_len, max_len)))


def grade_skill(response: str, expected: str) -> bool:
    """Strict: the response, stripped of surrounding whitespace, equals the expected string."""
    return isinstance(response, str) and response.strip() == expected
