"""`make gpu-check`: what only a GPU shows, in under 10 minutes on one GPU, without any download.

On a randomly initialised local Qwen3 (the smoke's stand-in architecture, written here), it checks
  1. vLLM: the paper profile's sampling path with tensor_parallel_size 1, started after the notebooks'
     own model loading (pipeline.sampling_policy: the tokenizer only), and its GPU memory freed on exit;
  2. DeepSpeed ZeRO-2 in bf16 (configs/deepspeed_zero2.json, the paper's launch with one process): one
     optimizer step at 8,192 tokens per sequence for sft and for spot_bco, with step time and peak memory;
  3. which attention implementation ran (model.attn_implementation: auto = FlashAttention-2 when
     flash_attn is installed, else SDPA).
It prints one JSON object and writes it to --out (default runs/gpu_check/result.json). A part whose
package is missing (vllm, deepspeed) is reported as skipped with the reason, never faked.

    .venv/bin/python scripts/gpu_check.py [--out FILE] [--hidden 1024 --layers 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKENS = 8192   # the paper's context (training.max_length)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "accelerate", "deepspeed", "vllm", "flash_attn"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = None
    return out


def stand_in(folder: Path, hidden: int, layers: int) -> Path:
    """A random Qwen3 of the given width and depth with the smoke's Qwen3-style tokenizer."""
    from spot_utils import smoke_assets

    tokenizer = smoke_assets.build_tokenizer(smoke_assets._fixture_text() + smoke_assets.BUILTIN_TEXT.splitlines())
    size = dict(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=3 * hidden, head_dim=128,
                num_attention_heads=max(1, hidden // 128), num_key_value_heads=max(1, hidden // 512))  # GQA, as Qwen3-8B
    model = smoke_assets.build_model(tokenizer, size=size)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def profile_for(model_dir: Path, run_dir: Path, **training):
    from spot_utils.config import load_profile

    profile = load_profile("paper_qwen3_8b", run_dir=str(run_dir), **{"model.name_or_path": str(model_dir)})
    t = dataclasses.replace(profile.training, **training)
    g = dataclasses.replace(profile.generation, tensor_parallel_size=1, max_new_tokens=256)
    return dataclasses.replace(profile, training=t, generation=g)


def check_vllm(profile) -> dict:
    import torch

    from spot_utils import pipeline
    from spot_utils.generation import VLLMEngine, generate

    if versions()["vllm"] is None:
        return {"skipped": "vllm is not installed (make setup GPU=1)"}
    _, tokenizer = pipeline.sampling_policy(profile)  # what notebook 01 holds when vLLM starts: no HF weights
    free_before = torch.cuda.mem_get_info()[0]
    start = time.perf_counter()
    with VLLMEngine.for_profile(profile, profile.model.location) as engine:
        started = time.perf_counter() - start
        texts, reasons = generate(profile.model.location, ["What is 2 + 3?"] * 4, backend="vllm", n=2,
                                  max_new_tokens=64, engine=engine, return_finish_reasons=True)
    free_after = torch.cuda.mem_get_info()[0]
    return {"engine_start_s": round(started, 1), "samples": sum(len(t) for t in texts),
            "finish_reasons": sorted({r for rs in reasons for r in rs}),
            "free_gib_before": round(free_before / 2**30, 1), "free_gib_after_shutdown": round(free_after / 2**30, 1)}


def check_zero2(profile_factory, model_dir: Path, run_dir: Path, method: str) -> dict:
    import torch

    from spot_utils import training
    from spot_utils.modeling import load_model

    if versions()["deepspeed"] is None:
        return {"skipped": "deepspeed is not installed (make setup GPU=1)"}
    # one process as its own distributed job (what accelerate launch would set up)
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": os.environ.get("MASTER_PORT", "29531")})
    # batch 32 = 1 process x 1 per device x 32 accumulation: one optimizer step is the paper's batch
    profile = profile_factory(per_device_batch_size=1, gradient_accumulation_steps=32, max_steps=1, logging_steps=1,
                              save_steps=0, gradient_checkpointing=True, bf16=True,
                              deepspeed="configs/deepspeed_zero2.json")
    model, tokenizer = load_model(model_dir, dtype="float32", device="cuda", attn_implementation="auto")
    words = " ".join(["seven"] * (TOKENS // 2))
    text = tokenizer.decode(tokenizer(words)["input_ids"][: TOKENS - 64])  # a response of about 8k tokens
    records = [{"id": f"g{i}", "prompt": f"Question {i}: count.", "chosen": text, "rejected": text[: len(text) // 2]}
               for i in range(32)]
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = training.train(method, records, profile, run_dir / method, model=model, tokenizer=tokenizer,
                            progress=False)
    seconds = time.perf_counter() - start
    return {"tokens_per_sequence": len(tokenizer(text)["input_ids"]), "steps": result.global_step,
            "train_s_incl_reference_pass": round(seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "attn_implementation": model.config._attn_implementation}


def main(argv=None) -> int:
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "gpu_check" / "result.json"))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: make gpu-check needs a CUDA GPU; this machine has none (the CPU smoke is `make smoke`)")
        return 1
    report = {"gpu": torch.cuda.get_device_name(0), "gpu_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
              "versions": versions()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = stand_in(tmp / "model", args.hidden, args.layers)
        report["model"] = {"hidden": args.hidden, "layers": args.layers}
        factory = lambda **training: profile_for(model_dir, tmp / "runs", **training)  # noqa: E731
        for name, check in (("vllm", lambda: check_vllm(factory())),
                            ("zero2_sft", lambda: check_zero2(factory, model_dir, tmp / "train", "sft")),
                            ("zero2_spot_bco", lambda: check_zero2(factory, model_dir, tmp / "train", "spot_bco"))):
            start = time.perf_counter()
            try:
                report[name] = check()
            except Exception as e:  # every part reports, so one failure does not hide the others
                report[name] = {"failed": f"{type(e).__name__}: {e}"[:2000]}
            report[name]["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if not any("failed" in v for v in report.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
