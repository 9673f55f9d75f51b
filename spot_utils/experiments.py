"""The runs behind notebooks 02 and 03 (Tables 1-3): equal-budget data sets and a cached grid of runs.

    sets = table_datasets(profile)                       # data set name -> JSONL path (written once)
    specs = [RunSpec("spot_bco", "pairs", seed) for seed in profile.experiments.seeds]
    summary = run_grid(profile, specs)                   # trains + evaluates what is not cached yet

Every method trains on the same number of examples (DESIGN section 6): the size of the rectified pair
set at gamma, or `experiments.train_examples` of them when set (a seeded subset: 800 on tiny, the
paper's 4,000 pairs for Qwen3-8B, 1,500 for Llama). tables/budget.json says how many were available
and used; a set smaller than train_examples gives a warning. The data sets, all drawn from notebook 01's
output in runs/<profile>/data:
  pairs         y+ = the Oracle's minimal edit, y- = the model's error, change ratio <= gamma   (SPoT, DPO, ...)
  sft_direct    the Oracle's direct answers to the SAME questions (so at most the budget)        (SFT)
  correct       the model's own correct answers, subsampled to the budget                         (RFT)
  direct_pairs  the pairs with y+ replaced by the Oracle's direct answer         (Table 3: direct vs rectified)
  half          a seeded half of the pairs                                        (Table 3: half vs full)
  gamma1        the unfiltered pairs (gamma = 1.0) subsampled to the budget       (Table 3: gamma at equal size)

A run = (method, data set, seed[, beta, lr]). Its model, training log and test-set evaluation live in
runs/<profile>/train/<name>/seed<k>/ and are reused while the key (profile sections, base weights,
data file, thread count) is unchanged. On the tiny profile every run is single-threaded and one runs per
available core (`experiments.workers`, 0 = one per core), so more cores give the same numbers sooner.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch

from . import training
from .config import REPO_ROOT, Profile, load_profile
from .data import read_jsonl, write_jsonl
from .environment import available_cores
from .losses import PAIR_LOSSES
from .modeling import base_config_hash
from .progress import progress as progress_bar
from .suite_eval import evaluate_run
from .tasks import load_base, tasks_of

METHOD_DATA = {"sft": "sft_direct", "rft": "correct", "sft_plus": "pairs", "dft": "pairs", "dpo": "pairs",
               "reward_sft": "pairs", "spot_bce": "pairs", "spot_bco": "pairs"}  # each method's Table 1-2 data
RUN_FILE = "spot_run.json"
BUDGET_FILE = "budget.json"   # in <data>/tables: the training budget, examples available and used per set


# -----------------------------------------------------------------------------
# data sets of Tables 1-3


def table_datasets(profile: Profile) -> dict[str, Path]:
    """Write the equal-budget data sets (see the module docstring) and return name -> path.
    Subsamples are seeded by the profile seed, so every run sees the same examples."""
    src = profile.runs / "data"
    pairs_path = src / f"pairs_gamma{profile.rectification.gamma:g}.jsonl"
    needed = [pairs_path, src / "pairs_all.jsonl", src / "sft_direct.jsonl", src / "correct.jsonl"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: run notebooks/01_oracle_rectification.ipynb first")
    pairs = read_jsonl(pairs_path)
    direct = {r["id"]: r for r in read_jsonl(src / "sft_direct.jsonl")}
    correct, pairs_all = read_jsonl(src / "correct.jsonl"), read_jsonl(src / "pairs_all.jsonl")
    available = {"pairs": len(pairs), "sft_direct": len(direct), "correct": len(correct), "gamma1": len(pairs_all)}
    rng = random.Random(profile.seed)
    cap = profile.experiments.train_examples
    if 0 < cap < len(pairs):  # drawn first, and only when it cuts: an uncapped profile keeps its subsets
        pairs = _subsample(pairs, cap, rng)
    budget = len(pairs)

    sets = {
        "pairs": pairs,
        # SFT learns the Oracle's own style on exactly the questions SPoT sees (a question without a
        # verified direct answer is skipped and counted in the table's `n`; never topped up from others)
        "sft_direct": [direct[p["id"]] for p in pairs if p["id"] in direct],
        "correct": _subsample(correct, budget, rng),  # RFT: capped to the same count
        "direct_pairs": [{**p, "chosen": direct[p["id"]]["response"], "source": "oracle_direct"}
                         for p in pairs if p["id"] in direct],
        "half": _subsample(pairs, budget // 2, rng),
        "gamma1": _subsample(pairs_all, budget, rng),
    }
    out = src / "tables"
    used = {name: len(records) for name, records in sets.items()}
    short = {name: n for name, n in used.items() if name != "half" and n < cap}
    if cap and short:
        warnings.warn(f"experiments.train_examples = {cap}, but these training sets are smaller: "
                      + ", ".join(f"{name} {n}" for name, n in short.items()) + " (available: "
                      + ", ".join(f"{name} {n}" for name, n in available.items())
                      + "; sft_direct and direct_pairs keep only the pairs' questions with a direct answer)",
                      stacklevel=2)
    paths = {}
    for name, records in sets.items():
        path = out / f"{name}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)  # write_jsonl's format
        if _launch_rank() == 0:
            if not path.exists() or path.read_text() != text:  # rewrite only on change: keeps the file hashes stable
                write_jsonl(path, records)
        else:  # every rank builds the same sets; two writing one file (one temporary name) collide
            _wait_for_text(path, text)
        paths[name] = path
    path = out / BUDGET_FILE
    text = json.dumps({"train_examples": cap, "budget": budget, "available": available, "used": used}, indent=1) + "\n"
    if _launch_rank() == 0 and not (path.exists() and path.read_text() == text):  # nobody waits for the report
        _replace_text(path, text)
    return paths


def _replace_text(path: Path, text: str) -> None:
    """Write `path` whole or not at all; parallel grid workers never share the temporary name."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _launch_rank() -> int:
    """This process's global rank under torchrun / accelerate launch; 0 when launched alone."""
    return int(os.environ.get("RANK", "0"))


def _wait_for_text(path: Path, text: str, timeout_s: float = 600.0) -> None:
    """Wait until rank 0 has written `text` to `path`. A file, not a barrier: before the Trainer
    exists no process group does (and creating one here would fix its backend and timeout)."""
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text() == text):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {_launch_rank()}: rank 0 did not write {path} within {timeout_s:.0f} s "
                               "(or wrote other data: do all ranks read the same runs/<profile>/data?)")
        time.sleep(0.2)


@contextmanager
def main_process_writes():
    """After the Trainer has set up the processes: yields True on the main process (the only one
    when not launched distributed), then holds every process until it is done writing."""
    if training.launched_processes() == 1:
        yield True
        return
    from accelerate import PartialState

    state = PartialState()  # the Trainer's, already initialised
    try:
        yield state.is_main_process
    finally:
        state.wait_for_everyone()


def _subsample(records: list[dict], k: int, rng: random.Random) -> list[dict]:
    """k records in their original (id) order; all of them if there are fewer than k."""
    keep = sorted(rng.sample(range(len(records)), min(k, len(records))))
    return [records[i] for i in keep]


# -----------------------------------------------------------------------------
# one run


@dataclass(frozen=True)
class RunSpec:
    method: str
    data: str                   # a key of table_datasets()
    seed: int = 0
    beta: float | None = None   # None: the profile's value for this method
    lr: float | None = None     # None: the profile's value for this method

    @property
    def name(self) -> str:
        name = f"{self.method}@{self.data}"
        if self.beta is not None:
            name += f"_beta{self.beta:g}"
        if self.lr is not None:
            name += f"_lr{self.lr:g}"
        return name

    def profile(self, profile: Profile) -> Profile:
        """The profile with this run's beta / lr overrides applied."""
        t = profile.training
        lr = {**t.lr, self.method: self.lr} if self.lr is not None else t.lr
        betas = {**t.beta_by_method, self.method: self.beta} if self.beta is not None else t.beta_by_method
        return replace(profile, training=replace(t, lr=lr, beta_by_method=betas))


def run_dir(profile: Profile, spec: RunSpec, group: str = "train") -> Path:
    return profile.runs / group / spec.name / f"seed{spec.seed}"


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_key(profile: Profile, spec: RunSpec, data_path: Path, threads: int, split: str = "test") -> str:
    """Everything a run's result depends on."""
    p = spec.profile(profile)
    parts = [json.dumps(asdict(spec), sort_keys=True), p.section_hash("training", "experiments", "generation", "eval",
                                                                      "world"),
             base_config_hash(profile), _file_hash(data_path), str(threads), split]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_run(profile: Profile, spec: RunSpec, group: str = "train") -> dict:
    """The summary of a finished run (as written by run_one), with its folder."""
    path = run_dir(profile, spec, group) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/03_spot_training.ipynb (or run_grid) first")
    return json.loads(path.read_text())


def eval_rows(profile: Profile, spec: RunSpec, group: str = "train") -> pd.DataFrame:
    """Per-example test-set grades of a finished run (evaluation.evaluate rows)."""
    return pd.read_csv(run_dir(profile, spec, group) / "eval_test.csv")


def run_one(profile: Profile, spec: RunSpec, group: str = "train", threads: int | None = None,
            progress: bool = False, split: str = "test", data: dict[str, Path] | None = None,
            resume: bool = False, evaluate: bool = True) -> dict:
    """Train one run (unless cached), evaluate it on `split`, return its summary. `data` adds data
    sets (name -> JSONL) to those of table_datasets, e.g. an analysis's own pairs. `resume`: continue
    from the run folder's latest checkpoint (training.save_steps). Launched on several processes,
    every rank trains; the main one evaluates and writes the summary, which the others then read.
    evaluate=False (a pretrained-model profile's training job, see launch_run): the summary is written
    with "evaluated": false, and evaluate_run_later fills in the scores from a process of its own."""
    if threads is not None:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    paths = data_sets(profile, data)
    if spec.data not in paths:
        raise ValueError(f"unknown data set {spec.data!r}; known: {', '.join(paths)}")
    folder = run_dir(profile, spec, group)
    summary = _cached(profile, spec, group, threads, split, paths)
    if summary is not None and (summary.get("evaluated", True) or not evaluate):
        return summary
    if summary is not None:  # trained by a launched job, not evaluated yet
        return evaluate_run_later(profile, spec, group, split, data)

    p = spec.profile(profile)
    tasks = tasks_of(profile)
    model, tokenizer = tasks.load_policy(spec.method)
    callbacks = []
    if profile.experiments.probe_every and spec.method in profile.experiments.probe_methods:
        callbacks.append(training.ProbeCallback(tasks.probe_examples(), tasks.grade, profile.experiments.probe_every,
                                                profile.generation.max_new_tokens))
    start = time.time()
    result = training.train(spec.method, paths[spec.data], p, folder, model=model, tokenizer=tokenizer,
                            resume_from_checkpoint=True if resume else None, callbacks=callbacks, seed=spec.seed,
                            progress=progress, ref_cache_dir=reference_cache(profile))
    train_seconds = time.time() - start
    summary = None
    with main_process_writes() as main:
        if main:
            summary = _summarise(profile, spec, folder, split, paths, threads, result, start, train_seconds,
                                 evaluate)
    return summary if summary is not None else json.loads((folder / RUN_FILE).read_text())


def _summarise(profile, spec, folder, split, paths, threads, result, start, train_seconds, evaluate=True) -> dict:
    """Evaluate the trained run (unless evaluate=False) and write its summary, spot_run.json."""
    scores = tasks_of(profile).evaluate_run(folder, result.model_dir, split) if evaluate else {}
    summary = {"key": run_key(profile, spec, paths[spec.data], threads, split), "name": spec.name, **asdict(spec),
               "split": split, "threads": threads,
               "examples": len(read_jsonl(paths[spec.data])), "steps": result.global_step,
               "train_seconds": round(train_seconds, 1), "eval_seconds": round(time.time() - start - train_seconds, 1),
               "evaluated": evaluate, "headline": scores, "delta": result.delta, "delta_trace": result.delta_trace,
               "log_history": result.log_history, "model_dir": str(result.model_dir)}
    (folder / RUN_FILE).write_text(json.dumps(summary, indent=1, default=float))
    return summary


def evaluate_run_later(profile: Profile, spec: RunSpec, group: str = "train", split: str = "test",
                       data: dict[str, Path] | None = None) -> dict:
    """Score a run its training job saved with "evaluated": false, in this (single) process, and
    complete its summary. A pretrained-model profile evaluates this way, after the job's processes
    have exited: vLLM then finds every GPU free and no torch.distributed job around it."""
    folder = run_dir(profile, spec, group)
    summary = load_run(profile, spec, group)
    if summary.get("evaluated", True):
        return summary
    if profile.tasks != "paper" or split != "test":  # a guard: only launched runs are scored later
        raise ValueError("evaluate_run_later scores a pretrained-model profile's runs on the nine suites (split test)")
    start = time.time()
    summary.update(headline=evaluate_run(profile, folder, progress=False), evaluated=True,
                   eval_seconds=round(time.time() - start, 1))
    _replace_text(folder / RUN_FILE, json.dumps(summary, indent=1, default=float))
    return summary


def data_sets(profile: Profile, extra: dict[str, Path] | None = None) -> dict[str, Path]:
    """table_datasets plus `extra` (name -> JSONL path); a name may not shadow a table data set."""
    paths = table_datasets(profile)
    clash = sorted(set(paths) & set(extra or {}))
    if clash:
        raise ValueError(f"data set name(s) {clash} are taken by table_datasets; choose another name")
    return {**paths, **{name: Path(path) for name, path in (extra or {}).items()}}


def reference_cache(profile: Profile) -> Path:
    """Where the reference log-probs of every (base, data set) live, shared by all runs."""
    return profile.runs / "cache" / "ref_logps"


def reference_entry(profile: Profile, spec: RunSpec) -> tuple[str, str]:
    """Which reference log-prob entry a run reads: its data set, and how pairs go through the model (one
    packed row per pair for a pair method under training.shared_prefix, plain rows otherwise: another
    forward rounds differently, so it is another entry)."""
    packed = profile.training.shared_prefix and spec.method in training.PAIR_METHODS
    return spec.data, "shared_prefix" if packed else "rows"


def reference_pass(profile: Profile, spec: RunSpec, group: str = "train", threads: int | None = None,
                   data: dict[str, Path] | None = None) -> None:
    """Fill the reference log-prob cache for spec's entry (TRL's one reference pass), without training.
    Every method and seed with the same reference_entry shares it (the tokenised data does not depend
    on the method), so run_grid does this once per entry before that entry's runs start: two parallel
    runs never compute the same entry."""
    if threads is not None:
        torch.set_num_threads(threads)
    model, tokenizer = load_base(profile)
    training.build_trainer(spec.method, data_sets(profile, data)[spec.data], spec.profile(profile),
                           run_dir(profile, spec, group), model=model, tokenizer=tokenizer, progress=False,
                           ref_cache_dir=reference_cache(profile))


def _in_worker(job, args, folder: Path, log_name: str):
    """Run job(*args) with this process's output (library warnings, loading bars) sent to
    <folder>/<log_name> instead of the notebook, which shows one bar for the whole grid."""
    os.environ["TQDM_DISABLE"] = "1"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / log_name, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        return job(*args)


def _worker(args) -> dict:
    """One run in a spawned single-thread process."""
    profile, spec, group, split, data = args
    return _in_worker(run_one, (profile, spec, group, 1, False, split, data), run_dir(profile, spec, group),
                      "worker.log")


def _reference_worker(args) -> None:
    profile, spec, group, data = args
    _in_worker(reference_pass, (profile, spec, group, 1, data), run_dir(profile, spec, group), "reference.log")


# -----------------------------------------------------------------------------
# the grid


def run_grid(profile: Profile, specs: list[RunSpec], group: str = "train", workers: int | None = None,
             progress: bool = True, split: str = "test", data: dict[str, Path] | None = None) -> pd.DataFrame:
    """Run every spec (cached ones return at once) and return one summary row per run, in spec order.
    `data` adds data sets (name -> JSONL) to table_datasets', for runs outside Tables 1-3.

    Every tiny run is single-threaded, so its numbers do not depend on `workers`: with workers > 1 each
    run is a spawned process (no state leaks between runs); workers = 1 runs them here, one thread.
    `workers` defaults to grid_workers (experiments.workers, 0: one per available core).
    """
    workers = grid_workers(profile, workers)
    paths = data_sets(profile, data)  # write the table data sets once, before any worker reads them
    if tasks_of(profile).launches_runs:  # one multi-process job per run (experiments.launcher), one after the other
        missing = [s for s in specs if _finished(profile, s, group, split, paths) is None]
        if missing and not profile.experiments.launcher:
            s = missing[0]
            raise RuntimeError(
                f"{len(missing)} run(s) of profile {profile.name!r} are not trained yet, e.g. {s.name} seed {s.seed}, "
                "and experiments.launcher is empty. Launch each, e.g.\n  "
                + launch_command(profile, s, group, data, launcher=_EXAMPLE_LAUNCHER).text)
        bar = progress_bar(total=len(specs), initial=len(specs) - len(missing), desc="runs", disable=not progress)
        for spec in missing:
            launch_run(profile, spec, group, data)
            bar.update()
        bar.close()
        return summaries_frame([json.loads((run_dir(profile, s, group) / RUN_FILE).read_text()) for s in specs])
    results: dict[RunSpec, dict] = {}
    bar = progress_bar(total=len(specs), desc="runs", disable=not progress)
    if workers <= 1:
        threads = torch.get_num_threads()
        try:  # one thread, as in a worker process: the same key and the same bits
            for spec in specs:
                results[spec] = run_one(profile, spec, group, threads=1, split=split, data=data)
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        todo = []
        for spec in specs:  # cached runs are read here, without starting a process
            results[spec] = _cached(profile, spec, group, 1, split, paths)
            if results[spec] is None:
                todo.append(spec)
            else:
                bar.update()
        todo.sort(key=lambda s: s.method not in PAIR_LOSSES)  # pair methods train on y+ and y-: the longest first
        first_of_entry = {}  # reference entry -> its first run, in todo order (the longest runs' data first)
        for spec in todo:
            first_of_entry.setdefault(reference_entry(profile, spec), spec)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            # One reference pass per entry (a cached one returns at once); an entry's runs are queued when
            # its pass is done, behind the passes still waiting, so no worker idles and no two workers
            # compute the same entry.
            passes = {pool.submit(_reference_worker, (profile, s, group, data)): key for key, s in first_of_entry.items()}
            futures = {}
            for done in as_completed(passes):
                done.result()
                for spec in todo:
                    if reference_entry(profile, spec) == passes[done]:
                        futures[pool.submit(_worker, (profile, spec, group, split, data))] = spec
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return summaries_frame([results[s] for s in specs])


def grid_workers(profile: Profile, workers: int | None = None) -> int:
    """Parallel training processes for run_grid: `workers`, else experiments.workers; 0 means one per
    core this process may use (a user's 8-core laptop runs 8 single-thread runs at a time)."""
    workers = profile.experiments.workers if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per core), got {workers}")
    if workers:
        return workers
    return available_cores()


def _finished(profile: Profile, spec: RunSpec, group: str, split: str, paths: dict[str, Path],
              evaluated: bool = True) -> dict | None:
    """A launched run's summary if it is current (and evaluated, unless evaluated=False). Its key holds
    the thread count of the process that trained it (on a GPU box that count does not change the
    numbers), so the summary's own is used."""
    path = run_dir(profile, spec, group) / RUN_FILE
    if not path.exists():
        return None
    summary = _cached(profile, spec, group, json.loads(path.read_text()).get("threads", 0), split, paths)
    return None if summary is None or (evaluated and not summary.get("evaluated", True)) else summary


# -----------------------------------------------------------------------------
# launching a run of a pretrained-model profile (accelerate launch / torchrun), as the paper trains

_EXAMPLE_LAUNCHER = "accelerate launch --config_file configs/accelerate_zero2.yaml --num_processes {processes}"


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]             # what runs (the launcher's programs resolved to this Python's environment)
    env: dict[str, str]         # variables the launcher line sets (e.g. ACCELERATE_USE_CPU=1)
    text: str                   # the same as one shell line, for the log and for a user to paste


def launch_command(profile: Profile, spec: RunSpec, group: str = "train", data: dict[str, Path] | None = None,
                   launcher: str | None = None) -> LaunchCommand:
    """The command line that trains and evaluates `spec` under the profile's launcher
    (experiments.launcher, or `launcher`): leading NAME=VALUE words are environment variables, the
    program (accelerate, torchrun) is taken from this Python's environment when it is there, and
    {processes} is the paper's batch divided by per-device batch x accumulation."""
    import shlex
    import sys

    if group != "train":
        raise ValueError(f"launched runs live in the 'train' group, not {group!r}")
    line = (profile.experiments.launcher if launcher is None else launcher).format(
        processes=training.paper_batch_processes(profile.training))
    words = shlex.split(line)
    env = {}
    while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    if not words:
        raise ValueError(f"experiments.launcher {line!r} names no program (e.g. accelerate launch ...)")
    program = Path(sys.executable).parent / words[0]
    argv = [str(program) if program.exists() else words[0], *words[1:], *run_arguments(profile, spec, data)]
    text = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), *(shlex.quote(a) for a in [words[0], *argv[1:]])])
    return LaunchCommand(argv, env, text)


def run_arguments(profile: Profile, spec: RunSpec, data: dict[str, Path] | None = None) -> list[str]:
    """`-m spot_utils.experiments ...`: the arguments that name one run, after whatever launches it."""
    args = ["-m", "spot_utils.experiments", "--profile", profile.source_file or profile.name,
            "--profile-seed", str(profile.seed), "--method", spec.method, "--data", spec.data, "--seed", str(spec.seed)]
    if spec.data in (data or {}):
        args += ["--data-file", str(Path(data[spec.data]).resolve())]
    for name, value in (("--beta", spec.beta), ("--lr", spec.lr)):
        if value is not None:
            args += [name, f"{value:g}"]
    return args


def launch_run(profile: Profile, spec: RunSpec, group: str = "train", data: dict[str, Path] | None = None) -> dict:
    """Train and evaluate one run in its own multi-process job (the profile's launcher), from the
    repository root; its output goes to <run folder>/launch.log. Returns the run's summary."""
    import shlex
    import subprocess
    import sys

    train = launch_command(profile, spec, group, data)
    train = LaunchCommand(train.argv + ["--skip-eval"], train.env, train.text + " --skip-eval")
    args = run_arguments(profile, spec, data) + ["--eval-only"]  # the same run, scored by one plain process
    evaluate = LaunchCommand([sys.executable, *args], {}, " ".join(["python", *map(shlex.quote, args)]))
    folder = run_dir(profile, spec, group)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "launch.log"
    with open(log_path, "w") as log:
        for command in (train, evaluate):
            log.write(f"$ {command.text}\n")
            log.flush()
            done = subprocess.run(command.argv, cwd=REPO_ROOT, env={**os.environ, "TQDM_DISABLE": "1", **command.env},
                                  stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                log.close()
                last = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
                raise RuntimeError(f"run {spec.name} seed {spec.seed} failed (exit {done.returncode}); the last lines "
                                   f"of {log_path}:\n{last}\ncommand: {command.text}")
    return load_run(profile, spec, group)


def _cached(profile: Profile, spec: RunSpec, group: str, threads: int, split: str,
            paths: dict[str, Path]) -> dict | None:
    """The run's summary if it was made with exactly this key, else None."""
    path = run_dir(profile, spec, group) / RUN_FILE
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    key = run_key(profile, spec, paths[spec.data], threads, split)
    return summary if summary.get("key") == key else None


def summaries_frame(summaries: list[dict]) -> pd.DataFrame:
    """One row per run: name, method, data, seed, steps, times and the headline accuracies."""
    rows = []
    for s in summaries:
        rows.append({"name": s["name"], "method": s["method"], "data": s["data"], "seed": s["seed"],
                     "beta": s["beta"], "lr": s["lr"], "examples": s["examples"], "steps": s["steps"],
                     "train_s": s["train_seconds"], "eval_s": s["eval_seconds"], **s["headline"]})
    return pd.DataFrame(rows)


def mean_and_spread(frame: pd.DataFrame, by: str = "name", columns=("In-domain Avg", "OOD Avg", "IF",
                                                                     "Overall Avg")) -> pd.DataFrame:
    """Mean and standard deviation over seeds, as "mean ± sd" strings (sd over n seeds, ddof 1); a row of
    one seed shows its value alone, so that it does not pass for a spread of zero."""
    g = frame.groupby(by, sort=False)[list(columns)]
    mean, sd, n = g.mean(), g.std(ddof=1), g.size()
    out = mean.round(1).astype(str) + (" ± " + sd.round(1).astype(str)).where(n > 1, "", axis=0)
    out["seeds"] = n
    return out


def curves(summaries: list[dict], keys=("loss", "rewards/chosen", "rewards/rejected", "delta", "probe/skill",
                                        "probe/arithmetic")) -> pd.DataFrame:
    """The logged metrics of runs as one long frame: method, name, seed, step and one column per key
    (probe accuracies in %). Rows of a run's log that hold none of the keys are left out."""
    rows = []
    for s in summaries:
        for log in s["log_history"]:
            values = {k: log[k] * (100 if k.startswith("probe/") else 1) for k in keys if k in log}
            if values:
                rows.append({"method": s["method"], "name": s["name"], "seed": s["seed"], "step": log["step"],
                             **values})
    frame = pd.DataFrame(rows)
    # TRL logs and probe rows share steps: one row per (run, step)
    return frame.groupby(["method", "name", "seed", "step"], sort=False, as_index=False).first()


def forget_runs(profile: Profile, specs: list[RunSpec], group: str = "train") -> None:
    """Delete the runs' folders, so the next run_grid trains them again (the notebooks' force=True)."""
    import shutil

    for spec in specs:
        shutil.rmtree(run_dir(profile, spec, group), ignore_errors=True)


def base_headline(profile: Profile) -> dict[str, float]:
    """The base model's headline accuracies on the test sets, from notebook 00's evaluation."""
    return tasks_of(profile).base_headline()


def load_run_model(profile: Profile, spec: RunSpec, group: str = "train"):
    """(model, tokenizer) a finished run saved, loaded the way the profile loads its base (dtype, device,
    attention), so that policy and reference meet on the same device."""
    return tasks_of(profile).load_trained(load_run(profile, spec, group)["model_dir"])


# -----------------------------------------------------------------------------
# the runs of Tables 1-3

TABLE_1 = (("sft", "sft_direct"), ("rft", "correct"), ("sft_plus", "pairs"), ("spot_bco", "pairs"))
TABLE_2 = (("spot_bco", "pairs"), ("spot_bce", "pairs"), ("dpo", "pairs"), ("reward_sft", "pairs"), ("dft", "pairs"))
TABLE_3 = (("spot_bco", "direct_pairs"), ("spot_bco", "pairs"), ("spot_bco", "half"), ("spot_bco", "gamma1"))
KEY_METHODS = ("sft", "rft", "sft_plus", "dpo", "reward_sft", "spot_bce", "spot_bco")  # the claims: every seed


COMMON_RATE_METHODS = ("sft_plus", "dpo", "reward_sft", "spot_bco")  # Fig. 2's methods, and SPoT beside them


def common_rate_specs(profile: Profile) -> list[RunSpec]:
    """The runs of Fig. 2 at one learning rate for every method (experiments.common_lr; none when 0), on the
    rectified pairs and the first seed."""
    lr = profile.experiments.common_lr
    return [RunSpec(m, "pairs", profile.experiments.seeds[0], lr=lr) for m in COMMON_RATE_METHODS] if lr else []


def table_specs(profile: Profile) -> list[RunSpec]:
    """Every run of Tables 1-3: the methods behind the paper's claims on every seed of the profile,
    DFT and the data ablations of Table 3 on the first seed (the CPU budget of the tiny profile)."""
    seeds = profile.experiments.seeds
    specs = []
    for method, data in dict.fromkeys(TABLE_1 + TABLE_2 + TABLE_3):
        for seed in (seeds if method in KEY_METHODS and data == METHOD_DATA[method] else seeds[:1]):
            specs.append(RunSpec(method, data, seed))
    return specs


def main(argv=None) -> None:
    """One run from the command line: `python -m spot_utils.experiments --method spot_bco --data pairs`.
    Under `accelerate launch` (paper profile) every process trains; the main process evaluates, or,
    with --skip-eval, nobody does until the same line runs again with --eval-only in one process."""
    import argparse

    parser = argparse.ArgumentParser(description="train and evaluate one run of Tables 1-3")
    parser.add_argument("--profile", default="tiny", help="a profile name or YAML path")
    parser.add_argument("--profile-seed", type=int, default=None, help="the profile's seed (default: its YAML's)")
    parser.add_argument("--method", required=True, choices=list(METHOD_DATA), metavar="METHOD",
                        help=f"one of {', '.join(METHOD_DATA)}")
    parser.add_argument("--data", default=None, help="a data set of table_datasets (default: the method's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-file", default=None, metavar="JSONL",
                        help="train on this file instead, under the name given by --data (e.g. notebook 02's hot pairs)")
    parser.add_argument("--beta", type=float, default=None, help="override the profile's beta for this run")
    parser.add_argument("--lr", type=float, default=None, help="override the profile's learning rate for this run")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint-N in the run folder (needs training.save_steps > 0)")
    parser.add_argument("--skip-eval", action="store_true",
                        help="train only; the summary says evaluated: false (then run the same line with --eval-only)")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate a run a --skip-eval job trained, in this one process (vLLM sees every GPU)")
    args = parser.parse_args(argv)
    if args.skip_eval and args.eval_only:
        parser.error("--skip-eval and --eval-only exclude each other")
    profile = load_profile(args.profile) if args.profile_seed is None else load_profile(args.profile, seed=args.profile_seed)
    if args.data_file and not args.data:
        parser.error("--data-file needs --data NAME (the run's folder is <method>@<NAME>)")
    spec = RunSpec(args.method, args.data or METHOD_DATA[args.method], args.seed, args.beta, args.lr)
    extra = {args.data: Path(args.data_file)} if args.data_file else None
    if args.eval_only:  # the data files must be those the run was trained on (the key checks them)
        if _finished(profile, spec, "train", "test", data_sets(profile, extra), evaluated=False) is None:
            raise SystemExit(f"{run_dir(profile, spec)} holds no current trained run: train it first (--skip-eval)")
        summary = evaluate_run_later(profile, spec, data=extra)
    else:
        summary = run_one(profile, spec, data=extra, resume=args.resume, evaluate=not args.skip_eval)
    if _launch_rank() == 0:  # one line per run, not one per process
        print(json.dumps({"name": summary["name"], "seed": summary["seed"], **summary["headline"]}))


if __name__ == "__main__":
    main()
