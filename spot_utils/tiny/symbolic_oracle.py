"""The miniature's Oracle: a symbolic solver behind the very prompts an LLM Oracle gets (App. F).

    responder = SymbolicOracle(rewrite_rate=0.2, seed=0)
    server = start_server(responder)                 # spot_utils.oracle_server: an OpenAI-compatible endpoint
    text, thinking = responder([{"role": "user", "content": rectification_prompt(q, y_minus, truth)}])

It edits the student's arithmetic minimally (keep the text up to the first wrong step, fix it, recompute
the rest in the student's format, each line in the student's own phrasing), solves direct-solve prompts in its own style, and answers anything else
without the markers, as an LLM that cannot follow a prompt would.
"""
from __future__ import annotations

import hashlib
import re

from ..oracle import END_MARKER, START_MARKER
from . import arithmetic

_PROMPT_RE = re.compile(r"Question: (?P<q>.*?)\nStudent Model's Answer: (?P<a>.*?)"
                        r"(?:\nReference Ground Truth: (?P<gt>.*?))?\n\nYou should ", re.S)
_DIRECT_RE = re.compile(r"Solve the following problem yourself\..*?\n\nQuestion: (?P<q>.*?)\n\n\*\*IMPORTANT", re.S)


class SymbolicOracle:
    """The Oracle of the tiny profile, served by spot_utils.oracle_server.

    It reads the very prompts an LLM Oracle gets (App. F, and the direct-solve prompt) and answers
    like a perfect, minimal editor of the miniature world's arithmetic: it keeps the student's text
    up to the first wrong step, fixes that step and recomputes the rest in the student's own format.
    A direct-solve prompt gets a correct answer in the Oracle's own, different style (the off-policy
    data of the SFT baseline). Its reasoning is returned as "thinking", as reasoning LLMs send it.

    `rewrite_rate` imitates an LLM Oracle that sometimes ignores the instruction to keep the student's
    text: for that share of rectification requests (chosen by a hash of the request, so reruns agree)
    it writes its own solution in its own style instead of a minimal edit. Those replies are correct
    but far from y-: they are what the change-ratio filter (gamma) is there to catch.
    """

    def __init__(self, rewrite_rate: float = 0.0, seed: int = 0):
        if not 0.0 <= rewrite_rate <= 1.0:
            raise ValueError(f"rewrite_rate must be in [0, 1], got {rewrite_rate}")
        self.rewrite_rate, self.seed = rewrite_rate, seed

    def _rewrites(self, question: str, answer: str) -> bool:
        digest = hashlib.sha256(f"{self.seed}|{question}|{answer}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rewrite_rate

    def __call__(self, messages):
        text = messages[-1]["content"]
        if m := _PROMPT_RE.search(text):
            problem = arithmetic.parse_question(m["q"].strip())
            if self._rewrites(m["q"], m["a"]):
                return (f"{START_MARKER}\n{arithmetic.direct_solution_text(problem)}\n{END_MARKER}",
                        "rewrote the answer from scratch instead of editing it")
            step = arithmetic.first_error_step(problem, m["a"])
            fixed = arithmetic.correct_from_first_error(problem, m["a"])
            where = "no error found" if step is None else f"first wrong step: {step + 1} of {problem.steps}"
            return f"{START_MARKER}\n{fixed}\n{END_MARKER}", f"{where}; correct answer {problem.answer}"
        if m := _DIRECT_RE.search(text):
            problem = arithmetic.parse_question(m["q"].strip())
            return f"{START_MARKER}\n{arithmetic.direct_solution_text(problem)}\n{END_MARKER}", "solved directly"
        # Like an LLM given a prompt it cannot follow: an answer without markers (a parse failure).
        return "I can only revise or solve the arithmetic questions of the miniature world."
