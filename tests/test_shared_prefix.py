"""The shared-prefix pair forward (spot_utils.shared_prefix) equals two separate forwards: log-probs and
the gradient of every parameter, on the tiny model and on a random Qwen3 with grouped-query attention."""
import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from spot_utils import shared_prefix
from spot_utils.config import load_profile
from spot_utils.tiny import portable
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

# (prompt, y+, y-) as token ids; every case in one batch, so the rows are padded to different lengths.
CASES = {
    "suffixes of different lengths": ([5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [9, 10, 15]),
    "y+ a prefix of y-": ([5, 6, 7], [9, 10], [9, 10, 11, 12]),
    "y- a prefix of y+": ([5, 6, 7], [9, 10, 11, 12], [9, 10]),
    "y- empty": ([5, 6, 7, 8, 9], [10, 11, 12], []),
    "identical": ([5, 6], [9, 10, 11], [9, 10, 11]),
    "only the prompt shared": ([5, 6, 7], [9, 10, 11], [12, 13, 14, 15, 16]),
    "no common prefix": ([], [9, 10, 11], [12, 13]),
    "one token shared": ([5], [9, 10], [11]),
}


def collate(cases, pad=0):
    """A right-padded batch [chosen rows; rejected rows], as TRL's DataCollatorForPreference makes it."""
    rows = [p + c for p, c, _ in cases] + [p + r for p, _, r in cases]
    completion = [[0] * len(p) + [1] * len(c) for p, c, _ in cases] + [[0] * len(p) + [1] * len(r) for p, _, r in cases]
    width = max(map(len, rows))
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    attention = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    comp = torch.tensor([m + [0] * (width - len(m)) for m in completion])
    return ids, attention, comp


def token_logps(logits, targets):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def separate_logps(model, ids, attention, completion):
    logits = model(input_ids=ids, attention_mask=attention).logits
    scored = (completion[:, 1:] * attention[:, 1:]).bool()
    logps = (token_logps(logits[:, :-1], ids[:, 1:]) * scored).sum(dim=1)
    return logps.chunk(2)


def packed_logps(model, ids, attention, completion):
    packed = shared_prefix.pack_pairs(ids, attention, completion, torch.arange(ids.size(0) // 2))
    mask = shared_prefix.model_mask(packed.attention_mask, model.config._attn_implementation, torch.float32)
    logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, attention_mask=mask).logits
    return packed.summed_logps(token_logps(logits, packed.shift_labels))


def tiny_model():
    return build_tiny_model(load_profile("tiny").model, build_char_tokenizer(), seed=0)


def gqa_model(attn_implementation):
    torch.manual_seed(1)
    config = Qwen3Config(vocab_size=40, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                         attn_implementation=attn_implementation)
    return Qwen3ForCausalLM(config)


def gradients(model, logps):
    model.zero_grad()
    chosen, rejected = logps
    # different weights per pair and half, so a gradient landing on the wrong half shows
    weights = torch.arange(1, len(chosen) + 1, dtype=torch.float32)
    ((chosen * weights).sum() - (rejected * weights.flip(0)).sum() * 0.5).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("build", [tiny_model, lambda: gqa_model("sdpa"), lambda: gqa_model("eager"),
                                   lambda: portable.make_portable(gqa_model("eager"))],
                         ids=["tiny (portable)", "qwen3-gqa-sdpa", "qwen3-gqa-eager", "qwen3-gqa-portable"])
def test_shared_prefix_forward_equals_separate_forwards(build):
    model = build().train()
    ids, attention, completion = collate(list(CASES.values()))
    separate, packed = separate_logps(model, ids, attention, completion), packed_logps(model, ids, attention, completion)
    for name, a, b in zip(("y+", "y-"), separate, packed):
        for case, x, y in zip(CASES, a.tolist(), b.tolist()):
            assert y == pytest.approx(x, rel=1e-5, abs=1e-5), f"{name} log-prob of pair {case!r}: {y} != {x}"
    grads_separate, grads_packed = gradients(model, separate), gradients(model, packed)
    for name, g in grads_separate.items():
        # float32: a sum over ~30 tokens in another order differs by a few ulps of the gradient's scale
        error, scale = (grads_packed[name] - g).abs().max().item(), g.abs().max().item()
        assert error <= 1e-5 * scale + 1e-8, f"{name}: gradients differ by {error:.2e} (scale {scale:.2e})"


def test_packed_rows_share_the_prefix_once():
    ids, attention, completion = collate([CASES["suffixes of different lengths"]])
    packed = shared_prefix.pack_pairs(ids, attention, completion, torch.tensor([0]))
    # y+ row: 4 prompt + 6 answer tokens, 6 in common with y-; y-'s part: a copy of the last shared token
    # (10, at position 5), then 15
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 10, 15]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6]]
    assert packed.shared.tolist() == [6]
    mask = packed.attention_mask[0, 0]
    assert mask[10].tolist() == [True] * 5 + [False] * 5 + [True, False]  # the copy: the shared tokens before it
    assert mask[11].tolist() == [True] * 5 + [False] * 5 + [True, True]
    # y+'s targets are its 6 answer tokens; y-'s are 9 and 10 (shared: scored at y+'s positions 3, 4) and 15
    assert packed.chosen[0].nonzero().flatten().tolist() == [3, 4, 5, 6, 7, 8]
    assert packed.rejected[0].nonzero().flatten().tolist() == [3, 4, 10]
    assert shared_prefix.token_counts(shared_prefix.pair_spans(ids, attention)) == {"separate": 10 + 7,
                                                                                      "shared_prefix": 12}


def test_left_padding_and_flash_attention_are_refused():
    ids, attention, completion = collate([CASES["suffixes of different lengths"]])
    with pytest.raises(ValueError, match="row 1 is not right-padded"):
        shared_prefix.pair_spans(ids, attention.flip(1))
    with pytest.raises(ValueError, match="block mask"):
        shared_prefix.check_attention("flash_attention_2")


def test_readme_shows_the_benchmark_results():
    """The speed-ups the README states are the ones `make bench` last wrote to benchmarks/results.json."""
    import json

    from spot_utils.config import REPO_ROOT

    bench = json.loads((REPO_ROOT / "benchmarks" / "results.json").read_text())["shared_prefix"]
    readme = (REPO_ROOT / "README.md").read_text()
    seconds = bench["seconds_per_step"]
    for shown in (f"**{bench['speedup_c_over_a']:.2f}x** faster than stock TRL",
                  f"**{bench['speedup_c_over_b']:.2f}x** faster than two rows",
                  f"estimates {bench['paper_estimate']['speedup_c_over_a']:.2f}x over stock TRL",
                  *(f"{s:.3f} s" for s in seconds.values())):
        assert shown in readme, shown
    assert bench["speedup_c_over_a"] >= bench["targets"]["c_over_a"]
    assert bench["speedup_c_over_b"] >= bench["targets"]["c_over_b"]
