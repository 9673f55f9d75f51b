import random

import pytest

from spot_utils.config import load_profile
from spot_utils.tiny import arithmetic, choice, sequence, skills, world


def test_arithmetic_solution_is_correct_and_parses():
    rng = random.Random(0)
    for steps in (1, 2, 3, 5, 8):
        for _ in range(50):
            p = arithmetic.random_problem(rng, steps, 999)
            assert all(0 <= v <= 999 for v in p.values())
            q = arithmetic.question_text(p)
            assert arithmetic.parse_question(q) == p
            sol = arithmetic.solution_text(p)
            assert len(sol.splitlines()) == steps + 1
            assert arithmetic.grade_arithmetic(sol, p.answer)
            assert arithmetic.grade_arithmetic(arithmetic.direct_solution_text(p), p.answer)
            assert arithmetic.first_error_step(p, sol) is None


def test_arithmetic_grader_never_raises_and_is_exact():
    assert arithmetic.grade_arithmetic("12+3=15\nAnswer: 15", 15)
    assert arithmetic.grade_arithmetic("Answer: 14\nAnswer: 15", "15")  # the last answer line counts
    assert not arithmetic.grade_arithmetic("12+3=15\nAnswer: 16", 15)
    assert not arithmetic.grade_arithmetic("12+3=15", 15)  # no final-answer line
    for junk in ["", "Answer:", "Answer: x", "\x00\n\n", "Answer: 99999999999999999999999", None, 3]:
        assert arithmetic.grade_arithmetic(junk, 15) in (True, False)
    assert not arithmetic.grade_arithmetic("Answer: 15", "not a number")


def test_parse_question_errors():
    with pytest.raises(ValueError, match="prefix"):
        arithmetic.parse_question("What is 2+2?")
    with pytest.raises(ValueError, match="malformed"):
        arithmetic.parse_question(arithmetic.QUESTION_PREFIX + "12+")


def test_first_error_and_minimal_correction():
    p = arithmetic.Problem(37, (("+", 45), ("-", 18), ("*", 2)))
    wrong = "37+45=82\n82-18=65\n65*2=130\nAnswer: 130"
    assert arithmetic.first_error_step(p, wrong) == 1
    fixed = arithmetic.correct_from_first_error(p, wrong)
    assert fixed == "37+45=82\n82-18=64\n64*2=128\nAnswer: 128"
    assert fixed.startswith("37+45=82\n")  # the correct prefix is kept verbatim
    # all steps right but a wrong final line: only the final line changes
    assert arithmetic.first_error_step(p, "37+45=82\n82-18=64\n64*2=128\nAnswer: 12") == 3
    assert arithmetic.correct_from_first_error(p, "37+45=82\n82-18=64\n64*2=128\nAnswer: 12").endswith("Answer: 128")
    # garbage from the first line
    assert arithmetic.correct_from_first_error(p, "blah") == arithmetic.solution_text(p)


def test_every_phrasing_is_read_and_the_minimal_edit_keeps_the_students():
    p = arithmetic.Problem(37, (("+", 45), ("-", 18), ("*", 2)))
    for styles in (["then", "so", "compact"], ["so"] * 3):
        sol = arithmetic.solution_text(p, styles)
        assert [arithmetic.line_style(line) for line in sol.splitlines()[:3]] == styles
        assert arithmetic.first_error_step(p, sol) is None and arithmetic.grade_arithmetic(sol, 128)
    # wrong from step 2 on: each fixed line in the phrasing the student used on that line
    wrong = "then 37+45=82\nso 82-18=65\n65*2=130\nAnswer: 130"
    assert arithmetic.correct_from_first_error(p, wrong) == "then 37+45=82\nso 82-18=64\n64*2=128\nAnswer: 128"
    # a missing line takes the phrasing of the line before it
    assert arithmetic.correct_from_first_error(p, "so 37+45=82\nAnswer: 82") == \
        "so 37+45=82\nso 82-18=64\nso 64*2=128\nAnswer: 128"
    assert arithmetic.line_style("37 +45=82") is None and arithmetic.line_style("x") is None
    assert arithmetic.first_error_step(p, "hence 37+45=82\n82-18=64\n64*2=128\nAnswer: 128") is None  # any lead word
    assert arithmetic.direct_solution_text(p).splitlines()[0] == "37 plus 45 is 82"  # the Oracle's own voice


def test_random_phrasings_cover_every_style():
    drawn = arithmetic.random_styles(random.Random(0), 300, list(arithmetic.STYLES))
    assert {s: drawn.count(s) > 60 for s in arithmetic.STYLES} == {s: True for s in arithmetic.STYLES}


def test_multiple_choice_has_one_right_option_reached_by_the_chain_of_thought():
    rng = random.Random(0)
    positions = []
    for _ in range(200):
        p = arithmetic.random_problem(rng, 3)
        options = choice.random_options(rng, p.answer, spread=10)
        assert len(set(options)) == 4 and p.answer in options
        assert all(0 <= v and abs(v - p.answer) <= 10 for v in options)
        q = choice.question_text(p, options)
        assert choice.options_of(q) == options
        sol = choice.solution_text(p)
        assert sol == arithmetic.solution_text(p)
        wrong = next(v for v in options if v != p.answer)
        assert choice.grade_choice(sol, p.answer) and not choice.grade_choice(sol.replace(f"Answer: {p.answer}",
                                                                                          f"Answer: {wrong}"), p.answer)
        positions.append(options.index(p.answer))
    assert set(positions) == {0, 1, 2, 3}
    q = choice.question_text(arithmetic.Problem(37, (("+", 45),)), (80, 82, 84, 91))
    assert q == "Choose: 37+45 from 80, 82, 84, 91"
    for junk in ["", None, 3, "Answer: (B)", "Answer: 80", "82"]:
        assert choice.grade_choice(junk, 82) is False
    with pytest.raises(ValueError, match="not a multiple-choice question"):
        choice.options_of("Compute: 37+45")


def test_a_sequence_is_continued_by_its_differences():
    s = sequence.Sequence(2, 3, 2)
    assert s.terms() == [2, 5, 10, 17, 26] and s.answer == 26
    assert sequence.question_text(s) == "Continue: 2, 5, 10, 17"
    assert sequence.solution_text(s).splitlines() == ["5-2=3", "10-5=5", "17-10=7", "7-5=2", "7+2=9", "17+9=26",
                                                      "Answer: 26"]
    assert len(sequence.solution_text(s).splitlines()) == sequence.STEPS + 1
    assert sequence.solution_text(s, ["then"] * sequence.STEPS).splitlines()[0] == "then 5-2=3"
    rng = random.Random(0)
    for _ in range(300):
        s = sequence.random_sequence(rng)
        assert 0 < s.start and 0 < s.step and 0 <= s.change and s.answer <= sequence.MAX_VALUE
        assert sequence.parse_question(sequence.question_text(s)) == s
        assert sequence.grade_sequence(sequence.solution_text(s), s.answer)
        assert not sequence.grade_sequence(sequence.solution_text(s), s.answer + 1)
    for bad in ["Continue: 1, 2, 4, 8", "Continue: 1, 2, 3", "Compute: 1+2"]:
        with pytest.raises(ValueError, match="Continue"):
            sequence.parse_question(bad)
    for junk in ["", None, 3, "Answer: x"]:
        assert sequence.grade_sequence(junk, 26) is False


@pytest.mark.parametrize("skill,word,expected", [("reverse", "abc", "cba"), ("upper", "abz", "ABZ"),
                                                 ("shift", "abz", "bca"), ("double", "ab", "aabb")])
def test_skills(skill, word, expected):
    assert skills.skill_answer(skill, word) == expected
    assert skills.grade_skill(f"  {expected}\n", expected)
    assert not skills.grade_skill(expected + "x", expected)
    assert not skills.grade_skill(None, expected)
    assert skills.skill_question(skill, word).endswith(": " + word)


def test_instructions_chain_in_order():
    assert skills.chain_question(["reverse", "upper"], "abc") == "Reverse, then Upper: abc"
    assert skills.chain_answer(["reverse", "upper"], "abz") == "ZBA"
    assert skills.chain_answer(["upper", "shift"], "abz") == "BCA"  # shift keeps the case
    assert skills.chain_answer(["double", "reverse", "shift"], "ab") == "ccbb"
    chain = skills.random_chain(random.Random(0), 3)
    assert len(set(chain)) == 3 and set(chain) <= set(skills.SKILLS)


def test_test_sets_are_deterministic_and_disjoint_from_training():
    cfg = load_profile("tiny").world
    a, b = world.test_sets(cfg, 0), world.test_sets(cfg, 0)
    assert a == b
    assert world.test_sets(cfg, 1) != a
    tiers = {ex.tier for ex in a}
    assert tiers == {"steps=2", "steps=3", "steps=4", "steps=5", "instructions=1", "instructions=2", "instructions=3",
                     "choice", "sequence"}
    keys = world.keys(a)
    assert len(keys) == len(a)  # no duplicated test question, not even one problem in two formats
    stream = world.pretrain_stream(cfg, {"arithmetic": 1, "skills": 1, "choice": 1, "sequence": 1, "connect4": 1}, 0, keys,
                                   connect4_pool=500)
    seen = [next(stream) for _ in range(3000)]
    assert not world.keys(seen) & keys
    assert {ex.task for ex in seen} == set(world.TASKS)
    assert max(int(ex.tier.split("=")[1]) for ex in seen if ex.task == "arithmetic") == 4  # tier 5 never trained
    styles = {arithmetic.line_style(line) for ex in seen if ex.task == "arithmetic" for line in ex.answer.splitlines()[:-1]}
    assert styles == set(cfg.step_styles)  # pretraining writes every phrasing
    elicit = world.elicitation_set(cfg, 200, 0, keys)
    assert len(world.keys(elicit)) == 200 and not world.keys(elicit) & keys


def test_a_choice_question_and_its_compute_twin_are_one_question():
    cfg = load_profile("tiny").world
    ex = world.choice_example(random.Random(3), 2, cfg, "x")
    twin = arithmetic.QUESTION_PREFIX + ex.question[len(choice.QUESTION_PREFIX):].split(" ")[0]
    assert ex.key == twin == world.Example("y", "arithmetic", "steps=2", twin, "", 0).key


def test_grade_dispatch():
    ex = world.test_sets(load_profile("tiny", **{"world.connect4_test_size": 20}).world, 0)
    assert {e.task for e in ex} == set(world.TASKS)
    for e in ex[::25]:
        assert world.grade(e.task, e.answer, e.ground_truth)["correct"], e
        assert not world.grade(e.task, "", e.ground_truth)["correct"]
    c4 = next(e for e in ex if e.task == "connect4")
    assert set(world.grade("connect4", c4.answer, c4.ground_truth)) == {"correct", "own", "opponent"}
    with pytest.raises(ValueError, match="unknown task"):
        world.grade("chess", "", None)
