"""The miniature's calibration targets are measured against the numbers, met or not (spot_utils.tiny.calibration)."""
import pandas as pd

from spot_utils.config import load_profile
from spot_utils.tiny import calibration, world


def _rows(tests, right: dict[str, float]) -> pd.DataFrame:
    """Graded rows in which the first `right[tier]` share of each tier is correct (Connect4: both questions)."""
    rows, seen = [], {}
    for ex in tests:
        i = seen[ex.tier] = seen.get(ex.tier, -1) + 1
        n = sum(e.tier == ex.tier for e in tests)
        ok = i < right[ex.tier] * n
        rows.append({"id": ex.id, "task": ex.task, "tier": ex.tier, "correct": ok, "own": ok, "opponent": ok})
    return pd.DataFrame(rows)


def test_a_base_in_every_band_meets_every_target_and_one_outside_is_reported():
    tests = world.test_sets(load_profile("tiny").world, 0)
    good = {"steps=2": .8, "steps=3": .6, "steps=4": .5, "steps=5": .1, "instructions=1": 1.0, "instructions=2": .8,
            "instructions=3": .6, "choice": .6, "sequence": .7}
    table = calibration.calibration_targets(_rows(tests, good), tests)
    assert list(table.met) == ["yes"] * 5 and len(table) == 5
    saturated = calibration.calibration_targets(_rows(tests, {**good, "instructions=2": 1.0, "instructions=3": 1.0,
                                                              "choice": .2}), tests).set_index("target")
    assert saturated["met"].tolist() == ["NO", "yes", "yes", "NO", "yes"]
    assert saturated["value (%)"].iloc[0] == 100.0


def test_trivial_answers_are_those_of_the_test_set():
    tests = world.test_sets(load_profile("tiny").world, 0)
    assert 25 <= calibration.trivial_choice(tests) <= 32  # four positions, drawn uniformly
    assert 0 < calibration.trivial_sequence(tests) < 10   # many possible next terms
    c4 = world.test_sets(load_profile("tiny", **{"world.connect4_test_size": 20}).world, 0)
    assert 0 < calibration.trivial_connect4(c4) < 100


def test_the_readme_section_lists_every_tier_and_target():
    tests = world.test_sets(load_profile("tiny").world, 0)
    rows = _rows(tests, {t: .5 for t in {ex.tier for ex in tests}})
    text = calibration.markdown(rows, tests)
    assert "| in-domain arithmetic | steps=5 | 100 | 50.0 |" in text and "| multiple choice (OOD) | choice | 400 | 50.0 |" in text
    assert text.count("| NO |") + text.count("| yes |") == 5
