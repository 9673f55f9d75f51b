"""The miniature's calibration targets: is a base the raw material the paper needs? (notebook 00)

    calibration_targets(rows, tests)    # one row per target: target, value (%), wanted, met
    markdown(rows, tests)               # the README's base section: accuracy per tier, then the targets

A base must leave something to gain, something to lose and something to transfer, each measurably:
- IF (prompt-level strict) between 70% and 90%: knowledge to lose, and room to show it (IFEval's base is 83);
- arithmetic between 40% and 75% on average, lowest on the hardest tier: errors to rectify, headroom;
- each OOD benchmark clearly above its trivial answer (5 points: about two binomial standard errors on
  200-400 questions) and below 80%: a skill that can move both ways.
A target is checked, never assumed; one that is missed is reported with its number.
"""
from __future__ import annotations

import pandas as pd

from .. import connect4
from . import choice, world

CLEARLY = 5.0  # points above the trivial answer that count as "clearly above"
TASK_NAMES = {"arithmetic": "in-domain arithmetic", "skill": "instructions (IF)", "choice": "multiple choice (OOD)",
              "sequence": "sequence continuation (OOD)", "connect4": "Connect4 (OOD; mean of its two questions)"}


def trivial_connect4(tests) -> float:
    """Connect4 score (%) of always answering "None" for both questions."""
    boards = [connect4.parse_compact(ex.ground_truth) for ex in tests if ex.task == "connect4"]
    none = sum((not connect4.winning_moves(b, b.player)) + (not connect4.winning_moves(b, b.opponent)) for b in boards)
    return 100 * none / (2 * len(boards))


def trivial_choice(tests) -> float:
    """Multiple-choice accuracy (%) of always choosing the option in the position most often right."""
    positions = pd.Series([choice.options_of(ex.question).index(ex.ground_truth) for ex in tests if ex.task == "choice"])
    return 100 * positions.value_counts(normalize=True).max()


def trivial_sequence(tests) -> float:
    """Sequence accuracy (%) of always answering the most frequent next term."""
    answers = pd.Series([ex.ground_truth for ex in tests if ex.task == "sequence"])
    return 100 * answers.value_counts(normalize=True).max()


# each OOD benchmark: its target, and the trivial answer it must clearly beat
OOD_TARGETS = {"choice": ("multiple choice clearly above the best constant option", trivial_choice),
               "sequence": ("sequence clearly above the most frequent answer", trivial_sequence),
               "connect4": ("Connect4 clearly above always-None", trivial_connect4)}


def calibration_targets(rows: pd.DataFrame, tests) -> pd.DataFrame:
    """Each target with its measured value and whether it is met, from the base's graded test rows."""
    scores = world.benchmarks(rows)
    arith = [v for k, v in scores.items() if k.startswith("arith ")]  # in tier order, the longest chain last
    checks = [("IF (prompt-level strict) in [70, 90]%", world.headline(rows)["IF"], "70-90",
               lambda v: 70 <= v <= 90),
              ("arithmetic average in [40, 75]%", sum(arith) / len(arith), "40-75", lambda v: 40 <= v <= 75),
              ("hardest arithmetic tier is the lowest", arith[-1], f"<= {min(arith):.1f}", lambda v: v == min(arith))]
    for task, (name, trivial) in OOD_TARGETS.items():
        if task in scores:
            floor = trivial(tests)
            checks.append((f"{name}, below 80%", scores[task], f"{floor + CLEARLY:.1f}-80",
                           lambda v, floor=floor: floor + CLEARLY <= v < 80))
    return pd.DataFrame([{"target": name, "value (%)": round(value, 1), "wanted": wanted,
                          "met": "yes" if ok(value) else "NO"} for name, value, wanted, ok in checks])


def markdown(rows: pd.DataFrame, tests) -> str:
    """The README's base section (notebook 00 writes it to results/<profile>/base.md): accuracy per
    benchmark and tier, the headline, and every calibration target, met or not."""
    lines = ["| suite | tier | questions | base accuracy (%) |", "|---|---|---|---|"]
    for (task, tier), part in rows.groupby(["task", "tier"], sort=False):
        lines.append(f"| {TASK_NAMES.get(task, task)} | {tier} | {len(part)} | {100 * world.accuracy(part, task):.1f} |")
    head = world.headline(rows)
    lines.append("| **" + " / ".join(head) + "** | | | **" + " / ".join(f"{v:.1f}" for v in head.values()) + "** |")
    lines += ["", "| calibration target | value (%) | wanted | met |", "|---|---|---|---|"]
    for r in calibration_targets(rows, tests).itertuples(index=False):
        lines.append(f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]} |")
    return "\n".join(lines) + "\n"
