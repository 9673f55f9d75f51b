"""Oracle prompts, parsing and client, end to end: real HTTP over loopback to the
local OpenAI-compatible server, through the real openai client (no mocks)."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from spot_utils.oracle import (DEFAULT_ANSWER_FORMAT, END_MARKER, START_MARKER, MarkerError, OpenAIOracle,
                               OracleRequestError, direct_solve_prompt, parse_corrected, rectification_messages,
                               rectification_prompt)
from spot_utils.oracle_server import start_server

KEY = "test-key-9f8e7d6c5b4a"   # what the oracle reads from SPOT_ORACLE_API_KEY
FAST = dict(backoff_base=0.001, backoff_max=0.01, timeout=10.0)  # keep retry tests quick


def wrap(body):
    return f"{START_MARKER}\n{body}\n{END_MARKER}"


def echo_responder(messages):
    """Corrects by echoing the last message, with a thinking trace."""
    return wrap(f"fixed: {messages[-1]['content']}"), f"thinking about {messages[-1]['content']}"


@pytest.fixture
def env_key(monkeypatch):
    monkeypatch.setenv("SPOT_ORACLE_API_KEY", KEY)


@pytest.fixture
def serve():
    """Factory: start_server(...) with teardown, so a failing test never leaks a server thread."""
    servers = []

    def _serve(responder=echo_responder, **kw):
        kw.setdefault("api_key", KEY)
        servers.append(start_server(responder, **kw))
        return servers[-1]
    yield _serve
    for s in servers:
        s.stop()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def user(content):
    return [{"role": "user", "content": content}]

# -----------------------------------------------------------------------------
# prompts


def test_rectification_prompt_without_ground_truth():
    p = rectification_prompt("What is 2+3?", "2+3 = 6.")
    assert "Question: What is 2+3?\nStudent Model's Answer: 2+3 = 6." in p
    assert "You should first solve the problem independently and do the following:" in p
    assert "tone, vocabulary, formatting and sentence structure." in p
    assert "Reference Ground Truth" not in p
    assert f'1. First output "{START_MARKER}"' in p and f'3. Then output "{END_MARKER}"' in p
    assert "'Therefore, the final answer is: $\\boxed{ANSWER}$.'" in p
    assert p.startswith("Act as a helpful teaching assistant.")
    assert p.endswith('4. Do not output meta-phrases like "Here is the corrected version"')


def test_rectification_prompt_with_ground_truth():
    p = rectification_prompt("What is 2+3?", "2+3 = 6.", ground_truth="5")
    assert "Question: What is 2+3?\nStudent Model's Answer: 2+3 = 6.\nReference Ground Truth: 5" in p
    assert "You should compare the student model's answer with the Reference Ground Truth and do the following:" in p
    assert "including their tone, vocabulary and sentence structure." in p
    assert "formatting and sentence structure" not in p
    assert "solve the problem independently" not in p


def test_answer_format_parameter_and_messages():
    fmt = "So the answer is {ANSWER}; done."  # braces must survive untouched
    for p in (rectification_prompt("q?", "a.", answer_format=fmt),
              rectification_prompt("q?", "a.", "g", answer_format=fmt),
              direct_solve_prompt("q?", answer_format=fmt)):
        assert f"'{fmt}'" in p and DEFAULT_ANSWER_FORMAT not in p
    msgs = rectification_messages("q?", "a.", ground_truth="g")
    assert msgs == [{"role": "user", "content": rectification_prompt("q?", "a.", "g")}]


def test_direct_solve_prompt():
    p = direct_solve_prompt("What is 7*6?")
    assert "What is 7*6?" in p and START_MARKER in p and END_MARKER in p and DEFAULT_ANSWER_FORMAT in p
    assert "Student" not in p  # the Oracle solves from scratch: no student answer to lean on

# -----------------------------------------------------------------------------
# parsing


def test_parse_good_and_whitespace_tolerant():
    assert parse_corrected(f"preamble\n{START_MARKER}\n  The answer is 5.\n{END_MARKER}\ntrailer") == "The answer is 5."
    assert parse_corrected("  ===  CORRECTED STARTED===\n\nline1\nline2\n\n=== CORRECTED  ENDED ===  ") == "line1\nline2"


@pytest.mark.parametrize("text, reason", [
    (f"The answer is 5.\n{END_MARKER}", "missing start marker"),
    (f"{START_MARKER}\nThe answer is 5.", "missing end marker"),
    (f"{END_MARKER}\nThe answer is 5.\n{START_MARKER}", "missing end marker"),
    (f"{START_MARKER}\na\n{END_MARKER}\n{START_MARKER}\nb\n{END_MARKER}", "duplicated markers"),
    (f"{START_MARKER}\n{START_MARKER}\na\n{END_MARKER}", "duplicated markers"),
    (f"{START_MARKER}\n  \n{END_MARKER}", "empty correction"),
    ("", "missing start marker"),
])
def test_parse_errors(text, reason):
    with pytest.raises(MarkerError) as ei:
        parse_corrected(text)
    assert ei.value.reason == reason and isinstance(ei.value, ValueError)

# -----------------------------------------------------------------------------
# one request through the real client


@pytest.mark.parametrize("stream", [True, False])
def test_complete_captures_text_and_thinking(serve, env_key, stream):
    srv = serve()
    extra = {"stream_options": {"include_usage": True}} if stream else None
    with OpenAIOracle(srv.base_url, "symbolic-oracle", stream=stream, extra_body=extra,
                      temperature=0.7, top_p=0.8, max_tokens=64, **FAST) as oracle:
        reply = oracle.complete(user("2+3 = 6, so the answer is 6."))
    assert parse_corrected(reply.text) == "fixed: 2+3 = 6, so the answer is 6."
    assert reply.thinking == "thinking about 2+3 = 6, so the answer is 6."
    assert reply.retries == 0
    assert reply.usage["completion_tokens"] > 0
    assert srv.stats["completions"] == 1


def test_complete_moves_inline_think_tags_out(serve, env_key):
    srv = serve(lambda m: "<think>hmm, 2+3</think>\n\n" + wrap("5"))
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        reply = oracle.complete(user("q"))
    assert reply.thinking == "hmm, 2+3" and parse_corrected(reply.text) == "5"


def test_wrong_key_fails_at_once(serve, monkeypatch):
    srv = serve()
    monkeypatch.setenv("SPOT_ORACLE_API_KEY", "wrong-key-123456")
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=5, **FAST) as oracle:
        with pytest.raises(OracleRequestError) as ei:
            oracle.complete(user("q"))
    assert ei.value.reason == "AuthenticationError" and ei.value.status_code == 401
    assert ei.value.retries == 0 and srv.stats["requests"] == 1 and srv.stats["unauthorized"] == 1
    assert "wrong-key-123456" not in str(ei.value) and KEY not in str(ei.value)


def test_unknown_model_fails_at_once(serve, env_key):
    srv = serve()
    with OpenAIOracle(srv.base_url, "no-such-model", **FAST) as oracle:
        with pytest.raises(OracleRequestError) as ei:
            oracle.complete(user("q"))
    assert ei.value.reason == "NotFoundError" and ei.value.retries == 0 and srv.stats["requests"] == 1


def test_missing_key_and_key_never_shown(serve, monkeypatch, tmp_path):
    monkeypatch.delenv("MY_ORACLE_KEY", raising=False)
    with pytest.raises(RuntimeError, match="MY_ORACLE_KEY"):
        OpenAIOracle("http://127.0.0.1:9/v1", "m", api_key_env="MY_ORACLE_KEY")

    srv = serve(faults={"server_error_first": 100})
    monkeypatch.setenv("MY_ORACLE_KEY", KEY)
    oracle = OpenAIOracle(srv.base_url, "symbolic-oracle", api_key_env="MY_ORACLE_KEY", max_retries=1, **FAST)
    assert "MY_ORACLE_KEY" in repr(oracle) and srv.base_url in repr(oracle) and KEY not in repr(oracle)
    assert KEY not in str(vars(oracle).get("_sampling")) and KEY not in str(oracle.extra_body)
    with pytest.raises(OracleRequestError) as ei:
        oracle.complete(user("q"))
    assert KEY not in str(ei.value) and ei.value.__cause__ is None
    oracle.run([{"id": 1, "messages": user("q")}], tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert KEY not in (tmp_path / "fail.jsonl").read_text()
    oracle.close()


def test_server_rejects_bad_requests(serve):
    srv = serve(api_key=None)

    def post(body):
        req = urllib.request.Request(srv.base_url + "/chat/completions", data=body, method="POST",
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    assert post(b"{not json")[0] == 400
    status, body = post(json.dumps({"model": "symbolic-oracle", "messages": "hi"}).encode())
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = post(json.dumps({"model": "symbolic-oracle", "messages": user("q")}).encode())
    assert status == 200 and body["choices"][0]["finish_reason"] == "stop"
    with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as r:
        assert json.load(r)["data"][0]["id"] == "symbolic-oracle"

# -----------------------------------------------------------------------------
# retries


def test_rate_limits_are_retried_and_counted(serve, env_key, tmp_path):
    srv = serve(faults={"rate_limit_first": 2, "retry_after": 0.01})
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=5, **FAST) as oracle:
        s = oracle.run([{"id": "a", "messages": user("q")}], tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert (s.succeeded, s.failed, s.retries) == (1, 0, 2)
    [rec] = read_jsonl(tmp_path / "out.jsonl")
    assert rec["id"] == "a" and rec["retries"] == 2 and rec["response"] == "fixed: q"
    assert srv.stats["rate_limited"] == 2 and srv.stats["requests"] == 3


def test_server_errors_beyond_max_retries_land_in_failures(serve, env_key, tmp_path):
    srv = serve(faults={"server_error_first": 1000})
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=3, **FAST) as oracle:
        s = oracle.run([{"id": 7, "messages": user("q")}], tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert (s.succeeded, s.failed, s.retries) == (0, 1, 3)
    assert s.failure_reasons == {"InternalServerError": 1}
    assert read_jsonl(tmp_path / "out.jsonl") == []
    [fail] = read_jsonl(tmp_path / "fail.jsonl")
    assert fail["id"] == 7 and fail["reason"] == "InternalServerError" and fail["retries"] == 3
    assert srv.stats["requests"] == 4


def test_connection_refused_is_retried(env_key, tmp_path):
    srv = start_server(echo_responder)
    srv.stop()  # nothing listens on this port any more
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=2, **FAST) as oracle:
        with pytest.raises(OracleRequestError) as ei:
            oracle.complete(user("q"))
    assert ei.value.reason == "APIConnectionError" and ei.value.retries == 2

# -----------------------------------------------------------------------------
# run(): resume, no lost and no duplicated ids


def make_requests(n):
    # mixed int/str ids: they must come back exactly as given
    return [{"id": i if i % 2 else f"r{i}", "messages": user(f"problem {i}"), "question": f"problem {i}",
             "source": "tiny"} for i in range(n)]


def test_resume_after_parse_failures_and_interruption(serve, env_key, tmp_path):
    out, fail = tmp_path / "rect.jsonl", tmp_path / "rect.failures.jsonl"
    reqs = make_requests(30)

    def flaky(messages):  # every third problem comes back without markers
        n = int(messages[-1]["content"].split()[-1])
        return f"no markers for {n}" if n % 3 == 0 else wrap(f"fixed {n}")

    srv = serve(flaky)
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_concurrency=4, **FAST) as oracle:
        # "interrupted" run: only the first half got processed
        s1 = oracle.run(reqs[:15], out, fail)
        assert (s1.requested, s1.skipped_done, s1.succeeded, s1.failed) == (15, 0, 10, 5)
        assert s1.failure_reasons == {"parse: missing start marker": 5}
        assert all("raw" in f and f["raw"].startswith("no markers") for f in read_jsonl(fail))
        # a crash mid-write leaves a torn last line: it must not swallow the next record
        with open(out, "a") as f:
            f.write('{"id": "torn", "respo')
        s2 = oracle.run(reqs, out, fail)
        assert (s2.requested, s2.skipped_done, s2.succeeded, s2.failed) == (30, 10, 10, 10)

    srv2 = serve(lambda m: wrap(f"fixed {m[-1]['content'].split()[-1]}"))  # the oracle got fixed
    with OpenAIOracle(srv2.base_url, "symbolic-oracle", max_concurrency=4, stream=False, **FAST) as oracle:
        s3 = oracle.run(reqs, out, fail)
        assert (s3.skipped_done, s3.succeeded, s3.failed) == (20, 10, 0)
        assert srv2.stats["requests"] == 10  # only the missing ids were asked for
        s4 = oracle.run(reqs, out, fail)
        assert (s4.skipped_done, s4.succeeded) == (30, 0) and srv2.stats["requests"] == 10

    records = []
    for line in out.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            assert line.startswith('{"id": "torn"')
    ids = [r["id"] for r in records]
    assert sorted(map(str, ids)) == sorted(str(r["id"]) for r in reqs) and len(ids) == 30
    by_id = {r["id"]: r for r in records}
    assert by_id["r4"]["response"] == "fixed 4" and by_id[3]["response"] == "fixed 3"
    assert by_id[5]["question"] == "problem 5" and by_id[5]["source"] == "tiny" and "messages" not in by_id[5]
    assert set(by_id[5]) >= {"id", "response", "raw", "thinking", "retries"}


def test_duplicated_ids_rejected_before_any_call(serve, env_key, tmp_path):
    srv = serve()
    reqs = make_requests(3) + [{"id": 1, "messages": user("again")}]
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        with pytest.raises(ValueError, match="duplicated"):
            oracle.run(reqs, tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert srv.stats["requests"] == 0 and not (tmp_path / "out.jsonl").exists()

# -----------------------------------------------------------------------------
# server lifecycle


def test_server_loopback_only_and_clean_stop(env_key, tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        start_server(echo_responder, host="0.0.0.0")
    before = set(threading.enumerate())
    with start_server(echo_responder, host="localhost", api_key=KEY) as srv:
        assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1") and srv.running
        with OpenAIOracle(srv.base_url, "symbolic-oracle", max_concurrency=4, **FAST) as oracle:
            s = oracle.run(make_requests(8), tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
        assert s.succeeded == 8 and srv.stats["completions"] == 8
    assert not srv.running
    # nothing of ours survives stop(): no server thread, no request-handler threads
    # (tqdm's own progress-bar monitor is its business)
    def left():
        return [t for t in set(threading.enumerate()) - before if type(t).__name__ != "TMonitor"]

    deadline = time.monotonic() + 2.0  # a thread that is ending may still be alive for a moment
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left() == [], [(type(t).__name__, t.name) for t in left()]
