"""What the portable CPU numerics cost: the same training work three ways, side by side.

Why: the tiny profile runs portable numerics (spot_utils.environment.NUMERICS_PINS: torch's AVX2 kernels,
the matrix products on OpenBLAS's Haswell kernels instead of MKL, spot_utils.tiny.portable) so that every
x86-64 CPU computes the same bits (README, "Reproducibility"). This measures the time on the machine at
hand against (a) the stock model, unpinned (MKL and torch pick their kernels for this CPU), and (b) the
earlier attempt, MKL_CBWR=COMPATIBLE with torch's AVX2 kernels (same bits on one vendor only). The
variables are read when torch loads, so each setting runs in its own process, alternately, best of a few
rounds (other tenants only slow a run down).
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

SETTINGS = {  # name: (environment variables, portable model)
    "stock": ({}, False),
    "MKL COMPATIBLE": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}, False),
    "portable": (PINS, True),
}

WORK = """
import dataclasses, sys, time, torch
from spot_utils.config import load_profile
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model
profile = load_profile("tiny")
tok = build_char_tokenizer()
model = build_tiny_model(dataclasses.replace(profile.model, portable_numerics=sys.argv[1] == "1"), tok, seed=0)
ids = torch.randint(5, len(tok), (profile.pretrain.batch_size, 80), generator=torch.Generator().manual_seed(0))
for threads in (1, 2):
    torch.set_num_threads(threads)
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up
    start = time.perf_counter()
    for _ in range(STEPS):
        model(input_ids=ids, labels=ids).loss.backward()
    print(threads, torch.backends.cpu.get_cpu_capability(), (time.perf_counter() - start) / STEPS)
""".replace("STEPS", str(STEPS))


def run(setting: str) -> dict[int, tuple[str, float]]:
    variables, portable = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in set(PINS) | {"MKL_CBWR"}}
    env.update(variables)
    out = subprocess.run([sys.executable, "-c", WORK, "1" if portable else "0"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {int(t): (kernels, float(s)) for t, kernels, s in rows}


def main():
    best: dict[tuple[str, int], float] = {}
    kernels: dict[str, str] = {}
    for _ in range(ROUNDS):
        for setting in SETTINGS:
            for threads, (k, seconds) in run(setting).items():
                kernels[setting] = k
                best[setting, threads] = min(best.get((setting, threads), float("inf")), seconds)
    print(f"fwd+bwd of the tiny model on a batch of pretraining size, best of {ROUNDS} rounds x {STEPS} steps")
    print(f"{'threads':>8}" + "".join(f"{f'{s} ({kernels[s]})':>26}" for s in SETTINGS) + f"{'portable/stock':>16}")
    for threads in (1, 2):
        row = "".join(f"{best[s, threads]:>24.3f} s" for s in SETTINGS)
        print(f"{threads:>8}{row}{best['portable', threads] / best['stock', threads]:>15.2f}x")


if __name__ == "__main__":
    main()
