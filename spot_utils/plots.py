"""Figures shared by the notebooks and the README: one function per figure, saved as PNG and PDF."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless runs (papermill, CI); notebooks still show figures inline
import matplotlib.pyplot as plt  # noqa: E402

from .config import METHOD_LABELS, Profile  # noqa: E402
from .environment import output_root  # noqa: E402

COLORS = {"arithmetic": "#1f77b4", "skill": "#2ca02c", "choice": "#9467bd", "sequence": "#ff7f0e", "connect4": "#d62728"}  # by task name


def figure_dir(profile: Profile) -> Path:
    """figures/ of environment.output_root() for a profile whose outputs are the repository's (tiny: committed),
    else runs/<profile>/figures/ (profile.outputs)."""
    path = (output_root() if profile.outputs == "repo" else profile.runs) / "figures"
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
# post-training (notebooks 02 and 03)

METHOD_COLORS = {"sft": "#7f7f7f", "rft": "#8c564b", "sft_plus": "#d62728", "dft": "#e377c2", "dpo": "#1f77b4",
                 "reward_sft": "#ff7f0e", "spot_bce": "#17becf", "spot_bco": "#2ca02c"}
LABEL_METHODS = {label: method for method, label in METHOD_LABELS.items()}


def plot_tether(r_marked: float = 10.0, observed=None, title: str = "The elastic tether of Eq. 6"):
    """Left: lambda(r) = 1 - sigmoid(r), the factor that scales Reward-SFT's gradient against SFT's
    constant 1, with the paper's example r = 10 marked. Right (when `observed` rewards are given): their
    histogram on the same r axis, the pairs beyond it counted in its last bin (and in the title)."""
    import numpy as np
    import torch

    from .losses import tether

    panels = 2 if observed is not None and len(observed) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    r = np.linspace(-6, 14, 400)
    ax.plot(r, tether(torch.tensor(r)).numpy(), color="#ff7f0e", label=r"Reward-SFT: $\lambda(r) = 1-\sigma(r)$")
    ax.axhline(1.0, color="#d62728", ls="--", label="SFT: 1 (no tether)")
    lam_mark = float(tether(torch.tensor(r_marked, dtype=torch.float64)))
    ax.scatter([r_marked], [lam_mark], color="k", zorder=3,
               label=f"r = {r_marked:g}: $\\lambda$ = {lam_mark:.1e} ({1 / lam_mark:,.0f}x below SFT)")
    ax.set_yscale("log")
    ax.set_xlabel("implicit reward r(x, y+)  (nats x beta)")
    ax.set_ylabel("gradient scale (vs SFT's 1)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    ax.set_title("gradient scale")
    if panels == 2:  # the same r axis; the pairs beyond it are counted, their lambda is below lambda(14)
        obs = np.asarray(observed, dtype=float)
        ax = axes[0, 1]
        low, high = r[0], r[-1]
        ax.hist(np.clip(obs, low, high), bins=np.linspace(low, high, 41), color="grey")
        median = float(np.median(obs))
        ax.axvline(median, color="k", ls=":", label=f"median r = {median:.1f} ($\\lambda$ = "
                   f"{float(tether(torch.tensor(median, dtype=torch.float64))):.2f})")
        ax.set_xlim(low, high)
        ax.set_xlabel("r(x, y+) of the trained pairs (clipped to the left axis)")
        ax.set_ylabel("pairs")
        beyond = int((obs > high).sum())
        ax.set_title(f"{len(obs)} pairs; {beyond} beyond r = {high:g} (counted in the last bin)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_update_landing(shares: dict, changes: dict, title: str = "Where the update lands (Sec. 4)"):
    """Left: per method, the share (%) of the absolute change of log pi that falls on the shared prefix of
    y+ and y- (mean over pairs, +- one standard error; claims.shared_share). Right: the mean change of
    log pi per pair on the divergent tokens of y+ and of y- (nats), the part that differs between methods.
    `shares` maps a method label to its per-pair shares, `changes` to analysis.logp_change_by_region rows."""
    import numpy as np

    labels = list(shares)
    colors = [METHOD_COLORS.get(LABEL_METHODS.get(m, m), "#7f7f7f") for m in labels]
    fig, (ax_share, ax_change) = plt.subplots(1, 2, figsize=(10, 3.6))
    means = [shares[m].mean() for m in labels]
    errors = [shares[m].std(ddof=1) / np.sqrt(len(shares[m])) for m in labels]
    bars = ax_share.bar(labels, means, yerr=errors, color=colors, capsize=3)
    ax_share.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    ax_share.set_ylabel("share of |change of log pi| on\nthe shared prefix (%, per pair)")
    ax_share.set_ylim(0, max(means) * 1.3 + 1)
    ax_share.grid(alpha=0.3, axis="y")
    x = np.arange(len(labels))
    for k, (side, hatch) in enumerate((("y+", ""), ("y-", "//"))):
        values = [changes[m][changes[m].response == side].change_divergent.mean() for m in labels]
        bars = ax_change.bar(x + (k - 0.5) * 0.38, values, 0.38, color=colors, hatch=hatch, edgecolor="white",
                             label=f"{side}, divergent tokens")
        ax_change.bar_label(bars, fmt="%+.2f", fontsize=7, padding=2)
    ax_change.axhline(0, color="k", lw=0.8)
    ax_change.margins(y=0.15)  # room for the value labels
    ax_change.set_xticks(x, labels)
    ax_change.set_ylabel("mean change of log pi per pair (nats)")
    ax_change.legend(fontsize=8)
    ax_change.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_over_steps(curves, panels, title: str = "", ncols: int | None = None, base: dict | None = None,
                    ylims: dict | None = None):
    """One panel per (key, ylabel) in `panels`. `curves` is a frame with columns method, seed, step and
    one column per key (see experiments.curves); each method is its mean over seeds with the min-max
    band (the legend says how many seeds). `base` maps a key to the base model's value (a dotted line);
    `ylims` a key to (low, high)."""
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, (key, ylabel) in zip(axes.flat, panels):
        for method, g in curves.dropna(subset=[key]).groupby("method", sort=False):
            stats = g.groupby("step")[key].agg(["mean", "min", "max"])
            color = METHOD_COLORS.get(method)
            seeds = g.seed.nunique()
            ax.plot(stats.index, stats["mean"], color=color, marker=".",
                    label=f"{METHOD_LABELS.get(method, method)} ({seeds} seed{'s' if seeds > 1 else ''})")
            if g.seed.nunique() > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
        if base and key in base:
            ax.axhline(base[key], color="k", ls=":", lw=1, label="base")
        if ylims and key in ylims:
            ax.set_ylim(*ylims[key])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)  # every panel: a reader may look at one alone
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
