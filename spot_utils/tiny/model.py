"""The tiny policy: a character-level tokenizer with a chat template and a small Qwen3ForCausalLM.

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(profile.model, tokenizer, seed=profile.seed)   # about 1M parameters

Both are real `transformers` objects, saved with `save_pretrained` and reloaded with the same
AutoTokenizer / AutoModelForCausalLM calls that load Qwen3-8B (spot_utils.modeling.load_model), so
every later stage (generation, training, evaluation) is one code path for the tiny and the paper
profiles.
"""
from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from ..config import ModelConfig
from . import portable

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
