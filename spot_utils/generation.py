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

from .modeling import load_model, prompt_text
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
             return_finish_reasons: bool = False, engine: "VLLMEngine | None" = None):
    """Return n sampled completions for every prompt (temperature 0 = greedy). Same seed and inputs,
    same outputs. Qwen3's non-thinking mode is `enable_thinking=False` (an empty think block).
    With return_finish_reasons=True, return (completions, reasons), reasons[i][k] being "stop" or
    "length" (see the module docstring). vllm: `engine`, an open VLLMEngine of model_or_path, serves
    the call; without one an engine is started for this call and shut down after it."""
    if backend == "hf":
        texts, reasons = _generate_hf(model_or_path, list(prompts), n, temperature, top_p, max_new_tokens, seed,
                                      batch_size, tokenizer, system, enable_thinking, progress, desc)
    elif backend == "vllm":
        from contextlib import nullcontext

        with nullcontext(engine) if engine is not None else VLLMEngine(model_or_path, tensor_parallel_size, seed) as e:
            texts, reasons = e.generate(list(prompts), n, temperature, top_p, max_new_tokens, seed, system,
                                        enable_thinking)
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'hf' or 'vllm'")
    return (texts, reasons) if return_finish_reasons else texts


@torch.no_grad()
def _generate_hf(model_or_path, prompts, n, temperature, top_p, max_new_tokens, seed, batch_size, tokenizer,
                 system, enable_thinking, progress, desc):
    if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
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


def stage_engine(profile, model_path):
    """The context a stage's sampling runs in: a VLLMEngine of model_path with the profile's settings
    (backend vllm), else nothing (yields None)."""
    from contextlib import nullcontext

    return VLLMEngine.for_profile(profile, model_path) if profile.generation.backend == "vllm" else nullcontext()


class VLLMEngine:
    """One vLLM engine for one stage (the elicitation; one model's nine suites), as a context manager:

        with VLLMEngine(model_dir, tensor_parallel_size=8) as engine:
            texts = generate(model_dir, prompts, backend="vllm", engine=engine)

    It starts on entry and is shut down on exit, its GPU memory freed, so the next stage (training, or
    the next model) finds the GPUs empty; vLLM refuses to start when they are not."""

    def __init__(self, model_path, tensor_parallel_size: int = 1, seed: int = 0, gpu_memory_utilization: float = 0.9,
                 max_model_len: int = 0):
        if not isinstance(model_path, (str, bytes)) and not hasattr(model_path, "__fspath__"):
            raise ValueError("the vllm backend takes a model path or hub id, not a model object")
        self.model_path, self.seed = str(model_path), seed
        self.options = {"tensor_parallel_size": tensor_parallel_size, "seed": seed, "dtype": "bfloat16",
                        "gpu_memory_utilization": gpu_memory_utilization,
                        **({"max_model_len": max_model_len} if max_model_len else {})}
        self.llm = None

    @classmethod
    def for_profile(cls, profile, model_path) -> "VLLMEngine":
        g = profile.generation
        return cls(model_path, g.tensor_parallel_size, profile.seed, g.gpu_memory_utilization, g.max_model_len)

    def __enter__(self) -> "VLLMEngine":
        check_tensor_parallel_size(self.options["tensor_parallel_size"])
        try:
            from vllm import LLM
        except ImportError as e:  # the CPU install has no vllm by design
            raise ImportError("backend='vllm' needs the GPU install: make setup GPU=1 (README, 'GPU box')") from e
        self.llm = LLM(model=self.model_path, **self.options)
        return self

    def __exit__(self, *exc) -> None:
        import gc

        llm, self.llm = self.llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if hasattr(core, "shutdown"):  # vLLM V1: the engine core process holds the weights and KV cache
            core.shutdown()
        del llm, core
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed, system, enable_thinking):
        from vllm import SamplingParams

        if self.llm is None:
            raise RuntimeError("the VLLMEngine is not started: use it in a with block")
        inputs = vllm_prompts(self.llm.get_tokenizer(), prompts, system, enable_thinking)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
        results = self.llm.generate(inputs, params)
        return ([[o.text for o in r.outputs] for r in results],
                [[o.finish_reason for o in r.outputs] for r in results])
