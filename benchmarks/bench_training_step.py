"""One post-training step of the tiny profile, as notebooks 02 and 03 run it (one thread per worker).

Why: those notebooks train 30 runs of 50 steps on 2 cores, so the step time sets their wall time.
A micro-batch of 16 pairs is 32 right-padded rows whose longest response sets every row's length;
`training.length_group_rows` runs the rows as forwards of 8 similar-length rows instead. This prints
the padded-token share and the step time both ways, on the same batches, plus the evaluation speed.
The machine's speed varies between sessions (shared cores): compare the two columns, not days.

Uses the tiny base and pairs when `make reproduce` has made them (runs/tiny), else a random-init
model of the same shape on synthetic pairs. Run: python benchmarks/bench_training_step.py
"""
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ["TQDM_DISABLE"] = "1"  # TRL's reference-pass bar
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from spot_utils import experiments, training  # noqa: E402
from spot_utils.config import load_profile  # noqa: E402
from spot_utils.data import read_jsonl  # noqa: E402
from spot_utils.evaluation import evaluate_profile  # noqa: E402
from spot_utils.modeling import base_dir  # noqa: E402
from spot_utils.modeling import prompt_text  # noqa: E402
from spot_utils.tasks import load_base  # noqa: E402
from spot_utils.tiny import arithmetic, world  # noqa: E402
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model  # noqa: E402

BATCHES, REPEATS = 6, 3


def synthetic_pairs(n=400, seed=0):
    """y+ = the model-style solution, y- = the same with one step off (or, for a fifth, the Oracle's
    direct style as y+: the long rewrites that make batches ragged)."""
    rng, tok, out = random.Random(seed), build_char_tokenizer(), []
    for i in range(n):
        p = arithmetic.random_problem(rng, rng.choice([2, 3, 4]))
        good = arithmetic.solution_text(p)
        bad = good.replace("=", "=1", 1)
        chosen = arithmetic.direct_solution_text(p) if rng.random() < 0.2 else good
        out.append({"prompt": prompt_text(tok, arithmetic.question_text(p)), "chosen": chosen, "rejected": bad})
    return out


def main():
    torch.set_num_threads(1)
    profile = load_profile("tiny")
    pairs_file = profile.runs / "data" / f"pairs_gamma{profile.rectification.gamma:g}.jsonl"
    if (base_dir(profile) / "model.safetensors").exists() and pairs_file.exists():
        model, tok = load_base(profile)
        records, source = read_jsonl(pairs_file), f"{pairs_file.relative_to(profile.runs.parent.parent)}, the tiny base"
    else:
        tok = build_char_tokenizer()
        model = build_tiny_model(profile.model, tok, seed=0)
        records, source = synthetic_pairs(), "synthetic pairs, a random-init tiny model (run `make reproduce` first for real ones)"
    print(f"data: {source}; {BATCHES} micro-batches of {profile.training.per_device_batch_size} pairs, 1 thread")

    steps = -(-len(records) // profile.training.per_device_batch_size)  # of a full run, for the estimate below
    with tempfile.TemporaryDirectory() as tmp:  # the first batches' worth of pairs: a short reference pass
        trainer = training.build_trainer("spot_bco", records[:BATCHES * profile.training.per_device_batch_size], profile,
                                         tmp, model=model, tokenizer=tok, progress=False)
        batches = [b for _, b in zip(range(BATCHES), trainer.get_train_dataloader())]
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        policy = trainer.model.train()
        rows = []
        for group_rows in (0, profile.training.length_group_rows):
            padded = sum(sum(len(r) * length for r, length in
                             training.length_groups(b["attention_mask"], torch.arange(len(b["input_ids"])), group_rows))
                         for b in batches)
            trainer.group_rows, best = group_rows, float("inf")
            for _ in range(REPEATS):  # best of REPEATS: other tenants of the machine only ever slow it down
                start = time.perf_counter()
                for b in batches:
                    trainer.compute_loss(policy, b).backward()
                policy.zero_grad()
                best = min(best, (time.perf_counter() - start) / BATCHES)
            rows.append((group_rows, 1 - real / padded, best))
    print(f"{'length_group_rows':>18} {'padded tokens':>14} {'s / step (fwd+bwd)':>19}")
    for group_rows, pad, seconds in rows:
        print(f"{group_rows or 'off (one forward)':>18} {pad:>13.0%} {seconds:>19.3f}")
    print(f"speed-up: {rows[0][2] / rows[1][2]:.2f}x")

    tests = world.test_sets(profile.world, profile.seed)
    start = time.perf_counter()
    evaluate_profile(model, tok, profile, tests, progress=False)
    seconds = time.perf_counter() - start
    print(f"evaluation of one run: {len(tests)} test questions in {seconds:.1f} s ({len(tests) / seconds:.0f} / s)")
    # + notebook 02's hot-pairs run and its runs at one learning rate
    runs = len(experiments.table_specs(profile)) + 1 + len(experiments.common_rate_specs(profile))
    workers = experiments.grid_workers(profile)  # experiments.workers, 0 meaning one per core
    estimate = runs * (steps * rows[1][2] + seconds) / workers
    print(f"estimate for the {runs} runs of notebooks 02 + 03 on {workers} workers "
          f"(each timed as a pair run of {steps} steps + one evaluation): at least {estimate / 60:.1f} min "
          f"(best-of-{REPEATS} step times; no optimizer step, probes, loading or reference passes)")


if __name__ == "__main__":
    main()
