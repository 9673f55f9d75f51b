"""Portable numerics (spot_utils.tiny.portable): the same products as torch's, on OpenBLAS instead of MKL."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from spot_utils import environment
from spot_utils.config import REPO_ROOT, ConfigError, ModelConfig, load_profile
from spot_utils.environment import NUMERICS_PINS
from spot_utils.modeling import load_model, save_model
from spot_utils.tiny import portable
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model


def seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_matmul_and_its_gradients_equal_torchs():
    a, b = seeded(3, 5, 7, seed=1).requires_grad_(), seeded(3, 7, 4, seed=2).requires_grad_()
    out = portable.matmul(a, b)
    out.backward(seeded(3, 5, 4, seed=3))
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    (a2 @ b2).backward(seeded(3, 5, 4, seed=3))
    torch.testing.assert_close(out, a2 @ b2)
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


def test_float64_products_are_exact_enough_for_notebook_01s_check():
    a, b = seeded(4, 6, seed=1).double(), seeded(6, 3, seed=2).double()
    torch.testing.assert_close(portable.matmul(a, b), a @ b, rtol=1e-14, atol=1e-14)


def test_linear_flattens_leading_dimensions_and_adds_the_bias():
    x, w, bias = seeded(2, 3, 8, seed=1), seeded(5, 8, seed=2), seeded(5, seed=3)
    torch.testing.assert_close(portable.linear(x, w, bias), F.linear(x, w, bias))
    assert portable.linear(x, w).shape == (2, 3, 5)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 4), (8, 2)])
def test_shared_kv_heads_give_the_bits_of_copied_ones(heads, kv_heads):
    # the portable attention broadcasts each kv head over its query heads; copying the kv heads to every
    # query head (transformers' repeat_kv, this module's attention before) must give the same output and
    # gradients, bit for bit, with a mask and without
    module = type("Attn", (), {"num_key_value_groups": heads // kv_heads, "training": False})()
    mask = torch.zeros(2, 1, 5, 7)
    mask[0, :, :, :2] = torch.finfo(torch.float32).min  # a left-padded row
    for attention_mask in (None, mask):
        q, k, v = (seeded(2, h, n, 8, seed=s).requires_grad_() for h, n, s in ((heads, 5, 1), (kv_heads, 7, 2),
                                                                               (kv_heads, 7, 3)))
        out, weights = portable.attention(module, q, k, v, attention_mask, scaling=0.35)
        out.backward(seeded(*out.shape, seed=4))
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        groups = heads // kv_heads
        scores = portable.matmul(q2, k2.repeat_interleave(groups, 1).transpose(-1, -2)) * 0.35
        scores = scores if attention_mask is None else scores + attention_mask
        weights2 = scores.softmax(-1)
        out2 = portable.matmul(weights2, v2.repeat_interleave(groups, 1)).transpose(1, 2).contiguous()
        out2.backward(seeded(*out2.shape, seed=4))
        assert out.shape == (2, 5, heads, 8) and torch.equal(out, out2) and torch.equal(weights, weights2)
        for mine, copied in ((q, q2), (k, k2), (v, v2)):
            assert torch.equal(mine.grad, copied.grad)


def test_matmul_refuses_what_it_cannot_do_exactly():
    with pytest.raises(TypeError, match="two float32 or two float64 CPU tensors"):
        portable.matmul(seeded(2, 3).half(), seeded(3, 2).half())
    with pytest.raises(TypeError, match="two float32 or two float64 CPU tensors"):
        portable.matmul(seeded(2, 3), seeded(3, 2).double())
    with pytest.raises(ValueError, match="does not broadcast"):
        portable.matmul(seeded(2, 2, 3), seeded(3, 4))


def test_a_portable_model_computes_what_the_stock_model_computes():
    tokenizer = build_char_tokenizer()
    stock = build_tiny_model(ModelConfig(), tokenizer, seed=0)
    model = portable.make_portable(copy.deepcopy(stock))
    assert model.config._attn_implementation == "portable" and portable.is_portable(model)
    assert type(model.model.layers[0].mlp.up_proj) is portable.PortableLinear
    ids = torch.randint(5, len(tokenizer), (3, 40), generator=torch.Generator().manual_seed(0))
    ours, theirs = model(input_ids=ids, labels=ids), stock(input_ids=ids, labels=ids)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)
    ours.loss.backward()
    theirs.loss.backward()
    for (name, p), q in zip(model.named_parameters(), stock.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_left_padded_generation_matches_the_stock_model():
    tokenizer = build_char_tokenizer()
    stock = build_tiny_model(ModelConfig(), tokenizer, seed=0)
    model = portable.make_portable(copy.deepcopy(stock))
    batch = tokenizer(["ab", "a longer prompt"], return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        assert torch.equal(model.generate(**batch, **kwargs), stock.generate(**batch, **kwargs))


def test_a_saved_portable_model_loads_portable(tmp_path):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(ModelConfig(portable_numerics=True), tokenizer, seed=0)
    save_model(model, tokenizer, tmp_path)
    loaded, _ = load_model(tmp_path)
    assert portable.is_portable(loaded) and loaded.config._attn_implementation == "portable"
    assert type(loaded.lm_head) is portable.PortableLinear
    ids = torch.arange(5, 25).unsqueeze(0)
    assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_the_tiny_profile_is_portable_and_other_dtypes_are_refused(tmp_path):
    assert load_profile("tiny").model.portable_numerics
    assert not load_profile("paper_qwen3_8b").model.portable_numerics
    with pytest.raises(ConfigError, match="portable_numerics"):
        load_profile("tiny", **{"model.dtype": "bfloat16"})


def test_a_portable_training_step_and_generation_never_call_mkl():
    # MKL_VERBOSE makes MKL print one line per call: a portable model's forward, backward, AdamW step and
    # generation must print none (the stock model prints thousands of SGEMM lines)
    code = (
        "import torch\n"
        "from spot_utils.config import ModelConfig\n"
        "from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model\n"
        "tok = build_char_tokenizer()\n"
        "m = build_tiny_model(ModelConfig(portable_numerics=True), tok, seed=0)\n"
        "ids = torch.randint(5, len(tok), (4, 30))\n"
        "m(input_ids=ids, labels=ids).loss.backward()\n"
        "torch.optim.AdamW(m.parameters()).step()\n"
        "m.generate(ids[:, :5], max_new_tokens=4, do_sample=False)\n"
        "print('done')\n")
    env = {**os.environ, "MKL_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    assert out.strip().endswith("done")
    calls = [line for line in out.splitlines() if line.startswith("MKL_VERBOSE") and "(" in line]
    assert calls == [], calls[:3]


def test_openblas_runs_the_pinned_kernels():
    # make exports OPENBLAS_CORETYPE=Haswell; without it numpy picks kernels by CPU (SkylakeX on AVX-512)
    assert environment.openblas_coretype() == NUMERICS_PINS["OPENBLAS_CORETYPE"]
