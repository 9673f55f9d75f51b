"""Base pretraining of the tiny model on the miniature world (the stand-in for Qwen3-8B's pretraining).

    meta = pretrain_base(load_profile("tiny"))     # trains, or reuses runs/tiny/base/; meta["history"]: curves
    model, tokenizer = load_base(profile)           # then, from spot_utils.tasks

A plain PyTorch loop in the spirit of nanoGPT: AdamW, linear warmup then cosine decay, loss on the
response tokens only. Each batch mixes the task families by the mix weights (a skills-heavy
curriculum mix for the first steps) and is run as one micro-batch per family, which keeps padding
low because the families differ in length; the families' gradients are computed side by side on
threads (pretrain.family_threads) and summed in a fixed order, so the bits do not depend on the
thread count. The result is cached under
runs/<profile>/base/ together with the hash of the config that made it; a matching hash reuses it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch

from ..config import Profile
from ..environment import available_cores, warn_if_numerics_unpinned
from ..evaluation import greedy_accuracy
from ..modeling import base_config_hash, base_dir, count_parameters, prompt_text, save_model
from ..progress import progress as progress_bar
from . import world
from .model import build_char_tokenizer, build_tiny_model

IGNORE = -100
BASE_META = "spot_base.json"
BASE_EVAL_ROWS = "eval_rows.csv"  # the base's graded test answers, kept beside it


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_pair(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """input_ids of prompt + answer + end-of-turn, and labels that mask the prompt with IGNORE."""
    prompt = tokenizer.encode(prompt_text(tokenizer, question), add_special_tokens=False)
    response = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt + response, [IGNORE] * len(prompt) + response


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for teacher-forced training."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lr_at(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate: linear warmup, then cosine decay to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def task_micro_batches(examples, tokenizer) -> list[tuple[str, dict, int]]:
    """Split one mixed batch into one micro-batch per task family (their lengths differ by 4x, so
    padding them together would waste most of the compute). Returns (task, batch, response tokens).
    No attention mask: with right padding, causal attention never lets a real token see a pad."""
    groups: dict[str, list] = {}
    for ex in examples:
        groups.setdefault(ex.task, []).append(encode_pair(tokenizer, ex.question, ex.answer))
    out = []
    for task, rows in groups.items():
        batch = collate(rows, tokenizer.pad_token_id)
        batch.pop("attention_mask")
        out.append((task, batch, int((batch["labels"] != IGNORE).sum())))
    return out


def family_threads(profile: Profile) -> int:
    """Threads for a step's family micro-batches: pretrain.family_threads, 0 meaning one per core this
    process may use (no more than there are families)."""
    n = profile.pretrain.family_threads or available_cores()
    return max(1, min(n, len(profile.pretrain.mix)))


def accumulate_gradients(model, micro, total: int, pool: ThreadPoolExecutor | None = None) -> list[float]:
    """Backward of every family micro-batch, its mean loss weighted by its share of the step's response
    tokens, summed into each parameter's .grad; returns the micro-batches' losses. With a pool the
    families run at once, one per pool thread, and their gradients are
    added in family order into a tensor laid out like the parameter: the bits of one loss.backward()
    after another (their .grad accumulates exactly so), whatever the thread count."""
    params = [p for p in model.parameters() if p.requires_grad]

    def gradients(item):
        _, batch, n = item
        loss = model(**batch).loss  # mean over this family's response tokens
        return loss.item(), torch.autograd.grad(loss * n / total, params, allow_unused=True)

    results = list(pool.map(gradients, micro)) if pool is not None else [gradients(m) for m in micro]
    for i, p in enumerate(params):
        parts = [grads[i] for _, grads in results if grads[i] is not None]
        grad = p.grad
        for part in parts:
            if grad is None:
                grad = torch.empty_like(p).copy_(part)  # laid out like the parameter, as autograd's .grad is
            else:
                grad += part
        p.grad = grad
    return [loss for loss, _ in results]


def pretrain_base(profile: Profile, force: bool = False, progress: bool = True) -> dict:
    """Train the tiny base model (or reuse the cached one) and return its metadata, which holds the
    loss and probe-accuracy curves. Model and tokenizer are saved with save_pretrained under
    runs/<profile>/base/."""
    if profile.model.source != "scratch":  # a guard: only a model built here is pretrained here
        raise ValueError(f"profile {profile.name!r} loads a pretrained model ({profile.model.name_or_path}); "
                         "only the tiny profile pretrains its base")
    warn_if_numerics_unpinned()
    out = base_dir(profile)
    meta_path = out / BASE_META
    want = base_config_hash(profile)
    if not force and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("config_hash") == want:
            meta["reused"] = True
            return meta


    cfg, wcfg = profile.pretrain, profile.world
    torch.set_num_threads(cfg.threads)
    seed_everything(profile.seed)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(profile.model, tokenizer, seed=profile.seed)
    model.train()

    exclude = world.keys(world.test_sets(wcfg, profile.seed))
    probe = world.probe_sets(wcfg, profile.seed, cfg.probe_size, exclude) if cfg.probe_every else []
    seen = exclude | world.keys(probe)
    # the curriculum asks one instruction at a time: chains before the copy mechanism has formed delay it
    single = dataclasses.replace(wcfg, skill_chain=[wcfg.skill_chain[0]] * 2)
    curriculum = world.pretrain_stream(single, cfg.curriculum_mix, profile.seed + 1, seen)
    stream = world.pretrain_stream(wcfg, cfg.mix, profile.seed, seen)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    history: list[dict] = []
    running: dict[str, list[float]] = {}
    threads = family_threads(profile)
    families = ThreadPoolExecutor(threads, thread_name_prefix="pretrain-family") if threads > 1 else nullcontext()
    with families as pool:
        t0 = time.time()
        bar = progress_bar(range(cfg.steps), desc="pretrain base", disable=not progress)
        for step in bar:
            source = curriculum if step < cfg.curriculum_steps else stream
            micro = task_micro_batches([next(source) for _ in range(cfg.batch_size)], tokenizer)
            total = sum(n for _, _, n in micro)  # the step's gradient is the token mean over the whole batch
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_at(step, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
            opt.zero_grad(set_to_none=True)
            for (task, _, _), loss in zip(micro, accumulate_gradients(model, micro, total, pool)):
                running.setdefault(task, []).append(loss)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            last = step + 1 == cfg.steps
            if (step + 1) % cfg.log_every == 0 or last:
                row = {"step": step + 1, "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 1)}
                row.update({f"loss/{task}": float(np.mean(v)) for task, v in running.items()})
                if probe and ((step + 1) % cfg.probe_every == 0 or last):
                    model.eval()
                    row.update(greedy_accuracy(model, tokenizer, probe, world.grade))
                    model.train()
                history.append(row)
                running = {}
                bar.set_postfix({k.split("/")[-1]: f"{v:.2f}" for k, v in row.items() if k.startswith("loss/")})

    model.eval()
    save_model(model, tokenizer, out)
    # answers graded for the model this one replaces are not this model's (notebook 00 and make robustness
    # evaluate a base once and keep its rows beside it)
    (out / BASE_EVAL_ROWS).unlink(missing_ok=True)
    meta = {"config_hash": want, "profile": profile.name, "seed": profile.seed, "parameters": count_parameters(model),
            "train_seconds": round(time.time() - t0, 1), "steps": cfg.steps, "history": history, "reused": False}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta

