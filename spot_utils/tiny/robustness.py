"""make robustness: the paper's claims decided on three base models, not one (issue 16).

    python -m spot_utils.tiny.robustness [--profile tiny] [--bases 0 1 2]

A base is the profile run with another seed: its own world draws, pretraining, elicitation and Oracle
data. On each base the runs of Tables 1-3 (and of Fig. 2 at one learning rate) train with one
post-training seed (the profile's first), and
every claim of spot_utils.claims is decided by the same rule as in the notebooks. Base seed 0 is the
profile itself (runs/<profile>/, what `make reproduce` made: reused when cached); the others live under
runs/<profile>/robustness/base<seed>/. Writes results/<profile>/robustness.csv (one row per base and
claim, a base_seed column), robustness_bases.csv (each base's headline and data sizes) and robustness.md
(the README's summary: each claim's verdict on every base, and which hold on all of them).
"""
from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from .. import analysis, claims, experiments, pipeline
from ..config import METHOD_LABELS, Profile, load_profile
from ..data import read_jsonl
from ..evaluation import evaluate_profile
from ..modeling import base_dir
from ..tables import tables_dir
from ..tasks import load_base
from . import world
from .calibration import calibration_targets
from .pretrain import BASE_EVAL_ROWS, pretrain_base

LANDING_PAIRS = 300  # pairs of the Sec. 4 analysis, as in notebook 03


def base_profile(name: str, base_seed: int) -> Profile:
    """The profile on base `base_seed`: the profile itself for seed 0, else its own run folder."""
    if base_seed == 0:
        return load_profile(name)
    return load_profile(name, seed=base_seed, run_dir=f"runs/{name}/robustness/base{base_seed}")


def one_seed_specs(profile: Profile) -> list[experiments.RunSpec]:
    """Every run of Tables 1-3 on the profile's first post-training seed (the same runs, and cache
    entries, that notebooks 02 and 03 train on that seed)."""
    first = profile.experiments.seeds[0]
    return [s for s in experiments.table_specs(profile) if s.seed == first]


def base_rows(profile: Profile) -> pd.DataFrame:
    """The base's graded test answers (notebook 00's evaluation), computed once and kept beside the base."""
    path = base_dir(profile) / BASE_EVAL_ROWS
    if not path.exists():
        model, tokenizer = load_base(profile)
        rows = evaluate_profile(model, tokenizer, profile, world.test_sets(profile.world, profile.seed),
                                desc=f"evaluate base {profile.seed}")
        rows.to_csv(path, index=False)
    return pd.read_csv(path)


def pretrain_bases(profiles: list[Profile]) -> None:
    """Pretrain the bases side by side, one process each (up to one per core): pretraining runs on one
    thread (pretrain.threads), so two bases take the time of one on two cores, with the same bits.
    Cached bases return at once."""
    workers = min(len(profiles), experiments.grid_workers(profiles[0]))
    if workers <= 1 or any(p.pretrain.threads > 1 for p in profiles):
        return  # claims_on_base pretrains each in turn
    # one thread each, its families one after another (family_threads changes no bit and no hash)
    alone = [dataclasses.replace(p, pretrain=dataclasses.replace(p.pretrain, family_threads=1)) for p in profiles]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for meta, p in zip(pool.map(_pretrain_quietly, alone), profiles):
            done = "cached" if meta["reused"] else f"pretrained in {meta['train_seconds']:.0f} s"
            print(f"base seed {p.seed}: {done}", flush=True)


def _pretrain_quietly(profile: Profile) -> dict:
    return pretrain_base(profile, progress=False)


def claims_on_base(profile: Profile) -> tuple[pd.DataFrame, dict]:
    """Pretrain (or reuse) the base, make its data, train the one-seed runs, and decide every claim.
    Returns the claims and a headline of the base (its scores and data sizes)."""
    pretrain_base(profile)
    rows = base_rows(profile)
    base = world.scores(rows)
    sizes = pipeline.make_datasets(profile)
    specs, common = one_seed_specs(profile), experiments.common_rate_specs(profile)
    grid = experiments.run_grid(profile, specs + common)
    is_common = grid.name.isin([s.name for s in common])
    curves = experiments.curves([experiments.load_run(profile, s) for s in specs])
    pairs = read_jsonl(experiments.table_datasets(profile)["pairs"])[:LANDING_PAIRS]
    reference, tokenizer = load_base(profile)
    changes, cache = {}, {}
    for method in ("sft_plus", "spot_bco"):  # what claims.section4_claims compares
        policy, _ = experiments.load_run_model(profile, experiments.RunSpec(method, "pairs", specs[0].seed))
        changes[METHOD_LABELS[method]] = analysis.logp_change_by_region(policy, reference, tokenizer, pairs, cache)
    counts = claims.answer_counts(rows)
    verdicts = claims.frame(claims.table_claims(grid[~is_common], base, counts)
                            + (claims.common_rate_claims(grid[is_common], base, counts, profile.experiments.common_lr)
                               if common else [])
                            + claims.curve_claims(curves, curves, "probe/skill")
                            + claims.section4_claims(curves, changes))
    targets = calibration_targets(rows, world.test_sets(profile.world, profile.seed))
    headline = {"base_seed": profile.seed, **{k: round(v, 1) for k, v in world.headline(rows).items()},
                "calibration targets met": f"{(targets.met == 'yes').sum()} of {len(targets)}",
                "pairs kept": sizes[f"pairs_gamma{profile.rectification.gamma:g}.jsonl"],
                "correct answers": sizes["correct.jsonl"]}
    return verdicts, headline


def summary(by_base: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim: its verdict on each base, and on all of them ("agree on all", "disagree on all",
    or "mixed")."""
    seeds = sorted(by_base)
    first = by_base[seeds[0]].set_index("id")
    out = first[["source", "claim"]].copy()
    for s in seeds:
        out[f"base {s}"] = by_base[s].set_index("id")["verdict"]
    verdicts = out[[f"base {s}" for s in seeds]]
    out["on every base"] = [f"{row.iloc[0]} on all" if row.nunique() == 1 else "mixed" for _, row in verdicts.iterrows()]
    return out.reset_index()


def markdown(table: pd.DataFrame, bases: pd.DataFrame) -> str:
    """The README's robustness section: the bases, then each claim's verdicts across them."""
    counts = table["on every base"].value_counts()
    order = [f"{v} on all" for v in claims.VERDICTS] + ["mixed"]
    lines = [f"{len(bases)} bases (seeds {', '.join(str(s) for s in bases.base_seed)}), one post-training seed each: "
             + ", ".join(f"{counts[v]} {v}" for v in order if v in counts) + ".", "",
             "| " + " | ".join(c.replace("_", " ") for c in bases.columns) + " |", "|---" * len(bases.columns) + "|"]
    for b in bases.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in b) + " |")
    seeds = [c for c in table.columns if c.startswith("base ")]
    lines += ["", "| claim | " + " | ".join(seeds) + " | on every base |", "|---|" + "---|" * (len(seeds) + 1)]
    for r in table.to_dict("records"):
        lines.append(f"| {r['id']} {r['claim']} | " + " | ".join(r[s] for s in seeds) + f" | {r['on every base']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--bases", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    by_base, headlines = {}, []
    pretrain_bases([base_profile(args.profile, seed) for seed in args.bases])
    for seed in args.bases:
        print(f"== base seed {seed}", flush=True)
        verdicts, headline = claims_on_base(base_profile(args.profile, seed))
        by_base[seed] = verdicts
        headlines.append(headline)
    out = tables_dir(base_profile(args.profile, 0))  # results/<profile>/, beside notebook 04's tables
    pd.concat([v.assign(base_seed=s) for s, v in by_base.items()]).to_csv(out / "robustness.csv", index=False)
    bases = pd.DataFrame(headlines)
    bases.to_csv(out / "robustness_bases.csv", index=False)
    (out / "robustness.md").write_text(markdown(summary(by_base), bases))
    print((out / "robustness.md").read_text())
    return out


if __name__ == "__main__":
    main()
