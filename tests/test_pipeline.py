"""The Section 2 pipeline on the tiny world: SymbolicOracle behind the local server, pairs, data sets."""
import random

import pytest

from spot_utils import pipeline
from spot_utils.data import read_jsonl, read_pairs
from spot_utils.modeling import prompt_text
from spot_utils.oracle import direct_solve_messages, parse_corrected, rectification_messages
from spot_utils.tiny import arithmetic
from spot_utils.tiny.model import build_char_tokenizer
from spot_utils.tiny.symbolic_oracle import SymbolicOracle


def corrupt(rng, p):
    """A wrong answer in the model's format: one step's result off by a few, the rest carried on."""
    lines = arithmetic.solution_text(p).splitlines()
    k = rng.randrange(p.steps)
    a, rest = lines[k].split("=")
    lines[k] = f"{a}={int(rest) + rng.choice([-10, -1, 1, 2, 10])}"
    return "\n".join(lines), k


def test_symbolic_oracle_fixes_from_first_wrong_step():
    rng, oracle = random.Random(0), SymbolicOracle()
    for _ in range(200):
        p = arithmetic.random_problem(rng, rng.choice([2, 3, 4, 5]))
        wrong, k = corrupt(rng, p)
        for gt in (None, p.answer):
            text, thinking = oracle(rectification_messages(arithmetic.question_text(p), wrong, gt, arithmetic.ANSWER_FORMAT))
            fixed = parse_corrected(text)
            assert arithmetic.grade_arithmetic(fixed, p.answer)
            kept = "\n".join(wrong.splitlines()[:k])
            assert fixed.startswith(kept)  # the correct prefix is kept verbatim
            assert fixed == arithmetic.solution_text(p)  # and the rest is in the model's own format
            assert f"first wrong step: {k + 1}" in thinking
    direct, _ = oracle(direct_solve_messages(arithmetic.question_text(p), arithmetic.ANSWER_FORMAT))
    direct = parse_corrected(direct)
    assert arithmetic.grade_arithmetic(direct, p.answer)
    assert any(word in direct for word in ("plus", "minus", "times"))
    assert "=" not in direct.splitlines()[0]  # a different style from the model's
    assert "=== CORRECTED" not in oracle([{"role": "user", "content": "hello"}])


def test_symbolic_oracle_rewrite_rate_is_deterministic():
    rng = random.Random(2)
    reqs = []
    for _ in range(400):
        p = arithmetic.random_problem(rng, 3)
        wrong, _ = corrupt(rng, p)
        reqs.append(rectification_messages(arithmetic.question_text(p), wrong, p.answer, arithmetic.ANSWER_FORMAT))
    rewritten = [" plus " in t or " minus " in t or " times " in t
                 for t, _ in map(SymbolicOracle(rewrite_rate=0.25), reqs)]
    assert 0.18 < sum(rewritten) / len(reqs) < 0.32
    assert rewritten == [" plus " in t or " minus " in t or " times " in t
                         for t, _ in map(SymbolicOracle(rewrite_rate=0.25), reqs)]
    assert not any(" plus " in t for t, _ in map(SymbolicOracle(), reqs))
    with pytest.raises(ValueError):
        SymbolicOracle(rewrite_rate=1.5)


def test_pipeline_through_local_server(tiny_profile):
    """errors -> OpenAIOracle over real HTTP (with injected 429s) -> verified pairs -> data sets."""
    tok = build_char_tokenizer()
    rng = random.Random(1)
    errors = []
    for i in range(12):
        p = arithmetic.random_problem(rng, 3)
        q = arithmetic.question_text(p)
        wrong, _ = corrupt(rng, p)
        errors.append({"id": f"e{i}", "question": q, "response": wrong, "ground_truth": p.answer,
                       "tier": "steps=3", "prompt": prompt_text(tok, q)})
    out = pipeline.data_dir(tiny_profile)
    (out / "correct.jsonl").write_text("")
    with pipeline.oracle_endpoint(tiny_profile, faults={"rate_limit_first": 2, "retry_after": 0.01}) as (oracle, server):
        rect = oracle.run(pipeline.rectification_requests(tiny_profile, errors), out / "r.jsonl", out / "rf.jsonl")
        direct = oracle.run(pipeline.direct_requests(tiny_profile, errors), out / "d.jsonl", out / "df.jsonl")
        assert server.stats["requests"] == 24 + 2
    assert (rect.succeeded, rect.failed, rect.retries, direct.succeeded) == (12, 0, 2, 12)
    records = read_jsonl(out / "r.jsonl")
    records.append({**records[0], "id": "bad", "response": "Answer: -1"})  # a wrong "correction"
    pairs, skipped = pipeline.build_pairs(tiny_profile, tok, records)
    # the Oracle file is in completion order (concurrency): pairs must not depend on it
    assert pipeline.build_pairs(tiny_profile, tok, records[::-1]) == (pairs, skipped)
    assert [p["id"] for p in pairs] == sorted(p["id"] for p in pairs)
    assert len(pairs) == 12 and skipped == {"correction not verified correct": 1}
    for p in pairs:
        assert 0 < p["change_ratio"] <= 1 and p["chosen"] != p["rejected"]
        assert p["common_prefix_tokens"] >= 0
    sizes = pipeline.write_datasets(tiny_profile, pairs, read_jsonl(out / "d.jsonl"), 0.6)
    assert sizes["pairs_all.jsonl"] == 12 and sizes["sft_direct.jsonl"] == 12
    kept = read_pairs(out / "pairs_gamma0.6.jsonl")
    assert len(kept) == sum(p["change_ratio"] <= 0.6 for p in pairs)


def test_paper_elicitation_offline_is_a_clear_error(monkeypatch):
    from spot_utils.config import load_profile

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="DAPO-Math-17k-Processed.*needs the Hugging Face hub"):
        pipeline.elicitation_questions(load_profile("paper"))


def test_rectified_pairs_in_one_call_is_stamped(tiny_profile, tmp_path):
    """elicit -> Oracle over HTTP -> pairs at gamma into an analysis folder, reused while the stamp
    (base, settings, temperature, questions) matches, redone from an empty folder otherwise."""

    from conftest import random_policy_and_questions
    from spot_utils.tiny.pretrain import pretrain_base

    pretrain_base(tiny_profile, progress=False)  # the stamp names the base
    model, tok, questions = random_policy_and_questions(tiny_profile, 6, seed=3)
    tiny_profile.generation.max_new_tokens = 8
    out = tmp_path / "hot"
    path, report = pipeline.rectified_pairs(tiny_profile, model, tok, questions, out, temperature=1.2)
    assert report.startswith("temperature 1.2: 6 errors in 6 samples -> 6 Oracle replies (0 failed")
    pairs = read_pairs(path)
    assert all(p["change_ratio"] <= tiny_profile.rectification.gamma for p in pairs)
    stamp = path.stat().st_mtime_ns
    assert "reused" in pipeline.rectified_pairs(tiny_profile, model, tok, questions, out, temperature=1.2)[1]
    assert path.stat().st_mtime_ns == stamp
    (out / "oracle_rectified.jsonl").write_text('{"id": "stale"}\n')  # a new setting must not resume this
    _, report = pipeline.rectified_pairs(tiny_profile, model, tok, questions[:4], out, temperature=1.2)
    assert report.startswith("temperature 1.2: 4 errors in 4 samples -> 4 Oracle replies")
    assert "stale" not in (out / "oracle_rectified.jsonl").read_text()
