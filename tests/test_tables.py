"""Aggregation math of the tiny evaluation (avg@n, the paper's summary columns) and of Tables 1-3."""

import pandas as pd
import pytest

from spot_utils import tables
from spot_utils.evaluation import accuracy_table
from spot_utils.tiny.world import headline


def rows():
    """Two samples per question (avg@2): arithmetic tiers at 50% and 100%, skills 75%, Connect4 own 100% /
    opponent 50%."""
    r = []
    for k, ok in enumerate([True, False]):
        r.append({"id": "a1", "task": "arithmetic", "tier": "steps=2", "sample": k, "correct": ok})
    for k in range(2):
        r.append({"id": "a2", "task": "arithmetic", "tier": "steps=3", "sample": k, "correct": True})
    for k, ok in enumerate([True, True, True, False]):
        r.append({"id": f"s{k}", "task": "skill", "tier": "reverse", "sample": 0, "correct": ok})
    for k, opp in enumerate([True, False]):
        r.append({"id": "c1", "task": "connect4", "tier": "connect4", "sample": k, "correct": opp,
                  "own": True, "opponent": opp})
    return pd.DataFrame(r)


def test_headline_is_the_papers_summary():
    h = headline(rows())
    assert h["In-domain Avg"] == pytest.approx(75.0)  # mean of the tiers (50, 100)
    assert h["OOD Avg"] == pytest.approx(75.0)        # mean of own (100) and opponent (50)
    assert h["IF"] == pytest.approx(75.0)
    assert h["Overall Avg"] == pytest.approx((50 + 100 + 75 + 75) / 4)  # mean over the benchmarks


def test_accuracy_table_averages_samples():
    t = accuracy_table(rows())
    assert t.loc[("arithmetic", "steps=2"), "correct"] == 50.0 and t.loc[("arithmetic", "steps=2"), "n"] == 2
    assert t.loc[("connect4", "connect4"), "own"] == 100.0 and t.loc[("connect4", "connect4"), "opponent"] == 50.0


def test_table_mean_sd_delta_and_paper_columns():
    per_run = pd.DataFrame([{"name": "spot_bco@pairs", "In-domain Avg": v, "OOD Avg": 30.0, "IF": 100.0,
                             "Overall Avg": 50.0} for v in (50.0, 52.0, 54.0)])
    base = {"In-domain Avg": 40.0, "OOD Avg": 30.0, "IF": 100.0, "Overall Avg": 45.0}
    t = tables.with_paper(tables.table(per_run, base, ["spot_bco@pairs"]))
    row = t.loc["spot_bco@pairs"]
    assert row["In-domain Avg"] == 52.0 and row["In-domain Avg sd"] == 2.0 and row["In-domain Avg delta"] == 12.0
    assert row["seeds"] == 3 and row["label"] == "SPoT (BCO)"
    assert row["paper In-domain Avg"] == 52.1 and row["paper In-domain Avg delta"] == pytest.approx(5.3)
    text = tables.formatted(t, paper=True)
    assert text.loc["spot_bco@pairs", "In-domain Avg"] == "52.0 ± 2.0 (+12.0)"
    assert text.loc["spot_bco@pairs", "paper IF"] == "84.8 (+1.8)"
    md = tables.markdown(t, paper=True)
    assert md.splitlines()[0].startswith("| method | In-domain Avg | paper In-domain Avg")


def test_paper_table1_is_self_consistent():
    """Overall = mean of nine benchmarks = (6 in-domain + 2 OOD + IFEval) / 9, for every reported row."""
    for model, rows_ in tables.PAPER_TABLE_1.items():
        for method, (ind, ood, ifeval, overall) in rows_.items():
            assert (6 * ind + 2 * ood + ifeval) / 9 == pytest.approx(overall, abs=0.06), (model, method)
