"""Portable CPU numerics: the same training bits on every x86-64 CPU with AVX2, Intel or AMD.

Why: a tiny run is chaotic (one flipped last bit early in pretraining gives another base model), so a
number reproduces only if every floating-point operation does. torch's own kernels do once they are
pinned to AVX2 (ATEN_CPU_CAPABILITY=avx2): the same instructions in the same order on any CPU. Its matrix
products do not: torch hands every float32 GEMM to Intel MKL, which picks a code path per CPU vendor and
model (even its COMPATIBLE branch trained another base on an AMD EPYC than on an Intel Xeon). A portable
model therefore does its matrix products, forward and backward, with OpenBLAS (the library numpy ships)
held to one kernel family by OPENBLAS_CORETYPE=Haswell and to one thread (OPENBLAS_NUM_THREADS=1):
    y = x @ W^T              (every nn.Linear)
    s = q @ k^T,  o = p @ v   (attention, the "portable" implementation registered with transformers)
Everything else (norms, softmax, RoPE, AdamW) stays in torch. A portable model is a plain
Qwen3ForCausalLM whose config carries `spot_portable: true`; `spot_utils.modeling.load_model` restores
it, so a saved tiny model loads portable everywhere. `numerics_fingerprint` hashes a few training steps
of such a model: two machines with the same fingerprint compute the same numbers. MKL is never called in a portable run (tests/test_portable.py
checks it). Cost (make bench): at 1 thread, as post-training and pretraining run, none against stock torch;
at 2 threads the products stay on one thread (still faster than MKL's COMPATIBLE branch). Pretraining uses
the second core by computing a step's task families side by side, each on one thread (tiny.pretrain).
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ..modeling import PORTABLE_FLAG

CONFIG_FLAG = PORTABLE_FLAG     # the model config's attribute that marks a portable model
ATTENTION = "portable"          # its attention implementation's name in transformers' registry


_openblas = []  # every OpenBLAS loaded in this process (numpy's, and scipy's if imported), via threadpoolctl
_openblas_lock = threading.Lock()  # pretraining runs products on several threads (pretrain.family_threads)


def _one_blas_thread() -> None:
    """OpenBLAS at one thread, whatever the machine's core count: its sums depend on the count, and a
    second BLAS thread only fights torch's threads for the cores. OPENBLAS_NUM_THREADS=1 (a pin) keeps
    it from ever starting one; this check, a ctypes call per product, holds the count where the pin is
    missing or something in the process changed it."""
    global _openblas
    if not _openblas:
        with _openblas_lock:
            if not _openblas:
                from threadpoolctl import ThreadpoolController

                found = ThreadpoolController().select(internal_api="openblas").lib_controllers
                if not found:
                    raise RuntimeError("portable numerics need numpy built with OpenBLAS (the PyPI wheels are)")
                _openblas = found
    for lib in _openblas:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _one_blas_thread()
    return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))


class _Matmul(torch.autograd.Function):
    """a @ b (2-D, or stacked) with both gradients through OpenBLAS. b may have size 1 in a leading
    dimension where a has more (attention's kv heads, shared by groups of query heads): numpy broadcasts
    it, so each product is the 2-D one a copied b would give, bit for bit, and b's gradient is the sum
    over the copies, as a copied b's would be."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _product(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = _product(grad, b.transpose(-1, -2)) if ctx.needs_input_grad[0] else None
        grad_b = None
        if ctx.needs_input_grad[1]:
            grad_b = _product(a.transpose(-1, -2), grad)
            shared = tuple(d for d in range(b.dim() - 2) if b.shape[d] == 1 < grad_b.shape[d])
            if shared:
                grad_b = grad_b.sum(dim=shared, keepdim=True)
        return grad_a, grad_b


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b on portable kernels (CPU tensors, both float32 or both float64 (notebook 02's exact check);
    no broadcasting of leading dimensions)."""
    if a.dtype != b.dtype or a.dtype not in (torch.float32, torch.float64) or {a.device.type, b.device.type} != {"cpu"}:
        raise TypeError(f"portable matmul takes two float32 or two float64 CPU tensors, got {a.dtype}/{a.device} "
                        f"and {b.dtype}/{b.device}")
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"portable matmul does not broadcast: {tuple(a.shape)} @ {tuple(b.shape)}")
    return _Matmul.apply(a, b)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear on portable kernels: every leading dimension of x flattened into rows."""
    y = matmul(x.reshape(-1, x.shape[-1]), weight.t()).reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias


class PortableLinear(nn.Linear):
    """nn.Linear whose product runs on portable kernels; same parameters, same state dict."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)


def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager attention (softmax(q k^T * scaling + mask) v, in float32) on portable kernels.
    Shapes as transformers passes them: query (batch, heads, q, d), key and value (batch, kv_heads, k, d).
    Grouped-query attention shares each kv head with its `groups` query heads by broadcasting, not by
    repeating the keys and values (repeat_interleave copied the whole cache at every step of generation)."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads  # query heads 0..groups-1 use kv head 0, and so on (transformers' repeat_kv order)
    grouped = query.reshape(batch, kv_heads, groups, length, dim)
    scores = _Matmul.apply(grouped, key.transpose(-1, -2).unsqueeze(2)).reshape(batch, heads, length, -1) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask  # additive: 0 where attended, the dtype's minimum elsewhere
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = _Matmul.apply(weights.reshape(batch, kv_heads, groups, length, -1), value.unsqueeze(2))
    return out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), weights


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # the additive float mask eager attention takes


def make_portable(model):
    """Switch a CPU model (float32; float64 for notebook 02's check) to portable kernels in place, and mark
    its config so a saved copy loads portable: every plain nn.Linear becomes a PortableLinear, its
    attention the portable one."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PortableLinear
    model.set_attn_implementation(ATTENTION)
    setattr(model.config, CONFIG_FLAG, True)
    return model


def is_portable(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, CONFIG_FLAG, False))


def numerics_fingerprint(threads: int = 1) -> str:
    """A short hash of the bits of a few training steps: a small portable Qwen3 (ModelConfig's defaults,
    this module's kernels, as the tiny profile runs), seeded weights and data, batches of several
    shapes (BLAS picks its blocking by shape, so one shape could
    agree where another does not), AdamW steps, `threads` torch threads (training runs use 1, the
    notebooks' own sampling and evaluation 2). Two machines with the same fingerprint compute the same
    numbers; notebook 00 shows it and nbval checks it, so a CPU whose bits differ despite the pins is named at once instead of through
    a changed table."""
    import hashlib

    from ..config import ModelConfig
    from .model import build_char_tokenizer, build_tiny_model  # model.py builds on this module

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(ModelConfig(portable_numerics=True), tokenizer, seed=0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        digest = hashlib.sha256()
        for batch, length in ((16, 64), (7, 93), (1, 37), (9, 130)):
            ids = torch.randint(5, len(tokenizer), (batch, length), generator=generator)
            model(input_ids=ids, labels=ids).loss.backward()
            for p in model.parameters():
                digest.update(p.grad.numpy().tobytes())
            optimizer.step()
            optimizer.zero_grad()
        for p in model.parameters():
            digest.update(p.detach().numpy().tobytes())
        return digest.hexdigest()[:12]
    finally:
        torch.set_num_threads(before)
