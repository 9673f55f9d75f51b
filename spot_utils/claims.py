"""The paper's claims as one table: each claim, the numbers measured here, and a verdict by one rule.

    from spot_utils import claims
    rows = claims.table_claims(per_run, base, counts)          # Tables 1-3 (notebooks 03, 04)
    rows += claims.curve_claims(curves, retention, "probe/skill")  # Figs 2-4 (notebook 02)
    rows += claims.common_rate_claims(runs, base, counts, lr)  # Fig. 2 at one learning rate (notebook 02)
    rows += claims.section4_claims(curves, landing)            # Sec. 4 (notebook 03)
    claims.frame(rows)                                         # one row per claim, verdict included

The rule (RULE below, printed under every table of claims). Each claim is reduced to one number, the
evidence d, in the claim's own unit and positive when the paper is right (for "SPoT is above SFT
in-domain": SPoT's mean minus SFT's), and a standard error se of d:
  * accuracies: each side is a mean over its seeds; its error adds in quadrature the spread of the seeds
    (sd / sqrt(seeds), none for one seed) and the binomial noise of a finite test set
    (sqrt(p (1 - p) / n) / sqrt(seeds), n = graded answers behind the column);
  * training curves and token analyses: the spread of the seeds (or of the pairs) only; a curve of one
    seed has no measure of its noise, so its claims stay inconclusive.
"Keeps" claims are tested against a margin: "SPoT keeps IF" holds when IF falls by less than MARGIN points.
Verdict: untestable when both sides sit at the same end of an accuracy scale (100% or 0%: nothing could
move, so nothing is shown); otherwise agree if d / se > Z (a one-sided test at 5%), disagree if
d / se < -Z, and inconclusive in between.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import paper_suites
from .config import METHOD_LABELS as LABELS

Z = 1.645        # one-sided 5%
MARGIN = 1.0     # points: a "keeps" claim allows a fall smaller than this
LOSS_NEAR_ZERO = 0.1 * np.log(2)  # a pair loss "near zero": a tenth of its value at the start (log 2, r = 0)
RULE = (f"verdict: d = the claim's evidence (positive = as the paper says), se = its standard error "
        f"(seeds, and binomial noise of the test set for accuracies; none for a curve of one seed: inconclusive); "
        f"agree if d/se > {Z}, disagree if "
        f"d/se < -{Z}, else inconclusive; untestable when both sides sit at 100% (or 0%); "
        f"'keeps' = falls by less than {MARGIN:g} point")
VERDICTS = ("agree", "disagree", "inconclusive", "untestable")
COLUMNS = ("id", "source", "claim", "measured", "d", "se", "verdict", "note")


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a value per seed, and n graded answers per run when it is an accuracy."""
    label: str
    values: tuple[float, ...]
    n: int | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def se(self) -> float:
        k = len(self.values)
        var = float(np.var(self.values, ddof=1)) / k if k > 1 else 0.0
        if self.n:  # binomial noise of a finite test set, for an accuracy in %
            p = min(max(self.mean / 100, 0.0), 1.0)
            var += 100 ** 2 * p * (1 - p) / self.n / k
        return var ** 0.5

    def shown(self) -> str:
        k = len(self.values)
        spread = f" ± {np.std(self.values, ddof=1):.1f}" if k > 1 else ""
        return f"{self.label} {self.mean:.1f}{spread} ({k} seed{'s' if k > 1 else ''})"


def verdict(d: float, se: float, untestable: bool = False) -> str:
    if untestable:
        return "untestable"
    if np.isnan(se):  # no estimate of the noise (a training curve of one seed): nothing is decided
        return "inconclusive"
    if se == 0:
        return "inconclusive" if d == 0 else ("agree" if d > 0 else "disagree")
    z = d / se
    return "agree" if z > Z else "disagree" if z < -Z else "inconclusive"


def row(id: str, source: str, claim: str, measured: str, d: float, se: float, untestable: bool = False,
        note: str = "") -> dict:
    return {"id": id, "source": source, "claim": claim, "measured": measured, "d": float(f"{d:.4g}"),
            "se": float(f"{se:.4g}"), "verdict": verdict(d, se, untestable), "note": note}


def at_bound(side: Side) -> float | None:
    """100 or 0 when every seed of an accuracy sits there, else None."""
    if side.n is None:
        return None
    for bound in (100.0, 0.0):
        if all(abs(v - bound) < 1e-9 for v in side.values):
            return bound
    return None


def compare(id: str, source: str, claim: str, a: Side, b: Side, margin: float = 0.0, note: str = "") -> dict:
    """Claim "a is above b" (margin 0) or "a keeps b's level" (margin MARGIN: a > b - margin). The
    difference is taken between the values as shown (one decimal), so the table reads consistently."""
    d = round(a.mean, 1) - round(b.mean, 1) + margin
    untestable = at_bound(a) is not None and at_bound(a) == at_bound(b)
    measured = f"{a.shown()} vs {b.shown()}: {round(a.mean, 1) - round(b.mean, 1):+.1f}"
    return row(id, source, claim, measured, d, (a.se ** 2 + b.se ** 2) ** 0.5, untestable, note)


# --- Tables 1-3: accuracies of the runs -------------------------------------------------------------

# which graded answers stand behind each headline column: the miniature's rows name their task, the paper's
# their suite (paper_suites)
ANSWER_GROUPS = {
    "task": {"In-domain Avg": ("arithmetic",), "OOD Avg": ("choice", "sequence", "connect4"), "IF": ("skill",),
             "choice": ("choice",)},
    "suite": {"In-domain Avg": paper_suites.IN_DOMAIN, "OOD Avg": paper_suites.OOD, "IF": ("ifeval",),
              "GPQA-D": ("gpqa_diamond",)},
}
GPQA_COLUMNS = ("GPQA-D", "choice")  # the paper's suite, the miniature's analog (multiple choice after a chain of thought)


def answer_counts(rows: pd.DataFrame) -> dict[str, int]:
    """Graded answers behind each headline column, from one run's evaluation rows (the miniature's or the
    paper's suites): the n of the binomial noise."""
    column = next(c for c in ANSWER_GROUPS if c in rows)
    n = rows.groupby(column).size()
    counts = {col: int(n[n.index.isin(names)].sum()) for col, names in ANSWER_GROUPS[column].items()}
    return {**counts, "Overall Avg": int(n.sum())}


def table_claims(per_run: pd.DataFrame, base: dict, counts: dict[str, int] | None = None) -> list[dict]:
    """The claims of Tables 1-3 (PAPER.md, "Reported results"), from one row per run and seed
    (name, seed and the headline columns) and the base's headline."""
    counts = counts or {}

    def side(name: str, col: str) -> Side:
        if name == "base":
            return Side("base", (float(base[col]),), counts.get(col))
        g = per_run[per_run.name == name]
        if g.empty:
            raise KeyError(f"no run {name!r} in the results (runs: {', '.join(sorted(set(per_run.name)))})")
        method, data = name.split("@")
        label = LABELS.get(method, method) + ("" if data in ("pairs", "sft_direct", "correct") else f" on {data}")
        return Side(label, tuple(g[col].astype(float)), counts.get(col))

    def best_other(name: str, names: list[str], col: str) -> Side:
        return max((side(n, col) for n in names if n != name), key=lambda s: s.mean)

    spot, bce = "spot_bco@pairs", "spot_bce@pairs"
    table2 = [spot, bce, "dpo@pairs", "reward_sft@pairs", "dft@pairs"]
    rows = []
    for i, other in enumerate(("sft@sft_direct", "rft@correct", "sft_plus@pairs"), 1):
        rows.append(compare(f"T1.{i}", "Table 1", f"SPoT is above {LABELS[other.split('@')[0]]} in-domain",
                            side(spot, "In-domain Avg"), side(other, "In-domain Avg")))
    rows.append(compare("T1.4", "Table 1", "SPoT keeps IF (IFEval 83.0 -> 84.8)", side(spot, "IF"), side("base", "IF"),
                        MARGIN))
    rows.append(compare("T1.5", "Table 1", "SFT loses IF (83.0 -> 79.6)", side("base", "IF"), side("sft@sft_direct", "IF")))
    rows.append(compare("T1.6", "Table 1", "SPoT gains OOD (+11.5)", side(spot, "OOD Avg"), side("base", "OOD Avg")))
    rows.append(compare("T2.1", "Table 2", "SPoT-BCO has the best overall average of Table 2",
                        side(spot, "Overall Avg"), best_other(spot, table2, "Overall Avg")))
    rows.append(compare("T2.2", "Table 2", "SPoT-BCO has the best in-domain average of Table 2",
                        side(spot, "In-domain Avg"), best_other(spot, table2, "In-domain Avg")))
    rows.append(compare("T2.3", "Table 2", "SPoT-BCE has the best IF of Table 2 (85.8)",
                        side(bce, "IF"), best_other(bce, table2, "IF")))
    gpqa = next((c for c in GPQA_COLUMNS if c in per_run), None)
    if gpqa:
        rows.append(compare("T2.4", "Table 2", "SPoT-BCE has the best GPQA-D of Table 2 (49.5)",
                            side(bce, gpqa), best_other(bce, table2, gpqa),
                            note="" if gpqa == "GPQA-D" else "the miniature's analog: multiple-choice arithmetic"))
    else:
        rows.append(row("T2.4", "Table 2", "SPoT-BCE has the best GPQA-D of Table 2 (49.5)", "no GPQA-D column",
                        0.0, 0.0, untestable=True, note="the runs were scored without a GPQA-D (analog) column"))
    rows.append(compare("T2.5", "Table 2", "DPO keeps IF (84.7)", side("dpo@pairs", "IF"), side("base", "IF"), MARGIN))
    rows.append(compare("T2.6", "Table 2", "DPO gives no in-domain gain (less than 1 point)",
                        side("base", "In-domain Avg"), side("dpo@pairs", "In-domain Avg"), MARGIN))
    rows.append(compare("T2.7", "Table 2", "Reward-SFT keeps IF", side("reward_sft@pairs", "IF"), side("base", "IF"),
                        MARGIN))
    rows.append(compare("T2.8", "Table 2", "Reward-SFT loses in-domain", side("base", "In-domain Avg"),
                        side("reward_sft@pairs", "In-domain Avg")))
    rows.append(compare("T2.9", "Table 2", "DFT is below plain SFT on the same pairs (SFT+) in-domain",
                        side("sft_plus@pairs", "In-domain Avg"), side("dft@pairs", "In-domain Avg")))
    rows.append(compare("T3.1", "Table 3", "rectified y+ is above the Oracle's direct y+ (overall, +5.2)",
                        side(spot, "Overall Avg"), side("spot_bco@direct_pairs", "Overall Avg")))
    rows.append(compare("T3.2", "Table 3", "all pairs are above half of them (overall)",
                        side(spot, "Overall Avg"), side("spot_bco@half", "Overall Avg")))
    rows.append(compare("T3.3", "Table 3", "gamma 0.6 is above gamma 1.0 at equal size (overall)",
                        side(spot, "Overall Avg"), side("spot_bco@gamma1", "Overall Avg")))
    return rows


def common_rate_claims(runs: pd.DataFrame, base: dict, counts: dict[str, int] | None, lr: float) -> list[dict]:
    """Fig. 2 at one learning rate for every method (experiments.common_rate_specs): the test IF of SFT+,
    DPO, Reward-SFT and SPoT-BCO against the base's, where the tuned rates leave every method at the ceiling."""
    n = (counts or {}).get("IF")
    side = lambda method: Side(LABELS[method], tuple(runs[runs.method == method]["IF"].astype(float)), n)
    base_if = Side("base", (float(base["IF"]),), n)
    rows = [compare("F2.4", "Fig. 2", f"SFT+ loses IF (at one rate for all, lr {lr:g})", base_if, side("sft_plus"))]
    for i, m in enumerate(("dpo", "reward_sft", "spot_bco"), 5):
        rows.append(compare(f"F2.{i}", "Fig. 2", f"{LABELS[m]} keeps IF (at the same rate)", side(m), base_if, MARGIN))
    return rows


# --- Figures 2-4 and Section 4: training curves ------------------------------------------------------

def _per_seed(curves: pd.DataFrame, method: str, key: str, where: str = "last") -> dict[int, float]:
    """A method's logged value per seed, averaged over the first, middle or last third of its logged
    steps (a logged training value is one batch's: a third of the run smooths it); a retention probe
    logged at only a few steps is read at its first and last step instead."""
    out = {}
    for seed, g in curves[curves.method == method].dropna(subset=[key]).groupby("seed"):
        v = g.sort_values("step")[key].to_numpy(dtype=float)
        if len(v) < 6:
            out[int(seed)] = float(v[{"first": 0, "mid": len(v) // 2, "last": -1}[where]])
            continue
        thirds = np.array_split(v, 3)
        out[int(seed)] = float(thirds[{"first": 0, "mid": 1, "last": 2}[where]].mean())
    if not out:
        raise KeyError(f"no logged {key!r} for {method!r}")
    return out


def _seed_row(id, source, claim, values: dict[int, float], measured: str, untestable: bool = False) -> dict:
    v = np.array(list(values.values()))
    se = float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # one seed: no spread to measure
    return row(id, source, claim, f"{measured} ({len(v)} seed{'s' if len(v) > 1 else ''})", v.mean(), se, untestable)


def curve_claims(curves: pd.DataFrame, retention: pd.DataFrame, retention_key: str) -> list[dict]:
    """Figs 2-4 from the logged training curves (loss, rewards/chosen, rewards/rejected per step) of
    SFT+, DPO and Reward-SFT, and a retention curve (`retention_key`: the greedy skill probe in the
    miniature, IFEval on the kept checkpoints at the paper's scale), each per method, seed and step."""
    def retention_change(method):  # last minus first accuracy per seed; untestable when all of it sits at 100 (or 0)
        first, last = _per_seed(retention, method, retention_key, "first"), _per_seed(retention, method, retention_key)
        values = list(first.values()) + list(last.values())
        bound = any(all(abs(v - b) < 1e-9 for v in values) for b in (100.0, 0.0))
        shown = f"{retention_key} {np.mean(list(first.values())):.1f} -> {np.mean(list(last.values())):.1f}"
        return {s: last[s] - first[s] for s in last}, shown, bound

    rows = []
    fall, shown, bound = retention_change("sft_plus")
    rows.append(_seed_row("F2.1", "Fig. 2", "SFT+'s retention falls over training", {s: -v for s, v in fall.items()},
                          shown, bound))
    for i, m in enumerate(("dpo", "reward_sft"), 2):
        kept, shown, bound = retention_change(m)
        rows.append(_seed_row(f"F2.{i}", "Fig. 2", f"{LABELS[m]}'s retention stays (falls by less than {MARGIN:g} point)",
                              {s: v + MARGIN for s, v in kept.items()}, shown, bound))
    for i, m in enumerate(("reward_sft", "dpo"), 1):
        last = _per_seed(curves, m, "loss")
        rows.append(_seed_row(f"F3.{i}", "Fig. 3", f"{LABELS[m]}'s loss goes near zero (below a tenth of log 2)",
                              {s: LOSS_NEAR_ZERO - v for s, v in last.items()},
                              f"loss over the last third {np.mean(list(last.values())):.3f}, threshold {LOSS_NEAR_ZERO:.3f}"))
    first, last = _per_seed(curves, "sft_plus", "loss", "first"), _per_seed(curves, "sft_plus", "loss")
    rows.append(_seed_row("F3.3", "Fig. 3", "SFT+'s loss stays high (above a tenth of its first third)",
                          {s: last[s] - first[s] / 10 for s in last},
                          f"loss by thirds {np.mean(list(first.values())):.3f} -> {np.mean(list(last.values())):.3f}"))
    rw = {w: _per_seed(curves, "reward_sft", "rewards/chosen", w) for w in ("first", "mid", "last")}
    rows.append(_seed_row("F4.1", "Fig. 4", "Reward-SFT's chosen reward plateaus (its last third rises < 1/3 as much as its second)",
                          {s: (rw["mid"][s] - rw["first"][s]) / 3 - (rw["last"][s] - rw["mid"][s]) for s in rw["last"]},
                          "r+ by thirds " + " -> ".join(f"{np.mean(list(rw[w].values())):.2f}" for w in rw)))
    sp = {w: _per_seed(curves, "sft_plus", "rewards/chosen", w) for w in ("mid", "last")}
    rows.append(_seed_row("F4.2", "Fig. 4", "SFT+'s chosen reward keeps rising (last third above the middle one)",
                          {s: sp["last"][s] - sp["mid"][s] for s in sp["last"]},
                          "r+ middle -> last third " + " -> ".join(f"{np.mean(list(sp[w].values())):.2f}" for w in sp)))
    for i, m in enumerate(("sft_plus", "reward_sft"), 3):
        r_neg = _per_seed(curves, m, "rewards/rejected")
        rows.append(_seed_row(f"F4.{i}", "Fig. 4", f"pull-up: {LABELS[m]} raises the reward of y- (r- > 0 at the end)", r_neg,
                              f"r- over the last third {np.mean(list(r_neg.values())):+.2f}"))
    dpo = {w: _per_seed(curves, "dpo", "rewards/chosen", w) for w in ("first", "mid", "last")}
    rows.append(_seed_row("F4.5", "Fig. 4", "DPO's chosen reward stalls late (its last third rises < 1/3 as much as its second)",
                          {s: (dpo["mid"][s] - dpo["first"][s]) / 3 - (dpo["last"][s] - dpo["mid"][s]) for s in dpo["last"]},
                          "r+ by thirds " + " -> ".join(f"{np.mean(list(dpo[w].values())):.2f}" for w in dpo)))
    neg = _per_seed(curves, "dpo", "rewards/rejected")
    rows.append(_seed_row("F4.6", "Fig. 4", "DPO's rejected reward falls (r- < 0 at the end)", {s: -v for s, v in neg.items()},
                          f"r- over the last third {np.mean(list(neg.values())):+.2f}"))
    pos = dpo["last"]
    rows.append(_seed_row("F4.7", "Sec. 3", "DPO widens the margin mainly by pushing y- down (-r- > r+ at the end)",
                          {s: -neg[s] - pos[s] for s in neg},
                          f"r+ {np.mean(list(pos.values())):+.2f}, r- {np.mean(list(neg.values())):+.2f}"))
    return rows


def shared_share(changes: pd.DataFrame) -> pd.Series:
    """Per pair, the share (%) of the absolute change of log pi (y+ and y- together) that falls on the
    shared prefix, from analysis.logp_change_by_region's rows."""
    g = changes.assign(shared=changes.change_shared.abs(), divergent=changes.change_divergent.abs()) \
               .groupby("id", sort=False)[["shared", "divergent"]].sum()
    total = (g.shared + g.divergent).replace(0, np.nan)
    return (100 * g.shared / total).dropna()


def section4_claims(curves: pd.DataFrame, landing: dict[str, pd.DataFrame]) -> list[dict]:
    """Sec. 4: BCE's positive term saturates earlier than BCO's (tether 1 - sigmoid(r+) vs
    1 - sigmoid(r+ - delta) at the end of training, per seed), and SPoT's update lands on the divergent
    tokens (its share of |change| on the shared prefix below SFT+'s, per pair, so that every pair counts
    once; the pooled share, where pairs with large changes dominate, is given beside it; `landing`:
    per-pair changes by method label, analysis.logp_change_by_region)."""
    sig = lambda x: 1 / (1 + np.exp(-x))
    bce = _per_seed(curves, "spot_bce", "rewards/chosen")
    bco, delta = _per_seed(curves, "spot_bco", "rewards/chosen"), _per_seed(curves, "spot_bco", "delta")
    lam_bce = {s: 1 - sig(v) for s, v in bce.items()}
    lam_bco = {s: 1 - sig(bco[s] - delta[s]) for s in bco}
    a, b = Side("BCO", tuple(lam_bco.values())), Side("BCE", tuple(lam_bce.values()))
    se = (a.se ** 2 + b.se ** 2) ** 0.5 if len(a.values) > 1 else float("nan")  # one seed: no spread to measure
    rows = [row("S4.1", "Sec. 4", "BCE's positive term saturates earlier than BCO's (a smaller 1 - sigmoid at the end)",
                f"tether over the last third: BCO {a.mean:.1e} vs BCE {b.mean:.1e} ({len(a.values)} seeds)", a.mean - b.mean,
                se)]
    spot, sftp = shared_share(landing["SPoT-BCO"]), shared_share(landing["SFT+"])
    d = sftp.mean() - spot.mean()
    se = (sftp.var(ddof=1) / len(sftp) + spot.var(ddof=1) / len(spot)) ** 0.5
    ref = landing["SFT+"]
    per_token = ref.ref_logp_shared.sum() / max(int(ref.shared_tokens.sum()), 1)
    pooled = {m: 100 * landing[m].change_shared.abs().sum()
              / (landing[m].change_shared.abs() + landing[m].change_divergent.abs()).sum() for m in ("SPoT-BCO", "SFT+")}
    rows.append(row("S4.2", "Sec. 4", "SPoT's update lands on divergent tokens (a smaller shared-prefix share than SFT+)",
                    f"share of |change| on the shared prefix: SPoT-BCO {spot.mean():.1f}% vs SFT+ {sftp.mean():.1f}% "
                    f"({len(spot)} pairs, 1 seed)", d, se,
                    note=f"pooled over all pairs instead (large changes weigh more): SPoT-BCO {pooled['SPoT-BCO']:.1f}% "
                         f"vs SFT+ {pooled['SFT+']:.1f}%; reference log p per shared token {per_token:.3f}"))
    return rows


# --- the table, its files and the README's summary ---------------------------------------------------

def frame(rows: list[dict]) -> pd.DataFrame:
    """The claims as a table, one row per claim id, in the paper's order: Tables (T), Figures (F), Sections (S)."""
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    if out.id.duplicated().any():
        raise ValueError(f"claim ids repeat: {sorted(out.id[out.id.duplicated()])}")
    key = out.id.map(lambda i: ("TFS".find(i[0]), *(int(p) if p.isdigit() else p for p in i[1:].split("."))))
    return out.iloc[sorted(range(len(out)), key=lambda k: key.iloc[k])].reset_index(drop=True)


def shown(claims: pd.DataFrame) -> pd.DataFrame:
    """What a notebook displays: claim, numbers, d and se (3 significant digits), verdict."""
    out = claims.set_index("id")[["source", "claim", "measured", "d", "se", "verdict", "note"]].copy()
    out["d"] = out["d"].map(lambda v: f"{v:+.3g}")
    out["se"] = out["se"].map(lambda v: "none" if np.isnan(v) else f"{v:.3g}")
    return out


def write(claims: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    claims.to_csv(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    if not Path(path).exists():
        raise FileNotFoundError(f"missing {path}: the notebook that tests these claims writes it "
                                f"(02_implicit_regularization, 03_spot_training)")
    return pd.read_csv(path).fillna({"note": ""})  # se stays NaN where a one-seed curve has none


def markdown(claims: pd.DataFrame, where: str) -> str:
    """The README's "what the miniature reproduces": the claims grouped by verdict, each with its numbers."""
    heads = {"agree": "Reproduces", "disagree": "Does not reproduce", "inconclusive": "Inconclusive (within noise)",
             "untestable": "Untestable here"}
    counts = claims.verdict.value_counts()
    lines = [f"{len(claims)} claims of the paper, tested {where}: "
             + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS) + f". Rule: {RULE}.", ""]
    for v in VERDICTS:
        part = claims[claims.verdict == v]
        if part.empty:
            continue
        lines.append(f"**{heads[v]}** ({len(part)})")
        lines.append("")
        for r in part.itertuples():
            note = f"; {r.note}" if r.note else ""
            lines.append(f"- {r.id} ({r.source}) {r.claim}: {r.measured}{note}")
        lines.append("")
    return "\n".join(lines)
