"""Grouped-query attention in the portable model: shared kv heads against copied ones, side by side.

Why: the tiny Qwen3 has 4 query heads on 2 kv heads. transformers' eager attention copies each kv head
for its query heads (repeat_kv); at every generated token that copies the whole key/value cache, and its
backward scatters the copies back. The portable attention (spot_utils.tiny.portable.attention) lets numpy
broadcast each kv head over its query heads instead: every 2-D product is the one the copy gave, so the
bits are the same (checked here on every output and gradient), only the copies are gone.
The work, on the tiny base (or a random-init model of its shape before `make reproduce`), one thread as
every post-training run: (a) sampling answers to test questions as evaluation does, (b) forward + backward
of a pretraining batch. Best of a few interleaved rounds (other tenants of the machine only slow a round).
Run: python benchmarks/bench_attention.py
"""
import sys
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from spot_utils.config import load_profile  # noqa: E402
from spot_utils.generation import generate  # noqa: E402
from spot_utils.modeling import base_dir  # noqa: E402
from spot_utils.tasks import load_base  # noqa: E402
from spot_utils.tiny import portable, world  # noqa: E402
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model  # noqa: E402
from spot_utils.tiny.pretrain import task_micro_batches  # noqa: E402

ROUNDS, QUESTIONS = 3, 300
COPIED = "portable_copied_kv"


def copied_kv_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """The portable attention as it was: kv heads copied to every query head (repeat_interleave)."""
    groups = module.num_key_value_groups
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = portable.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return portable.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(COPIED, copied_kv_attention)
AttentionMaskInterface.register(COPIED, eager_mask)


def main():
    torch.set_num_threads(1)
    profile = load_profile("tiny")
    if (base_dir(profile) / "model.safetensors").exists():
        model, tok = load_base(profile)
        source = "the tiny base"
    else:
        tok = build_char_tokenizer()
        model, source = build_tiny_model(profile.model, tok, seed=0), "a random-init tiny model (no base yet)"
    by_task = {}
    for ex in world.test_sets(profile.world, profile.seed):
        by_task.setdefault(ex.task, []).append(ex.question)
    questions = [q for qs in by_task.values() for q in qs[:QUESTIONS // len(by_task)]]
    stream = world.pretrain_stream(profile.world, profile.pretrain.mix, profile.seed, set())
    micro = task_micro_batches([next(stream) for _ in range(profile.pretrain.batch_size)], tok)
    g = profile.generation
    print(f"model: {source}; {len(questions)} test questions sampled (batch {g.batch_size}); "
          f"a pretraining batch of {profile.pretrain.batch_size}; 1 thread, best of {ROUNDS}")

    best, outputs = {}, {}
    for _ in range(ROUNDS):
        for name in (COPIED, portable.ATTENTION):
            model.set_attn_implementation(name)
            model.eval()
            start = time.perf_counter()
            texts = generate(model, questions, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                             seed=profile.seed, batch_size=g.batch_size, tokenizer=tok, progress=False)
            sample = time.perf_counter() - start
            model.train()
            model.zero_grad()
            start = time.perf_counter()
            for _task, batch, _n in micro:
                model(**batch).loss.backward()
            step = time.perf_counter() - start
            grads = [p.grad.clone() for p in model.parameters()]
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], sample), min(old[1], step))
            outputs[name] = (texts, grads)
    model.set_attn_implementation(portable.ATTENTION)

    (texts_a, grads_a), (texts_b, grads_b) = outputs[COPIED], outputs[portable.ATTENTION]
    same = texts_a == texts_b and all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    print(f"{'kv heads':>9} {'sampling (s)':>13} {'fwd+bwd (s)':>12}")
    for name, label in ((COPIED, "copied"), (portable.ATTENTION, "shared")):
        print(f"{label:>9} {best[name][0]:>13.2f} {best[name][1]:>12.3f}")
    print(f"speed-up: sampling {best[COPIED][0] / best[portable.ATTENTION][0]:.2f}x, "
          f"training step {best[COPIED][1] / best[portable.ATTENTION][1]:.2f}x; "
          f"answers and gradients bit-identical: {same}")
    if not same:
        raise SystemExit("the shared-kv attention computed other bits than the copied one")


if __name__ == "__main__":
    main()
