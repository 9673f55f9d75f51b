"""Figures shared by the notebooks and the README: one function per figure, saved as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless runs (papermill, CI); notebooks still show figures inline
import matplotlib.pyplot as plt  # noqa: E402

from .config import REPO_ROOT, Profile  # noqa: E402

COLORS = {"arithmetic": "#1f77b4", "skill": "#2ca02c", "connect4": "#d62728"}  # by task name


def figure_dir(profile: Profile) -> Path:
    """Tiny figures are committed under figures/; any other profile's go to runs/<profile>/figures/."""
    path = REPO_ROOT / "figures" if profile.is_tiny else profile.runs / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, profile: Profile, name: str) -> Path:
    """Write name.png (for the README) and name.pdf (for papers) without timestamps, so a rerun
    with the same numbers gives the same files."""
    out = figure_dir(profile)
    fig.savefig(out / f"{name}.png", dpi=130, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None})
    return out / f"{name}.png"


def plot_pretraining(history: list[dict], curriculum_steps: int = 0, title: str = "Base pretraining of the tiny model"):
    """Left: response-token loss per task family. Right: greedy accuracy on the validation probe."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [h["step"] for h in history]
    for task, color in COLORS.items():
        for ax, key in ((ax_loss, f"loss/{task}"), (ax_acc, f"probe/{task}")):
            pts = [(s, h[key] * (100 if ax is ax_acc else 1)) for s, h in zip(steps, history) if key in h]
            if pts:
                ax.plot(*zip(*pts), label=task, color=color, marker="o" if ax is ax_acc else None)
    for ax in (ax_loss, ax_acc):
        if curriculum_steps:
            ax.axvspan(0, curriculum_steps, color="grey", alpha=0.12, label="skills-heavy start")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("response-token loss (nats)")
    ax_acc.set_ylabel("greedy accuracy on the probe (%)")
    ax_acc.set_ylim(-3, 103)
    ax_loss.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_change_ratios(ratios, gamma: float, title: str = "LCS change ratio of rectified pairs (cf. App. E)"):
    """Histogram of R_LCS = 1 - |LCS(y-, y+)| / |y+| with the gamma threshold marked."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ratios = np.asarray(ratios, dtype=float)
    ax.hist(ratios, bins=np.linspace(0, 1, 41), color="#4c72b0", edgecolor="white")
    ax.axvline(gamma, color="#c44e52", ls="--", lw=2, label=f"gamma = {gamma:g}: keep {np.mean(ratios <= gamma):.0%}")
    ax.set_xlabel("change ratio R_LCS(y-, y+)")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def pair_html(tokenizer, rejected: str, chosen: str) -> str:
    """y- and y+ side by side, characters outside one LCS alignment highlighted (red: removed from
    y-, green: written by the Oracle into y+)."""
    import html

    from .rectify import edit_spans

    def marked(text, other, color):
        ids = tokenizer.encode(text, add_special_tokens=False)
        spans = edit_spans(tokenizer.encode(other, add_special_tokens=False), ids)
        toks = [tokenizer.decode([t]) for t in ids]
        flags = [False] * len(toks)
        for a, b in spans:
            flags[a:b] = [True] * (b - a)
        return "".join(f"<span style='background:{color}'>{html.escape(t)}</span>" if f else html.escape(t)
                       for t, f in zip(toks, flags))

    cell = "<td style='vertical-align:top;text-align:left'><pre style='margin:0'>{}</pre></td>"
    return ("<table><tr><th>y- (the policy's wrong answer)</th><th>y+ (the Oracle's minimal edit)</th></tr><tr>"
            + cell.format(marked(rejected, chosen, "#f4b6b6")) + cell.format(marked(chosen, rejected, "#b6e3b6"))
            + "</tr></table>")
