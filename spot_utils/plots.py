"""Figures shared by the notebooks and the README: one function per figure, saved as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless runs (papermill, CI); notebooks still show figures inline
import matplotlib.pyplot as plt  # noqa: E402

from .config import Profile  # noqa: E402
from .environment import output_root  # noqa: E402

COLORS = {"arithmetic": "#1f77b4", "skill": "#2ca02c", "connect4": "#d62728"}  # by task name


def figure_dir(profile: Profile) -> Path:
    """Tiny figures are committed under figures/ (of environment.output_root()); any other profile's go to
    runs/<profile>/figures/."""
    path = output_root() / "figures" if profile.is_tiny else profile.runs / "figures"
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


# -----------------------------------------------------------------------------
# post-training (notebooks 01 and 03)

METHOD_COLORS = {"sft": "#7f7f7f", "rft": "#8c564b", "sft_plus": "#d62728", "dft": "#e377c2", "dpo": "#1f77b4",
                 "reward_sft": "#ff7f0e", "spot_bce": "#17becf", "spot_bco": "#2ca02c"}
METHOD_LABELS = {"sft": "SFT", "rft": "RFT", "sft_plus": "SFT+", "dft": "DFT", "dpo": "DPO",
                 "reward_sft": "Reward-SFT", "spot_bce": "SPoT-BCE", "spot_bco": "SPoT-BCO"}


def plot_tether(r_marked: float = 10.0, observed=None, title: str = "The elastic tether of Eq. 6"):
    """lambda(r) = 1 - sigmoid(r), the factor that scales Reward-SFT's gradient against SFT's constant 1,
    with the paper's example r = 10 marked and, optionally, a histogram of observed rewards."""
    import numpy as np
    import torch

    from .losses import tether

    r = np.linspace(-6, 14, 400)
    lam = tether(torch.tensor(r)).numpy()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(r, lam, color="#ff7f0e", label=r"Reward-SFT: $\lambda(r) = 1-\sigma(r)$")
    ax.axhline(1.0, color="#d62728", ls="--", label="SFT: 1 (no tether)")
    lam_mark = float(tether(torch.tensor(r_marked, dtype=torch.float64)))
    ax.scatter([r_marked], [lam_mark], color="k", zorder=3)
    ax.annotate(f"r = {r_marked:g}: lambda = {lam_mark:.1e}\n({1 / lam_mark:,.0f}x smaller than SFT)",
                (r_marked, lam_mark), textcoords="offset points", xytext=(-150, 40), fontsize=8,
                arrowprops={"arrowstyle": "->"})
    if observed is not None and len(observed):
        ax2 = ax.twinx()
        ax2.hist(observed, bins=30, color="grey", alpha=0.3)
        ax2.set_ylabel("pairs (observed rewards)", color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("implicit reward r(x, y+)")
    ax.set_ylabel("gradient scale")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_over_steps(curves, panels, title: str = "", ncols: int | None = None, base: dict | None = None,
                    ylims: dict | None = None):
    """One panel per (key, ylabel) in `panels`. `curves` is a frame with columns method, seed, step and
    one column per key (see experiments.curves); each method is its mean over seeds with the min-max
    band. `base` maps a key to the base model's value (a dotted line); `ylims` a key to (low, high)."""
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, (key, ylabel) in zip(axes.flat, panels):
        for method, g in curves.dropna(subset=[key]).groupby("method", sort=False):
            stats = g.groupby("step")[key].agg(["mean", "min", "max"])
            color = METHOD_COLORS.get(method)
            ax.plot(stats.index, stats["mean"], color=color, label=METHOD_LABELS.get(method, method), marker=".")
            if g.seed.nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
        if base and key in base:
            ax.axhline(base[key], color="k", ls=":", lw=1, label="base")
        if ylims and key in ylims:
            ax.set_ylim(*ylims[key])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
