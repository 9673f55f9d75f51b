"""How the tiny profile's post-training hyperparameters were chosen (`make tune`, about 20 minutes).

The paper tuned its baselines' learning rates (App. C: SPoT 1e-6, SFT/RFT/SFT+ 5e-6 on Qwen3-8B). We do
the same, once, for every method alike:
  * learning rate: each method is trained at every rate of LR_GRID (one seed, beta from the profile)
    and keeps the rate with the best IN-DOMAIN accuracy on a validation set (never the test sets);
    a tie goes to the smaller rate. Retention (IF) is recorded but is not the criterion, as in the
    paper, which tuned for reasoning accuracy. No method is tuned against another.
  * beta is not tuned: it follows from a scale argument (notebook 03). BETA_GRID shows how sensitive
    the pair objectives are to it, at their chosen rates.
The tables go to results/<profile>/tuning_lr.csv and tuning_beta.csv (committed, shown in notebook 03);
the chosen rates are written into configs/<profile>.yaml by hand, and a unit test checks they match.

    python -m spot_utils.tuning [--profile tiny] [--only lr|beta]      (make tune)
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd

from .config import METHODS, REPO_ROOT, Profile, load_profile
from .experiments import METHOD_DATA, RunSpec, run_grid

LR_GRID = (3e-5, 1e-4, 3e-4, 1e-3)
BETA_GRID = (0.1, 0.3, 1.0, 3.0)
BETA_METHODS = ("dpo", "spot_bco")
CRITERION = "In-domain Avg"


def results_dir(profile: Profile):
    return REPO_ROOT / "results" / profile.name


def _without_probe(profile: Profile) -> Profile:
    """Tuning runs skip the training-time probe (it only draws curves)."""
    return replace(profile, experiments=replace(profile.experiments, probe_every=0))


def lr_sweep(profile: Profile, progress: bool = True) -> pd.DataFrame:
    specs = [RunSpec(m, METHOD_DATA[m], profile.seed, lr=lr) for m in METHODS for lr in LR_GRID]
    return run_grid(_without_probe(profile), specs, group="tune", progress=progress, split="val")


def best_learning_rates(sweep: pd.DataFrame) -> dict[str, float]:
    """Per method, the rate with the best validation in-domain accuracy (ties: the smaller rate)."""
    best = {}
    for method, rows in sweep.groupby("method", sort=False):
        rows = rows.sort_values(["lr"])
        best[method] = float(rows.loc[rows[CRITERION].idxmax(), "lr"])  # idxmax keeps the first (smallest) tie
    return best


def beta_sweep(profile: Profile, lr_sweep_frame: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """BETA_METHODS at every beta of BETA_GRID, at the profile's learning rates. The profile's own beta
    is the learning-rate sweep's run at the chosen rate (the same training), so it is not rerun."""
    t = profile.training
    specs = [RunSpec(m, "pairs", profile.seed, beta=b) for m in BETA_METHODS for b in BETA_GRID if b != t.beta]
    frame = run_grid(_without_probe(profile), specs, group="tune", progress=progress, split="val")
    same = lr_sweep_frame[lr_sweep_frame.method.isin(BETA_METHODS)
                          & (lr_sweep_frame.lr == lr_sweep_frame.method.map(t.lr))].assign(beta=t.beta)
    return pd.concat([frame, same]).sort_values(["method", "beta"]).reset_index(drop=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--only", choices=("lr", "beta"), help="one of the two sweeps (beta reads tuning_lr.csv)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    out = results_dir(profile)
    out.mkdir(parents=True, exist_ok=True)

    if args.only != "beta":
        sweep = lr_sweep(profile)
        sweep.to_csv(out / "tuning_lr.csv", index=False)
        best = best_learning_rates(sweep)
        print("chosen learning rates (validation in-domain accuracy):")
        for method in METHODS:
            print(f"    {method}: {best[method]:g}")
        print(f"put them into configs/{profile.name}.yaml (training.lr); a unit test checks they match")
    if args.only != "lr":
        sweep = pd.read_csv(out / "tuning_lr.csv")
        if best_learning_rates(sweep) != profile.training.lr:
            raise SystemExit(f"configs/{profile.name}.yaml does not use the chosen learning rates yet")
        betas = beta_sweep(profile, sweep)
        betas.to_csv(out / "tuning_beta.csv", index=False)
        print(betas[["method", "beta", CRITERION, "IF"]].to_string(index=False))
    print(f"tables in {out}")


if __name__ == "__main__":
    main()
