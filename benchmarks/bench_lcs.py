"""Exact LCS (rapidfuzz) vs difflib.SequenceMatcher on token-id sequences.

Why: Eq. 1 of SPoT needs the exact LCS; difflib's matching blocks are a greedy common
subsequence that can be shorter, which would inflate R_LCS. Run: python benchmarks/bench_lcs.py
"""
import difflib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from spot_utils.rectify import lcs_length, lcs_length_dp  # noqa: E402

VOCAB = 1000
SIZES = (1_000, 4_000, 16_000)
DP_MAX = 4_000  # the pure-Python DP is O(n*m): skip it above this
ZIPF = [1 / (k + 1) for k in range(VOCAB)]  # Zipf-like id frequencies, as in real text


def random_ids(rng, n, zipf=False):
    """n ids from the vocabulary, uniform or Zipf-distributed."""
    if not zipf:
        return [rng.randrange(VOCAB) for _ in range(n)]
    return rng.choices(range(VOCAB), weights=ZIPF, k=n)


def edited_copy(rng, a, n_edits=5, max_span=30):
    """a with a few spans replaced, inserted or deleted (a rectifier's 'surgical' edit)."""
    b = list(a)
    for _ in range(n_edits):
        i, k = rng.randrange(len(b)), rng.randint(1, max_span)
        op = rng.choice(["replace", "insert", "delete"])
        new = random_ids(rng, k, zipf=True)
        if op == "replace":
            b[i:i + k] = new
        elif op == "insert":
            b[i:i] = new
        else:
            del b[i:i + k]
    return b


def timed(fn, *args, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def difflib_total(a, b):
    """Length of difflib's common subsequence (sum of its matching blocks)."""
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(m.size for m in sm.get_matching_blocks())


def main():
    rng = random.Random(0)
    header = (f"{'n':>6} {'pair':<15} {'exact LCS':>9} {'rapidfuzz ms':>12} {'difflib ms':>10} "
              f"{'difflib':>8} {'differs':>7} {'DP ms':>8} {'DP agrees':>9}")
    print(header)
    print("-" * len(header))
    t0 = time.perf_counter()
    for n in SIZES:
        base_u, base_z = random_ids(rng, n), random_ids(rng, n, zipf=True)
        # "edited"/"rewritten": y+ is y- (Zipf ids, like text) with a few / many spans changed
        pairs = {
            "random": (base_u, random_ids(rng, n)),
            "edited": (base_z, edited_copy(rng, base_z)),
            # many edits (~20-30% of tokens): the regime near a typical gamma
            "rewritten": (base_z, edited_copy(rng, base_z, n_edits=n // 60)),
        }
        for name, (a, b) in pairs.items():
            exact, t_rf = timed(lcs_length, a, b, repeat=3)
            greedy, t_dl = timed(difflib_total, a, b)  # one call: slow at 16k
            if n <= DP_MAX:
                ref, t_dp = timed(lcs_length_dp, a, b)
                dp_ms, agrees = f"{t_dp * 1e3:8.0f}", "yes" if ref == exact else "NO"
            else:
                dp_ms, agrees = f"{'skipped':>8}", "-"
            differs = "yes" if greedy != exact else "no"
            print(f"{n:>6} {name:<15} {exact:>9} {t_rf * 1e3:>12.2f} {t_dl * 1e3:>10.0f} "
                  f"{greedy:>8} {differs:>7} {dp_ms} {agrees:>9}", flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
