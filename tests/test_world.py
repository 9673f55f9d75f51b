import random

import pytest

from spot_utils.config import load_profile
from spot_utils.tiny import arithmetic, choice, skills, world


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


def test_multiple_choice_has_one_right_letter_reached_by_the_chain_of_thought():
    rng = random.Random(0)
    letters = []
    for _ in range(200):
        p = arithmetic.random_problem(rng, 3)
        options, letter = choice.random_options(rng, p.answer, spread=10)
        assert len({v % 10 for v in options}) == 4 and options[choice.LETTERS.index(letter)] == p.answer
        assert all(0 <= v and abs(v - p.answer) <= 10 for v in options)
        sol = choice.solution_text(p, options)
        assert sol.splitlines()[:-1] == arithmetic.solution_text(p).splitlines()[:-1]
        assert sol.splitlines()[-1] == f"Answer: {p.answer} ({letter})"
        assert choice.grade_choice(sol, letter) and not choice.grade_choice(sol.replace(f"({letter})", "(Z)"), letter)
        letters.append(letter)
    assert set(letters) == set(choice.LETTERS)
    q = choice.question_text(arithmetic.Problem(37, (("+", 45),)), (80, 82, 84, 91))
    assert q == "Choose: 37+45 from 80 (A), 82 (B), 84 (C), 91 (D)"
    for junk in ["", None, 3, "Answer: (E)", "Answer: 82 (b)", "Answer: B"]:
        assert choice.grade_choice(junk, "B") is False


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
                     "choice", "connect4"}
    keys = world.keys(a)
    assert len(keys) == len(a)  # no duplicated test question, not even one problem in two formats
    stream = world.pretrain_stream(cfg, {"arithmetic": 1, "skills": 1, "choice": 1, "connect4": 1}, 0, keys,
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
    ex = world.test_sets(load_profile("tiny").world, 0)
    for e in ex[::50]:
        assert world.grade(e.task, e.answer, e.ground_truth)["correct"], e
        assert not world.grade(e.task, "", e.ground_truth)["correct"]
    c4 = next(e for e in ex if e.task == "connect4")
    assert set(world.grade("connect4", c4.answer, c4.ground_truth)) == {"correct", "own", "opponent"}
    with pytest.raises(ValueError, match="unknown task"):
        world.grade("chess", "", None)
