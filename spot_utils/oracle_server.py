"""
A tiny local OpenAI-compatible chat-completions server (FastAPI + uvicorn).

The `tiny` profile serves its symbolic oracle (spot_utils.tiny.symbolic_oracle) through this server so that the
notebooks exercise exactly the same client path (`spot_utils.oracle.OpenAIOracle`,
the official `openai` client, HTTP, SSE streaming, retries) as a run against a
real LLM endpoint. Only loopback addresses are allowed: this is a test double,
not a service.

    with start_server(lambda messages: "hi") as srv:
        OpenAIOracle(srv.base_url, "symbolic-oracle").complete([...])

A responder is any callable `responder(messages) -> str | (text, thinking)`.
Message contents reach it as plain strings (OpenAI "content parts" are joined),
so responders never have to care about the wire format. A responder refuses a
request by raising an exception with a `status_code` of 400-499 (and optionally
a string `code`), e.g. spot_utils.oracle.PromptError: the reply is that client
error with the exception's message, which clients do not retry; any other
exception is a 500 ("responder failed").
"""

import asyncio
import collections
import json
import math
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from email.utils import formatdate

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_N = 16  # choices per request: a test double, not a sampler farm

# -----------------------------------------------------------------------------
# fault injection and counters

# What a real endpoint does wrong, one name per kind (Faults.kinds draws among them):
FAULT_KINDS = (
    "http_500", "http_502", "http_503",           # server errors (retryable)
    "rate_limit",                                 # 429 with Retry-After: Faults.retry_after
    "rate_limit_nan", "rate_limit_inf",           # 429 with a Retry-After of "nan" / "inf"
    "rate_limit_date",                            # 429 with Retry-After as an HTTP date (now)
    "slow",                                       # a correct reply after slow_s seconds
    "hang",                                       # a reply after hang_s seconds (set it above the client's timeout)
    "stream_cut",                                 # the connection drops mid-body
    "no_finish",                                  # a stream that ends without finish_reason and [DONE]
    "invalid_json",                               # a 200 whose body (or one SSE event) is not JSON
    "html",                                       # a 200 HTML page (a proxy's error page)
    "empty_choices",                              # a 200 completion with "choices": []
    "no_markers",                                 # a 200 reply without the START/END markers
    "echo_key", "echo_key_masked",                # a 200 reply quoting the API key (whole / sk-abc...wxyz)
)
_HTTP_FAULTS = {"http_500": 500, "http_502": 502, "http_503": 503}
_RATE_LIMIT_FAULTS = {"rate_limit", "rate_limit_nan", "rate_limit_inf", "rate_limit_date"}


@dataclass
class Faults:
    """Injected failures. First a fixed schedule, counted globally over valid chat requests: the first
    `rate_limit_first` answer 429 (with Retry-After), the next `server_error_first` answer 500 (exact
    for the usual test shape: one request, or "every request fails"). After those, each valid request
    draws one of `kinds` (kind -> probability, see FAULT_KINDS) from a RNG seeded by `seed` and the
    request's number, until `max_faults` random faults were injected."""
    rate_limit_first: int = 0
    retry_after: float | str | None = 0.01  # seconds, sent as the Retry-After header
    server_error_first: int = 0
    kinds: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    max_faults: int | None = None
    slow_s: float = 0.2
    hang_s: float = 30.0

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {', '.join(FAULT_KINDS)}")
        p = list(self.kinds.values())
        if any(not 0.0 <= x <= 1.0 for x in p) or sum(p) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities must be in [0, 1] and sum to at most 1, got {self.kinds}")
        for name in ("slow_s", "hang_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")

    def draw(self, n):
        """The random kind for the n-th request, or None; a string seed makes it reproducible across runs."""
        if not self.kinds:
            return None
        u = random.Random(f"{self.seed}-{n}").random()
        for kind, p in self.kinds.items():
            if u < p:
                return kind
            u -= p
        return None


@dataclass
class ServerStats:
    requests: int = 0        # every POST /v1/chat/completions received
    completions: int = 0     # answered 200 with a proper completion (streamed or not)
    rate_limited: int = 0    # injected 429s
    server_errors: int = 0   # injected 5xx + responder crashes
    unauthorized: int = 0
    bad_requests: int = 0    # 400 / 404


class _State:
    """Counters + fault schedule, shared by uvicorn's event loop and threadpool."""

    def __init__(self, faults):
        if faults is None:
            faults = Faults()
        elif isinstance(faults, dict):
            faults = Faults(**faults)
        self.faults = faults
        self.stats = ServerStats()
        self.by_kind = {}  # fault kind -> times injected
        self.bodies = collections.deque(maxlen=64)  # the latest request bodies, as parsed JSON (for tests)
        self._valid = 0  # valid chat requests seen, drives the fault schedule
        self._random_faults = 0
        self._lock = threading.Lock()

    def record(self, body):
        with self._lock:
            self.bodies.append(body)

    def recorded(self):
        with self._lock:
            return list(self.bodies)

    def count(self, field):
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def next_fault(self):
        """The fault kind (see FAULT_KINDS) for the next valid request, or None."""
        with self._lock:
            n = self._valid
            self._valid += 1
            f = self.faults
            if n < f.rate_limit_first:
                kind = "rate_limit"
            elif n < f.rate_limit_first + f.server_error_first:
                kind = "http_500"
            elif f.max_faults is not None and self._random_faults >= f.max_faults:
                kind = None
            else:
                kind = f.draw(n)
                self._random_faults += kind is not None
            if kind in _RATE_LIMIT_FAULTS:
                self.stats.rate_limited += 1
            elif kind in _HTTP_FAULTS:
                self.stats.server_errors += 1
            if kind is not None:
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            return kind

    def snapshot(self):
        with self._lock:
            d = asdict(self.stats)
            # 429s and 5xx are in their own counters already; the 200-reply faults are only in by_kind
            others = sum(v for k, v in self.by_kind.items() if k not in _RATE_LIMIT_FAULTS and k not in _HTTP_FAULTS)
        d["faults_injected"] = d["rate_limited"] + d["server_errors"] + others
        return d

    def fault_counts(self):
        with self._lock:
            return dict(self.by_kind)

# -----------------------------------------------------------------------------
# wire format helpers


def _error(status, message, type_, code=None, headers=None):
    # OpenAI's error envelope, so the client raises the matching exception class
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _text_of(content):
    """OpenAI content is a string or a list of parts; responders get a string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return None


def _normalise_messages(messages):
    if not isinstance(messages, list) or not messages:
        return None
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return None
        text = _text_of(m.get("content"))
        if text is None:
            return None
        out.append({"role": m["role"], "content": text})
    return out


def _count_tokens(text):
    return len(text.split())  # whitespace "tokens": the unit of usage and of max_tokens here


def _pieces(text):
    # the whitespace tokens of max_tokens: a word and the whitespace before it
    return re.findall(r"\s*\S+|\s+", text)


def _stream_pieces(text):
    # one streamed chunk per line (its newline included), so clients really have to reassemble; a chunk
    # per word made the client's and server's per-chunk work half of notebook 01's Oracle time
    return re.findall(r"[^\n]*\n|[^\n]+", text)


def _limit(text, budget):
    """The first `budget` tokens of text -> (text, tokens used, cut?). budget None: no limit."""
    n = _count_tokens(text)
    if budget is None or n <= budget:
        return text, n, False
    words = [p for p in _pieces(text) if p.strip()]
    return "".join(words[:budget]), budget, True


def _positive_int(body, name, upper=None):
    """body[name] as an int >= 1 (None if absent), or an error message."""
    value = body.get(name)
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper and value > upper):
        bound = f" and <= {upper}" if upper else ""
        return None, f"'{name}' must be an integer >= 1{bound}, got {value!r}."
    return value, None


def _choice_texts(text, thinking, budget):
    """(text, thinking, finish_reason, tokens) under a max_tokens budget; reasoning spends it first,
    as on reasoning models, and a reply cut short ends with finish_reason "length"."""
    thinking, used, cut = _limit(thinking, budget)
    if cut:
        return "", thinking, "length", used
    text, n, cut = _limit(text, None if budget is None else budget - used)
    return text, thinking, "length" if cut else "stop", used + n


class _CutResponse(Response):
    """Sends the headers and the first body bytes, then returns without finishing: uvicorn closes
    the connection mid-body, as a dropped proxy connection does."""

    def __init__(self, chunks, media_type):
        super().__init__(media_type=media_type)
        self.chunks = chunks

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", self.media_type.encode())]})
        for c in self.chunks:
            await send({"type": "http.response.body", "body": c.encode(), "more_body": True})

# -----------------------------------------------------------------------------
# the app


def create_app(responder, model_name, api_key=None, faults=None):
    """FastAPI app serving GET /v1/models, GET /v1/models/{id} and POST /v1/chat/completions.
    Like a real server it honours n (choices) and max_tokens / max_completion_tokens (whitespace
    tokens; a reply cut short has finish_reason "length")."""
    app = FastAPI(title="local oracle", docs_url=None, redoc_url=None, openapi_url=None)
    state = _State(faults)
    app.state.oracle = state
    card = {"id": model_name, "object": "model", "created": 0, "owned_by": "spot-local"}

    def unauthorized(request):
        if api_key is None:
            return None
        if request.headers.get("authorization", "") == f"Bearer {api_key}":
            return None
        state.count("unauthorized")
        # never echo the received or expected key back
        return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    @app.get("/v1/models")
    def list_models(request: Request):
        if (err := unauthorized(request)) is not None:
            return err
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")
    def retrieve_model(model_id: str, request: Request):
        if (err := unauthorized(request)) is not None:
            return err
        if model_id != model_name:
            return _error(404, f"The model '{model_id}' does not exist; this server has '{model_name}'.",
                          "invalid_request_error", "model_not_found")
        return card

    def bad_request(message, code=None, status=400):
        state.count("bad_requests")
        return _error(status, message, "invalid_request_error", code)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        state.count("requests")
        if (err := unauthorized(request)) is not None:
            return err
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return bad_request("Request body is not valid JSON.")
        if not isinstance(body, dict):
            return bad_request("Request body must be a JSON object.")
        state.record(body)
        messages = _normalise_messages(body.get("messages"))
        if messages is None:
            return bad_request("'messages' must be a non-empty list of {role, content}.", "invalid_messages")
        if body.get("model") != model_name:
            return bad_request(f"The model '{body.get('model')}' does not exist; this server has '{model_name}'.",
                               "model_not_found", status=404)
        n, err = _positive_int(body, "n", MAX_N)
        budget, err2 = _positive_int(body, "max_completion_tokens")
        if budget is None and err2 is None:
            budget, err2 = _positive_int(body, "max_tokens")
        if err or err2:
            return bad_request(err or err2, "invalid_value")
        stream = bool(body.get("stream"))

        fault = state.next_fault()
        if fault in _RATE_LIMIT_FAULTS:
            ra = {"rate_limit": state.faults.retry_after, "rate_limit_nan": "nan", "rate_limit_inf": "inf",
                  "rate_limit_date": formatdate(time.time(), usegmt=True)}[fault]
            headers = {} if ra is None else {"retry-after": str(ra)}
            return _error(429, "Rate limit reached (injected).", "rate_limit_error", "rate_limit_exceeded", headers)
        if fault in _HTTP_FAULTS:
            return _error(_HTTP_FAULTS[fault], f"Server error {_HTTP_FAULTS[fault]} (injected).", "server_error")
        if fault in ("slow", "hang"):
            await asyncio.sleep(state.faults.slow_s if fault == "slow" else state.faults.hang_s)

        # the responder is ordinary blocking Python: keep it off the event loop; n choices = n calls
        results = []
        try:
            for _ in range(n or 1):
                results.append(await run_in_threadpool(responder, messages))
        except Exception as e:
            status = getattr(e, "status_code", None)
            if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500:
                # the responder refuses the request (spot_utils.oracle.OracleRefusal, e.g. a prompt it
                # cannot read): a client error the client does not retry, with the responder's reason
                code = getattr(e, "code", None)
                return bad_request(f"the Oracle refused the request: {e}", code if isinstance(code, str) else None,
                                   status=status)
            state.count("server_errors")
            return _error(500, f"responder failed: {type(e).__name__}: {e}", "server_error")
        replies = []
        for result in results:
            text, thinking = (result if isinstance(result, tuple) else (result, ""))
            text, thinking = _faulty_text(fault, str(text), str(thinking or ""), request)
            replies.append(_choice_texts(text, thinking, budget))

        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage = {"prompt_tokens": sum(_count_tokens(m["content"]) for m in messages),
                 "completion_tokens": sum(r[3] for r in replies)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": cid, "created": created, "model": model_name}
        if fault in ("invalid_json", "html", "empty_choices", "stream_cut", "no_finish"):
            return _malformed(fault, stream, head, replies)
        state.count("completions")
        if not stream:
            return _completion(head, replies, usage)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_events(head, replies, usage if include_usage else None),
                                 media_type="text/event-stream", headers={"cache-control": "no-cache"})

    return app


def _faulty_text(fault, text, thinking, request):
    """A 200 reply's text under a content fault (no markers, the caller's key quoted back)."""
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    if fault == "no_markers":
        return "Here is the corrected version: I could not find an error.", ""
    if fault == "echo_key":
        return f"Request authorised with key {key}; no correction produced.", f"the key was {key}"
    if fault == "echo_key_masked":
        return f"Request authorised with key {key[:6]}...{key[-4:]}; no correction produced.", ""
    return text, thinking


def _completion(head, replies, usage):
    choices = []
    for i, (text, thinking, finish, _) in enumerate(replies):
        message = {"role": "assistant", "content": text}
        if thinking:
            message["reasoning_content"] = thinking
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    return {**head, "object": "chat.completion", "choices": choices, "usage": usage}


def _sse(obj):
    return f"data: {json.dumps(obj)}\n\n"


def _chunks(head, replies):
    """The SSE chunks of every choice, without the final usage chunk and [DONE]."""
    out = []
    for i, (text, thinking, finish, _) in enumerate(replies):
        def chunk(delta, finish_reason=None):
            return _sse({**head, "object": "chat.completion.chunk",
                         "choices": [{"index": i, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]})
        out.append(chunk({"role": "assistant", "content": ""}))
        out += [chunk({"reasoning_content": p}) for p in _stream_pieces(thinking)]
        out += [chunk({"content": p}) for p in _stream_pieces(text)]
        out.append(chunk({}, finish_reason=finish))
    return out


async def _events(head, replies, usage):
    for c in _chunks(head, replies):
        yield c
        await asyncio.sleep(0)  # let other connections interleave, like a real server
    if usage is not None:  # OpenAI sends usage as a last chunk with no choices
        yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _malformed(fault, stream, head, replies):
    """A 200 reply the client cannot use (see FAULT_KINDS)."""
    if fault == "html":
        return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", media_type="text/html")
    if fault == "empty_choices":
        body = {**head, "object": "chat.completion" + ".chunk" * stream, "choices": []}
        if not stream:
            return JSONResponse(body)
        return Response(_sse(body) + "data: [DONE]\n\n", media_type="text/event-stream")
    whole = json.dumps(_completion(head, replies, None))
    if not stream:  # a plain body has no stream to cut: its JSON is cut instead
        return Response(whole[: len(whole) // 2], media_type="application/json")
    chunks = _chunks(head, replies)[:-1]  # never the finish chunk
    half = chunks[: max(1, len(chunks) // 2)]
    if fault == "invalid_json":
        return Response("".join(half) + 'data: {"choices": [{"delta": {"cont\n\n', media_type="text/event-stream")
    if fault == "no_finish":
        return Response("".join(chunks), media_type="text/event-stream")
    return _CutResponse(half + [half[-1][: len(half[-1]) // 2]], "text/event-stream")  # stream_cut

# -----------------------------------------------------------------------------
# running it in a background thread


class OracleServer:
    """Handle to a uvicorn server running in a daemon thread."""

    def __init__(self, app, host="127.0.0.1", port=0):
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"OracleServer only binds loopback hosts {LOOPBACK_HOSTS}, got {host!r}")
        ip = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        # bind the socket ourselves: port=0 then gives us the real port before uvicorn starts
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((ip, port))
        self.port = self._sock.getsockname()[1]
        self.host = ip
        netloc = f"[{ip}]" if family == socket.AF_INET6 else ip
        self.base_url = f"http://{netloc}:{self.port}/v1"
        self._state = app.state.oracle
        # log_config=None: don't let uvicorn reconfigure logging in the user's notebook. Random faults
        # (cut connections, replies still hanging at stop) make uvicorn log errors that are ours, not news.
        level = "critical" if self._state.faults.kinds else "warning"
        config = uvicorn.Config(app, log_level=level, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"oracle-server-{self.port}", daemon=True)

    def start(self, timeout=10.0):
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("oracle server thread exited during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"oracle server not ready after {timeout}s")
            time.sleep(0.005)
        return self

    @property
    def stats(self):
        """Counters as a dict: requests, completions, rate_limited, server_errors,
        unauthorized, bad_requests, faults_injected."""
        return self._state.snapshot()

    @property
    def fault_counts(self):
        """Injected faults by kind (see FAULT_KINDS), e.g. {"http_503": 4, "stream_cut": 2}."""
        return self._state.fault_counts()

    @property
    def request_bodies(self):
        """The JSON bodies of the latest chat requests (at most 64), oldest first: what a client really sent."""
        return self._state.recorded()

    @property
    def running(self):
        return self._thread.is_alive()

    def stop(self, timeout=5.0):
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout)
            if self._thread.is_alive():  # a client holding a stream open: stop waiting for it
                self._server.force_exit = True
                self._thread.join(timeout)
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"OracleServer(base_url={self.base_url!r}, running={self.running})"


def start_server(responder, model_name="symbolic-oracle", host="127.0.0.1", port=0, api_key=None, faults=None):
    """Start a local OpenAI-compatible server in a daemon thread; returns once it accepts requests."""
    app = create_app(responder, model_name, api_key=api_key, faults=faults)
    return OracleServer(app, host=host, port=port).start()
