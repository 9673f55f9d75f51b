"""The claims table: one rule decides every verdict (spot_utils.claims)."""
import numpy as np
import pandas as pd
import pytest

from spot_utils import claims
from spot_utils.claims import Side
from spot_utils.config import REPO_ROOT


def test_a_difference_beyond_1_645_standard_errors_decides_the_verdict():
    assert claims.verdict(1.7, 1.0) == "agree"
    assert claims.verdict(-1.7, 1.0) == "disagree"
    assert claims.verdict(1.6, 1.0) == "inconclusive"
    assert claims.verdict(5.0, 1.0, untestable=True) == "untestable"


def test_without_noise_the_sign_decides_and_zero_is_inconclusive():
    assert claims.verdict(0.1, 0.0) == "agree"
    assert claims.verdict(-0.1, 0.0) == "disagree"
    assert claims.verdict(0.0, 0.0) == "inconclusive"


def test_an_accuracy_s_error_adds_seed_spread_and_binomial_noise():
    seeds_only = Side("a", (50.0, 52.0, 54.0))
    assert seeds_only.se == pytest.approx(2.0 / np.sqrt(3))
    with_test_set = Side("a", (50.0, 52.0, 54.0), n=100)
    binomial = 100 * np.sqrt(0.52 * 0.48 / 100) / np.sqrt(3)
    assert with_test_set.se == pytest.approx(np.hypot(2.0 / np.sqrt(3), binomial))
    assert Side("one seed", (40.0,), n=400).se == pytest.approx(100 * np.sqrt(0.4 * 0.6 / 400))


def test_two_accuracies_at_100_percent_are_untestable():
    row = claims.compare("x", "Table 1", "keeps IF", Side("SPoT", (100.0, 100.0), n=400), Side("base", (100.0,), n=400),
                         claims.MARGIN)
    assert row["verdict"] == "untestable"
    below = claims.compare("x", "Table 1", "keeps IF", Side("SPoT", (97.0, 96.0), n=400), Side("base", (100.0,), n=400),
                           claims.MARGIN)
    assert below["verdict"] == "disagree"


def test_a_keeps_claim_allows_a_fall_smaller_than_the_margin():
    kept = claims.compare("x", "Table 2", "keeps", Side("DPO", (79.8, 79.7, 79.9)), Side("base", (80.0,)), claims.MARGIN)
    assert kept["d"] == pytest.approx(0.8) and kept["verdict"] == "agree"


def test_the_difference_is_taken_between_the_shown_values():
    row = claims.compare("x", "Table 1", "above", Side("a", (24.24,)), Side("b", (40.46,)))
    assert row["d"] == pytest.approx(24.2 - 40.5) and row["measured"].endswith("-16.3")


def _per_run(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for name, accs in values.items():
        method, data = name.split("@")
        for seed, acc in enumerate(accs):
            rows.append({"name": name, "method": method, "data": data, "seed": seed, "In-domain Avg": acc,
                         "OOD Avg": acc / 2, "IF": 90.0, "Overall Avg": acc})
    return pd.DataFrame(rows)


def test_table_claims_cover_tables_1_to_3_with_unique_ids():
    runs = {"sft@sft_direct": [40, 41, 42], "rft@correct": [50, 51, 52], "sft_plus@pairs": [55, 56, 57],
            "spot_bco@pairs": [70, 71, 72], "spot_bce@pairs": [60, 61, 62], "dpo@pairs": [50, 50, 50],
            "reward_sft@pairs": [45, 45, 45], "dft@pairs": [30], "spot_bco@direct_pairs": [20], "spot_bco@half": [65],
            "spot_bco@gamma1": [66]}
    base = {"In-domain Avg": 50.0, "OOD Avg": 25.0, "IF": 90.0, "Overall Avg": 50.0}
    table = claims.frame(claims.table_claims(_per_run(runs), base, {"In-domain Avg": 400, "OOD Avg": 200, "IF": 400,
                                                                       "Overall Avg": 1000}))
    assert {i.split(".")[0] for i in table.id} == {"T1", "T2", "T3"}
    verdicts = dict(zip(table.id, table.verdict))
    assert verdicts["T1.1"] == verdicts["T1.3"] == "agree"      # SPoT 71 far above SFT 41 and SFT+ 56
    assert verdicts["T2.2"] == "agree"                          # 71 vs the best other, BCE 61
    assert verdicts["T2.4"] == "untestable"                     # runs scored without a GPQA-D (analog) column
    assert verdicts["T2.9"] == "agree"                          # DFT 30 below SFT+ 56
    with_choice = _per_run(runs).assign(choice=lambda d: np.where(d.name == "spot_bce@pairs", 80.0, 50.0))
    gpqa = claims.frame(claims.table_claims(with_choice, {**base, "choice": 50.0}, {"choice": 400})).set_index("id")
    assert gpqa.loc["T2.4", "verdict"] == "agree" and "multiple-choice" in gpqa.loc["T2.4", "note"]


def test_a_missing_run_is_named():
    with pytest.raises(KeyError, match="spot_bco@pairs"):
        claims.table_claims(_per_run({"sft@sft_direct": [40]}), {"In-domain Avg": 1, "OOD Avg": 1, "IF": 1,
                                                                 "Overall Avg": 1})


def _curves(method: str, chosen: list[float], seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"method": method, "seed": s, "step": 5 * i, "rewards/chosen": v + 0.01 * s}
                         for s in seeds for i, v in enumerate(chosen)])


def test_a_logged_value_is_read_as_the_mean_of_a_third_of_the_run():
    curves = _curves("reward_sft", [0, 1, 2, 3, 4, 5, 6, 7, 8], seeds=(0,))
    assert claims._per_seed(curves, "reward_sft", "rewards/chosen", "first") == {0: 1.0}
    assert claims._per_seed(curves, "reward_sft", "rewards/chosen", "last") == {0: 7.0}


def test_shared_share_is_the_part_of_the_absolute_change_on_the_shared_prefix():
    changes = pd.DataFrame({"id": ["a", "a", "b", "b"], "response": ["y+", "y-"] * 2,
                            "change_shared": [1.0, -1.0, 0.0, 0.0], "change_divergent": [6.0, -2.0, 3.0, 1.0]})
    assert claims.shared_share(changes).tolist() == [20.0, 0.0]


def test_repeated_claim_ids_are_refused():
    row = claims.row("T1.1", "Table 1", "x", "", 1.0, 0.5)
    with pytest.raises(ValueError, match="T1.1"):
        claims.frame([row, row])


def test_the_summary_groups_claims_by_verdict():
    rows = claims.frame([claims.row("A", "Fig. 2", "rises", "1 -> 2", 1.0, 0.1),
                         claims.row("B", "Fig. 3", "falls", "2 -> 1", -1.0, 0.1)])
    text = claims.markdown(rows, "here")
    assert "1 agree, 1 disagree, 0 inconclusive, 0 untestable" in text
    assert text.index("**Reproduces**") < text.index("- A (Fig. 2) rises") < text.index("**Does not reproduce**")


def test_readme_shows_the_claims_notebook04_wrote():
    """The README's "what the miniature reproduces" is notebook 04's claims summary, verbatim."""
    summary = (REPO_ROOT / "results" / "tiny" / "claims.md").read_text().strip()
    assert summary in (REPO_ROOT / "README.md").read_text()


def test_a_training_curve_of_one_seed_decides_nothing():
    curves = _curves("reward_sft", [0, 1, 2, 3, 4, 5, 6, 7, 8], seeds=(0,))
    row = claims._seed_row("F", "Fig. 4", "rises", claims._per_seed(curves, "reward_sft", "rewards/chosen"), "r+")
    assert row["d"] == 7.0 and row["verdict"] == "inconclusive"


def test_at_one_common_rate_forgetting_is_tested_against_the_base():
    runs = pd.DataFrame({"method": ["sft_plus", "dpo", "reward_sft", "spot_bco"], "IF": [50.0, 44.0, 97.8, 99.8]})
    rows = claims.frame(claims.common_rate_claims(runs, {"IF": 100.0}, {"IF": 400}, 1e-3))
    assert dict(zip(rows.id, rows.verdict)) == {"F2.4": "agree", "F2.5": "disagree", "F2.6": "inconclusive",
                                                "F2.7": "agree"}


def test_claims_are_listed_in_the_paper_s_order():
    rows = [claims.row(i, "", "", "", 1.0, 1.0) for i in ("S4.1", "F2.10", "F3.1", "F2.4", "T3.1", "T1.2")]
    assert list(claims.frame(rows).id) == ["T1.2", "T3.1", "F2.4", "F2.10", "F3.1", "S4.1"]


def test_answer_counts_read_the_miniature_s_tasks_and_the_paper_s_suites():
    tiny = pd.DataFrame({"task": ["arithmetic"] * 4 + ["skill"] * 3 + ["choice"] * 5 + ["connect4"] * 2})
    assert claims.answer_counts(tiny) == {"In-domain Avg": 4, "OOD Avg": 7, "IF": 3, "choice": 5, "Overall Avg": 14}
    paper = pd.DataFrame({"suite": ["aime24", "math500", "math500", "gpqa_diamond", "connect4", "ifeval"]})
    assert claims.answer_counts(paper) == {"In-domain Avg": 3, "OOD Avg": 2, "IF": 1, "GPQA-D": 1, "Overall Avg": 6}


def test_a_written_table_reads_back_with_its_missing_standard_errors(tmp_path):
    rows = claims.frame([claims.row("F4.1", "Fig. 4", "rises", "r+", 1.0, float("nan")),
                         claims.row("T1.1", "Table 1", "above", "a vs b", 2.0, 1.0, note="a note")])
    back = claims.read(claims.write(rows, tmp_path / "claims.csv"))
    assert list(back.id) == ["T1.1", "F4.1"] and back.se.isna().tolist() == [False, True]
    assert list(back.note) == ["a note", ""] and list(claims.shown(back).se) == ["1", "none"]
