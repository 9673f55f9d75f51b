"""Tables 1-3 of the paper, for the miniature and beside the paper's reported numbers (notebook 04, README).

The paper's numbers are a constant, cited table (PAPER_TABLE_1: the released README's Table 1 for
Qwen3-8B and Llama-3.1-8B-Instruct, arXiv 2603.01683). Every other number is computed from the
per-example grades the earlier notebooks wrote.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import Profile
from .environment import output_root
from .plots import METHOD_LABELS

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
    """"mean ± sd (delta)" strings per column, as in the paper's tables."""
    out = pd.DataFrame(index=tab.index)
    out["method"] = tab["label"]
    for c in COLUMNS:
        cells = []
        for run, r in tab.iterrows():
            s = f"{r[c]:.1f}"
            if run != "base":
                if not np.isnan(r.get(f"{c} sd", np.nan)):
                    s += f" ± {r[f'{c} sd']:.1f}"
                s += f" ({r[f'{c} delta']:+.1f})"
            cells.append(s)
        out[c] = cells
        if paper:
            out[f"paper {c}"] = [("" if np.isnan(r[f"paper {c}"]) else f"{r[f'paper {c}']:.1f}"
                                  + ("" if run == "base" else f" ({r[f'paper {c} delta']:+.1f})"))
                                 for run, r in tab.iterrows()]
    out["seeds"] = tab["seeds"].values
    return out


def tables_dir(profile: Profile) -> Path:
    """Where notebook 04 writes a profile's tables: the tiny ones are committed under results/tiny/ (of
    environment.output_root(), so `make nbval` writes under runs/ and leaves them alone); any other
    profile's go to runs/<profile>/results/, beside its figures."""
    path = output_root() / "results" / profile.name if profile.is_tiny else profile.runs / "results"
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
    """Grouped bars (in-domain, OOD, IF) per method with the seeds' standard deviation."""
    import matplotlib.pyplot as plt

    cols = ("In-domain Avg", "OOD Avg", "IF")
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    fig, ax = plt.subplots(figsize=(1.1 * len(tab) + 2, 3.8))
    x = np.arange(len(tab))
    width = 0.26
    for k, (c, color) in enumerate(zip(cols, colors)):
        err = tab.get(f"{c} sd", pd.Series(np.nan, index=tab.index)).fillna(0).values
        ax.bar(x + (k - 1) * width, tab[c].values, width, yerr=err, color=color, label=c, capsize=2)
    ax.set_xticks(x, tab["label"], rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 120)  # room for the legend above the 100% bars
    ax.legend(ncol=3, fontsize=8, loc="upper center")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title)
    fig.tight_layout()
    return fig
