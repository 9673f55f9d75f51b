"""Math answers graded with math-verify (paper profile): the gold answer and the model's final answer
are parsed into expressions and compared symbolically, so \\frac{1}{2} equals 0.5."""
from __future__ import annotations


def grade_math(response: str, gold: str) -> bool:
    """True when the model's answer is equivalent to the gold answer. Never raises."""
    try:
        from math_verify import parse, verify

        gold_parsed = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$")
        answer = parse(response)
        return bool(gold_parsed) and bool(answer) and bool(verify(gold_parsed, answer))
    except Exception:  # malformed model output must never stop an evaluation
        return False
