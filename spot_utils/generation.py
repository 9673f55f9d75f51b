"""Sampling answers from a policy: `generate(model_or_path, prompts, backend="hf"|"vllm", ...)`.

The hf backend (tiny profile, and any CPU run) batches prompts with a KV cache; the vllm backend
(paper profile) uses vLLM's offline engine with tensor parallelism and is imported only when asked
for, so the CPU install never needs vllm.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

from .pretrain import prompt_text
from .progress import progress as progress_bar

Prompt = Union[str, list]  # a question string, or a full list of chat messages


def _render(tokenizer, prompt: Prompt, system: str | None, enable_thinking: bool) -> str:
    if isinstance(prompt, str):
        return prompt_text(tokenizer, prompt, system=system, enable_thinking=enable_thinking)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=enable_thinking)


def generate(model_or_path, prompts: Sequence[Prompt], backend: str = "hf", n: int = 1,
             temperature: float = 0.7, top_p: float = 0.8, max_new_tokens: int = 256, seed: int = 0,
             batch_size: int = 64, tokenizer=None, system: str | None = None, enable_thinking: bool = False,
             tensor_parallel_size: int = 1, progress: bool = True, desc: str = "generate") -> list[list[str]]:
    """Return n sampled completions for every prompt (temperature 0 = greedy). Same seed and inputs,
    same outputs. Qwen3's non-thinking mode is `enable_thinking=False` (an empty think block)."""
    if backend == "hf":
        return _generate_hf(model_or_path, list(prompts), n, temperature, top_p, max_new_tokens, seed,
                            batch_size, tokenizer, system, enable_thinking, progress, desc)
    if backend == "vllm":
        return _generate_vllm(model_or_path, list(prompts), n, temperature, top_p, max_new_tokens, seed,
                              system, enable_thinking, tensor_parallel_size)
    raise ValueError(f"unknown backend {backend!r}; use 'hf' or 'vllm'")


@torch.no_grad()
def _generate_hf(model_or_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size, tokenizer,
                 system, enable_thinking, progress, desc):
    if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
        from .modeling import load_model
        model, tokenizer = load_model(model_or_path)
    else:
        model = model_or_path
        if tokenizer is None:
            raise ValueError("pass tokenizer= together with a model object")
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # new tokens must line up at the right edge
    texts = [_render(tokenizer, p, system, enable_thinking) for p in prompts]
    # Sort by length so each batch pads little; results are put back in the caller's order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    per_batch = max(1, batch_size // n)
    out: list[list[str]] = [[] for _ in texts]
    batches = [order[i:i + per_batch] for i in range(0, len(order), per_batch)]
    for b, idx in enumerate(progress_bar(batches, desc=desc, disable=not progress)):
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        torch.manual_seed(seed * 1_000_003 + b)
        sample = temperature > 0
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=temperature if sample else None, top_p=top_p if sample else None,
                             top_k=0 if sample else None, num_return_sequences=n,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new = gen[:, enc["input_ids"].shape[1]:]
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        for j, i in enumerate(idx):
            out[i] = decoded[j * n:(j + 1) * n]
    model.train(was_training)
    return out


def _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, system, enable_thinking,
                   tensor_parallel_size):
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:  # the CPU install has no vllm by design
        raise ImportError("backend='vllm' needs the GPU extra: pip install -e '.[gpu]'") from e
    if not isinstance(model_path, (str, bytes)) and not hasattr(model_path, "__fspath__"):
        raise ValueError("the vllm backend takes a model path or hub id, not a model object")
    llm = LLM(model=str(model_path), tensor_parallel_size=tensor_parallel_size, seed=seed, dtype="bfloat16")
    tokenizer = llm.get_tokenizer()
    texts = [_render(tokenizer, p, system, enable_thinking) for p in prompts]
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    results = llm.generate(texts, params)
    return [[o.text for o in r.outputs] for r in results]
