"""Policies on disk: load and save any causal LM with the Auto* classes, and prompt it.

    model, tokenizer = load_model("Qwen/Qwen3-8B", dtype="bfloat16", device="cuda", attn_implementation="auto")
    text = prompt_text(tokenizer, "What is 2+2?")      # the chat template, ending where the assistant writes
    base_dir(profile), base_config_hash(profile)       # where a profile's base lives, what it depends on

The tiny model (spot_utils.tiny.model) and Qwen3-8B go through the same calls, so every later stage
(generation, training, evaluation) is one code path for the tiny and the paper profiles.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .config import Profile

# A model saved with the miniature's portable CPU numerics carries this flag in its config
# (spot_utils.tiny.portable.CONFIG_FLAG); it is loaded back onto the same kernels.
PORTABLE_FLAG = "spot_portable"


def prompt_text(tokenizer, question: str, system: str | None = None, enable_thinking: bool = False) -> str:
    """The chat-formatted prompt ending where the assistant starts writing (same call for every model)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=enable_thinking)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, path: str | Path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def attention_implementation(requested: str = "auto", device: str = "cpu") -> str:
    """The attention kernel to load a pretrained model with. "auto" takes FlashAttention-2 (the paper's)
    when the flash_attn package is installed and the model goes to a GPU, else PyTorch's SDPA; an
    explicit FlashAttention-2 request without either fails here, not deep inside transformers."""
    import importlib.util

    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if requested == "auto":
        return "flash_attention_2" if flash and str(device).startswith("cuda") else "sdpa"
    if requested == "flash_attention_2" and not flash:
        raise RuntimeError("model.attn_implementation is flash_attention_2, but "
                           + ("the flash_attn package is not installed (pip install flash-attn)"
                              if torch.cuda.is_available() else "no GPU is visible")
                           + "; use auto or sdpa")
    return requested


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu", attn_implementation: str | None = None):
    """Load (model, tokenizer) with the Auto* classes, as for any hub checkpoint. attn_implementation:
    None keeps transformers' default (the tiny model); otherwise see attention_implementation. The
    kernel that ran is model.config._attn_implementation. A model saved portable (spot_utils.tiny.portable,
    the tiny profile's) loads portable."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
    kwargs = {} if attn_implementation is None else {
        "attn_implementation": attention_implementation(attn_implementation, device)}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs).to(device)
    if getattr(model.config, PORTABLE_FLAG, False):  # the one place the library meets the miniature's kernels
        from .tiny.portable import make_portable

        make_portable(model)
    model.eval()
    return model, tokenizer


def base_dir(profile: Profile) -> Path:
    """Where the profile's base lives or is evaluated: runs/<profile>/base/."""
    return profile.runs / "base"


def base_config_hash(profile: Profile) -> str:
    """The settings the base policy depends on (a cached base, and everything built on it, is stale when they change)."""
    return profile.section_hash("seed", "model", "world", "pretrain")

