"""
The Oracle: prompts, output parsing and a resumable, rate-limit-aware client.

In SPoT a student's wrong answers are sent to an Oracle LLM (Gemini 2.5 Pro in
the paper) that minimally edits each into a correct one. Everything here talks
to an OpenAI-compatible endpoint with the official `openai` client, so the tiny
profile's local symbolic oracle (spot_utils.oracle_server) and a real LLM go
through the same code.

    oracle = OpenAIOracle("http://127.0.0.1:8000/v1", "symbolic-oracle")
    reqs = [{"id": i, "messages": rectification_messages(q, a), "question": q} for i, (q, a) in ...]
    summary = oracle.run(reqs, "rectified.jsonl", "rectified.failures.jsonl")

The API key is read from an environment variable (SPOT_ORACLE_API_KEY by
default) and only ever handed to the openai client: it is never printed,
logged, written to results or shown in a repr.
"""

import json
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import openai
from tqdm.auto import tqdm

# -----------------------------------------------------------------------------
# prompts (paper, Appendix F; layout of Question/Answer lines as in the released script)

START_MARKER = "=== CORRECTED STARTED ==="
END_MARKER = "=== CORRECTED ENDED ==="
DEFAULT_ANSWER_FORMAT = "Therefore, the final answer is: $\\boxed{ANSWER}$."

_INTRO = (
    "Act as a helpful teaching assistant. Your goal is to revise a student model's answer to make it "
    "correct, while maintaining the student model's original writing style, tone, and formatting. The final "
    "result should look as if the student model had solved the problem correctly on its first try."
)
_TASK_NO_GT = (
    "You should first solve the problem independently and do the following:\n"
    "1. Identify the correct parts of the student model's answer and keep them.\n"
    "2. Replace the incorrect parts with correct reasoning.\n"
    "3. Carefully match the student model's original writing style, including their tone, vocabulary, "
    "formatting and sentence structure."
)
_TASK_GT = (
    "You should compare the student model's answer with the Reference Ground Truth and do the following:\n"
    "1. Identify the correct parts of the student model's answer and keep them.\n"
    "2. Replace the incorrect parts with correct reasoning.\n"
    "3. Carefully match the student model's original writing style, including their tone, vocabulary "
    "and sentence structure."
)
_OUTPUT_FORMAT = (
    "**IMPORTANT OUTPUT FORMAT:**\n"
    f'1. First output "{START_MARKER}" followed by the corrected answer\n'
    "2. Ends with the corrected answer in the format: '{answer_format}'\n"
    f'3. Then output "{END_MARKER}" at the end of the corrected trace\n'
    '4. Do not output meta-phrases like "Here is the corrected version"'
)


def rectification_prompt(question, student_answer, ground_truth=None, answer_format=DEFAULT_ANSWER_FORMAT):
    """The paper's rectification prompt; the ground-truth variant when ground_truth is given."""
    context = f"Question: {question}\nStudent Model's Answer: {student_answer}"
    if ground_truth is not None:
        context += f"\nReference Ground Truth: {ground_truth}"
    task = _TASK_NO_GT if ground_truth is None else _TASK_GT
    # .replace, not .format: answer_format is full of braces ($\boxed{ANSWER}$)
    output_format = _OUTPUT_FORMAT.replace("{answer_format}", answer_format)
    return "\n\n".join([_INTRO, context, task, output_format])


def rectification_messages(question, student_answer, ground_truth=None, answer_format=DEFAULT_ANSWER_FORMAT):
    return [{"role": "user", "content": rectification_prompt(question, student_answer, ground_truth, answer_format)}]


def direct_solve_prompt(question, answer_format=DEFAULT_ANSWER_FORMAT):
    """The Oracle solves the problem itself (SFT baseline's off-policy data). Same
    markers as rectification, so the same parser and run() apply."""
    return (
        "Solve the following problem yourself. Reason step by step, clearly and concisely.\n\n"
        f"Question: {question}\n\n"
        "**IMPORTANT OUTPUT FORMAT:**\n"
        f'1. First output "{START_MARKER}" followed by your solution\n'
        f"2. End the solution with the final answer in the format: '{answer_format}'\n"
        f'3. Then output "{END_MARKER}" at the end of the solution\n'
        '4. Do not output meta-phrases like "Here is the solution"'
    )


def direct_solve_messages(question, answer_format=DEFAULT_ANSWER_FORMAT):
    return [{"role": "user", "content": direct_solve_prompt(question, answer_format)}]

# -----------------------------------------------------------------------------
# parsing

# whitespace-tolerant: models sometimes drop or double the inner spaces
_START_RE = re.compile(r"===\s*CORRECTED\s+STARTED\s*===")
_END_RE = re.compile(r"===\s*CORRECTED\s+ENDED\s*===")


class MarkerError(ValueError):
    """The Oracle's output is not framed by exactly one START/END marker pair."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def parse_corrected(text):
    """Return the stripped text between START_MARKER and END_MARKER."""
    starts, ends = list(_START_RE.finditer(text)), list(_END_RE.finditer(text))
    if not starts:
        raise MarkerError("missing start marker")
    if not ends:
        raise MarkerError("missing end marker")
    if len(starts) > 1 or len(ends) > 1:
        raise MarkerError("duplicated markers")
    if ends[0].start() < starts[0].end():
        raise MarkerError("missing end marker")  # the only END comes before START
    body = text[starts[0].end():ends[0].start()].strip()
    if not body:
        raise MarkerError("empty correction")
    return body

# -----------------------------------------------------------------------------
# the client

# transient: worth waiting for. Everything else (400 bad request, 401 key, 404 model) fails at once.
RETRYABLE_ERRORS = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                    openai.InternalServerError)


@dataclass
class OracleReply:
    text: str
    thinking: str = ""
    retries: int = 0
    usage: dict | None = None


class OracleRequestError(RuntimeError):
    """A request that failed for good. `reason` is short (the openai error class
    name) so failures can be tallied; `retries` is how many retries were spent;
    `status_code` is the HTTP status, or None for connection errors."""

    def __init__(self, reason, message, retries, status_code=None):
        super().__init__(f"{reason} after {retries} retries: {message}")
        self.reason = reason
        self.retries = retries
        self.status_code = status_code


@dataclass
class RunSummary:
    requested: int
    skipped_done: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    failure_reasons: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0


def _reasoning_of(obj):
    """Thinking text on a message/delta. Not in the OpenAI schema: vLLM and DeepSeek
    send `reasoning_content`, others `reasoning`; the client keeps them as extras."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(obj, name, None)
        if value is None:
            value = (getattr(obj, "model_extra", None) or {}).get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _split_think_tags(text, thinking):
    # Gemini (thought_tag_marker) and vLLM without a reasoning parser put thoughts
    # inline as <think>...</think>; move them out so they cannot confuse the parser.
    m = re.match(r"\s*<think>(.*?)</think>\s*", text, re.DOTALL)
    if m is None:
        return text, thinking
    return text[m.end():], thinking + m.group(1)


_KEY_LIKE = re.compile(r"\b(?:sk|AIza)[-_A-Za-z0-9*]{8,}")  # OpenAI / Google key shapes, possibly masked


def _retry_after(err):
    response = getattr(err, "response", None)
    if response is None:
        return None
    try:
        return float(response.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class OpenAIOracle:
    """Chat completions against an OpenAI-compatible endpoint, with our own counted
    retries (`complete`) and a resumable, concurrent batch runner (`run`)."""

    def __init__(self, base_url, model, api_key_env="SPOT_ORACLE_API_KEY", max_concurrency=8, max_retries=5,
                 backoff_base=1.0, backoff_max=60.0, timeout=600.0, stream=True, temperature=None, top_p=None,
                 max_tokens=None, extra_body=None):
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise RuntimeError(f"Oracle API key not found: set the environment variable {api_key_env}")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.stream = stream
        # only the sampling knobs that are set: some endpoints reject unknown/None fields
        sampling = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        self._sampling = {k: v for k, v in sampling.items() if v is not None}
        self.extra_body = extra_body
        # max_retries=0: we retry ourselves, so we can count retries and honour Retry-After
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)

    def __repr__(self):
        return f"OpenAIOracle(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def close(self):
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- one request ----------------------------------------------------------

    def _call(self, messages):
        kwargs = dict(model=self.model, messages=messages, stream=self.stream, extra_body=self.extra_body,
                      **self._sampling)
        if not self.stream:
            resp = self._client.chat.completions.create(**kwargs)
            msg = resp.choices[0].message
            usage = resp.usage.model_dump(exclude_none=True) if resp.usage is not None else None
            return msg.content or "", _reasoning_of(msg), usage
        text, thinking, usage = [], [], None
        with self._client.chat.completions.create(**kwargs) as stream:
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage.model_dump(exclude_none=True)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    thinking.append(_reasoning_of(choice.delta))
                    text.append(choice.delta.content or "")
        return "".join(text), "".join(thinking), usage

    def _backoff(self, attempt, err):
        wait = _retry_after(err)
        if wait is None:
            # exponential with jitter, so parallel workers hit by the same 429 don't retry in lockstep
            wait = min(self.backoff_max, self.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0)
        return min(max(wait, 0.0), self.backoff_max)

    def complete(self, messages):
        """One chat completion with retries on transient errors -> OracleReply.
        Raises OracleRequestError (reason = the openai error's class name) when it gives up."""
        retries = 0
        while True:
            try:
                text, thinking, usage = self._call(messages)
                text, thinking = _split_think_tags(text, thinking)
                return OracleReply(text=text, thinking=thinking, retries=retries, usage=usage)
            except RETRYABLE_ERRORS as e:
                if retries >= self.max_retries:
                    raise self._give_up(e, retries) from None
                time.sleep(self._backoff(retries, e))
                retries += 1
            except openai.APIError as e:  # 400/401/404/...: retrying cannot help
                raise self._give_up(e, retries) from None

    def _give_up(self, err, retries):
        # `from None` above and the scrub here: some providers quote (part of) the key
        # in their 401 message, and tracebacks/failure files must never show it
        message = str(err)
        key = getattr(self._client, "api_key", None)
        if isinstance(key, str) and key:
            message = message.replace(key, "[redacted]")
        message = _KEY_LIKE.sub("[redacted]", message)
        return OracleRequestError(type(err).__name__, message, retries, getattr(err, "status_code", None))

    # --- many requests, resumable ---------------------------------------------

    def run(self, requests, out_path, failures_path, parse=parse_corrected, desc="oracle"):
        """Complete every request not already in out_path; see module docstring.

        Successes are appended to out_path, failures to failures_path, one JSON line
        each, flushed and fsync'd as they finish, so a crash loses at most the
        requests in flight; rerunning with the same out_path retries only the rest.
        """
        t0 = time.time()
        dupes = [repr(i) for i, n in Counter(r["id"] for r in requests).items() if n > 1]
        if dupes:
            raise ValueError(f"duplicated request ids: {', '.join(dupes[:10])}")
        for r in requests:
            if "messages" not in r:
                raise ValueError(f"request {r['id']!r} has no 'messages'")

        done = _ids_in(out_path)
        todo = [r for r in requests if r["id"] not in done]
        summary = RunSummary(requested=len(requests), skipped_done=len(requests) - len(todo))
        if summary.skipped_done:
            print(f"[{desc}] resume: {summary.skipped_done}/{len(requests)} already in {out_path}, skipping them")
        if not todo:
            summary.elapsed_s = time.time() - t0
            return summary

        def work(req):
            try:
                reply = self.complete(req["messages"])
            except OracleRequestError as e:
                return req, None, {"reason": e.reason, "error": str(e)}, e.retries
            except Exception as e:  # a bug or an unexpected client error: record it, keep the run going
                return req, None, {"reason": type(e).__name__, "error": str(e)}, 0
            try:
                parsed = parse(reply.text)
            except Exception as e:
                reason = f"parse: {getattr(e, 'reason', None) or type(e).__name__}"
                return req, None, {"reason": reason, "error": str(e), "raw": reply.text}, reply.retries
            meta = {k: v for k, v in req.items() if k not in ("id", "messages")}
            record = {"id": req["id"], **meta, "response": parsed, "raw": reply.text,
                      "thinking": reply.thinking, "retries": reply.retries, "usage": reply.usage}
            return req, record, None, reply.retries

        lock = threading.Lock()  # one writer at a time, whatever thread ends up writing
        with _JsonlAppender(out_path) as out, _JsonlAppender(failures_path) as fails, \
                ThreadPoolExecutor(max_workers=self.max_concurrency) as pool, \
                tqdm(total=len(todo), desc=desc, mininterval=0.5) as bar:
            futures = [pool.submit(work, r) for r in todo]
            try:
                for fut in as_completed(futures):
                    req, record, failure, retries = fut.result()
                    with lock:
                        summary.retries += retries
                        if record is not None:
                            out.write(record)
                            summary.succeeded += 1
                        else:
                            fails.write({"id": req["id"], **failure, "retries": retries})
                            summary.failed += 1
                            summary.failure_reasons[failure["reason"]] += 1
                    bar.update(1)
                    # refresh=False: redraw at most every mininterval (a forced redraw per request floods
                    # a notebook kernel with widget messages)
                    bar.set_postfix(ok=summary.succeeded, failed=summary.failed, retries=summary.retries,
                                    refresh=False)
            except BaseException:
                # interrupted (e.g. Ctrl-C in a notebook): drop queued work; what is written stays valid
                for f in futures:
                    f.cancel()
                raise
        summary.elapsed_s = time.time() - t0
        return summary


def _ids_in(path):
    """Ids already recorded in a JSONL file; a torn last line (crash mid-write) is ignored."""
    done = set()
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                done.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


class _JsonlAppender:
    """Appends one JSON object per line, durable as soon as write() returns."""

    def __init__(self, path):
        self.path = path
        self.f = None

    def __enter__(self):
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        torn = False
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
        self.f = open(self.path, "a", encoding="utf-8")
        if torn:  # a torn last line (crash mid-write) would otherwise swallow the next record
            self.f.write("\n")
        return self

    def write(self, obj):
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def __exit__(self, *exc):
        self.f.close()

# -----------------------------------------------------------------------------
# the tiny world's Oracle: a symbolic solver behind the same prompts


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
        import hashlib

        digest = hashlib.sha256(f"{self.seed}|{question}|{answer}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rewrite_rate

    def __call__(self, messages):
        from . import arithmetic  # the symbolic solver of the miniature world

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
