"""The tiny policy: a character-level tokenizer with a chat template and a small Qwen3ForCausalLM.

Both are real `transformers` objects, saved with `save_pretrained` and reloaded with the same
AutoTokenizer / AutoModelForCausalLM calls that load Qwen3-8B, so every later stage (generation,
training, evaluation) is one code path for the tiny and the paper profiles. `prompt_text` formats a
question as any of these models is prompted (its chat template, ending where the assistant writes).
"""
from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config,
                          Qwen3ForCausalLM)

from . import portable
from .config import ModelConfig

PAD, UNK, SYSTEM, USER, ASSISTANT, END = "<|pad|>", "<|unk|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, UNK, SYSTEM, USER, ASSISTANT, END]
# Every printable ASCII character plus newline: one token each.
CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))

# Role markers are single special tokens, so a chat costs three tokens of overhead. Qwen3's
# `enable_thinking` argument is accepted and ignored: the tiny model has no thinking mode.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}" + SYSTEM + "{{ m['content'] }}" + END +
    "{%- elif m['role'] == 'user' -%}" + USER + "{{ m['content'] }}" + END +
    "{%- else -%}" + ASSISTANT + "{{ m['content'] }}" + END + "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)


def prompt_text(tokenizer, question: str, system: str | None = None, enable_thinking: bool = False) -> str:
    """The chat-formatted prompt ending where the assistant starts writing (same call for every model)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=enable_thinking)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char = one token
    core.decoder = decoders.Fuse()  # join characters back without spaces
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=END,
                                  padding_side="left", model_max_length=4096)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(cfg: ModelConfig, tokenizer, seed: int = 0) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return portable.make_portable(model) if cfg.portable_numerics else model


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
    kernel that ran is model.config._attn_implementation. A model saved portable (spot_utils.portable,
    the tiny profile's) loads portable."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
    kwargs = {} if attn_implementation is None else {
        "attn_implementation": attention_implementation(attn_implementation, device)}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs).to(device)
    if portable.is_portable(model):
        portable.make_portable(model)
    model.eval()
    return model, tokenizer
