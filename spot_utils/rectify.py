"""The SPoT data filter: how much did the rectification change the response?

Eq. 1 of the paper: R_LCS(y-, y+) = 1 - |LCS(y-, y+)| / |y+|, with an EXACT longest common
subsequence over token ids. Pairs with R_LCS > gamma are dropped (the "surgical" edit was
not surgical). difflib.SequenceMatcher is not used: it is greedy and can undercount the LCS.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

from rapidfuzz.distance import LCSseq


def _ids(seq: Sequence[int]) -> list[int]:
    # plain Python ints, so numpy arrays / torch tensors / tuples all behave the same in rapidfuzz
    return [int(x) for x in seq]


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Exact LCS length of two token-id sequences (rapidfuzz, bit-parallel, ~O(n*m/64))."""
    return int(LCSseq.similarity(_ids(a), _ids(b)))


def lcs_length_dp(a: Sequence[int], b: Sequence[int]) -> int:
    """Plain O(n*m) dynamic-programming LCS length. Reference for tests and the benchmark only."""
    if len(a) < len(b):
        a, b = b, a  # keep the row (length of b) short
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def change_ratio(rejected_tokens: Sequence[int], chosen_tokens: Sequence[int]) -> float:
    """R_LCS = 1 - LCS(y-, y+) / |y+|: 0.0 if y+ is a subsequence of y-, 1.0 if nothing is shared.

    An empty rejected response gives 1.0. An empty chosen response raises ValueError: the
    ratio divides by |y+| and is undefined, and an empty target is not a usable pair anyway.
    """
    if len(chosen_tokens) == 0:
        raise ValueError("change_ratio is undefined for an empty chosen response (|y+| = 0)")
    return 1.0 - lcs_length(rejected_tokens, chosen_tokens) / len(chosen_tokens)


def common_prefix_length(a: Sequence, b: Sequence) -> int:
    """Number of leading positions where a and b agree."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class MissingChangeRatioError(ValueError, KeyError):
    """A pair without a usable "change_ratio" (catchable as ValueError or KeyError)."""

    __str__ = ValueError.__str__  # KeyError would repr() the message


def filter_pairs(pairs: list[dict], gamma: float) -> tuple[list[dict], dict]:
    """Keep pairs with change_ratio <= gamma. Returns (kept, report).

    report = {"total", "kept", "dropped_over_gamma"}; kept + dropped always equals total.
    Raises ValueError for gamma outside [0, 1] or a pair without a numeric change_ratio.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
    kept, dropped = [], 0
    for i, pair in enumerate(pairs):
        ratio = pair.get("change_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or math.isnan(ratio):
            name = f"id={pair['id']!r}" if "id" in pair else f"index {i} (no 'id')"
            raise MissingChangeRatioError(
                f"pair {name} has no numeric 'change_ratio' (got {ratio!r}); "
                f"compute it with change_ratio() before filtering")
        if ratio <= gamma:
            kept.append(pair)
        else:
            dropped += 1
    return kept, {"total": len(pairs), "kept": len(kept), "dropped_over_gamma": dropped}


def edit_spans(rejected_tokens: Sequence[int], chosen_tokens: Sequence[int],
               max_cells: int = 4_000_000) -> list[tuple[int, int]]:
    """Spans [start, end) of chosen_tokens outside one LCS alignment with rejected_tokens.

    These are the tokens the rectifier inserted or rewrote (for highlighting in notebooks).
    The shared prefix and suffix are matched directly (always consistent with some LCS); the
    middle is aligned by an O(n*m) DP table, refused (ValueError) above `max_cells` cells.
    """
    a, b = _ids(rejected_tokens), _ids(chosen_tokens)
    pre = common_prefix_length(a, b)
    suf = common_prefix_length(a[pre:][::-1], b[pre:][::-1])
    mid_a, mid_b = a[pre:len(a) - suf], b[pre:len(b) - suf]
    n, m = len(mid_a), len(mid_b)
    if n * m > max_cells:
        raise ValueError(f"edit region is {n} x {m} tokens, above max_cells={max_cells}")

    # L[i][j] = LCS length of mid_a[i:] and mid_b[j:] (suffix form, so we can walk forwards)
    L = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = L[i], L[i + 1]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if mid_a[i] == mid_b[j] else max(below[j], row[j + 1])

    matched = [False] * m
    i = j = 0
    while i < n and j < m:
        if mid_a[i] == mid_b[j] and L[i][j] == L[i + 1][j + 1] + 1:
            matched[j] = True
            i, j = i + 1, j + 1
        elif L[i + 1][j] >= L[i][j + 1]:
            i += 1  # drop a rejected token
        else:
            j += 1  # chosen token is new

    spans, start = [], None
    for j, ok in enumerate(matched):
        if not ok and start is None:
            start = j
        elif ok and start is not None:
            spans.append((pre + start, pre + j))
            start = None
    if start is not None:
        spans.append((pre + start, pre + m))
    return spans
