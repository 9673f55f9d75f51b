"""Sampling answers from a policy: `generate(model_or_path, prompts, backend="hf"|"vllm", ...)`.

The hf backend (tiny profile, and any CPU run) batches prompts with a KV cache; the vllm backend
(paper profile) uses vLLM's offline engine with tensor parallelism and is imported only when asked
for, so the CPU install never needs vllm.

Both backends feed the model the same token ids: the prompt rendered by the chat template and
encoded without adding special tokens, so a template that writes its own BOS (Llama-3) gets exactly
one. With `return_finish_reasons=True` each sample also says how it ended, named as vLLM and the
OpenAI API name it: "stop" (the model ended its answer) or "length" (cut at max_new_tokens).
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
             tensor_parallel_size: int = 1, progress: bool = True, desc: str = "generate",
             return_finish_reasons: bool = False):
    """Return n sampled completions for every prompt (temperature 0 = greedy). Same seed and inputs,
    same outputs. Qwen3's non-thinking mode is `enable_thinking=False` (an empty think block).
    With return_finish_reasons=True, return (completions, reasons), reasons[i][k] being "stop" or
    "length" (see the module docstring)."""
    if backend == "hf":
        texts, reasons = _generate_hf(model_or_path, list(prompts), n, temperature, top_p, max_new_tokens, seed,
                                      batch_size, tokenizer, system, enable_thinking, progress, desc)
    elif backend == "vllm":
        texts, reasons = _generate_vllm(model_or_path, list(prompts), n, temperature, top_p, max_new_tokens, seed,
                                        system, enable_thinking, tensor_parallel_size)
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'hf' or 'vllm'")
    return (texts, reasons) if return_finish_reasons else texts


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
    ends: list[list[str]] = [[] for _ in texts]
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
        # generate() stops a row at its eos (padding after it); a row without one ran out of tokens
        eos = tokenizer.eos_token_id
        stopped = (new == eos).any(dim=1).tolist() if eos is not None else [False] * len(new)
        for j, i in enumerate(idx):
            out[i] = decoded[j * n:(j + 1) * n]
            ends[i] = ["stop" if s else "length" for s in stopped[j * n:(j + 1) * n]]
    model.train(was_training)
    return out, ends


def check_tensor_parallel_size(size, visible: int | None = None) -> None:
    """vLLM runs one tensor-parallel rank per GPU: refuse a size it cannot place, before it spawns
    workers and fails deep inside. `visible` defaults to torch's count (CUDA_VISIBLE_DEVICES applies)."""
    visible = torch.cuda.device_count() if visible is None else visible
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= visible:
        fix = f"set it to 1..{visible}" if visible else "the vllm backend needs a GPU (use backend 'hf' on CPU)"
        raise ValueError(f"generation.tensor_parallel_size is {size!r} but {visible} CUDA device(s) are "
                         f"visible: {fix}")


def vllm_prompts(tokenizer, prompts, system, enable_thinking) -> list[dict]:
    """vLLM inputs as token ids (vLLM's TokensPrompt), encoded like the hf backend's. Given text,
    vLLM would tokenize it with special tokens added: a second BOS after the one Llama-3's chat
    template already wrote."""
    return [{"prompt_token_ids": tokenizer.encode(_render(tokenizer, p, system, enable_thinking),
                                                  add_special_tokens=False)} for p in prompts]


def _generate_vllm(model_path, prompts, n, temperature, top_p, max_new_tokens, seed, system, enable_thinking,
                   tensor_parallel_size):
    if not isinstance(model_path, (str, bytes)) and not hasattr(model_path, "__fspath__"):
        raise ValueError("the vllm backend takes a model path or hub id, not a model object")
    check_tensor_parallel_size(tensor_parallel_size)
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:  # the CPU install has no vllm by design
        raise ImportError("backend='vllm' needs the GPU extra: pip install -e '.[gpu]'") from e
    llm = LLM(model=str(model_path), tensor_parallel_size=tensor_parallel_size, seed=seed, dtype="bfloat16")
    inputs = vllm_prompts(llm.get_tokenizer(), prompts, system, enable_thinking)
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    results = llm.generate(inputs, params)
    return ([[o.text for o in r.outputs] for r in results],
            [[o.finish_reason for o in r.outputs] for r in results])
