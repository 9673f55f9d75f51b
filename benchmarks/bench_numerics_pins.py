"""What the pinned CPU numerics cost: the same training work with and without the pins, side by side.

Why: the Makefile pins the CPU numerics (spot_utils.environment.NUMERICS_PINS: torch's AVX2 kernels,
MKL's COMPATIBLE branch, 2 threads) so that every x86-64 CPU computes the same bits (README,
"Reproducibility"). That gives up the wider kernels and MKL's fast paths; this measures how much time
that costs on the machine at hand. The variables are read when torch loads, so each setting runs in its
own process, alternately, best of a few rounds (other tenants only slow a run down).
The work: forward + backward of the tiny profile's model on a pretraining-sized batch, 1 and 2 threads.
Run: python benchmarks/bench_numerics_pins.py
"""
import os
import subprocess
import sys
from pathlib import Path

from spot_utils.environment import NUMERICS_PINS as PINS

ROOT = Path(__file__).resolve().parents[1]
ROUNDS, STEPS = 3, 20

WORK = f"""
import time, torch
from spot_utils.config import load_profile
from spot_utils.modeling import build_char_tokenizer, build_tiny_model
profile = load_profile("tiny")
tok = build_char_tokenizer()
model = build_tiny_model(profile.model, tok, seed=0)
ids = torch.randint(5, len(tok), (profile.pretrain.batch_size, 80), generator=torch.Generator().manual_seed(0))
for threads in (1, 2):
    torch.set_num_threads(threads)
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    start = time.perf_counter()
    for _ in range({STEPS}):
        model(input_ids=ids, labels=ids).loss.backward()
    print(threads, torch.backends.cpu.get_cpu_capability(), (time.perf_counter() - start) / {STEPS})
"""


def run(pinned: bool) -> dict[int, tuple[str, float]]:
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    if pinned:
        env.update(PINS)
    out = subprocess.run([sys.executable, "-c", WORK], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {int(t): (kernels, float(s)) for t, kernels, s in rows}


def main():
    best: dict[tuple[bool, int], float] = {}
    kernels: dict[bool, str] = {}
    for _ in range(ROUNDS):
        for pinned in (False, True):
            for threads, (k, seconds) in run(pinned).items():
                kernels[pinned] = k
                best[pinned, threads] = min(best.get((pinned, threads), float("inf")), seconds)
    print(f"fwd+bwd of the tiny model on a batch of pretraining size, best of {ROUNDS} rounds x {STEPS} steps")
    print(f"{'threads':>8} {'unpinned (' + kernels[False] + ')':>20} {'pinned (' + kernels[True] + ')':>18} {'cost':>7}")
    for threads in (1, 2):
        free, pinned = best[False, threads], best[True, threads]
        print(f"{threads:>8} {free:>18.3f} s {pinned:>16.3f} s {pinned / free - 1:>+7.0%}")


if __name__ == "__main__":
    main()
