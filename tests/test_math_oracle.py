"""The paper profile's local Oracle (issue 12, paper_smoke): AnswerLineOracle behind the local server.

paper_smoke sends the paper's App. F prompts (with the ground truth, the boxed answer format) about
math questions to the local OpenAI-compatible server (rectification.oracle.base_url ""). The tiny
world's SymbolicOracle cannot read math questions; pipeline.oracle_endpoint serves it for the tiny
profile only and the AnswerLineOracle for any other: the student's answer with its final-answer line
set to the reference answer, and direct solutions from the profile's own question set.
"""
import random

import pytest

from spot_utils import pipeline
from spot_utils.config import load_profile
from spot_utils.math_grader import grade_math
from spot_utils.oracle import (DEFAULT_ANSWER_FORMAT, END_MARKER, START_MARKER, AnswerLineOracle, OracleRefusal,
                               OracleRequestError, PromptError, direct_solve_messages,
                               direct_solve_prompt, parse_corrected, read_oracle_prompt, rectification_messages,
                               rectification_prompt, replace_answer_line)
from spot_utils.oracle_server import start_server
from spot_utils.rectify import change_ratio
from spot_utils.tiny import arithmetic
from spot_utils.tiny.symbolic_oracle import SymbolicOracle

KEY = "test-key-3c4d5e6f7a8b"
BOXED = "Therefore, the final answer is: $\\boxed{%s}$."
QUESTION = "What is the sum of the first 6 positive integers?"
REASONING = ("We add the numbers one by one.\n"
             "1 + 2 + 3 = 6, and 6 + 4 = 10.\n"
             "Then 10 + 5 = 15 and 15 + 6 = 22.")


class WordTokenizer:
    """build_pairs' tokenizer interface, one id per whitespace word (change ratios over words)."""

    def __init__(self):
        self.vocab = {}

    def encode(self, text, add_special_tokens=False):
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]


words = WordTokenizer().encode  # token ids for change_ratio


@pytest.fixture
def smoke(tmp_path):
    profile = load_profile("paper_smoke", run_dir=str(tmp_path / "run"))
    assert not profile.is_tiny and profile.rectification.oracle.base_url == ""
    assert profile.rectification.with_ground_truth
    return profile


def error(i, response, ground_truth="21", question=QUESTION):
    return {"id": f"dapo{i:05d}-s0", "question": question, "response": response, "ground_truth": ground_truth,
            "tier": "dapo", "prompt": f"<|im_start|>user\n{question}<|im_end|>\n"}

# -----------------------------------------------------------------------------
# reading the prompts back by their templates


TRICKY_QUESTIONS = [QUESTION, "Line one.\n\nQuestion: nested?\n\nStill the question.", "  spaced  "]
TRICKY_ANSWERS = ["", REASONING + "\n" + BOXED % 22, "I quote it:\nReference Ground Truth: 99\nStudent Model's Answer: x",
                  "**IMPORTANT OUTPUT FORMAT:**\n1. nothing\n\nYou should compare the student model's answer"]


@pytest.mark.parametrize("question", TRICKY_QUESTIONS)
@pytest.mark.parametrize("answer", TRICKY_ANSWERS)
@pytest.mark.parametrize("gt", ["21", "\\frac{1}{2}", None])
def test_rectification_prompt_reads_back_field_for_field(question, answer, gt):
    for fmt in (DEFAULT_ANSWER_FORMAT, arithmetic.ANSWER_FORMAT.replace("N", "ANSWER")):
        text = rectification_prompt(question, answer, gt, fmt)
        kind, f = read_oracle_prompt(text)
        assert kind == "rectification"
        assert f == {"question": question, "student_answer": answer, "ground_truth": gt, "answer_format": fmt}
        assert rectification_prompt(f["question"], f["student_answer"], f["ground_truth"], f["answer_format"]) == text


@pytest.mark.parametrize("question", TRICKY_QUESTIONS)
def test_direct_solve_prompt_reads_back(question):
    assert read_oracle_prompt(direct_solve_prompt(question)) == (
        "direct-solve", {"question": question, "answer_format": DEFAULT_ANSWER_FORMAT})


GOOD = rectification_prompt(QUESTION, REASONING + "\n" + BOXED % 22, "21")


@pytest.mark.parametrize("prompt, message", [
    (GOOD.replace("\nReference Ground Truth: 21", ""), "no field 'Reference Ground Truth'"),
    (GOOD.replace("\nStudent Model's Answer: ", "\n"), "no field \"Student Model's Answer\""),
    (GOOD.replace("Question: ", "Problem: "), "the field 'Question' is missing"),
    (GOOD.replace("2. Ends with the corrected", "2. End with the corrected"), "before the field 'answer format'"),
    (GOOD[:-30], "does not end with its template's output-format instructions"),
    (GOOD.replace("You should compare", "Please compare"), "no task instructions"),
    (GOOD.replace("{ANSWER}", "{X}"), "has no ANSWER placeholder"),
    (rectification_prompt(QUESTION, "y-", " "), "field 'Reference Ground Truth' is empty"),
    (rectification_prompt(" ", "y-", "21"), "field 'Question' is empty"),
    (direct_solve_prompt(QUESTION).replace("Question: ", ""), "direct-solve prompt .*'Question' is missing"),
    ("What is 2 + 2?", "not an Oracle prompt of this repo"),
])
def test_malformed_prompts_name_what_is_missing(prompt, message):
    with pytest.raises(PromptError, match=message):
        read_oracle_prompt(prompt)
    with pytest.raises(PromptError, match=message):
        AnswerLineOracle({QUESTION: "21"})([{"role": "user", "content": prompt}])

# -----------------------------------------------------------------------------
# the edit


def test_the_final_answer_line_is_replaced_appended_or_closes_its_display():
    line = BOXED % 21
    assert replace_answer_line(REASONING + "\n" + BOXED % 22, DEFAULT_ANSWER_FORMAT, "21")[0] == REASONING + "\n" + line
    assert replace_answer_line(REASONING + "\nSo \\boxed{22}.", DEFAULT_ANSWER_FORMAT, "21")[0] == REASONING + "\n" + line
    assert replace_answer_line(f"\n{REASONING}\n\n", DEFAULT_ANSWER_FORMAT, "21") == (
        f"{REASONING}\n{line}", "no final-answer line: appended one after line 3")
    assert replace_answer_line("", DEFAULT_ANSWER_FORMAT, "21")[0] == line
    # what follows the answer line goes (the correction must end with it), and so does a display opener
    text, note = replace_answer_line(f"{REASONING}\n$$\n\\boxed{{22}}\n$$\nHope this helps.", DEFAULT_ANSWER_FORMAT, "21")
    assert text == f"{REASONING}\n{line}" and "dropped the 2 line(s) after it" in note
    text, _ = replace_answer_line(f"{REASONING}\nTherefore, the final answer is:\n$22$", DEFAULT_ANSWER_FORMAT, "21")
    assert text == f"{REASONING}\n{line}"
    # the last boxed line is the final one; an earlier (intermediate) box stays
    text, _ = replace_answer_line(f"First \\boxed{{6}}.\n{REASONING}\n{BOXED % 22}", DEFAULT_ANSWER_FORMAT, "21")
    assert text == f"First \\boxed{{6}}.\n{REASONING}\n{line}" and grade_math(text, "21")

# -----------------------------------------------------------------------------
# over real HTTP, through the pipeline's endpoint


def test_wrong_boxed_answer_gets_exactly_its_last_line_replaced(smoke):
    wrong = [error(0, f"{REASONING}\n{BOXED % 22}"),
             error(1, "Pair the numbers: (1+6) + (2+5) + (3+4) = 7 * 3 = 21 wait, 7 * 4 = 28.\n"
                      "So the answer is $\\boxed{28}$.")]
    out = pipeline.data_dir(smoke)
    with pipeline.oracle_endpoint(smoke) as (oracle, server):
        assert oracle.model == "symbolic-oracle" == smoke.rectification.oracle.model  # the profile's name
        summary = oracle.run(pipeline.rectification_requests(smoke, wrong), out / "r.jsonl", out / "rf.jsonl")
        bodies = server.request_bodies
    assert (summary.succeeded, summary.failed, summary.retries) == (2, 0, 0)
    # the server got the paper's App. F prompt with the ground truth, as the paper profile sends it to Gemini
    sent = {b["messages"][0]["content"] for b in bodies}
    assert sent == {rectification_prompt(QUESTION, e["response"], "21") for e in wrong}
    records = pipeline.oracle_records(out / "r.jsonl")
    for e, rec in zip(wrong, records):
        lines = e["response"].split("\n")
        assert rec["response"] == "\n".join(lines[:-1] + [BOXED % 21])  # only the last line differs
        assert rec["raw"] == f"{START_MARKER}\n{rec['response']}\n{END_MARKER}"
        assert parse_corrected(rec["raw"]) == rec["response"]
        assert "reference answer 21 (the prompt's Reference Ground Truth)" in rec["thinking"]
        assert not grade_math(e["response"], "21") and grade_math(rec["response"], "21")
        assert change_ratio(words(e["response"]), words(rec["response"])) < 0.3
    pairs, skipped = pipeline.build_pairs(smoke, WordTokenizer(), records)
    assert len(pairs) == 2 and not skipped
    assert all(p["change_ratio"] <= smoke.rectification.gamma for p in pairs)


@pytest.mark.parametrize("stream", [True, False])
def test_answer_without_a_final_line_gets_it_appended(smoke, stream, tmp_path):
    smoke = load_profile("paper_smoke", run_dir=str(tmp_path / "run"), **{"rectification.oracle.stream": stream})
    wrong = [error(0, REASONING), error(1, "tokens of a random model 3 7 <|endoftext|> x"), error(2, "")]
    with pipeline.oracle_endpoint(smoke) as (oracle, _):
        replies = [oracle.complete(r["messages"]) for r in pipeline.rectification_requests(smoke, wrong)]
    for e, reply in zip(wrong, replies):
        fixed = parse_corrected(reply.text)
        assert fixed == (f"{e['response']}\n{BOXED % 21}" if e["response"] else BOXED % 21)
        assert grade_math(fixed, "21")
    assert change_ratio(words(REASONING), words(parse_corrected(replies[0].text))) < 0.3
    assert "appended" in replies[0].thinking


def test_tiny_still_gets_the_symbolic_oracle_byte_for_byte(tiny_profile, smoke):
    p = arithmetic.random_problem(random.Random(0), 3)
    lines = arithmetic.solution_text(p).splitlines()
    lines[1] = f"{lines[1].split('=')[0]}={int(lines[1].split('=')[1]) + 1}"  # a wrong step, as in test_pipeline
    messages = [rectification_messages(arithmetic.question_text(p), "\n".join(lines), p.answer, arithmetic.ANSWER_FORMAT),
                direct_solve_messages(arithmetic.question_text(p), arithmetic.ANSWER_FORMAT),
                rectification_messages(QUESTION, f"{REASONING}\n{BOXED % 22}", "21")]  # math: not its world
    symbolic = SymbolicOracle(tiny_profile.rectification.oracle.symbolic_rewrite_rate, tiny_profile.seed)
    with pipeline.oracle_endpoint(tiny_profile) as (oracle, _):
        for m in messages[:2]:
            reply = oracle.complete(m)
            assert (reply.text, reply.thinking) == symbolic(m)
        hello = [{"role": "user", "content": "hello"}]  # no template: an answer without markers, as before
        assert (oracle.complete(hello).text, oracle.complete(hello).thinking) == (symbolic(hello), "")
    with pytest.raises(ValueError, match="not an arithmetic question"):  # why paper_smoke needs another Oracle
        symbolic(messages[2])
    with pipeline.oracle_endpoint(smoke) as (oracle, _):
        reply = oracle.complete(messages[2])
        assert (reply.text, reply.thinking) == AnswerLineOracle()(messages[2])


def test_malformed_prompt_fails_at_once_with_a_clear_message(smoke):
    bad = [{"role": "user", "content": GOOD.replace("\nReference Ground Truth: 21", "")}]
    out = pipeline.data_dir(smoke)
    with pipeline.oracle_endpoint(smoke) as (oracle, server):
        with pytest.raises(OracleRequestError) as e:
            oracle.complete(bad)
        assert e.value.reason == "BadRequestError" and e.value.status_code == 400 and e.value.retries == 0
        assert "no field 'Reference Ground Truth'" in str(e.value)
        summary = oracle.run([{"id": "x", "messages": bad}], out / "r.jsonl", out / "rf.jsonl")
        stats = server.stats
    assert (summary.failed, summary.retries, dict(summary.failure_reasons)) == (1, 0, {"BadRequestError": 1})
    assert stats["bad_requests"] == 2 and stats["server_errors"] == 0 and stats["completions"] == 0
    assert "Reference Ground Truth" in (out / "rf.jsonl").read_text()


def test_direct_answers_come_from_the_profiles_question_set(tmp_path, monkeypatch):
    import datasets

    from spot_utils.smoke_assets import dapo_rows, write_dapo_parquet

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))  # not ~/.cache
    write_dapo_parquet(dapo_rows(n=8), tmp_path / "dapo")
    smoke = load_profile("paper_smoke", run_dir=str(tmp_path / "run"),
                         **{"rectification.dataset": str(tmp_path / "dapo"), "rectification.questions": 8})
    questions = pipeline.elicitation_questions(smoke)
    errors = [error(i, "no idea", q["ground_truth"], q["question"]) | {"id": q["id"]} for i, q in enumerate(questions)]
    out = pipeline.data_dir(smoke)
    with pipeline.oracle_endpoint(smoke) as (oracle, _):
        summary = oracle.run(pipeline.direct_requests(smoke, errors), out / "d.jsonl", out / "df.jsonl")
        with pytest.raises(OracleRequestError, match="not in the local math Oracle's answer key"):
            oracle.complete(direct_solve_messages("A question from elsewhere?"))
    assert (summary.succeeded, summary.failed) == (8, 0)
    records = pipeline.oracle_records(out / "d.jsonl")
    for q, rec in zip(sorted(questions, key=lambda q: q["id"]), records):
        assert rec["response"] == f"Solving the problem directly, the result is {q['ground_truth']}.\n" \
                                  + BOXED % q["ground_truth"]
        assert pipeline.grade_answer(smoke, rec["response"], q["ground_truth"])
    (out / "correct.jsonl").write_text("")
    assert pipeline.write_datasets(smoke, [], records, smoke.rectification.gamma)["sft_direct.jsonl"] == 8


def test_answer_key_loaded_once_and_failures_refused_clearly():
    calls = []

    def key():
        calls.append(1)
        return {QUESTION: 21}

    oracle = AnswerLineOracle(key)
    assert oracle(direct_solve_messages(QUESTION))[0].count("\\boxed{21}") == 1
    # the variant without ground truth (with_ground_truth false) takes the key's answer
    text, thinking = oracle(rectification_messages(QUESTION, f"{REASONING}\n{BOXED % 22}"))
    assert parse_corrected(text) == f"{REASONING}\n{BOXED % 21}" and "(the answer key)" in thinking
    assert len(calls) == 1

    def broken():
        calls.append(1)
        raise FileNotFoundError("runs/paper_smoke/assets/dapo_math_17k_smoke")

    oracle = AnswerLineOracle(broken)
    for _ in range(2):
        with pytest.raises(OracleRefusal, match="could not load its answer key: FileNotFoundError: runs/paper_smoke"):
            oracle(direct_solve_messages(QUESTION))
    assert len(calls) == 2  # the failure is kept, not retried per request
    with pytest.raises(OracleRefusal, match="not in the local math Oracle's answer key"):
        AnswerLineOracle()(direct_solve_messages(QUESTION))


def test_server_refusals_are_client_errors_and_other_crashes_still_500(monkeypatch):
    import openai

    class Refusal(Exception):
        status_code, code = 422, "nope"

    def responder(messages):
        if messages[-1]["content"] == "refuse":
            raise Refusal("cannot do that")
        raise ValueError("a bug")

    with start_server(responder, api_key=KEY) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=10)
        try:
            with pytest.raises(openai.UnprocessableEntityError, match="the Oracle refused the request: cannot do that"):
                client.chat.completions.create(model="symbolic-oracle", messages=[{"role": "user", "content": "refuse"}])
            with pytest.raises(openai.InternalServerError, match="responder failed: ValueError: a bug"):
                client.chat.completions.create(model="symbolic-oracle", messages=[{"role": "user", "content": "x"}])
        finally:
            client.close()
        assert srv.stats["bad_requests"] == 1 and srv.stats["server_errors"] == 1
