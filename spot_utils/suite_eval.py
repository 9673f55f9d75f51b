"""The paper profile's evaluation: a model (the base or a trained run) on the nine suites of Table 1.

One call writes what the tiny profile writes, so notebook 04 reads both the same way:

    evaluate_base(profile)        -> runs/<profile>/base/eval_rows.csv
    evaluate_run(profile, folder) -> <run folder>/eval_test.csv   (the model in <folder>/final)

and returns the per-suite scores with the headline columns of Table 1 (paper_suites.paper_headline).
From the command line (the main process of a GPU box, after training):

    python -m spot_utils.suite_eval --profile paper --model base
    python -m spot_utils.suite_eval --profile paper --model runs/paper_qwen3_8b/train/spot_bco@pairs/seed0

Sampling follows the profile (vLLM on a GPU, the HF backend elsewhere; temperature 0.7, top-p 0.8);
each suite takes its own avg@n (16 for AIME24/25 and AMC23, 5 for the rest). The suites come from the
hub cache, or from eval.suite_dir (local files named <suite>.jsonl, e.g. the test fixtures).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import paper_suites
from .config import REPO_ROOT, Profile
from .generation import stage_engine
from .modeling import base_dir

ROWS_FILE = "eval_test.csv"   # a run's rows, as in the tiny profile
BASE_ROWS_FILE = "eval_rows.csv"


def suite_records(profile: Profile, name: str) -> list[paper_suites.SuiteRecord]:
    """A suite's records: from eval.suite_dir when the profile sets it, else the hub (or its cache)."""
    folder = profile.eval.suite_dir
    if not folder:
        return paper_suites.load_suite(name, seed=profile.seed)
    folder = Path(folder) if Path(folder).is_absolute() else REPO_ROOT / folder
    files = [folder / f"{name}{ext}" for ext in (".jsonl", ".json", ".parquet")]
    found = [f for f in files if f.exists()]
    if not found:
        raise FileNotFoundError(f"eval.suite_dir is {profile.eval.suite_dir}, but it has no {name}.jsonl, "
                                f"{name}.json or {name}.parquet")
    return paper_suites.load_suite(name, path=found[0], seed=profile.seed)


def evaluate_model(profile: Profile, model_path, out_csv: str | Path, suites=None, progress: bool = True,
                   **generate_kwargs) -> dict[str, float]:
    """Sample and grade `model_path` on every suite, write all rows to `out_csv` (one row per question
    and sample, with its suite) and return {suite display name: score in %} plus the headline
    columns. `generate_kwargs` go to the generator (e.g. tokenizer= with a model object)."""
    if profile.tasks != "paper":  # a guard, not a branch: other tasks have their own test sets
        raise ValueError(f"profile {profile.name!r} (tasks: {profile.tasks}) is evaluated on its miniature test sets "
                         "(evaluation.evaluate_profile), not on the paper's suites")
    names = list(suites or paper_suites.SUITES)
    if any(paper_suites.get_spec(n).kind == "ifeval" for n in names):
        paper_suites.ensure_nltk_data()  # before any sampling: a missing tokenizer model fails in seconds

    with stage_engine(profile, model_path) as engine:  # vllm: one engine for all suites, shut down after them
        if engine is not None:
            generate_kwargs = {**generate_kwargs, "engine": engine}
        rows = pd.concat([paper_suites.evaluate_suite(name, model_path, suite_records(profile, name), profile=profile,
                                                      progress=progress, **generate_kwargs) for name in names],
                         ignore_index=True)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out_csv, index=False)
    empty = [n for n in names if n not in set(rows.get("suite", ()))]
    if empty:  # a suite without a question has no score (avg@n needs at least one problem)
        raise ValueError(f"no questions to score in suite(s) {', '.join(empty)}")
    return scores_from_rows(rows)


def scores_from_rows(rows: pd.DataFrame) -> dict[str, float]:
    """{suite display name: score in %} of evaluate_model's rows (also read back from its CSV), plus
    the headline columns when all nine suites are there."""
    scores = {paper_suites.get_spec(name).display: paper_suites.suite_score(part)
              for name, part in rows.groupby("suite", sort=False)}
    if len(scores) == len(paper_suites.SUITES):
        scores.update(paper_suites.paper_headline(scores))
    return scores


def regrade(profile: Profile, rows: pd.DataFrame) -> pd.DataFrame:
    """evaluate_model's rows (e.g. read back from a CSV) graded again from their responses, against
    the suites' own records (matched by suite and id), so a table never trusts a stored grade."""
    records = {(name, str(r.id)): r for name in dict.fromkeys(rows["suite"]) for r in suite_records(profile, name)}
    missing = {(s, str(i)) for s, i in zip(rows["suite"], rows["id"])} - records.keys()
    if missing:
        raise ValueError(f"{len(missing)} answer(s) belong to no question of their suite, e.g. {sorted(missing)[0]}")
    graded = [paper_suites.grade(records[(s, str(i))], "" if pd.isna(text) else str(text))
              for s, i, text in zip(rows["suite"], rows["id"], rows["response"])]
    out = rows[["id", "suite", "sample", "response"]].copy()
    for key in dict.fromkeys(k for g in graded for k in g):
        out[key] = [g.get(key) for g in graded]
    return out


def evaluate_base(profile: Profile, suites=None, progress: bool = True, **generate_kwargs) -> dict[str, float]:
    return evaluate_model(profile, profile.model.location, base_dir(profile) / BASE_ROWS_FILE, suites,
                          progress, **generate_kwargs)


def evaluate_run(profile: Profile, folder: str | Path, suites=None, progress: bool = True,
                 **generate_kwargs) -> dict[str, float]:
    """Evaluate the model a run saved in <folder>/final; the rows go to <folder>/eval_test.csv."""
    folder = Path(folder)
    model = folder / "final"  # where training.train saves the final model
    if not (model / "config.json").exists():
        raise FileNotFoundError(f"{model} holds no saved model (config.json): has the run finished?")
    return evaluate_model(profile, model, folder / ROWS_FILE, suites, progress, **generate_kwargs)


def evaluate_checkpoints(profile: Profile, folder: str | Path, suites=("ifeval",), progress: bool = False,
                         **generate_kwargs) -> pd.DataFrame:
    """A run's accuracy across training (Fig. 2: IFEval while post-training): `suites` on every
    checkpoint-N the run kept (training.save_steps) and on its final model, one row per step with one
    column per suite (%). Each checkpoint's rows are cached in <checkpoint>/eval_<suites>.csv; the
    final model's scores come from <folder>/eval_test.csv when it holds the suites."""
    folder = Path(folder)
    names = [paper_suites.get_spec(n).name for n in suites]
    tag = "_".join(names)
    summary = json.loads((folder / "spot_run.json").read_text())  # experiments.RUN_FILE
    points = sorted((int(d.name.split("-")[1]), d) for d in folder.glob("checkpoint-*") if (d / "config.json").exists())
    rows = []
    for step, model in points + [(summary["steps"], folder / "final")]:
        cached = folder / ROWS_FILE if model.name == "final" else model / f"eval_{tag}.csv"
        part = pd.read_csv(cached) if cached.exists() else None
        if part is None or not set(names) <= set(part["suite"]):
            scores = evaluate_model(profile, model, model / f"eval_{tag}.csv", names, progress, **generate_kwargs)
        else:
            scores = scores_from_rows(part[part["suite"].isin(names)])
        rows.append({"step": step, **{paper_suites.get_spec(n).display: scores[paper_suites.get_spec(n).display]
                                      for n in names}})
    return pd.DataFrame(rows).drop_duplicates("step", keep="last")


def main(argv=None) -> None:
    import argparse

    from .config import load_profile

    parser = argparse.ArgumentParser(description="evaluate the base or a run on the nine suites of Table 1")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--model", required=True, help="'base', or a run folder (holding final/)")
    parser.add_argument("--suites", nargs="*", default=None, help=f"default: all nine ({', '.join(paper_suites.SUITES)})")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    for name in args.suites or ():
        paper_suites.get_spec(name)  # an unknown name fails before any model loads
    scores = (evaluate_base(profile, args.suites) if args.model == "base"
              else evaluate_run(profile, args.model, args.suites))
    print(json.dumps({k: round(v, 2) for k, v in scores.items()}))


if __name__ == "__main__":
    main()
