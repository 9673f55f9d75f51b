"""Tables 1-3 of the paper, for the miniature and beside the paper's reported numbers (notebook 04, README).

The paper's numbers are a constant, cited table (PAPER_TABLE_1: the released README's Table 1 for
Qwen3-8B and Llama-3.1-8B-Instruct, arXiv 2603.01683). Every other number is computed from the
per-example grades the earlier notebooks wrote.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import METHOD_LABELS, Profile
from .environment import output_root

COLUMNS = ("In-domain Avg", "OOD Avg", "IF", "Overall Avg")

# Table 1 as reported (accuracy %; SPoT, Lin & Han 2026, Table 1 / released README). "IF" is IFEval.
PAPER_TABLE_1 = {
    "Qwen3-8B": {
        "base": (46.8, 29.9, 83.0, 47.1), "sft": (41.0, 25.5, 79.6, 41.8), "rft": (47.3, 26.1, 81.5, 46.4),
        "sft_plus": (50.5, 30.7, 80.0, 49.4), "spot_bco": (52.1, 41.4, 84.8, 53.3)},
    "Llama-3.1-8B-Instruct": {
        "base": (18.6, 16.8, 73.6, 24.3), "sft": (18.0, 15.7, 62.1, 22.4), "rft": (18.0, 17.2, 71.2, 23.7),
        "sft_plus": (19.9, 16.7, 68.6, 24.6), "spot_bco": (20.7, 18.5, 73.2, 26.0)},
}
# What the paper's text states about Tables 2-3 (PAPER.md); the per-benchmark rows are not reproduced here.
PAPER_TABLE_2_TEXT = {
    "spot_bco": "best overall and in-domain averages", "spot_bce": "best IFEval (85.8) and GPQA-D (49.5)",
    "dpo": "keeps IFEval (84.7), no in-domain gain", "reward_sft": "keeps IFEval, loses in-domain",
    "dft": "degrades against plain SFT"}
PAPER_TABLE_3_TEXT = {
    "spot_bco@direct_pairs": "rectified data beats direct data by 5.2 points",
    "spot_bco@half": "4k pairs beat 2k", "spot_bco@gamma1": "gamma 0.6 (53.2 avg) beats gamma 1 at equal size"}
ROW_LABELS = {"spot_bco@pairs": "SPoT (BCO)", "spot_bco@direct_pairs": "SPoT, direct y+ (no rectification)",
              "spot_bco@half": "SPoT, half the pairs", "spot_bco@gamma1": "SPoT, gamma = 1.0 (unfiltered), equal size"}


def row_label(name: str) -> str:
    if name in ROW_LABELS:
        return ROW_LABELS[name]
    return METHOD_LABELS.get(name.split("@")[0], name)


def table(per_run: pd.DataFrame, base: dict, names: list[str]) -> pd.DataFrame:
    """Rows `base` then `names` (run names), columns mean, sd over seeds, delta vs base, and seeds."""
    rows = [{"run": "base", "label": "base", "seeds": 1, **{c: base[c] for c in COLUMNS}}]
    for name in names:
        g = per_run[per_run.name == name]
        row = {"run": name, "label": row_label(name), "seeds": len(g)}
        for c in COLUMNS:
            row[c] = g[c].mean()
            row[f"{c} sd"] = g[c].std(ddof=1) if len(g) > 1 else np.nan
            row[f"{c} delta"] = row[c] - base[c]
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def paper_model(profile: Profile) -> str:
    """The PAPER_TABLE_1 entry for a profile: Llama-3.1-8B-Instruct for a Llama base, else Qwen3-8B
    (also for tiny, whose Qwen3-architecture model is compared with the Qwen3-8B row)."""
    return "Llama-3.1-8B-Instruct" if "llama" in profile.model.name_or_path.lower() else "Qwen3-8B"


def with_paper(tab: pd.DataFrame, model: str | None = None, profile: Profile | None = None) -> pd.DataFrame:
    """Adds the paper's Table 1 numbers (and their deltas) for the rows it reports: those of `model`
    (a PAPER_TABLE_1 key), else of `profile`'s model (paper_model), else Qwen3-8B's."""
    if model is None:
        model = paper_model(profile) if profile is not None else "Qwen3-8B"
    if model not in PAPER_TABLE_1:
        raise ValueError(f"no paper numbers for {model!r}; PAPER_TABLE_1 has {', '.join(PAPER_TABLE_1)}")
    paper = PAPER_TABLE_1[model]
    rows = {"base": "base", "sft@sft_direct": "sft", "rft@correct": "rft", "sft_plus@pairs": "sft_plus",
            "spot_bco@pairs": "spot_bco"}  # our run -> the paper's row
    out = tab.copy()
    for i, c in enumerate(COLUMNS):
        out[f"paper {c}"] = [paper[rows[r]][i] if r in rows else np.nan for r in out.index]
        out[f"paper {c} delta"] = out[f"paper {c}"] - paper["base"][i]
    return out


def formatted(tab: pd.DataFrame, paper: bool = False) -> pd.DataFrame:
    """"mean ± sd (delta)" strings per column, as in the paper's tables. The delta is taken between the
    values as shown (one decimal), so that a row reads consistently: 24.2 (-16.3) against a base of 40.5."""
    out = pd.DataFrame(index=tab.index)
    out["method"] = tab["label"]
    for c in COLUMNS:
        cells = []
        base_shown = round(tab.loc["base", c], 1) if "base" in tab.index else np.nan
        for run, r in tab.iterrows():
            s = f"{r[c]:.1f}"
            if run != "base":
                if not np.isnan(r.get(f"{c} sd", np.nan)):
                    s += f" ± {r[f'{c} sd']:.1f}"
                delta = round(r[c], 1) - base_shown if not np.isnan(base_shown) else r[f"{c} delta"]
                s += f" ({delta:+.1f})"
            cells.append(s)
        out[c] = cells
        if paper:
            out[f"paper {c}"] = [("" if np.isnan(r[f"paper {c}"]) else f"{r[f'paper {c}']:.1f}"
                                  + ("" if run == "base" else f" ({r[f'paper {c} delta']:+.1f})"))
                                 for run, r in tab.iterrows()]
    out["seeds"] = tab["seeds"].values
    return out


def tables_dir(profile: Profile) -> Path:
    """Where notebook 04 writes a profile's tables (profile.outputs): results/<profile>/ of
    environment.output_root() when they are the repository's (tiny: committed; `make nbval` writes under runs/
    and leaves them alone), else runs/<profile>/results/, beside its figures."""
    path = output_root() / "results" / profile.name if profile.outputs == "repo" else profile.runs / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def styled(tab: pd.DataFrame, paper: bool = False):
    """The formatted table with deltas coloured green (up) / red (down), as in the paper."""
    text = formatted(tab, paper)

    def colour(col):
        name = col.name.replace("paper ", "")
        if name not in COLUMNS:
            return [""] * len(col)
        key = f"paper {name} delta" if col.name.startswith("paper ") else f"{name} delta"
        deltas = tab[key] if key in tab else pd.Series(np.nan, index=tab.index)
        return ["" if run == "base" or np.isnan(d) or abs(d) < 0.05 else
                f"color: {'#1a7f37' if d > 0 else '#cf222e'}" for run, d in zip(tab.index, deltas)]

    # a fixed uuid: the same table renders to the same HTML (nbval compares it; notebook diffs stay small)
    return text.style.apply(colour, axis=0).hide(axis="index").set_uuid("spot")


def markdown(tab: pd.DataFrame, paper: bool = False) -> str:
    """A GitHub-markdown rendering (README)."""
    text = formatted(tab, paper)
    cols = list(text.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in text.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def plot_summary(tab: pd.DataFrame, title: str = "Tiny profile: post-training methods vs the base"):
    """Grouped bars (in-domain, OOD, IF) per method with the seeds' standard deviation; a run of one
    seed (no error bar) is hatched and says so under its name."""
    import matplotlib.pyplot as plt

    cols = ("In-domain Avg", "OOD Avg", "IF")
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    fig, ax = plt.subplots(figsize=(1.1 * len(tab) + 2, 3.8))
    x = np.arange(len(tab))
    width = 0.26
    single = [(run != "base" and seeds == 1) for run, seeds in zip(tab.index, tab["seeds"])]
    for k, (c, color) in enumerate(zip(cols, colors)):
        err = tab.get(f"{c} sd", pd.Series(np.nan, index=tab.index)).fillna(0).values
        ax.bar(x + (k - 1) * width, tab[c].values, width, yerr=err, color=color, label=c, capsize=2,
               hatch=["//" if one else "" for one in single], edgecolor="white")
    names = [f"{label}\n(1 seed)" if one else f"{label}\n({seeds} seeds)" if run != "base" else label
             for run, label, seeds, one in zip(tab.index, tab["label"], tab["seeds"], single)]
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%); bars: sd over seeds")
    ax.set_ylim(0, 120)  # room for the legend above the 100% bars
    ax.legend(ncol=3, fontsize=8, loc="upper center")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def answer_examples(questions: dict, base_rows: pd.DataFrame, run_rows: pd.DataFrame, task: str, n: int = 2) -> pd.DataFrame:
    """Test questions of `task` the base answered correctly and a run got wrong (first sample of each, the
    first n by id): what a drop in a table looks like in the model's own words. `questions` maps a test
    id to its question text."""
    first = lambda rows: rows[(rows.task == task) & (rows["sample"] == 0)].set_index("id")
    base, run = first(base_rows), first(run_rows)
    ids = sorted(i for i in base.index.intersection(run.index) if base.at[i, "correct"] and not run.at[i, "correct"])
    return pd.DataFrame([{"id": i, "question": questions[i], "base (correct)": base.at[i, "response"],
                          "after post-training (wrong)": run.at[i, "response"]} for i in ids[:n]])


def examples_html(examples: pd.DataFrame) -> str:
    """The examples as an HTML table whose answers keep their line breaks."""
    import html

    cells = lambda values, tag: "".join(f"<{tag} style='text-align:left;vertical-align:top'>"
                                         f"<pre style='margin:0'>{html.escape(str(v))}</pre></{tag}>" for v in values)
    rows = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in examples.itertuples(index=False))
    return f"<table><tr>{cells(examples.columns, 'th')}</tr>{rows}</table>"
