"""How the tiny profile's post-training hyperparameters were chosen (`make tune`, about 30 minutes).

The paper tuned its baselines' learning rates (App. C: SPoT 1e-6, SFT/RFT/SFT+ 5e-6 on Qwen3-8B). We do
the same, once, for every method alike, on a validation set (never the test sets), keeping the value
with the best IN-DOMAIN accuracy (a tie goes to the smaller value). Retention (IF) is recorded but is not
the criterion, as in the paper, which tuned for reasoning accuracy. No method is tuned against another.
  * learning rate: every method at every rate of LR_GRID (one seed, the profile's beta). A best rate at
    an edge of what was tried is not a best rate: the next rate of LR_LADDER beyond it is run, until the
    best one has a worse neighbour on both sides (or the ladder ends).
  * beta, for the methods whose loss has one (BETA_METHODS), at their chosen rates: BETA_GRID, bracketed
    on BETA_LADDER the same way. DPO's in-domain accuracy moves a lot with beta; a fixed beta would
    decide "DPO gives no in-domain gain" by the choice of beta.
The tables go to results/<profile>/tuning_lr.csv and tuning_beta.csv (committed, shown in notebook 03);
the chosen values are written into configs/<profile>.yaml by hand (training.lr, training.beta_by_method),
and a unit test checks they match.

    python -m spot_utils.tuning [--profile tiny] [--only lr|beta]      (make tune)
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Callable

import pandas as pd

from .config import METHODS, REPO_ROOT, Profile, load_profile
from .experiments import METHOD_DATA, RunSpec, run_grid

LR_LADDER = (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)   # half decades
LR_GRID = (3e-5, 1e-4, 3e-4, 1e-3)                             # where every method starts
BETA_LADDER = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
BETA_GRID = (0.3, 1.0, 3.0)
BETA_METHODS = ("dpo", "reward_sft", "spot_bce", "spot_bco")   # the losses built on the implicit reward
CRITERION = "In-domain Avg"


def results_dir(profile: Profile):
    return REPO_ROOT / "results" / profile.name


def _without_probe(profile: Profile) -> Profile:
    """Tuning runs skip the training-time probe (it only draws curves)."""
    return replace(profile, experiments=replace(profile.experiments, probe_every=0))


def best_values(sweep: pd.DataFrame, column: str) -> dict[str, float]:
    """Per method, the `column` value with the best validation in-domain accuracy (ties: the smaller value)."""
    best = {}
    for method, rows in sweep.groupby("method", sort=False):
        rows = rows.sort_values([column])
        best[method] = float(rows.loc[rows[CRITERION].idxmax(), column])  # idxmax keeps the first (smallest) tie
    return best


def best_learning_rates(sweep: pd.DataFrame) -> dict[str, float]:
    return best_values(sweep, "lr")


def best_betas(sweep: pd.DataFrame) -> dict[str, float]:
    return best_values(sweep, "beta")


def unbracketed(sweep: pd.DataFrame, column: str, ladder: tuple[float, ...]) -> dict[str, float]:
    """Methods whose best value is at an edge of what was tried, with the next value of `ladder` beyond
    that edge (none when the ladder ends there)."""
    out = {}
    for method, best in best_values(sweep, column).items():
        tried = sorted(sweep.loc[sweep.method == method, column])
        i = min(range(len(ladder)), key=lambda k: abs(ladder[k] - best))
        step = -1 if best == tried[0] else 1 if best == tried[-1] else 0
        if step and 0 <= i + step < len(ladder):
            out[method] = ladder[i + step]
    return out


def _bracketed_sweep(profile: Profile, methods, grid, ladder, column: str, spec: Callable[[str, float], RunSpec],
                     known: pd.DataFrame | None = None, progress: bool = True) -> pd.DataFrame:
    """Run every method at every value of `grid` (runs already in `known` are reused), then extend each
    method outward along `ladder` until its best value is bracketed."""
    frame = known if known is not None else pd.DataFrame(columns=["method", column])
    todo = {m: [v for v in grid if not ((frame.method == m) & (frame[column] == v)).any()] for m in methods}
    while any(todo.values()):
        specs = [spec(m, v) for m, values in todo.items() for v in values]
        runs = run_grid(_without_probe(profile), specs, group="tune", progress=progress, split="val")
        frame = pd.concat([frame, runs], ignore_index=True) if len(frame) else runs
        todo = {m: [v] for m, v in unbracketed(frame[frame.method.isin(methods)], column, ladder).items()}
    return frame[frame.method.isin(methods)].sort_values(["method", column]).reset_index(drop=True)


def lr_sweep(profile: Profile, progress: bool = True) -> pd.DataFrame:
    return _bracketed_sweep(profile, METHODS, LR_GRID, LR_LADDER, "lr",
                            lambda m, lr: RunSpec(m, METHOD_DATA[m], profile.seed, lr=lr), progress=progress)


def beta_sweep(profile: Profile, lr_sweep_frame: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """BETA_METHODS over beta at the profile's learning rates. The profile's common beta is the
    learning-rate sweep's run at the chosen rate (the same training), so it is not rerun."""
    t = profile.training
    same = lr_sweep_frame[lr_sweep_frame.method.isin(BETA_METHODS)
                          & (lr_sweep_frame.lr == lr_sweep_frame.method.map(t.lr))].assign(beta=t.beta)
    return _bracketed_sweep(profile, BETA_METHODS, BETA_GRID, BETA_LADDER, "beta",
                            lambda m, b: RunSpec(m, METHOD_DATA[m], profile.seed, beta=b), known=same,
                            progress=progress)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--only", choices=("lr", "beta"), help="one of the two sweeps (beta reads tuning_lr.csv)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    # the lr sweep runs every method at the common beta: the tuned betas come after the rates
    profile = replace(profile, training=replace(profile.training, beta_by_method={}))
    out = results_dir(profile)
    out.mkdir(parents=True, exist_ok=True)

    if args.only != "beta":
        sweep = lr_sweep(profile)
        sweep.to_csv(out / "tuning_lr.csv", index=False)
        print("chosen learning rates (validation in-domain accuracy):")
        for method, lr in best_learning_rates(sweep).items():
            print(f"    {method}: {lr:g}")
        print(f"put them into configs/{profile.name}.yaml (training.lr); a unit test checks they match")
    if args.only != "lr":
        sweep = pd.read_csv(out / "tuning_lr.csv")
        if best_learning_rates(sweep) != profile.training.lr:
            raise SystemExit(f"configs/{profile.name}.yaml does not use the chosen learning rates yet")
        betas = beta_sweep(profile, sweep)
        betas.to_csv(out / "tuning_beta.csv", index=False)
        print(betas[["method", "beta", CRITERION, "IF"]].to_string(index=False))
        print("chosen betas:", {m: f"{b:g}" for m, b in best_betas(betas).items()},
              f"-> configs/{profile.name}.yaml (training.beta_by_method)")
    print(f"tables in {out}")


if __name__ == "__main__":
    main()
