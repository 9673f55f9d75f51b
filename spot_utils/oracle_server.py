"""
A tiny local OpenAI-compatible chat-completions server (FastAPI + uvicorn).

The `tiny` profile serves a symbolic oracle through this server so that the
notebooks exercise exactly the same client path (`spot_utils.oracle.OpenAIOracle`,
the official `openai` client, HTTP, SSE streaming, retries) as a run against a
real LLM endpoint. Only loopback addresses are allowed: this is a test double,
not a service.

    with start_server(lambda messages: "hi") as srv:
        OpenAIOracle(srv.base_url, "symbolic-oracle").complete([...])

A responder is any callable `responder(messages) -> str | (text, thinking)`.
Message contents reach it as plain strings (OpenAI "content parts" are joined),
so responders never have to care about the wire format.
"""

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# -----------------------------------------------------------------------------
# fault injection and counters


@dataclass
class Faults:
    """Deterministic failures, counted globally over valid chat requests:
    the first `rate_limit_first` answer 429 (with Retry-After), the next
    `server_error_first` answer 500. Global counting keeps it simple and is exact
    for the usual test shape (one request, or "every request fails")."""
    rate_limit_first: int = 0
    retry_after: float | None = 0.01  # seconds, sent as the Retry-After header
    server_error_first: int = 0


@dataclass
class ServerStats:
    requests: int = 0        # every POST /v1/chat/completions received
    completions: int = 0     # answered 200 (streamed or not)
    rate_limited: int = 0    # injected 429s
    server_errors: int = 0   # injected 500s + responder crashes
    unauthorized: int = 0
    bad_requests: int = 0    # 400 / 404

    @property
    def faults_injected(self):
        return self.rate_limited + self.server_errors


class _State:
    """Counters + fault schedule, shared by uvicorn's event loop and threadpool."""

    def __init__(self, faults):
        if faults is None:
            faults = Faults()
        elif isinstance(faults, dict):
            faults = Faults(**faults)
        self.faults = faults
        self.stats = ServerStats()
        self._valid = 0  # valid chat requests seen, drives the fault schedule
        self._lock = threading.Lock()

    def count(self, field):
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)

    def next_fault(self):
        """Returns None, 429 or 500 for the next valid request."""
        with self._lock:
            n = self._valid
            self._valid += 1
            f = self.faults
            if n < f.rate_limit_first:
                self.stats.rate_limited += 1
                return 429
            if n < f.rate_limit_first + f.server_error_first:
                self.stats.server_errors += 1
                return 500
            return None

    def snapshot(self):
        with self._lock:
            d = asdict(self.stats)
        d["faults_injected"] = d["rate_limited"] + d["server_errors"]
        return d

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
    return len(text.split())  # whitespace "tokens": enough for usage bookkeeping


def _pieces(text):
    # stream in small word-sized pieces (whitespace kept) so clients really have to reassemble
    return re.findall(r"\s*\S+|\s+", text)

# -----------------------------------------------------------------------------
# the app


def create_app(responder, model_name, api_key=None, faults=None):
    """FastAPI app serving GET /v1/models and POST /v1/chat/completions."""
    app = FastAPI(title="local oracle", docs_url=None, redoc_url=None, openapi_url=None)
    state = _State(faults)
    app.state.oracle = state

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
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "spot-local"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        state.count("requests")
        if (err := unauthorized(request)) is not None:
            return err
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            state.count("bad_requests")
            return _error(400, "Request body is not valid JSON.", "invalid_request_error")
        if not isinstance(body, dict):
            state.count("bad_requests")
            return _error(400, "Request body must be a JSON object.", "invalid_request_error")
        messages = _normalise_messages(body.get("messages"))
        if messages is None:
            state.count("bad_requests")
            return _error(400, "'messages' must be a non-empty list of {role, content}.",
                          "invalid_request_error", "invalid_messages")
        if body.get("model") != model_name:
            state.count("bad_requests")
            return _error(404, f"The model '{body.get('model')}' does not exist; this server has '{model_name}'.",
                          "invalid_request_error", "model_not_found")

        fault = state.next_fault()
        if fault == 429:
            ra = state.faults.retry_after
            headers = {} if ra is None else {"retry-after": str(ra)}
            return _error(429, "Rate limit reached (injected).", "rate_limit_error", "rate_limit_exceeded", headers)
        if fault == 500:
            return _error(500, "Internal server error (injected).", "server_error")

        # the responder is ordinary blocking Python: keep it off the event loop
        try:
            result = await run_in_threadpool(responder, messages)
        except Exception as e:
            state.count("server_errors")
            return _error(500, f"responder failed: {type(e).__name__}: {e}", "server_error")
        text, thinking = (result if isinstance(result, tuple) else (result, ""))
        text, thinking = str(text), str(thinking or "")
        state.count("completions")

        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage = {"prompt_tokens": sum(_count_tokens(m["content"]) for m in messages),
                 "completion_tokens": _count_tokens(text) + _count_tokens(thinking)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]

        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            if thinking:
                message["reasoning_content"] = thinking
            return {"id": cid, "object": "chat.completion", "created": created, "model": model_name,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                    "usage": usage}

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish_reason=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
            return f"data: {json.dumps(c)}\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            for p in _pieces(thinking):
                yield chunk({"reasoning_content": p})
            for p in _pieces(text):
                yield chunk({"content": p})
                await asyncio.sleep(0)  # let other connections interleave, like a real server
            yield chunk({}, finish_reason="stop")
            if include_usage:  # OpenAI sends usage as a last chunk with no choices
                u = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                     "choices": [], "usage": usage}
                yield f"data: {json.dumps(u)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    return app


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
        # log_config=None: don't let uvicorn reconfigure logging in the user's notebook
        config = uvicorn.Config(app, log_level="warning", log_config=None, access_log=False,
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
