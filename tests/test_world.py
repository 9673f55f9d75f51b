import random

import pytest

from spot_utils.config import load_profile
from spot_utils.tiny import arithmetic, skills, world


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


@pytest.mark.parametrize("skill,word,expected", [("reverse", "abc", "cba"), ("upper", "abz", "ABZ"),
                                                 ("shift", "abz", "bca"), ("double", "ab", "aabb")])
def test_skills(skill, word, expected):
    assert skills.skill_answer(skill, word) == expected
    assert skills.grade_skill(f"  {expected}\n", expected)
    assert not skills.grade_skill(expected + "x", expected)
    assert not skills.grade_skill(None, expected)
    assert skills.skill_question(skill, word).endswith(": " + word)


def test_test_sets_are_deterministic_and_disjoint_from_training():
    cfg = load_profile("tiny").world
    a, b = world.test_sets(cfg, 0), world.test_sets(cfg, 0)
    assert a == b
    assert world.test_sets(cfg, 1) != a
    tiers = {ex.tier for ex in a}
    assert tiers == {"steps=2", "steps=3", "steps=4", "steps=5", "reverse", "upper", "shift", "double", "connect4"}
    questions = {ex.question for ex in a}
    assert len(questions) == len(a)  # no duplicated test question
    stream = world.pretrain_stream(cfg, {"arithmetic": 1, "skills": 1, "connect4": 1}, 0, questions, connect4_pool=500)
    seen = [next(stream) for _ in range(3000)]
    assert not {ex.question for ex in seen} & questions
    assert max(int(ex.tier.split("=")[1]) for ex in seen if ex.task == "arithmetic") == 4  # tier 5 never trained
    elicit = world.elicitation_set(cfg, 200, 0, questions)
    assert len({ex.question for ex in elicit}) == 200 and not {ex.question for ex in elicit} & questions


def test_grade_dispatch():
    ex = world.test_sets(load_profile("tiny").world, 0)
    for e in ex[::50]:
        assert world.grade(e.task, e.answer, e.ground_truth)["correct"], e
        assert not world.grade(e.task, "", e.ground_truth)["correct"]
    c4 = next(e for e in ex if e.task == "connect4")
    assert set(world.grade("connect4", c4.answer, c4.ground_truth)) == {"correct", "own", "opponent"}
    with pytest.raises(ValueError, match="unknown task"):
        world.grade("chess", "", None)
