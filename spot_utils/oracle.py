"""
The Oracle: prompts, output parsing and a resumable, rate-limit-aware client.

In SPoT a student's wrong answers are sent to an Oracle LLM (Gemini 2.5 Pro in
the paper) that minimally edits each into a correct one. Everything here talks
to an OpenAI-compatible endpoint with the official `openai` client, so the tiny
profile's local symbolic oracle (spot_utils.tiny.symbolic_oracle, served by
spot_utils.oracle_server), the paper_smoke
profile's local AnswerLineOracle and a real LLM go through the same code.

    oracle = OpenAIOracle("http://127.0.0.1:8000/v1", "symbolic-oracle")
    reqs = [{"id": i, "messages": rectification_messages(q, a), "question": q} for i, (q, a) in ...]
    summary = oracle.run(reqs, "rectified.jsonl", "rectified.failures.jsonl")

The API key is read from an environment variable (SPOT_ORACLE_API_KEY by
default) and only ever handed to the openai client: it is never printed,
logged or shown in a repr, and it is cut out of everything a run writes (a
server may quote it, whole or masked, in an error or even in a 200 reply).
"""

import json
import math
import os
import queue
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import openai

from .data import fsync_dir
from .environment import repo_relative
from .progress import progress

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


class MalformedReplyError(Exception):
    """A 200 reply the client cannot use: a body that is not JSON (an HTML page from a proxy), no
    choices, a stream that ends before its finish_reason. Servers do this under load, so it is
    retried like a 5xx; `reason` says what was wrong."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# transient: worth waiting for. Everything else (400 bad request, 401 key, 404 model) fails at once.
RETRYABLE_ERRORS = (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError,
                    openai.InternalServerError, MalformedReplyError)


class _Abandoned(Exception):
    """Raised in a worker of an interrupted run: its request is dropped, never written."""


@dataclass
class OracleReply:
    text: str
    thinking: str = ""
    retries: int = 0
    usage: dict | None = None
    finish_reason: str | None = None  # "length": cut at max_tokens


class OracleRequestError(RuntimeError):
    """A request that failed for good. `reason` is short (the openai error class name, or
    "malformed: ..." for an unusable 200 reply) so failures can be tallied; `retries` is how many
    retries were spent; `status_code` is the HTTP status, or None for connection errors."""

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


# A thought block at the start of the content; one never closed (cut at max_tokens) runs to the end.
_THOUGHT_RE = re.compile(r"\s*<(think|thought)>(.*?)(?:</\1>|\Z)\s*", re.DOTALL)


def _split_think_tags(text, thinking):
    # Thoughts sent inline: <think>...</think> (vLLM without a reasoning parser, Gemini's
    # thought_tag_marker) and <thought>...</thought> (Gemini's OpenAI endpoint with include_thoughts).
    # Every leading block is moved out, so a thought that quotes the markers (or drafts a whole
    # answer between them) is never parsed as the answer.
    while m := _THOUGHT_RE.match(text):
        thinking = f"{thinking}\n{m.group(2)}" if thinking else m.group(2)
        text = text[m.end():]
    return text, thinking


def _finite(obj):
    # a usage counter of NaN is no count, and JSON has no NaN: written as null
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def _usage_of(obj):
    usage = getattr(obj, "usage", None)
    if usage is None:
        return None
    if hasattr(usage, "model_dump"):
        return _finite(usage.model_dump(exclude_none=True))
    return _finite(usage) if isinstance(usage, dict) else None


def _read_completion(resp):
    """(text, thinking, usage, finish_reason) of a plain reply, or MalformedReplyError."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list):
        # the client hands back a non-JSON body as text
        html = isinstance(resp, str) and "<html" in resp[:500].lower()
        raise MalformedReplyError("body is not a chat completion" + (" (an HTML page)" if html else ""))
    if not choices:
        raise MalformedReplyError("empty choices")
    choice = next((c for c in choices if getattr(c, "index", 0) == 0), choices[0])  # n > 1: the first
    msg = getattr(choice, "message", None)
    content = getattr(msg, "content", None)
    if msg is None or not isinstance(content, (str, type(None))):
        raise MalformedReplyError("choice without a text message")
    return content or "", _reasoning_of(msg), _usage_of(resp), getattr(choice, "finish_reason", None)


def _read_stream(stream, abandon):
    """(text, thinking, usage, finish_reason) of a streamed reply (choice 0), or MalformedReplyError.
    Stops between chunks when `abandon` is set."""
    text, thinking, usage, finish = [], [], None, None
    for chunk in stream:
        if abandon is not None and abandon.is_set():
            raise _Abandoned()
        if getattr(chunk, "usage", None) is not None:
            usage = _usage_of(chunk)
        choices = getattr(chunk, "choices", None) or []
        if not isinstance(choices, list):
            raise MalformedReplyError("stream chunk is not a chat completion chunk")
        for choice in choices:
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            if delta is not None:
                thinking.append(_reasoning_of(delta))
                content = getattr(delta, "content", None)
                text.append(content if isinstance(content, str) else "")
            finish = getattr(choice, "finish_reason", None) or finish
    if finish is None:  # a cut connection or a proxy that ends the stream early: the text may be partial
        headers = getattr(getattr(stream, "response", None), "headers", None) or {}
        ctype = headers.get("content-type", "").split(";")[0]
        body = "" if not ctype or ctype == "text/event-stream" else f" (the body was {ctype}, not an event stream)"
        raise MalformedReplyError("stream ended before its finish_reason" + body)
    return "".join(text), "".join(thinking), usage, finish


def _retry_after(err):
    """The server's wait in seconds (Retry-After-Ms, Retry-After in seconds or as an HTTP date), or
    None: absent, unreadable or NaN, and our own backoff applies. inf is clamped by _backoff."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            wait = float(value) * scale
        except ValueError:
            wait = _seconds_until(value)
        if wait is not None and not math.isnan(wait):
            return wait
    return None


def _seconds_until(http_date):
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()

# --- keeping the key out of everything written ---------------------------------

_KEY_LIKE = re.compile(r"\b(?:sk|AIza)[-_A-Za-z0-9*]{8,}")  # OpenAI / Google key shapes, possibly masked
_MASK = re.compile(r"\*{2,}|\.{2,}|…|•+")  # how providers mask the middle of a key they echo
_TOKEN = re.compile(r"[^\s\"'`()<>\[\]{},;:=]+")
_KEY_PART = 6  # this many consecutive characters of the key are a part of it (chance match: ~1e-10 per position)


class _Redactor:
    """Cuts the API key out of text that gets written or shown: the whole key, any run of _KEY_PART
    of its characters, and masked echoes ("sk-abc...wxyz") whose visible ends are the key's. With
    error=True (error messages, failure records) anything shaped like a key goes too."""

    def __init__(self, key):
        self.key = key or ""
        k = self.key
        self._parts = {k[i:i + _KEY_PART] for i in range(len(k) - _KEY_PART + 1)} or ({k} if k else set())

    def __call__(self, text, error=False):
        if not isinstance(text, str) or not text:
            return text
        spans = []
        for part in self._parts:
            i = text.find(part)
            while i != -1:
                spans.append((i, i + len(part)))
                i = text.find(part, i + 1)
        spans += [m.span() for m in _TOKEN.finditer(text) if self._masked_echo(m.group())]
        if error:
            spans += [m.span() for m in _KEY_LIKE.finditer(text)]
        return _cut(text, spans)

    def _masked_echo(self, token):
        pieces = _MASK.split(token)
        if len(pieces) < 2 or not self.key:
            return False
        head, tail = pieces[0], pieces[-1].rstrip(".:!?")
        # 4 visible characters: "sk-abc...wxyz" is an echo, "**Step" (markdown) is not
        return (len(head) >= 4 and self.key.startswith(head)) or (len(tail) >= 4 and self.key.endswith(tail))


def _cut(text, spans):
    """text with every span replaced by one "[redacted]"; overlapping or touching spans merge."""
    merged = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out += [text[pos:start], "[redacted]"]
        pos = end
    return "".join(out) + text[pos:]


def _check_number(name, value, kind, low, low_ok=True):
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and (value >= low if low_ok else value > low) and (kind is int or math.isfinite(value))
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        raise ValueError(f"{name} must be {what} {'>=' if low_ok else '>'} {low}, got {value!r}")


class OpenAIOracle:
    """Chat completions against an OpenAI-compatible endpoint, with our own counted
    retries (`complete`) and a resumable, concurrent batch runner (`run`).

    The key is read from the environment variable `api_key_env`; `api_key` passes one directly
    instead (the local server's per-run token), leaving the environment alone."""

    def __init__(self, base_url, model, api_key_env="SPOT_ORACLE_API_KEY", max_concurrency=8, max_retries=5,
                 backoff_base=1.0, backoff_max=60.0, timeout=600.0, stream=True, temperature=None, top_p=None,
                 max_tokens=None, extra_body=None, api_key=None):
        _check_number("max_concurrency", max_concurrency, int, 1)
        _check_number("max_retries", max_retries, int, 0)
        _check_number("backoff_base", backoff_base, (int, float), 0)
        _check_number("backoff_max", backoff_max, (int, float), 0)
        if isinstance(timeout, (int, float)):
            _check_number("timeout", timeout, (int, float), 0, low_ok=False)
        api_key = api_key or os.environ.get(api_key_env)
        if not api_key:
            raise RuntimeError(f"Oracle API key not found: set the environment variable {api_key_env}")
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.stream = stream
        # only the sampling knobs that are set: some endpoints reject unknown/None fields
        sampling = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        self._sampling = {k: v for k, v in sampling.items() if v is not None}
        clash = sorted({"model", "messages", "stream", *self._sampling} & set(extra_body or {}))
        if clash:  # extra_body is merged over the request: it would silently replace these
            raise ValueError(f"extra_body must not set {', '.join(clash)}: the client sets them itself")
        self.extra_body = extra_body or None
        self._redact = _Redactor(api_key)
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

    def _call(self, messages, abandon=None):
        kwargs = dict(model=self.model, messages=messages, stream=self.stream, extra_body=self.extra_body,
                      **self._sampling)
        try:
            if not self.stream:
                return _read_completion(self._client.chat.completions.create(**kwargs))
            with self._client.chat.completions.create(**kwargs) as stream:
                return _read_stream(stream, abandon)
        except json.JSONDecodeError:
            raise MalformedReplyError("invalid JSON in the stream" if self.stream else "invalid JSON body") from None

    def _backoff(self, attempt, err):
        wait = _retry_after(err)
        if wait is None:
            # exponential with jitter, so parallel workers hit by the same 429 don't retry in lockstep
            wait = min(self.backoff_max, self.backoff_base * 2 ** attempt) * random.uniform(0.5, 1.0)
        return min(max(wait, 0.0), self.backoff_max)

    def complete(self, messages, abandon=None):
        """One chat completion with retries on transient errors -> OracleReply.
        Raises OracleRequestError (reason = the openai error's class name, or "malformed: <what>")
        when it gives up. `abandon`, a threading.Event set from another thread, stops it between
        attempts, during a backoff or between stream chunks."""
        retries = 0
        while True:
            if abandon is not None and abandon.is_set():
                raise _Abandoned()
            try:
                text, thinking, usage, finish = self._call(messages, abandon)
                text, thinking = _split_think_tags(text, thinking)
                return OracleReply(text=text, thinking=thinking, retries=retries, usage=usage, finish_reason=finish)
            except RETRYABLE_ERRORS as e:
                if retries >= self.max_retries:
                    raise self._give_up(e, retries) from None
                self._sleep(self._backoff(retries, e), abandon)
                retries += 1
            except openai.APIError as e:  # 400/401/404/...: retrying cannot help
                raise self._give_up(e, retries) from None

    @staticmethod
    def _sleep(seconds, abandon):
        if abandon is None:
            time.sleep(seconds)
        elif abandon.wait(seconds):
            raise _Abandoned()

    def _give_up(self, err, retries):
        # `from None` above and the redaction here: some providers quote (part of) the key
        # in their 401 message, and tracebacks/failure files must never show it
        message = self._redact(str(err), error=True)
        if isinstance(err, MalformedReplyError):
            return OracleRequestError(f"malformed: {err.reason}", message, retries, 200)
        return OracleRequestError(type(err).__name__, message, retries, getattr(err, "status_code", None))

    # --- many requests, resumable ---------------------------------------------

    def run(self, requests, out_path, failures_path, parse=parse_corrected, desc="oracle"):
        """Complete every request not already in out_path; see module docstring.

        Successes are appended to out_path, failures to failures_path, one JSON line each, each in
        one write and fsync'd as they finish, so a crash loses at most the requests in flight;
        rerunning with the same out_path retries only the rest. On start a line a crash left
        incomplete is moved aside (repair_reply_file), so out_path always reads strictly; the
        failures file keeps one line per id still failing, its latest. Ctrl-C stops at once: the
        requests in flight are abandoned (nothing of theirs is written) and the next run resumes.
        """
        t0 = time.time()
        _check_requests(requests)
        done = repair_reply_file(out_path, desc)
        _compact_failures(failures_path, done, desc)
        todo = [r for r in requests if r["id"] not in done]
        summary = RunSummary(requested=len(requests), skipped_done=len(requests) - len(todo))
        if summary.skipped_done:
            print(f"[{desc}] resume: {summary.skipped_done}/{len(requests)} already in {repo_relative(out_path)}, "
                  "skipping them")
        if not todo:
            summary.elapsed_s = time.time() - t0
            return summary

        abandon = threading.Event()

        def work(req):
            try:
                reply = self.complete(req["messages"], abandon)
            except OracleRequestError as e:
                return req, None, {"reason": e.reason, "error": str(e)}, e.retries
            try:
                parsed = parse(reply.text)
            except Exception as e:
                reason = f"parse: {getattr(e, 'reason', None) or type(e).__name__}"
                if reply.finish_reason == "length":
                    reason = "parse: cut at max_tokens (finish_reason length)"
                return req, None, {"reason": reason, "error": str(e), "raw": reply.text}, reply.retries
            meta = {k: v for k, v in req.items() if k not in ("id", "messages")}
            record = {"id": req["id"], **meta, "response": self._redact(parsed), "raw": self._redact(reply.text),
                      "thinking": self._redact(reply.thinking), "retries": reply.retries, "usage": reply.usage}
            return req, record, None, reply.retries

        with _JsonlAppender(out_path) as out, _JsonlAppender(failures_path) as fails, \
                progress(total=len(todo), desc=desc) as bar:
            try:
                for req, record, failure, retries in self._pool(todo, work, abandon):
                    summary.retries += retries
                    if record is not None:
                        out.write(record)
                        done.add(req["id"])
                        summary.succeeded += 1
                    else:
                        failure = {k: self._redact(v, error=True) for k, v in failure.items()}
                        fails.write({"id": req["id"], **failure, "retries": retries})
                        summary.failed += 1
                        summary.failure_reasons[failure["reason"]] += 1
                    # refresh=False: the postfix shows with the bar's next line, not as a line of its own
                    bar.set_postfix(ok=summary.succeeded, failed=summary.failed, retries=summary.retries,
                                    refresh=False)
                    bar.update(1)
            except BaseException:
                # interrupted (e.g. Ctrl-C in a notebook): what is written stays valid, the rest is dropped
                abandon.set()
                print(f"[{desc}] interrupted after {summary.succeeded + summary.failed} of {len(todo)} requests: "
                      f"those in flight were abandoned, nothing of theirs written; rerun to resume")
                raise
        _compact_failures(failures_path, done, desc)
        summary.elapsed_s = time.time() - t0
        return summary

    def _pool(self, todo, work, abandon):
        """Yields work(request) for every request as it finishes. The workers are daemon threads, so
        an interrupted run returns at once instead of waiting for the requests in flight (up to
        timeout x retries each); once `abandon` is set they hand nothing back."""
        tasks, results = queue.SimpleQueue(), queue.SimpleQueue()
        for r in todo:
            tasks.put(r)

        def worker():
            while not abandon.is_set():
                try:
                    req = tasks.get_nowait()
                except queue.Empty:
                    return
                try:
                    res = work(req)
                except _Abandoned:
                    return
                except Exception as e:  # a bug or an unexpected client error: record it, keep the run going
                    res = req, None, {"reason": type(e).__name__, "error": str(e)}, 0
                if not abandon.is_set():
                    results.put(res)

        threads = [threading.Thread(target=worker, name=f"oracle-worker-{i}", daemon=True)
                   for i in range(min(self.max_concurrency, len(todo)))]
        for t in threads:
            t.start()
        try:
            for _ in todo:
                while True:
                    try:
                        res = results.get(timeout=0.2)  # short waits: a Ctrl-C is seen within 0.2 s
                        break
                    except queue.Empty:
                        if not any(t.is_alive() for t in threads) and results.empty():
                            raise RuntimeError("every Oracle worker thread died") from None
                yield res
        finally:
            abandon.set()
        for t in threads:
            t.join()


_RECORD_FIELDS = ("response", "raw", "thinking", "retries", "usage")  # set by run() on every reply record


def _check_requests(requests):
    """Refuse, before any call, requests whose records could not be written and read back as given."""
    ids = Counter()
    for i, r in enumerate(requests):
        if not isinstance(r, dict) or "id" not in r:
            raise ValueError(f"request {i} must be a dict with an 'id', got {r!r:.80}")
        ids[r["id"] if isinstance(r["id"], (str, int)) else repr(r["id"])] += 1
    dupes = [repr(i) for i, n in ids.items() if n > 1]
    if dupes:
        raise ValueError(f"duplicated request ids: {', '.join(dupes[:10])}")
    for r in requests:
        rid = r["id"]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise ValueError(f"request id {rid!r}: ids must be str or int (they are written to JSON and read back)")
        if "messages" not in r:
            raise ValueError(f"request {rid!r} has no 'messages'")
        clash = [k for k in _RECORD_FIELDS if k in r]
        if clash:
            raise ValueError(f"request {rid!r}: field(s) {', '.join(clash)} would be overwritten by the reply's own")
        for k, v in r.items():
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise ValueError(f"request {rid!r}: field {k!r} cannot be written as JSON ({e})") from None

# -----------------------------------------------------------------------------
# reply files: append-only JSONL, repaired on resume

_BOM = b"\xef\xbb\xbf"


def _lines(path):
    """(line number, bytes without the line end) of every non-blank line; a BOM at the start is skipped."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            body = raw.rstrip(b"\r\n")
            if body.strip():
                yield lineno, body


def _line_id(body):
    """(id, None) when the line is a complete record, else (None, why not)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "cut inside a UTF-8 character" if e.reason == "unexpected end of data" else "not valid UTF-8"
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return None, "incomplete JSON"
    if not isinstance(rec, dict):
        return None, "not a JSON object"
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None, "no str or int 'id'"
    return rid, None


def repair_reply_file(path, desc="oracle"):
    """Make a reply file strictly readable again after a crash; returns the ids of its complete records.

    A line that is not a complete record (the fragment of a write a crash cut short, possibly inside
    a UTF-8 character) or that repeats an earlier id is moved, byte for byte, to `path`.torn, and
    this is said in one line; every complete record stays, in its order. A BOM (an editor's) is fine."""
    path = Path(path)
    if not path.exists():
        return set()
    first, bad = {}, {}
    for lineno, body in _lines(path):
        rid, why = _line_id(body)
        if why is None and rid in first:
            why = f"repeats the id of line {first[rid]}"
        if why is None:
            first[rid] = lineno
        else:
            bad[lineno] = why
    if bad:
        side = _quarantine(path, (body for n, body in _lines(path) if n in bad))
        _atomic_write(path, (body for n, body in _lines(path) if n not in bad))
        reasons = ", ".join(f"{n} {why}" for why, n in Counter(bad.values()).items())
        print(f"[{desc}] repaired {repo_relative(path)}: moved {len(bad)} incomplete line(s) ({reasons}; lines "
              f"{', '.join(map(str, list(bad)[:5]))}{'...' if len(bad) > 5 else ''}) to {repo_relative(side)}; "
              f"kept {len(first)} complete records")
    return set(first)


def _compact_failures(path, done, desc):
    """Keep one line per id still failing (its latest) and none for ids now done, so the failures
    file says what fails now instead of growing with every run."""
    path = Path(path)
    if not path.exists():
        return
    latest, bad, total = {}, {}, 0
    for lineno, body in _lines(path):
        total += 1
        rid, why = _line_id(body)
        if why is not None:
            bad[lineno] = why
            continue
        latest.pop(rid, None)  # re-inserted: the order is that of the latest failures
        latest[rid] = body
    current = [body for rid, body in latest.items() if rid not in done]
    if bad:
        side = _quarantine(path, (body for n, body in _lines(path) if n in bad))
        print(f"[{desc}] repaired {repo_relative(path)}: moved {len(bad)} incomplete line(s) to {repo_relative(side)}")
    if bad or len(current) != total:
        _atomic_write(path, current)


def _quarantine(path, lines):
    side = path.with_name(path.name + ".torn")
    with open(side, "ab") as f:
        for line in lines:
            f.write(line + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return side


def _atomic_write(path, lines):
    """Replace path by these lines: a temporary file, fsync'd, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            for line in lines:
                f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class _JsonlAppender:
    """Appends one JSON object per line with a single write(2), fsync'd before write() returns: a
    Ctrl-C never leaves half a line (a SIGKILL mid-write may; the next run's repair moves it aside)."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        if os.fstat(self.fd).st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a last record without its line end: the next one must not join it
                    self._write(b"\n")
        return self

    def write(self, obj):
        self._write((json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))
        os.fsync(self.fd)

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def __exit__(self, *exc):
        os.close(self.fd)

# -----------------------------------------------------------------------------
# the paper profile's local Oracle (CPU smoke): the repo's own prompts, read back by their templates


class OracleRefusal(ValueError):
    """A request a local responder cannot serve. `status_code` 400: the local server answers it as a
    client error with this message (spot_utils.oracle_server), which OpenAIOracle does not retry."""

    status_code = 400
    code = "oracle_refused"


class PromptError(OracleRefusal):
    """A prompt that is not one of the repo's Oracle templates, or one missing a field."""

    code = "unreadable_prompt"


# field -> how the error messages name it (the template's own labels)
_FIELD_LABELS = {"question": "Question", "student_answer": "Student Model's Answer",
                 "ground_truth": "Reference Ground Truth", "answer_format": "answer format"}
_LAZY_FIELDS = {"question", "ground_truth", "answer_format"}  # the student answer is greedy (see _template)


def _template(render, fields):
    """(literal pieces, fields in order) of a prompt function, found by rendering it with sentinels.
    The pieces are derived from the very function that writes the prompts, so they cannot drift."""
    sentinels = {f: f"\x00{i}\x00" for i, f in enumerate(fields)}
    parts = re.split("\x00(\\d+)\x00", render(**sentinels))
    return parts[0::2], [fields[int(i)] for i in parts[1::2]]


def _templates():
    rect = lambda fields: _template(lambda **v: rectification_prompt(**v), fields)  # noqa: E731
    return {
        "rectification": rect(["question", "student_answer", "ground_truth", "answer_format"]),
        "rectification (no ground truth)": rect(["question", "student_answer", "answer_format"]),
        "direct-solve": _template(lambda **v: direct_solve_prompt(**v), ["question", "answer_format"]),
    }


def _template_regex(literals, fields):
    # Question lazy: it ends at the first "Student Model's Answer:" line (questions come from a data
    # set; the student's answer is free model text). The answer greedy: the ground truth is the text
    # after the last "Reference Ground Truth:" line, so an answer quoting that label stays the answer's.
    body = re.escape(literals[0])
    for field, literal in zip(fields, literals[1:]):
        body += f"(?P<{field}>.*{'?' if field in _LAZY_FIELDS else ''})" + re.escape(literal)
    return re.compile(body, re.S)


def _missing_piece(kind, text, literals, fields):
    """Why `text` does not fit the template: the first literal piece not found in order, by the field
    it introduces (or the instructions after the last field)."""
    if not text.startswith(literals[0]):
        opening = literals[0].rsplit("\n", 1)[-1] if "\n" in literals[0] else literals[0]
        head = literals[0].split("\n", 1)[0][:60]
        return (f"the {kind} prompt does not start as its template does ({head!r}... then "
                f"{opening!r}: the field {_FIELD_LABELS[fields[0]]!r} is missing)")
    pos = len(literals[0])
    for i, literal in enumerate(literals[1:], 1):
        last = i == len(literals) - 1
        at = text.rfind(literal) if last else text.find(literal, pos)
        if at < pos or (last and at + len(literal) != len(text)):
            if last:
                return (f"the {kind} prompt does not end with its template's output-format instructions after "
                        f"the field {_FIELD_LABELS[fields[-1]]!r} (expected {literal.lstrip(chr(39)).strip()[:60]!r}...)")
            label = literal.strip().split("\n")[-1].strip()
            if fields[i] == "answer_format":
                return (f"the {kind} prompt's instructions are missing or altered before the field 'answer format' "
                        f"(expected {label!r})")
            return f"the {kind} prompt has no field {_FIELD_LABELS[fields[i]]!r} (expected a line {label!r})"
        pos = at + len(literal)
    return f"the {kind} prompt does not match its template"


def read_oracle_prompt(text):
    """The fields of one of the repo's Oracle prompts -> (kind, fields).

    kind is "rectification" (App. F, fields question, student_answer, ground_truth (None in the
    variant without it), answer_format) or "direct-solve" (question, answer_format). The fields are
    read by the templates' own structure (rectification_prompt / direct_solve_prompt rendered with
    sentinels), so writing the fields back into the template gives `text` again. Raises PromptError
    naming the missing field when `text` is not one of them."""
    if not isinstance(text, str):
        raise PromptError(f"the prompt must be a string, got {type(text).__name__}")
    templates = _templates()
    if text.startswith(_INTRO):
        kind = ("rectification" if _TASK_GT in text else
                "rectification (no ground truth)" if _TASK_NO_GT in text else None)
        if kind is None:
            raise PromptError("the rectification prompt has no task instructions (neither "
                              f"{_TASK_GT.splitlines()[0]!r} nor {_TASK_NO_GT.splitlines()[0]!r})")
    elif text.startswith(templates["direct-solve"][0][0].split("\n", 1)[0]):
        kind = "direct-solve"
    else:
        raise PromptError(f"not an Oracle prompt of this repo: it starts with {text[:60]!r}, neither the "
                          f"rectification prompt ({_INTRO[:40]!r}...) nor the direct-solve prompt "
                          f"({direct_solve_prompt('', '')[:40]!r}...)")
    literals, fields = templates[kind]
    m = _template_regex(literals, fields).fullmatch(text)
    if m is None:
        raise PromptError(_missing_piece(kind, text, literals, fields))
    values = m.groupdict()
    for field in ("question", "ground_truth", "answer_format"):
        if field in values and not values[field].strip():
            raise PromptError(f"the {kind} prompt's field {_FIELD_LABELS[field]!r} is empty")
    if "ANSWER" not in values["answer_format"]:
        raise PromptError(f"the {kind} prompt's answer format {values['answer_format']!r} has no ANSWER "
                          "placeholder for the final answer")
    if kind.startswith("rectification"):
        values.setdefault("ground_truth", None)
        return "rectification", values
    return kind, values


_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_MATH_OPENERS = {"$$", "\\[", "$"}  # a display whose closing line goes with the answer line


def answer_line(answer_format, answer):
    """The final-answer line: the format with its ANSWER placeholder filled in."""
    return answer_format.replace("ANSWER", str(answer).strip(), 1)


def _is_answer_line(line, lead):
    return bool(_BOX_RE.search(line)) or bool(lead) and lead.lower() in line.lower()


def replace_answer_line(answer, answer_format, reference):
    """The student's answer, minimally edited to end with the final-answer line of `reference`
    -> (text, what was done).

    The final-answer line is the last line that holds a boxed answer (\\boxed, \\fbox) or the answer
    format's own lead ("Therefore, the final answer is:"). It is replaced by the format's line; lines
    after it go (the prompt asks the correction to end with that line; deleting costs nothing in the
    LCS change ratio, which counts only y+'s tokens), and so do the lines just before it that only
    lead into it: a math display's opener ("$$", "\\[") or the bare lead. Without such a line, the
    format's line is appended.
    Everything before stays byte for byte (leading and trailing whitespace aside, which the parser and
    the pair builder strip anyway)."""
    line = answer_line(answer_format, reference)
    lead = re.split(r"[$\\]", answer_format.split("ANSWER", 1)[0], maxsplit=1)[0].strip()
    body = answer.strip()
    if not body:
        return line, "empty answer: wrote only the final-answer line"
    lines = body.split("\n")
    at = next((i for i in range(len(lines) - 1, -1, -1) if _is_answer_line(lines[i], lead)), None)
    if at is None:
        return f"{body}\n{line}", f"no final-answer line: appended one after line {len(lines)}"
    start = at  # a display opener ("$$") or the bare lead ("Therefore, the final answer is:") just before goes too
    while start > 0 and (lines[start - 1].strip() in _MATH_OPENERS
                         or bool(lead) and lines[start - 1].strip().lower() == lead.lower()):
        start -= 1
    note = f"replaced the final-answer line (line {at + 1} of {len(lines)})"
    if at - start:
        note += f", with the {at - start} line(s) leading into it"
    if len(lines) - at - 1:
        note += f"; dropped the {len(lines) - at - 1} line(s) after it"
    return "\n".join(lines[:start] + [line]), note


def _prompt_of(messages):
    if not isinstance(messages, list) or not messages:
        raise PromptError("no messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    content = (users or messages)[-1].get("content") if isinstance((users or messages)[-1], dict) else None
    if not isinstance(content, str):
        raise PromptError("the last user message has no text content")
    return content


class AnswerLineOracle:
    """The local Oracle of the paper profile's CPU smoke (base_url "", a model that is not tiny), served
    by spot_utils.oracle_server like the miniature's SymbolicOracle, behind the same prompts (App. F and direct-solve).

    It cannot do mathematics; it does what the paper's Oracle does to an answer whose reasoning it
    keeps: a rectification request gets the student's answer (y-, read from the prompt) minimally
    edited by replace_answer_line, its final-answer line set to the prompt's Reference Ground Truth.

    A direct-solve prompt carries no ground truth (an LLM Oracle solves the problem itself); this
    Oracle looks the question up in `answer_key` instead: a mapping question -> reference answer, or a
    callable returning one, called once on first need (the profile's question set, the same references
    the rectification prompts carry). It then answers in its own style, a short line and the boxed
    line, always correct (a real Oracle's direct answers are not). A question not in the key, a key
    that cannot be loaded, or a prompt that is not one of the templates is refused (OracleRefusal /
    PromptError: a 400 from the local server, not retried) with a message that says what is missing.
    A rectification prompt without ground truth (with_ground_truth false) takes the key's answer too.
    Its notes are returned as "thinking", as reasoning LLMs send them."""

    def __init__(self, answer_key=None):
        self._source = answer_key
        self._key, self._key_error = None, None
        self._lock = threading.Lock()

    def _answer_key(self):
        with self._lock:
            if self._key is None and self._key_error is None:
                try:
                    key = self._source() if callable(self._source) else self._source
                    self._key = {str(q).strip(): a for q, a in dict(key or {}).items()}
                except Exception as e:  # said once per request, never retried into a crash loop
                    self._key_error = f"{type(e).__name__}: {e}"
            if self._key_error is not None:
                raise OracleRefusal(f"the local math Oracle could not load its answer key: {self._key_error}")
            return self._key

    def reference(self, question, why):
        key = self._answer_key()
        answer = key.get(question.strip())
        if answer is None or not str(answer).strip():
            raise OracleRefusal(f"{why}, and the question is not in the local math Oracle's answer key "
                                f"({len(key)} questions): {question.strip()[:80]!r}")
        return str(answer)

    def __call__(self, messages):
        kind, f = read_oracle_prompt(_prompt_of(messages))
        if kind == "rectification":
            reference, source = f["ground_truth"], "the prompt's Reference Ground Truth"
            if reference is None:
                reference = self.reference(f["question"], "the rectification prompt carries no Reference Ground Truth")
                source = "the answer key"
            fixed, note = replace_answer_line(f["student_answer"], f["answer_format"], reference)
            return f"{START_MARKER}\n{fixed}\n{END_MARKER}", f"{note}; reference answer {reference.strip()} ({source})"
        reference = self.reference(f["question"], "a direct-solve prompt carries no ground truth").strip()
        solution = f"Solving the problem directly, the result is {reference}.\n{answer_line(f['answer_format'], reference)}"
        return f"{START_MARKER}\n{solution}\n{END_MARKER}", "solved directly: the answer key's reference answer"
