"""Shared-prefix pair forward: each (y+, y-) pair scored in one pass, its common beginning computed once.

A pair's two rows, prompt + y+ and prompt + y-, begin with the same tokens: the prompt and, for SPoT's
minimal edits, a good part of the answer. Run as two rows (TRL's DPOTrainer, and our trainer with
`training.shared_prefix: false`), those tokens go through the model twice. Here a pair is one row:

    tokens     c_0 ... c_{L-1}  c_L ... c_{n-1}  |  r_{L-1}  r_L ... r_{m-1}
               shared prefix    y+ suffix        |  y- suffix, after a copy of the last shared token
    positions  0 ... L-1        L ... n-1        |  L-1      L ... m-1

c is prompt + y+ (n tokens), r is prompt + y- (m tokens), L their common prefix. The y- part attends to
the shared tokens before it (0 .. L-2) and causally to itself, never to the y+ suffix, and its positions
continue where the shared part ends; so every token sees exactly what it sees in its own row, and the
log-probs (and their gradients) equal those of two separate forwards up to float rounding.

Why the copy of token L-1: its output predicts both c_L and r_L, but a row has one next-token target per
position. The copy sees what the original sees (the same tokens at the same positions), so it computes
the same hidden state and predicts r_L. One token per pair buys a plain row with one target per position,
which TRL's fused LM head scores as it is (`shift_labels`).

Why a block attention mask with explicit position_ids and not a KV cache of the prefix: it is one ordinary
forward of any transformers causal LM (a 4D mask is passed through to the attention as given), so gradient
checkpointing, DeepSpeed and the fused LM head work unchanged, and the gradient through the shared tokens
needs nothing special. The price: the mask is [rows, 1, P, P], and it needs an attention kernel that takes
an arbitrary mask: SDPA (or eager), not FlashAttention-2 (`check_attention`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .rectify import common_prefix_length

IGNORE = -100                      # transformers' "no target here"
MASK_KERNELS = ("sdpa", "eager", "portable")   # attention implementations that take a 4D block mask as given


@dataclass
class PackedPairs:
    """A batch of pairs, one row each (right-padded to the longest), ready for one forward."""
    input_ids: torch.Tensor        # [pairs, P]
    position_ids: torch.Tensor     # [pairs, P]
    attention_mask: torch.Tensor   # [pairs, 1, P, P] bool, True where a query (row) may attend a key (column)
    shift_labels: torch.Tensor     # [pairs, P] the token position j predicts, IGNORE where none is scored
    chosen: torch.Tensor           # [pairs, P] bool: position j predicts a y+ completion token
    rejected: torch.Tensor         # [pairs, P] bool: position j predicts a y- completion token
    shared: torch.Tensor           # [pairs] common prefix length L (prompt included)

    def summed_logps(self, token_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y+ log-probs, y- log-probs) summed per pair, from per-position log-probs [pairs, P].
        A shared completion token counts for both, as it does in two separate rows."""
        return (token_logps * self.chosen).sum(dim=1), (token_logps * self.rejected).sum(dim=1)


def _real_length(attention_mask_row: torch.Tensor, row: int) -> int:
    length = int(attention_mask_row.sum())
    if not bool(attention_mask_row[:length].all()):
        raise ValueError(f"row {row} is not right-padded (its attention mask has a 0 before a 1); "
                         "the shared-prefix forward needs TRL's right-padded pair batches")
    return length


def pair_spans(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[tuple[int, int, int]]:
    """(y+ row length n, y- row length m, common prefix L) of each pair of a batch [chosen; rejected]."""
    if input_ids.size(0) % 2:
        raise ValueError(f"a pair batch has chosen rows then rejected rows; got an odd {input_ids.size(0)} rows")
    pairs = input_ids.size(0) // 2
    spans = []
    for i in range(pairs):
        n, m = _real_length(attention_mask[i], i), _real_length(attention_mask[pairs + i], pairs + i)
        spans.append((n, m, common_prefix_length(input_ids[i, :n].tolist(), input_ids[pairs + i, :m].tolist())))
    return spans


def packed_length(n: int, m: int, shared: int) -> int:
    """Tokens in a pair's packed row: y+'s row, then y-'s row from the copy of its last shared token."""
    return n + m - max(shared - 1, 0)


def pack_pairs(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
               pairs: torch.Tensor, spans: list[tuple[int, int, int]] | None = None,
               pad_token_id: int = 0) -> PackedPairs:
    """The packed rows of `pairs` (indices into the chosen half) of a right-padded batch [chosen; rejected],
    as TRL's DataCollatorForPreference makes it. `spans` from `pair_spans` (computed here when None)."""
    spans = pair_spans(input_ids, attention_mask) if spans is None else spans
    half = input_ids.size(0) // 2
    chosen_rows = [int(i) for i in pairs]
    lengths = [packed_length(*spans[i]) for i in chosen_rows]
    rows, width = len(chosen_rows), max(lengths)
    device = input_ids.device
    ids = torch.full((rows, width), pad_token_id, dtype=input_ids.dtype, device=device)
    positions = torch.zeros((rows, width), dtype=torch.long, device=device)
    mask = torch.zeros((rows, 1, width, width), dtype=torch.bool, device=device)
    labels = torch.full((rows, width), IGNORE, dtype=input_ids.dtype, device=device)
    chosen = torch.zeros((rows, width), dtype=torch.bool, device=device)
    rejected = torch.zeros((rows, width), dtype=torch.bool, device=device)
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    for k, i in enumerate(chosen_rows):
        n, m, shared = spans[i]
        start = max(shared - 1, 0)      # y-'s part begins with a copy of its last shared token
        c, r = input_ids[i, :n], input_ids[half + i, :m]
        c_completion, r_completion = completion_mask[i, :n].bool(), completion_mask[half + i, :m].bool()
        tail = m - start                # tokens of y-'s part
        ids[k, :n], ids[k, n:n + tail] = c, r[start:]
        positions[k, :n] = torch.arange(n, device=device)
        positions[k, n:n + tail] = torch.arange(start, m, device=device)
        # y+'s part: causal. y-'s part: the shared tokens before the copy, then causal within itself.
        mask[k, 0, :n, :n] = causal[:n, :n]
        mask[k, 0, n:n + tail, :start] = True
        mask[k, 0, n:n + tail, n:n + tail] = causal[:tail, :tail]
        mask[k, 0, n + tail:, n + tail:] = torch.eye(width - n - tail, dtype=torch.bool, device=device)  # padding
        # Position j of y+'s part predicts c[j+1]; it predicts r[j+1] too while j + 1 <= start (shared tokens
        # before the copy). Position n + t of y-'s part predicts r[start + t + 1].
        chosen[k, :n - 1] = c_completion[1:]
        rejected[k, :start] = r_completion[1:start + 1]
        rejected[k, n:n + tail - 1] = r_completion[start + 1:]
        labels[k, :n - 1] = c[1:]
        labels[k, n:n + tail - 1] = r[start + 1:]
    labels = labels.masked_fill(~(chosen | rejected), IGNORE)
    shared = torch.tensor([spans[i][2] for i in chosen_rows], device=device)
    return PackedPairs(ids, positions, mask, labels, chosen, rejected, shared)


def model_mask(mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The block mask as the model's attention takes it: boolean for SDPA, additive for eager and portable."""
    check_attention(attn_implementation)
    if attn_implementation in ("eager", "portable"):
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask


def check_attention(attn_implementation: str) -> None:
    if attn_implementation not in MASK_KERNELS:
        raise ValueError(f"training.shared_prefix needs an attention kernel that takes a block mask "
                         f"({' or '.join(MASK_KERNELS)}); the model runs {attn_implementation!r}. Set "
                         "model.attn_implementation: sdpa, or training.shared_prefix: false")


def token_counts(spans: list[tuple[int, int, int]]) -> dict[str, int]:
    """Real tokens one forward carries: two rows per pair, or one packed row (for benchmarks and notebooks)."""
    return {"separate": sum(n + m for n, m, _ in spans),
            "shared_prefix": sum(packed_length(n, m, s) for n, m, s in spans)}
