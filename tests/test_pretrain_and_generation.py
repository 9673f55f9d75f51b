import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pandas as pd
import torch

from spot_utils.evaluation import accuracy_table, evaluate_profile
from spot_utils.generation import generate
from spot_utils.modeling import base_dir
from spot_utils.tasks import load_base
from spot_utils.tiny import world
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model
from spot_utils.tiny.pretrain import (BASE_META, accumulate_gradients, collate, encode_pair, lr_at, pretrain_base,
                                      task_micro_batches)
from spot_utils.tiny.world import headline


def test_encode_pair_masks_the_prompt():
    from spot_utils.tiny.model import build_char_tokenizer

    tok = build_char_tokenizer()
    ids, labels = encode_pair(tok, "Reverse: ab", "ba")
    assert len(ids) == len(labels)
    n_prompt = len("Reverse: ab") + 3
    assert labels[:n_prompt] == [-100] * n_prompt
    assert tok.decode(labels[n_prompt:]) == "ba<|end|>"
    batch = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(ids)) and batch["attention_mask"][1].sum() == 5


def test_lr_schedule():
    assert lr_at(0, 100, 10, 0.1) == 0.1 and lr_at(9, 100, 10, 0.1) == 1.0
    assert abs(lr_at(100, 100, 10, 0.1) - 0.1) < 1e-9
    assert all(lr_at(s, 100, 10, 0.1) >= lr_at(s + 1, 100, 10, 0.1) for s in range(10, 99))


def test_pretraining_is_deterministic_and_cached(tiny_profile, tmp_path):
    """Two runs with one seed give identical weights, identical evaluation, and the cache is reused."""
    meta1 = pretrain_base(tiny_profile, progress=False)
    w1 = {k: v.clone() for k, v in load_base(tiny_profile)[0].state_dict().items()}
    assert meta1["reused"] is False and len(meta1["history"]) == 2
    assert pretrain_base(tiny_profile, progress=False)["reused"] is True
    meta2 = pretrain_base(tiny_profile, force=True, progress=False)
    assert meta2["history"] == [{**h, "elapsed_s": h2["elapsed_s"]} for h, h2 in zip(meta1["history"], meta2["history"])]
    model, tok = load_base(tiny_profile)
    assert all(torch.equal(w1[k], v) for k, v in model.state_dict().items())
    # a changed config invalidates the cache
    changed = replace(tiny_profile, pretrain=replace(tiny_profile.pretrain, lr=1e-3))
    assert json.loads((base_dir(tiny_profile) / BASE_META).read_text())["config_hash"] != \
        __import__("spot_utils.modeling", fromlist=["x"]).base_config_hash(changed)

    tests = world.test_sets(tiny_profile.world, tiny_profile.seed)
    rows1 = evaluate_profile(model, tok, tiny_profile, tests, progress=False)
    rows2 = evaluate_profile(model, tok, tiny_profile, tests, progress=False)
    pd.testing.assert_frame_equal(rows1, rows2)
    table = accuracy_table(rows1)
    assert set(table.index.get_level_values(0)) == {"arithmetic", "skill", "choice", "sequence", "connect4"}
    assert set(headline(rows1)) == {"In-domain Avg", "OOD Avg", "IF", "Overall Avg"}


def test_family_gradients_on_threads_are_the_bits_of_one_backward_after_another(tiny_profile):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tiny_profile.model, tokenizer, seed=0)
    stream = world.pretrain_stream(tiny_profile.world, tiny_profile.pretrain.mix, 0, set())
    micro = task_micro_batches([next(stream) for _ in range(24)], tokenizer)
    total = sum(n for _, _, n in micro)
    assert len(micro) >= 3
    for _, batch, n in micro:  # the loop as it was: one backward per family, .grad accumulating
        (model(**batch).loss * n / total).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    with ThreadPoolExecutor(2) as pool:
        for threads in (None, pool):
            model.zero_grad(set_to_none=True)
            losses = accumulate_gradients(model, micro, total, threads)
            assert len(losses) == len(micro)
            for p, g in zip(model.parameters(), expected):
                assert torch.equal(p.grad, g) and p.grad.stride() == g.stride()
            assert torch.equal(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9), norm)


def test_family_threads_change_no_bit_and_no_cache_key(tiny_profile):
    one = replace(tiny_profile, pretrain=replace(tiny_profile.pretrain, family_threads=1))
    two = replace(tiny_profile, run_dir=tiny_profile.run_dir + "_two",
                  pretrain=replace(tiny_profile.pretrain, family_threads=2))
    pretrain_base(one, progress=False)
    pretrain_base(two, progress=False)
    a, b = load_base(one)[0].state_dict(), load_base(two)[0].state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert pretrain_base(replace(one, pretrain=two.pretrain), progress=False)["reused"] is True


def test_generate_shapes_order_and_seed(tiny_profile):
    pretrain_base(tiny_profile, progress=False)
    model, tok = load_base(tiny_profile)
    prompts = ["Reverse: abcdef", "Uppercase: ab", "Compute left to right: 12+3"]
    a = generate(model, prompts, n=3, max_new_tokens=8, seed=1, tokenizer=tok, progress=False, batch_size=4)
    b = generate(model, prompts, n=3, max_new_tokens=8, seed=1, tokenizer=tok, progress=False, batch_size=4)
    assert a == b and len(a) == 3 and all(len(x) == 3 for x in a)
    greedy = generate(base_dir(tiny_profile), prompts, temperature=0, max_new_tokens=8, progress=False)
    assert greedy == generate(model, prompts, temperature=0, max_new_tokens=8, tokenizer=tok, progress=False)
    # left padding must not change a greedy answer: alone or in a batch, the same text
    alone = generate(model, prompts[:1], temperature=0, max_new_tokens=8, tokenizer=tok, progress=False)
    assert alone[0] == greedy[0]


def test_load_base_missing_names_the_notebook(tiny_profile):
    import pytest

    with pytest.raises(FileNotFoundError, match="00_setup_and_base_model"):
        load_base(tiny_profile)
