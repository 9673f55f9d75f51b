"""A fault campaign against the Oracle pipeline (issue 13), as `make test` runs it.

A fault-injecting OpenAI-compatible server (spot_utils.oracle_server, loopback only) answers a
writer process that runs OpenAIOracle.run over real HTTP through the official openai client.
Every fault kind of the server is drawn at random (seeded): 5xx, 429 with good and bad Retry-After
values, slow and hanging replies, streams cut mid-body or ended early, bodies that are not JSON,
HTML pages, empty choices, replies without markers, replies that quote the API key. The writer is
SIGKILLed at random points (a fixed-seed RNG picks after how many server requests), interrupted
once with SIGINT, and between runs the reply file gets what crashes and editors leave: a line torn
inside a UTF-8 character, a BOM. Then writers run until every id is done, and the test asserts that
nothing was lost or duplicated, that pipeline.oracle_records reads the final file and that the key
was never written. Its figures (the README's reliability section) are printed in one line and
written to campaign.json under the test's tmp dir (or to $SPOT_CAMPAIGN_REPORT).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from spot_utils import pipeline  # imported here: its import time (torch, transformers) is not the campaign's
from spot_utils.oracle import END_MARKER, START_MARKER
from spot_utils.oracle_server import FAULT_KINDS, start_server

IDS = 200                # requests of the campaign
KILLS = 6                # SIGKILLs, each after a random number of server requests
SEED = 13                # faults and kill points: every kind is drawn within the first 100 requests
BUDGET_S = 90            # a hard ceiling against hangs; the campaign takes ~20 s on 2 busy cores
KEY = "sk-campaign-7Hq2Lm9Xv4Rt8Wz1Kp3N"
FAULTS = {"seed": SEED, "slow_s": 0.3, "hang_s": 3.0, "kinds": {
    "http_500": 0.05, "http_502": 0.04, "http_503": 0.04,
    "rate_limit": 0.04, "rate_limit_nan": 0.03, "rate_limit_inf": 0.03, "rate_limit_date": 0.02,
    "slow": 0.04, "hang": 0.01, "stream_cut": 0.05, "no_finish": 0.04, "invalid_json": 0.04, "html": 0.03,
    "empty_choices": 0.03, "no_markers": 0.03, "echo_key": 0.015, "echo_key_masked": 0.015}}
# short backoffs (Retry-After "inf" is clamped to 0.05 s); a hang (3 s) outlasts the 1.5 s timeout
CLIENT = {"max_concurrency": 8, "max_retries": 6, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 1.5}

WRITER = r"""
import json, sys
from spot_utils.oracle import OpenAIOracle
base_url, requests_path, out, fail, client = sys.argv[1:]
with open(requests_path, encoding="utf-8") as f:
    requests = json.load(f)
with OpenAIOracle(base_url, "symbolic-oracle", **json.loads(client)) as oracle:
    s = oracle.run(requests, out, fail, desc="campaign")
print("SUMMARY", json.dumps({"succeeded": s.succeeded, "failed": s.failed, "retries": s.retries,
                             "reasons": dict(s.failure_reasons)}), flush=True)
"""


def answer(n):
    return f"fixed {n}: café → {n * 7}"  # non-ASCII on purpose: a torn write can cut a character


def responder(messages):
    n = int(messages[-1]["content"].rsplit(" ", 1)[-1])
    return f"{START_MARKER}\n{answer(n)}\n{END_MARKER}", f"checked problem {n}"


def campaign_requests():
    # mixed int/str ids, as real runs have: they must come back exactly as given
    return [{"id": n if n % 3 else f"q{n}", "messages": [{"role": "user", "content": f"problem {n}"}],
             "question": f"problem {n}", "n": n} for n in range(IDS)]


class Campaign:
    def __init__(self, tmp, server):
        self.tmp, self.server = tmp, server
        self.out, self.fail = tmp / "oracle.jsonl", tmp / "oracle.failures.jsonl"
        self.requests_path = tmp / "requests.json"
        self.requests_path.write_text(json.dumps(campaign_requests()), encoding="utf-8")
        self.deadline = time.monotonic() + BUDGET_S
        self.runs, self.summaries, self.procs = 0, [], []
        self.env = {**os.environ, "SPOT_ORACLE_API_KEY": KEY, "PYTHONIOENCODING": "utf-8"}

    def start(self):
        self.runs += 1
        self.log = open(self.tmp / f"writer{self.runs}.log", "w+", encoding="utf-8")
        args = [sys.executable, "-c", WRITER, self.server.base_url, str(self.requests_path), str(self.out),
                str(self.fail), json.dumps(CLIENT)]
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                           cwd=Path(__file__).resolve().parent.parent))
        return self.procs[-1]

    def close(self):
        for proc in self.procs:  # a failed assertion must not leave a writer running
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def left(self):
        left = self.deadline - time.monotonic()
        assert left > 0, f"the campaign ran past its {BUDGET_S} s budget"
        return left

    def after_requests(self, proc, k):
        """Waits until the server has seen k more requests (or the writer ended); True if it still runs."""
        target = self.server.stats["requests"] + k
        while self.server.stats["requests"] < target and proc.poll() is None:
            self.left()
            time.sleep(0.005)
        return proc.poll() is None

    def wait(self, proc):
        try:
            rc = proc.wait(timeout=self.left())
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"writer {self.runs} did not finish within the campaign's budget") from None
        self.log.seek(0)
        text = self.log.read()
        self.log.close()
        return rc, text

    def done_ids(self):
        ids = set()
        for line in self.out.read_bytes().splitlines():
            try:
                ids.add(json.loads(line.decode("utf-8").removeprefix("\ufeff"))["id"])
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError):
                pass
        return ids


def tear_a_line(path, request):
    """What a SIGKILL inside a multi-page write leaves: the start of a record, cut inside 'é'."""
    rec = {"id": request["id"], "question": request["question"], "n": request["n"], "response": answer(request["n"])}
    line = json.dumps(rec, ensure_ascii=False).encode("utf-8")
    with open(path, "ab") as f:
        f.write(line[: line.index("é".encode()) + 1])


def add_a_bom(path):
    """An editor's save: a BOM in front, written atomically."""
    tmp = path.with_name(path.name + ".editor")
    tmp.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    tmp.replace(path)


@pytest.mark.slow  # ~15-25 s: ten writer processes, each importing openai
def test_fault_campaign_loses_and_duplicates_nothing(tmp_path):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    requests = campaign_requests()
    with start_server(responder, api_key=KEY, faults=FAULTS) as server:
        c = Campaign(tmp_path, server)
        try:
            kills, torn, boms = 0, 0, 0
            while kills < KILLS:  # SIGKILL at random points, then what crashes and editors leave behind
                proc = c.start()
                if c.after_requests(proc, rng.randint(5, 40)):
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                c.wait(proc)
                if not c.out.exists():
                    continue
                todo = [r for r in requests if r["id"] not in c.done_ids()]
                if kills in (1, 3, 5) and todo:
                    tear_a_line(c.out, rng.choice(todo))
                    torn += 1
                if kills == 2 and not boms:
                    add_a_bom(c.out)
                    boms += 1

            proc = c.start()  # Ctrl-C: a prompt stop, whole lines only
            interrupted = c.after_requests(proc, rng.randint(10, 40))
            if interrupted:
                proc.send_signal(signal.SIGINT)
                t_int = time.monotonic()
            rc, log = c.wait(proc)
            if interrupted and rc != 0:
                assert "interrupted after" in log and "KeyboardInterrupt" in log, log[-2000:]
                assert time.monotonic() - t_int < 10, "Ctrl-C did not stop the writer promptly"
            pipeline.oracle_records(c.out)  # strictly readable right after the interrupt

            for _ in range(8):  # run to completion: parse failures (no markers, a quoted key) are retried by reruns
                rc, log = c.wait(c.start())
                assert rc == 0, log[-3000:]
                c.summaries.append(json.loads(log.split("SUMMARY ", 1)[1]))
                if len(c.done_ids()) == IDS:
                    break
            stats, by_kind = server.stats, server.fault_counts
        finally:
            c.close()

    # --- nothing lost, nothing duplicated, the final file reads strictly ----------------------
    records = pipeline.oracle_records(c.out)
    wanted = {r["id"]: r for r in requests}
    got = Counter(r["id"] for r in records)
    lost = sorted(map(str, set(wanted) - set(got)))
    # a duplicate may hide in the side file too: any complete record there is one
    side = tmp_path / "oracle.jsonl.torn"
    side_lines = side.read_bytes().splitlines() if side.exists() else []
    side_records = [json.loads(s) for s in side_lines if _complete(s)]
    duplicated = sum(n - 1 for n in got.values()) + len(side_records)
    assert lost == [] and duplicated == 0, (lost, duplicated, side_records[:3])
    assert len(side_lines) == torn  # the injected fragments, byte for byte, nothing else
    for r in records:
        req = wanted[r["id"]]
        assert r["response"] == answer(req["n"]) and r["question"] == req["question"] and r["n"] == req["n"]
    assert c.fail.read_text(encoding="utf-8") == ""  # every id succeeded: no current failure

    # --- the key, whole or in part, is nowhere on disk -----------------------------------------
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("oracle"))
    for part in {KEY[i:i + 6] for i in range(len(KEY) - 5)} | {f"{KEY[:6]}...{KEY[-4:]}"}:
        assert part.encode() not in written, part

    # --- every fault kind was injected; the campaign stayed bounded ----------------------------
    assert set(by_kind) == set(FAULT_KINDS), set(FAULT_KINDS) - set(by_kind)
    assert kills == KILLS and stats["requests"] < 20 * IDS
    report = {"ids": IDS, "requests": stats["requests"], "faults": sum(by_kind.values()),
              "faults_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), "sigkills": kills,
              "sigints": int(interrupted), "torn_lines": torn, "boms": boms, "writer_runs": c.runs,
              "lost": len(lost), "duplicated": duplicated, "seconds": round(time.monotonic() - t0, 1)}
    for path in [tmp_path / "campaign.json"] + ([Path(os.environ["SPOT_CAMPAIGN_REPORT"])]
                                               if os.environ.get("SPOT_CAMPAIGN_REPORT") else []):
        path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nfault campaign: {report['requests']} requests, {report['faults']} injected faults "
          f"({len(by_kind)} kinds), {kills} SIGKILLs + {report['sigints']} SIGINT, {torn} torn lines, "
          f"{boms} BOM, {c.runs} writer runs: {len(lost)} lost, {duplicated} duplicated, {report['seconds']} s")


def _complete(line):
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
