"""In-domain reasoning: multi-step integer arithmetic with a chain of thought (the DAPO-Math analog).

A question applies a chain of operations strictly left to right ("Compute: 37+45-18*2", no
operator precedence: the chain of thought makes the order explicit).
The model's own format writes one step per line and ends with a final-answer line:

    37+45=82
    then 82-18=64
    so 64*2=128
    Answer: 128

Each step line has equally valid phrasings (STYLES), drawn at random per line in pretraining, so the
model's own samples carry style tokens of moderate probability, as an LLM's own wording does: an Oracle
that keeps the student's phrasing (correct_from_first_error) writes y+ in the style the model would have
used, and one that answers in its own voice (direct_solution_text: "37 plus 45 is 82") does not.

Tiers are the number of steps; a test tier longer than anything in training probes generalisation.
Because every step is checkable, the first wrong step of an answer is well defined, which is what a
minimal-edit Oracle needs (see `correct_from_first_error`).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
# The model's phrasings of one step. They differ only before the equation, so the computation itself
# looks the same in all of them; a line is parsed by STEP_RE whatever its lead word and spacing.
STYLES = {"compact": "{a}{op}{b}={c}", "then": "then {a}{op}{b}={c}", "so": "so {a}{op}{b}={c}"}
STEP_RE = re.compile(r"^\s*(?:[a-z]+\s+)?(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(-?\d+)\s*$")
ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)\s*$")
ANSWER_FORMAT = "Answer: N"  # the final-answer line of this world, given to the Oracle prompts
QUESTION_PREFIX = "Compute: "


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def steps(self) -> int:
        return len(self.ops)

    def values(self) -> list[int]:
        """The running value after each step (the last one is the answer)."""
        out, v = [], self.start
        for op, b in self.ops:
            v = OPS[op](v, b)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]


def random_problem(rng: random.Random, steps: int, max_value: int = 99, max_operand: int = 20) -> Problem:
    """Operations are drawn among those that keep every value in [0, max_value]; + and - take an
    operand up to max_operand, * a single digit."""
    v = rng.randint(10, min(99, max_value))
    start, ops = v, []
    for _ in range(steps):
        choices = []
        if v + 1 <= max_value:
            choices.append("+")
        if v >= 1:
            choices.append("-")
        if v * 2 <= max_value:
            choices.append("*")
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(1, min(max_operand, max_value - v))
        elif op == "-":
            b = rng.randint(1, min(max_operand, v))
        else:
            b = rng.randint(2, min(9, max_value // v)) if v else rng.randint(2, 9)
        ops.append((op, b))
        v = OPS[op](v, b)
    return Problem(start, tuple(ops))


def question_text(p: Problem) -> str:
    return QUESTION_PREFIX + str(p.start) + "".join(f"{op}{b}" for op, b in p.ops)


def parse_question(text: str) -> Problem:
    """Inverse of question_text; raises ValueError naming what is wrong."""
    if not text.startswith(QUESTION_PREFIX):
        raise ValueError(f"not an arithmetic question (expected prefix {QUESTION_PREFIX!r}): {text!r}")
    body = text[len(QUESTION_PREFIX):].strip()
    m = re.fullmatch(r"(\d+)((?:[+\-*]\d+)+)", body)
    if not m:
        raise ValueError(f"malformed arithmetic expression: {body!r}")
    ops = tuple((op, int(b)) for op, b in re.findall(r"([+\-*])(\d+)", m.group(2)))
    return Problem(int(m.group(1)), ops)


def step_line(a: int, op: str, b: int, style: str = "compact") -> str:
    return STYLES[style].format(a=a, op=op, b=b, c=OPS[op](a, b))


def line_style(line: str) -> str | None:
    """The phrasing of a step line (whatever its numbers), or None when it is none of STYLES."""
    m = STEP_RE.match(line)
    if not m:
        return None
    a, op, b, c = m.groups()
    return next((name for name, form in STYLES.items() if line.strip() == form.format(a=a, op=op, b=b, c=c)), None)


def random_styles(rng: random.Random, steps: int, styles: list[str]) -> list[str]:
    """One phrasing per step line, drawn independently (how pretraining writes the chain of thought)."""
    return [rng.choice(styles) for _ in range(steps)]


def solution_text(p: Problem, styles: list[str] | None = None) -> str:
    """The model's own chain-of-thought format (what pretraining teaches): step i in phrasing styles[i]
    (default: all compact)."""
    styles = styles or ["compact"] * p.steps
    lines, v = [], p.start
    for (op, b), style in zip(p.ops, styles):
        lines.append(step_line(v, op, b, style))
        v = OPS[op](v, b)
    return "\n".join(lines + [f"Answer: {v}"])


_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def direct_solution_text(p: Problem) -> str:
    """A correct answer in a deliberately different style: the Oracle's own voice, i.e. the
    off-policy data of the SFT baseline. It ends with the same final-answer line so one grader serves."""
    lines, v = [], p.start
    for op, b in p.ops:
        w = OPS[op](v, b)
        lines.append(f"{v} {_WORDS[op]} {b} is {w}")
        v = w
    return "\n".join(lines + [f"Answer: {v}"])


def extract_answer(response: str) -> int | None:
    """The integer on the last 'Answer: N' line, or None. Never raises."""
    if not isinstance(response, str):
        return None
    for line in reversed(response.strip().splitlines()):
        m = ANSWER_RE.search(line.strip())
        if m:
            try:
                return int(m.group(1))
            except ValueError:  # pragma: no cover - the regex only admits digits
                return None
    return None


def grade_arithmetic(response: str, ground_truth: int | str) -> bool:
    try:
        return extract_answer(response) == int(ground_truth)
    except (TypeError, ValueError):
        return False


def first_error_step(p: Problem, response: str) -> int | None:
    """Index of the first step line that is wrong (wrong operand copied, wrong operation or wrong
    result), `p.steps` if all steps are right but the final line is not, or None if the whole
    response is exactly right."""
    lines = response.strip("\n").split("\n") if isinstance(response, str) else []
    v = p.start
    for i, (op, b) in enumerate(p.ops):
        m = STEP_RE.match(lines[i]) if i < len(lines) else None
        if not m or (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))) != (v, op, b, OPS[op](v, b)):
            return i
        v = OPS[op](v, b)
    rest = lines[p.steps:]
    return None if rest == [f"Answer: {v}"] else p.steps


def correct_from_first_error(p: Problem, response: str) -> str:
    """The minimal edit: keep the response up to its first wrong step, write that step correctly,
    and recompute every later step in the same one-step-per-line format, each in the student's own
    phrasing of that line (or of the line before, when the student's line has none of STYLES)."""
    k = first_error_step(p, response)
    if k is None:
        return response.strip("\n")
    student = response.strip("\n").split("\n")
    lines = student[:k]
    style = next((s for s in map(line_style, reversed(lines)) if s), "compact")
    v = p.start if k == 0 else p.values()[k - 1]
    for i, (op, b) in enumerate(p.ops[k:], start=k):
        style = (line_style(student[i]) if i < len(student) else None) or style
        lines.append(step_line(v, op, b, style))
        v = OPS[op](v, b)
    return "\n".join(lines + [f"Answer: {v}"])
