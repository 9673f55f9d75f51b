"""Oracle prompts, parsing and client, end to end: real HTTP over loopback to the
local OpenAI-compatible server, through the real openai client (no mocks)."""

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from spot_utils import data
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
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def strict_read(path):
    """What the pipeline reads reply files with (pipeline.oracle_records): no bad line, no repeated id."""
    return data.read_jsonl(path, {"id": (str, int)}, unique_ids=True)


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


def test_a_streamed_reply_comes_a_line_per_chunk_and_is_reassembled(serve, env_key):
    import openai

    text = wrap("step one\n  step two \n\nAnswer: 7")
    srv = serve(lambda m: text)
    client = openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=10)
    try:
        stream = client.chat.completions.create(model="symbolic-oracle", messages=user("q"), stream=True)
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    finally:
        client.close()
    assert pieces == [START_MARKER + "\n", "step one\n", "  step two \n", "\n", "Answer: 7\n", END_MARKER]
    with OpenAIOracle(srv.base_url, "symbolic-oracle", stream=True, **FAST) as oracle:
        assert oracle.complete(user("q")).text == text


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

    # the torn line was moved aside on resume: the reply file reads strictly
    assert (tmp_path / "rect.jsonl.torn").read_text() == '{"id": "torn", "respo\n'
    records = strict_read(out)
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

# -----------------------------------------------------------------------------
# reliability (issue 13): what a crash, a bad server or a user's editor leaves behind


def record_line(i, text="fixed"):
    return json.dumps({"id": i, "response": text, "raw": wrap(text)}, ensure_ascii=False) + "\n"


def test_resume_moves_torn_lines_aside_and_keeps_every_complete_record(serve, env_key, tmp_path, capsys):
    out, fail = tmp_path / "r.jsonl", tmp_path / "r.failures.jsonl"
    # what crashes left: a fragment the old client had closed with a newline, a repeated id and a torn last line
    fragments = ['{"id": 2, "respo', '{"id": 3, "response": "x"']
    out.write_text(record_line(0) + fragments[0] + "\n" + record_line(1) + record_line(1, "again") + fragments[1])
    srv = serve()
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        s = oracle.run([{"id": i, "messages": user(f"problem {i}")} for i in range(4)], out, fail)
    assert (s.skipped_done, s.succeeded, srv.stats["requests"]) == (2, 2, 2)
    said = [line for line in capsys.readouterr().out.splitlines() if "repaired" in line]
    assert len(said) == 1 and "moved 3 incomplete line(s)" in said[0] and "r.jsonl.torn" in said[0]
    assert (tmp_path / "r.jsonl.torn").read_text() == fragments[0] + "\n" + record_line(1, "again") + fragments[1] + "\n"
    records = strict_read(out)
    assert [r["id"] for r in records][:2] == [0, 1] and records[1]["response"] == "fixed"  # the first one is kept
    assert sorted(r["id"] for r in records) == [0, 1, 2, 3]


def test_resume_survives_a_line_cut_inside_a_utf8_character(serve, env_key, tmp_path):
    out = tmp_path / "r.jsonl"
    torn = record_line("b", "café").encode()
    out.write_bytes(record_line("a", "café").encode() + torn[:torn.rindex("é".encode()) + 1])  # cut inside "é"
    srv = serve()
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        s = oracle.run([{"id": k, "messages": user(k)} for k in "abc"], out, tmp_path / "f.jsonl")
    assert (s.skipped_done, s.succeeded) == (1, 2)
    assert sorted(r["id"] for r in strict_read(out)) == ["a", "b", "c"]
    assert (tmp_path / "r.jsonl.torn").read_bytes().endswith(b"caf\xc3\n")


def test_a_bom_from_an_editor_is_accepted_and_never_duplicates(serve, env_key, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(b"\xef\xbb\xbf" + record_line("a").encode())
    srv = serve()
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        s = oracle.run([{"id": k, "messages": user(k)} for k in "ab"], out, tmp_path / "f.jsonl")
    assert (s.skipped_done, s.succeeded, srv.stats["requests"]) == (1, 1, 1)
    assert [r["id"] for r in strict_read(out)] == ["a", "b"]


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-inf", "1e999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_any_retry_after_gives_a_finite_wait(serve, env_key, retry_after):
    srv = serve(faults={"rate_limit_first": 2, "retry_after": retry_after})
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=3, **FAST) as oracle:
        t0 = time.monotonic()
        reply = oracle.complete(user("q"))
    assert reply.retries == 2 and parse_corrected(reply.text) == "fixed: q"
    assert time.monotonic() - t0 < 5  # clamped to backoff_max (0.01 s), whatever the header says


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("kind", ["invalid_json", "html", "empty_choices", "no_finish", "stream_cut"])
def test_malformed_200_replies_are_retried_with_a_named_reason(serve, env_key, tmp_path, kind, stream):
    srv = serve(faults={"kinds": {kind: 1.0}, "max_faults": 2})  # the first two replies are broken
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=3, stream=stream, **FAST) as oracle:
        reply = oracle.complete(user("q"))
        assert reply.retries == 2 and parse_corrected(reply.text) == "fixed: q"

    srv = serve(faults={"kinds": {kind: 1.0}})  # always broken: given up after max_retries, all counted
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_retries=2, stream=stream, **FAST) as oracle:
        s = oracle.run([{"id": 1, "messages": user("q")}], tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    [fail] = read_jsonl(tmp_path / "fail.jsonl")
    assert (s.failed, s.retries, fail["retries"], srv.stats["requests"]) == (1, 2, 2, 3)
    expected = {"invalid_json": "malformed: invalid JSON", "html": "malformed: body is not a chat completion",
                "empty_choices": "malformed: empty choices", "no_finish": "malformed: stream ended before",
                "stream_cut": "APIConnectionError" if stream else "malformed: invalid JSON"}[kind]
    if kind == "html" and stream:
        expected = "malformed: stream ended before its finish_reason (the body was text/html"
    if kind == "empty_choices" and stream:
        expected = "malformed: stream ended before"  # a stream of chunks without choices has no finish_reason
    if kind == "no_finish" and not stream:
        expected = "malformed: invalid JSON"  # a plain body cannot end early; the server cuts its JSON instead
    assert fail["reason"].startswith(expected), fail
    assert srv.fault_counts == {kind: 3}


@pytest.fixture
def ctrl_c_handler():
    """Python's own Ctrl-C handler, also where pytest was started in the background (`make test &`,
    nohup): there SIGINT is ignored from the start, and _thread.interrupt_main then does nothing."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_at_once_writes_nothing_half_and_the_rerun_resumes(serve, env_key, tmp_path, capsys,
                                                                          ctrl_c_handler):
    import _thread

    out, fail = tmp_path / "r.jsonl", tmp_path / "f.jsonl"
    reqs = [{"id": i, "messages": user(f"problem {i}")} for i in range(12)]
    release = threading.Event()

    def hangs_after_4(messages):  # the first 4 replies come at once, every later one hangs (up to 20 s)
        if int(messages[-1]["content"].split()[-1]) >= 4:
            release.wait(20)
        return wrap("late")

    srv = serve(hangs_after_4)
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_concurrency=4, max_retries=5, backoff_base=0.001,
                      backoff_max=0.01, timeout=60.0) as oracle:
        timer = threading.Timer(1.5, _thread.interrupt_main)  # Ctrl-C while 4 requests hang
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            oracle.run(reqs, out, fail)
        stopped_after = time.monotonic() - t0
        timer.cancel()
        release.set()
    assert stopped_after < 4.0, stopped_after  # before: waited for the hanging replies (20 s)
    assert "interrupted after 4 of 12 requests" in capsys.readouterr().out
    assert len(strict_read(out)) == 4 and out.read_bytes().endswith(b"\n")  # whole lines only

    srv2 = serve()
    with OpenAIOracle(srv2.base_url, "symbolic-oracle", max_concurrency=4, **FAST) as oracle:
        s = oracle.run(reqs, out, fail)
    assert (s.skipped_done, s.succeeded) == (4, 8) and srv2.stats["requests"] == 8
    assert sorted(map(str, (r["id"] for r in strict_read(out)))) == sorted(str(r["id"]) for r in reqs)


def test_failures_file_holds_the_current_failures_only(serve, env_key, tmp_path):
    out, fail = tmp_path / "r.jsonl", tmp_path / "f.jsonl"
    reqs = make_requests(10)
    broken = {"ids": set(range(10))}  # problem numbers answered without markers

    def flaky(messages):
        n = int(messages[-1]["content"].split()[-1])
        return f"no markers for {n}" if n in broken["ids"] else wrap(f"fixed {n}")

    srv = serve(flaky)
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_concurrency=4, **FAST) as oracle:
        assert oracle.run(reqs, out, fail).failed == 10 and len(read_jsonl(fail)) == 10
        broken["ids"] = {3, 4}
        assert oracle.run(reqs, out, fail).failed == 2
        assert sorted(f["raw"] for f in read_jsonl(fail)) == ["no markers for 3", "no markers for 4"]
        broken["ids"] = {4}
        oracle.run(reqs, out, fail)
        assert [(f["id"], f["reason"]) for f in read_jsonl(fail)] == [("r4", "parse: missing start marker")]
        broken["ids"] = set()
        oracle.run(reqs, out, fail)
        assert read_jsonl(fail) == [] and len(strict_read(out)) == 10


def key_parts(key, n=6):
    return {key[i:i + n] for i in range(len(key) - n + 1)}


def test_the_key_is_never_written_even_when_a_200_reply_quotes_it(serve, env_key, tmp_path):
    srv = serve(faults={"kinds": {"echo_key": 0.5, "echo_key_masked": 0.5}})
    with OpenAIOracle(srv.base_url, "symbolic-oracle", max_concurrency=4, **FAST) as oracle:
        s = oracle.run(make_requests(8), tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert s.failed == 8 and set(srv.fault_counts) == {"echo_key", "echo_key_masked"}
    written = (tmp_path / "fail.jsonl").read_text()
    assert "[redacted]" in written
    for part in key_parts(KEY) | {f"{KEY[:6]}...{KEY[-4:]}", KEY[-4:] + ";"}:
        assert part not in written, part


def test_redaction_leaves_ordinary_text_alone():
    from spot_utils.oracle import _Redactor

    redact = _Redactor(KEY)
    text = "So 1...10 sum to 55, skyscrapers* aside. The answer is 55."
    assert redact(text) == text
    assert redact(f"key {KEY}!") == "key [redacted]!"
    assert redact(f"k={KEY[:6]}***{KEY[-4:]}.") == "k=[redacted]"
    assert redact(f"part {KEY[3:12]} end") == "part [redacted] end"
    assert redact("sk-proj-abcdefghijkl", error=True) == "[redacted]"


def test_local_endpoint_leaves_the_users_key_variable_alone(monkeypatch, tmp_path):
    from spot_utils import pipeline
    from spot_utils.config import load_profile

    cfg = load_profile("tiny", run_dir=str(tmp_path))
    monkeypatch.setenv(cfg.rectification.oracle.api_key_env, "users-real-key-0123456789")
    with pipeline.oracle_endpoint(cfg) as (oracle, server):
        assert os.environ[cfg.rectification.oracle.api_key_env] == "users-real-key-0123456789"
        reply = oracle.complete(user("Solve the following problem yourself. x\n\nQuestion: Compute: 12+3\n\n"
                                     "**IMPORTANT"))
        assert parse_corrected(reply.text)
    assert os.environ[cfg.rectification.oracle.api_key_env] == "users-real-key-0123456789"
    monkeypatch.delenv(cfg.rectification.oracle.api_key_env)
    with pipeline.oracle_endpoint(cfg) as (oracle, server):
        assert cfg.rectification.oracle.api_key_env not in os.environ
    paper = load_profile("paper")
    with pytest.raises(ValueError, match="local Oracle server only"):
        with pipeline.oracle_endpoint(paper, faults={"rate_limit_first": 1}):
            pass


def test_server_honours_n_and_max_tokens_and_serves_model_cards(serve, env_key):
    import openai

    srv = serve(lambda m: wrap("one two three four five"))
    client = openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=10)
    try:
        r = client.chat.completions.create(model="symbolic-oracle", messages=user("q"), n=3, max_tokens=2)
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert all(c.finish_reason == "length" and len(c.message.content.split()) == 2 for c in r.choices)
        assert r.usage.completion_tokens == 6
        r = client.chat.completions.create(model="symbolic-oracle", messages=user("q"), max_tokens=100)
        assert r.choices[0].finish_reason == "stop" and len(r.choices) == 1
        chunks = list(client.chat.completions.create(model="symbolic-oracle", messages=user("q"), n=2,
                                                     max_completion_tokens=3, stream=True))
        finish = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason}
        assert finish == {0: "length", 1: "length"}
        assert client.models.retrieve("symbolic-oracle").id == "symbolic-oracle"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-nothing")
        for bad in ({"n": 0}, {"n": 17}, {"max_tokens": 0}, {"extra_body": {"max_tokens": "9"}}):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="symbolic-oracle", messages=user("q"), **bad)
    finally:
        client.close()


@pytest.mark.parametrize("stream", [True, False])
def test_client_takes_choice_0_and_names_a_reply_cut_at_max_tokens(serve, env_key, tmp_path, stream):
    srv = serve()
    with OpenAIOracle(srv.base_url, "symbolic-oracle", stream=stream, extra_body={"n": 3}, **FAST) as oracle:
        reply = oracle.complete(user("q"))
        assert parse_corrected(reply.text) == "fixed: q" and reply.finish_reason == "stop"
    with OpenAIOracle(srv.base_url, "symbolic-oracle", stream=stream, max_tokens=3, **FAST) as oracle:
        s = oracle.run([{"id": 1, "messages": user("q")}], tmp_path / "o.jsonl", tmp_path / "f.jsonl")
    assert s.failure_reasons == {"parse: cut at max_tokens (finish_reason length)": 1}


@pytest.mark.parametrize("requests, message", [
    ([{"id": 1.5, "messages": []}], "ids must be str or int"),
    ([{"id": [1], "messages": []}], "ids must be str or int"),
    (["not a dict"], "request 0 must be a dict with an 'id'"),
    ([{"id": 1, "messages": [], "response": "x"}], "field(s) response would be overwritten"),
    ([{"id": 1, "messages": [], "ground_truth": float("nan")}], "field 'ground_truth' cannot be written as JSON"),
])
def test_bad_requests_are_refused_before_any_call(serve, env_key, tmp_path, requests, message):
    srv = serve()
    with OpenAIOracle(srv.base_url, "symbolic-oracle", **FAST) as oracle:
        with pytest.raises(ValueError) as ei:
            oracle.run(requests, tmp_path / "out.jsonl", tmp_path / "fail.jsonl")
    assert message in str(ei.value) and srv.stats["requests"] == 0


@pytest.mark.parametrize("kw, message", [
    ({"max_retries": -1}, "max_retries must be an integer >= 0"),
    ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
    ({"backoff_max": float("nan")}, "backoff_max must be a finite number"),
    ({"timeout": float("inf")}, "timeout must be a finite number > 0"),
])
def test_bad_client_settings_are_refused(env_key, kw, message):
    with pytest.raises(ValueError, match=message):
        OpenAIOracle("http://127.0.0.1:9/v1", "m", **kw)
