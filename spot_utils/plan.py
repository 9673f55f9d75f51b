"""Before a pretrained-model profile spends GPU hours or Oracle money: check the machine, then say
what each notebook will cost (`make plan`, `make reproduce ... DRY_RUN=1`, the notebooks' first cell).

    python -m spot_utils.plan --profile paper              # the checks; exit 1 with one message if one fails
    python -m spot_utils.plan --profile paper --dry-run    # the checks and the whole plan; exit 0, runs nothing

The checks read only this machine: the weights and datasets in the Hugging Face cache (the Makefile
sets HF_HUB_OFFLINE=1, so nothing is downloaded later either), the Oracle's API key in the environment,
and the visible GPUs. The plan is arithmetic on the profile's `plan` section (stated assumptions: the
paper's 28 minutes on 8x H800 for 4k pairs, answer lengths, vLLM throughput, the Oracle's prices).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import Profile

NOTEBOOK_NAMES = {"00": "00 base model on the nine suites", "02": "02 elicitation + Oracle",
                  "01": "01 analysis runs (Figs. 2-4)", "03": "03 the other runs of Tables 1-3",
                  "04": "04 tables (grading only)"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""   # what to do when not ok


class PlanError(RuntimeError):
    """A check failed: the message names every failed check and how to fix it."""


# -----------------------------------------------------------------------------
# checks


def _dataset_cached(repo_id: str) -> bool:
    """Is a hub dataset in the local cache, as the hub or `datasets` keeps it? (Models: see
    environment.pretrained_availability.)"""
    from huggingface_hub.constants import HF_HUB_CACHE

    snapshots = Path(HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    from datasets import config as datasets_config

    return (Path(datasets_config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")).is_dir()


def _local_or_cached(location: str) -> tuple[bool, str]:
    """A dataset given as a local folder, or cached from the hub."""
    if Path(location).exists():
        return True, f"local folder {location}"
    if _dataset_cached(location):
        return True, f"{location} (Hugging Face cache)"
    return False, f"{location}: not on this machine"


def needs_gpu(profile: Profile) -> bool:
    t = profile.training
    return profile.generation.backend == "vllm" or bool(t.deepspeed) or t.bf16


def machine_checks(profile: Profile) -> list[Check]:
    from .environment import pretrained_availability
    from .paper_suites import SUITES

    checks = []
    weights = pretrained_availability(profile.model.location)  # what notebook 00 reports, the same look
    checks.append(Check("weights", weights["available"],
                        f"{profile.model.location}: " + (f"at {weights['where']}" if weights["available"]
                                                         else "not on this machine"),
                        f"huggingface-cli download {profile.model.name_or_path}"))
    ok, detail = _local_or_cached(profile.rectification.dataset_location)
    checks.append(Check("training questions", ok, detail,
                        f"huggingface-cli download --repo-type dataset {profile.rectification.dataset}"))
    if profile.eval.suite_dir:
        checks.append(Check("nine suites", True, f"local files in eval.suite_dir {profile.eval.suite_dir}"))
    else:
        missing = [s.hub_id for s in SUITES.values() if not _dataset_cached(s.hub_id)]
        checks.append(Check("nine suites", not missing, "all nine in the Hugging Face cache" if not missing
                            else f"not cached: {', '.join(missing)}",
                            "for each: huggingface-cli download --repo-type dataset <id> (or set eval.suite_dir)"))
    oracle = profile.rectification.oracle
    if not oracle.base_url:
        checks.append(Check("Oracle key", True, "not needed: the local Oracle server answers (base_url empty)"))
    else:
        checks.append(Check("Oracle key", bool(os.environ.get(oracle.api_key_env)),
                            f"${oracle.api_key_env} " + ("is set" if os.environ.get(oracle.api_key_env) else "is not set"),
                            f"export {oracle.api_key_env}=... (read from the environment, never stored)"))
    checks.append(_gpu_check(profile))
    return checks


def _gpu_check(profile: Profile) -> Check:
    import torch

    from .training import paper_batch_processes

    count = torch.cuda.device_count()
    memory = [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(count)]
    seen = f"{count} GPU(s)" + (f", {min(memory):.0f}-{max(memory):.0f} GiB each" if count else "")
    if not needs_gpu(profile):
        return Check("GPUs", True, f"{seen}; not needed (hf backend, no DeepSpeed, no bf16)")
    need = max(paper_batch_processes(profile.training), profile.generation.tensor_parallel_size if profile.generation.backend == "vllm" else 1)
    return Check("GPUs", count >= need, f"{seen}; the profile needs {need} (training processes, vLLM tensor parallelism)",
                 f"run on a box with {need} GPUs, or lower generation.tensor_parallel_size and raise "
                 "training.gradient_accumulation_steps (processes x per-device batch x accumulation = 32)")


def require(profile: Profile, checks: list[Check] | None = None) -> None:
    """Raise PlanError naming every failed check (the notebooks' first cell; `make plan`)."""
    checks = machine_checks(profile) if checks is None else checks
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PlanError(f"profile {profile.name!r} cannot run on this machine: "
                        + "; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed)
                        + ". Nothing was started. `make reproduce PROFILE=... DRY_RUN=1` prints the plan anyway.")


# -----------------------------------------------------------------------------
# the plan


def estimate(profile: Profile) -> pd.DataFrame:
    """One row per notebook (run order): GPU-hours, Oracle requests, USD and disk (GB), from the
    profile's `plan` assumptions; a last row sums them."""
    from . import experiments, paper_suites
    from .training import paper_batch_processes

    a, t, r = profile.plan, profile.training, profile.rectification
    gpus = paper_batch_processes(profile.training)
    tp = profile.generation.tensor_parallel_size
    engine_h = a.engine_start_minutes / 60 * tp  # GPU-hours to load one vLLM engine

    def gen_h(samples: float, tokens: int) -> float:
        return samples * tokens / a.tokens_per_gpu_second / 3600

    def eval_h() -> float:  # one model on the nine suites, in one vLLM engine (suite_eval.evaluate_model)
        h = engine_h
        for name, spec in paper_suites.SUITES.items():
            tokens = a.answer_tokens if spec.kind == "math" else a.short_answer_tokens
            h += gen_h(a.suite_questions.get(name, 0) * spec.n_samples, tokens)
        return h

    def oracle(requests: float) -> tuple[float, float, float]:
        usd = requests * (a.oracle_input_tokens * a.oracle_usd_per_m_input
                          + a.oracle_output_tokens * a.oracle_usd_per_m_output) / 1e6
        wall = requests / r.oracle.max_concurrency * a.oracle_seconds_per_request / 3600
        return requests, usd, wall

    samples = r.questions * r.samples_per_question
    errors = samples * (1 - a.correct_rate)
    # every method's training examples: experiments.train_examples, else (uncapped) about every error's pair
    budget = profile.experiments.train_examples or int(errors)

    def train_h(examples: int) -> float:
        return a.train_minutes_per_4k_pairs / 60 * a.train_gpus * (examples / 4000) * (t.epochs / 2)

    def runs_h(specs) -> float:
        return sum(train_h(budget // 2 if s.data == "half" else budget) + eval_h() for s in specs)

    n01 = [experiments.RunSpec(m, "pairs", s) for m in ("sft_plus", "dpo", "reward_sft") for s in profile.experiments.seeds]
    n01 += [experiments.RunSpec("sft_plus", "hot_pairs", profile.experiments.seeds[0])]
    n03 = [s for s in experiments.table_specs(profile) if s not in n01]
    hot_errors = budget * (1 - a.correct_rate)  # notebook 02's hot pairs: the budget's questions again, rectified
    checkpoint_gb = a.model_gb + a.optimizer_gb_per_checkpoint
    rows = [
        ("00", eval_h(), *oracle(0), a.model_gb),
        ("02", gen_h(samples, a.answer_tokens) + engine_h, *oracle(2 * errors),  # rectified + direct answers
         (samples + 2 * errors) * a.answer_tokens * 4 / 1e9),
        ("01", runs_h(n01) + gen_h(budget, a.answer_tokens) + engine_h
         + len(n01) * 2 * (gen_h(a.suite_questions["ifeval"] * 5, a.short_answer_tokens) + engine_h),  # Fig. 2
         *oracle(hot_errors), len(n01) * a.model_gb + 2 * checkpoint_gb),
        ("03", runs_h(n03), *oracle(0), len(n03) * a.model_gb),
        ("04", 0.0, *oracle(0), 0.0),
    ]
    frame = pd.DataFrame(rows, columns=["notebook", "GPU-hours", "Oracle requests", "Oracle USD", "Oracle wall h",
                                        "disk GB"])
    frame["notebook"] = frame["notebook"].map(NOTEBOOK_NAMES)
    frame["wall h"] = frame["GPU-hours"] / max(gpus, tp) + frame["Oracle wall h"]
    total = frame.drop(columns="notebook").sum().to_dict()
    frame = pd.concat([frame, pd.DataFrame([{"notebook": "total", **total}])], ignore_index=True)
    return frame[["notebook", "GPU-hours", "wall h", "Oracle requests", "Oracle USD", "disk GB"]]


def report(profile: Profile, checks: list[Check]) -> str:
    """The checks and the plan as text."""
    a = profile.plan
    lines = [f"profile {profile.name} ({profile.model.name_or_path}); this machine:"]
    lines += [f"  [{'ok' if c.ok else 'MISSING'}] {c.name}: {c.detail}" + ("" if c.ok else f"  -> {c.fix}") for c in checks]
    plan = estimate(profile)
    lines += ["", "plan (estimates from the profile's `plan` assumptions; wall time on the GPUs one job uses):",
              plan.to_string(index=False, float_format=lambda v: f"{v:,.1f}"), "",
              f"assumptions: one run = {a.train_minutes_per_4k_pairs:g} min on {a.train_gpus} GPUs per 4k pairs and 2 epochs "
              f"(the paper's H800 figure); answers of {a.answer_tokens:,} tokens ({a.short_answer_tokens:,} on IFEval, "
              f"GPQA-D, Connect4) at {a.tokens_per_gpu_second:,.0f} tokens/s per GPU, {a.engine_start_minutes:g} min per vLLM "
              f"engine; {100 * a.correct_rate:.0f}% of samples correct; Oracle requests of {a.oracle_input_tokens:,} + "
              f"{a.oracle_output_tokens:,} tokens at ${a.oracle_usd_per_m_input:g} / ${a.oracle_usd_per_m_output:g} per M, "
              f"{a.oracle_seconds_per_request:g} s each, {profile.rectification.oracle.max_concurrency} at once; "
              f"{a.model_gb:g} GB per saved model, {a.optimizer_gb_per_checkpoint:g} GB of optimizer state per checkpoint "
              "(the last two are kept while a run trains). Change them in the profile's `plan` section."]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from .config import load_profile
    from .tasks import tasks_of  # torch and the suites: only when run, so notebooks import plan quickly

    parser = argparse.ArgumentParser(description="check this machine for a profile and print what it will cost")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--dry-run", action="store_true", help="print the checks and the plan, exit 0, run nothing")
    parser.add_argument("--check-only", action="store_true", help="only the checks (make reproduce runs this first)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    if not tasks_of(profile).needs_plan:
        print(f"profile {profile.name} runs on the CPU in about 20 minutes (README); nothing to plan")
        return 0
    checks = machine_checks(profile)
    if args.dry_run:
        print(report(profile, checks))
        print("\nDRY_RUN: nothing was started")
        return 0
    try:
        require(profile, checks)
    except PlanError as e:
        print(f"error: {e}")
        return 1
    print(report(profile, checks) if not args.check_only else f"profile {profile.name}: every check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
