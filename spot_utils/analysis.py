"""Measurements behind the paper's analysis (Sec. 3-4): the gradient identity of Eq. 6 on a real
model, and where an update lands, token by token (shared prefix vs divergent tokens).

Token conventions follow the trainer (TRL): a completion is scored on its own tokens plus the end
token, given the chat-formatted prompt; log-probs are summed over those tokens (Eq. 3).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from . import losses


def _encode(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    p = tokenizer.encode(prompt, add_special_tokens=False)
    c = tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
    return p + c, len(p)


def token_logps(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """log pi(y_t | x, y_<t) for every completion token (and the end token), with gradients if enabled."""
    ids, n_prompt = _encode(tokenizer, prompt, completion)
    ids_t = torch.tensor([ids], device=model.device)
    logits = model(input_ids=ids_t, use_cache=False).logits[0, :-1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 stays float64 (Eq. 6 check)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids_t[0, 1:, None])[:, 0]
    return logp[n_prompt - 1:]


@torch.no_grad()
def token_logps_batch(model, tokenizer, items: Sequence[tuple[str, str]], batch_size: int = 64) -> list[torch.Tensor]:
    """token_logps (no gradients) for many (prompt, completion) items, run in batches of similar
    length: one forward per batch instead of one per item. Same values up to float rounding."""
    encoded = [_encode(tokenizer, prompt, completion) for prompt, completion in items]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        length = max(len(encoded[i][0]) for i in rows)
        ids = torch.full((len(rows), length), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(rows):  # right padding: with causal attention no real token sees it
            ids[row, :len(encoded[i][0])] = torch.tensor(encoded[i][0])
            mask[row, :len(encoded[i][0])] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        for row, i in enumerate(rows):
            seq, n_prompt = encoded[i]
            out[i] = logp[row, n_prompt - 1:len(seq) - 1].cpu()
    return out


def common_prefix_tokens(tokenizer, a: str, b: str) -> int:
    """How many leading completion tokens a and b share (the rest is "divergent")."""
    ta, tb = tokenizer.encode(a, add_special_tokens=False), tokenizer.encode(b, add_special_tokens=False)
    n = 0
    while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
        n += 1
    return n


# -----------------------------------------------------------------------------
# Eq. 6: the Reward-SFT gradient is the SFT gradient scaled by the tether


def gradient_identity(policy, reference, tokenizer, pairs: Sequence[dict], beta: float) -> pd.DataFrame:
    """For each pair, compare with autograd (float64):
        g_rw  = grad of  -log sigmoid(r(x, y+))            (Reward-SFT, Eq. 5)
        g_sft = grad of  -log pi(y+|x)                      (SFT, Eq. 2)
    Eq. 6 says g_rw = (1 - sigmoid(r)) * beta * g_sft. Returns r, lambda = 1 - sigmoid(r), the largest
    deviation from the identity (L2 over all parameters) and the relative error, per example.
    Meaningful only where lambda is representable: see eq6_check, which picks such pairs."""
    policy, reference = policy.double().eval(), reference.double().eval()
    params = [p for p in policy.parameters() if p.requires_grad]
    rows = []
    for pair in pairs:
        with torch.no_grad():
            ref_logp = token_logps(reference, tokenizer, pair["prompt"], pair["chosen"]).sum()
        logp = token_logps(policy, tokenizer, pair["prompt"], pair["chosen"]).sum()
        r = losses.implicit_reward(logp, ref_logp, beta)
        g_rw = torch.autograd.grad(-torch.nn.functional.logsigmoid(r), params, retain_graph=True)
        g_sft = torch.autograd.grad(-logp, params)
        lam = float(losses.tether(r.detach()))
        dev = sum(float((a - lam * beta * b).pow(2).sum()) for a, b in zip(g_rw, g_sft)) ** 0.5
        norm_sft = sum(float(b.pow(2).sum()) for b in g_sft) ** 0.5
        rows.append({"id": pair["id"], "r": float(r.detach()), "lambda": lam, "|g_sft|": norm_sft,
                     "|g_rw - lambda beta g_sft|": dev, "rel_err": dev / max(lam * beta * norm_sft, 1e-300)})
    policy.float(), reference.float()
    return pd.DataFrame(rows)


@torch.no_grad()
def chosen_rewards(policy, reference, tokenizer, pairs: Sequence[dict], beta: float) -> list[float]:
    """r(x, y+) = beta (log pi(y+|x) - log pi_ref(y+|x)) for each pair, batched, no gradients."""
    items = [(pair["prompt"], pair["chosen"]) for pair in pairs]
    return [beta * float(new.sum() - old.sum()) for new, old in
            zip(token_logps_batch(policy, tokenizer, items), token_logps_batch(reference, tokenizer, items))]


def _rewards_in_chunks(policy, reference, tokenizer, pairs, beta, size):
    """(pair, r) in order, scored a chunk at a time: a caller that stops early scores no more."""
    for start in range(0, len(pairs), size):
        chunk = pairs[start:start + size]
        yield from zip(chunk, chosen_rewards(policy, reference, tokenizer, chunk, beta))


# Below this lambda the identity cannot be checked in floating point: the model's float32 segments
# (Qwen3RMSNorm computes in float32 even in a float64 model) flush the scaled gradient towards zero
# while lambda itself is still a tiny nonzero float64, so "deviation / (lambda beta |g_sft|)" becomes a
# ratio of two underflows (0.99 at r = 132, lambda ~ 5e-58). At 1e-6 (r < 13.8) the check keeps a margin
# of many orders of magnitude above any underflow.
MIN_CHECKABLE_LAMBDA = 1e-6


def eq6_check(policy, reference, tokenizer, pairs: Sequence[dict], beta: float, n: int = 6,
              min_lambda: float = MIN_CHECKABLE_LAMBDA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Eq. 6 on the first n pairs (in the given order) whose lambda is representable.

    Returns (checked, saturated): gradient_identity's rows for the checked pairs, and the pairs passed
    over on the way because the reward saturated the sigmoid (lambda < min_lambda), with their r and lambda.
    A saturated pair is not a failure of the identity (lambda ~ 0 there: the tether has let go), only a
    place where float64 cannot show it."""
    chosen, saturated = [], []
    for pair, r in _rewards_in_chunks(policy, reference, tokenizer, pairs, beta, size=4 * n):
        if len(chosen) == n:
            break
        lam = float(losses.tether(torch.tensor(r, dtype=torch.float64)))
        if lam >= min_lambda:
            chosen.append(pair)
        else:
            saturated.append({"id": pair["id"], "r": r, "lambda": lam})
    checked = gradient_identity(policy, reference, tokenizer, chosen, beta)
    return checked, pd.DataFrame(saturated, columns=["id", "r", "lambda"])


# -----------------------------------------------------------------------------
# where the update lands: shared prefix vs divergent tokens (Sec. 4.5), and the pull-up (Fig. 4)


@torch.no_grad()
def logp_change_by_region(policy, reference, tokenizer, pairs: Sequence[dict],
                          reference_cache: dict | None = None) -> pd.DataFrame:
    """Per pair and per response (y+ / y-), the change of log pi summed over
      shared   the completion tokens before y+ and y- first differ (same context, same token in both),
      diverg.  every token from the first difference on (including the end token),
    plus the per-token means. Summed over both regions this is r / beta, the implicit reward (Eq. 3).
    Pass the same `reference_cache` dict when comparing several policies: the reference pass runs once."""
    reference_cache = {} if reference_cache is None else reference_cache
    policy, reference = policy.eval(), reference.eval()
    keys = [(pair["id"], side) for pair in pairs for side in ("y+", "y-")]
    items = [(pair["prompt"], pair[field]) for pair in pairs for field in ("chosen", "rejected")]
    missing = [i for i, key in enumerate(keys) if key not in reference_cache]
    for i, logps in zip(missing, token_logps_batch(reference, tokenizer, [items[i] for i in missing])):
        reference_cache[keys[i]] = logps
    new_logps = token_logps_batch(policy, tokenizer, items)
    rows = []
    for pair_index, pair in enumerate(pairs):
        shared = common_prefix_tokens(tokenizer, pair["chosen"], pair["rejected"])
        for k, side in enumerate(("y+", "y-")):
            old = reference_cache[pair["id"], side]
            diff = new_logps[2 * pair_index + k] - old
            rows.append({"id": pair["id"], "response": side, "shared_tokens": shared,
                         "divergent_tokens": len(diff) - shared,
                         "ref_logp_shared": float(old[:shared].sum()), "ref_logp_divergent": float(old[shared:].sum()),
                         "change_shared": float(diff[:shared].sum()), "change_divergent": float(diff[shared:].sum()),
                         "change_total": float(diff.sum())})
    return pd.DataFrame(rows)


def region_summary(changes: pd.DataFrame) -> pd.DataFrame:
    """Mean change of log pi per pair and per token, by response and region."""
    out = {}
    for side, g in changes.groupby("response", sort=False):
        out[side] = {"shared (sum)": g.change_shared.mean(), "divergent (sum)": g.change_divergent.mean(),
                     "total (sum)": g.change_total.mean(),
                     "shared (per token)": g.change_shared.sum() / max(1, g.shared_tokens.sum()),
                     "divergent (per token)": g.change_divergent.sum() / max(1, g.divergent_tokens.sum()),
                     "ref log p per shared token": g.ref_logp_shared.sum() / max(1, g.shared_tokens.sum())}
    return pd.DataFrame(out).T
