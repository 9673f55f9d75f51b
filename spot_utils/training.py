"""Post-training (Sec. 4-5, Tables 1-3): one TRL trainer for every method.

    result = train("spot_bco", "runs/tiny/data/pairs_gamma0.6.jsonl", profile, "runs/tiny/train/spot_bco")
    result.model_dir, result.log_history, result.delta

Methods (equation numbers from the paper, losses in spot_utils.losses):
  pair losses, on summed response log-probs with a frozen reference (Eq. 3)
    dpo (Eq. 4), reward_sft (Eq. 5), spot_bce (Eq. 7), spot_bco (Eq. 8)
  token-level losses on the completion tokens only (for an 8B model from the fused LM head, as the
  pair losses: see TOKEN_LOGITS_LIMIT)
    sft      NLL (Eq. 2) on the Oracle's direct answers      (records with `response`)
    rft      NLL on the policy's own correct answers         (records with `response`)
    sft_plus NLL on y+ of the pairs                           (pair records)
    dft      -stopgrad(p_t) log p_t (Wu et al., 2025)         (pair or response records)
             its gradient is that of -p_t, so the logged DFT loss RISES while p_t < 1/e (e.g. from
             a random init) even though the model learns; watch rewards/chosen instead

Everything runs through `SPoTTrainer`, a subclass of TRL 1.16's `DPOTrainer`. From TRL we keep the
tokenisation of prompt/completion, the collator, the reference log-prob precompute (one pass before
training, after which no reference model exists), the fused LM head, metric averaging and logging,
and the whole `transformers.Trainer` loop (accumulation, DeepSpeed, checkpoints, resume). We
replace only the loss (see `SPoTTrainer.compute_loss`). Records with a single `response` (SFT, RFT)
are fed as pairs whose rejected completion is empty (just the end token); training never runs
that half, only TRL's one reference pass does (cheap: prompt + 1 token).

The paper profile is the same code launched on 8 GPUs:
    accelerate launch --config_file configs/accelerate_zero2.yaml your_script.py
where the script calls `train(...)`; the profile's `training.deepspeed` names the ZeRO-2 JSON.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import datasets
import torch
from datasets import Dataset
from accelerate.utils import broadcast_object_list
from transformers import PrinterCallback, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl import DPOConfig, DPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from . import losses, shared_prefix
from .config import METHODS, REPO_ROOT, Profile
from .data import read_jsonl
from .evaluation import greedy_accuracy
from .modeling import prompt_text
from .tasks import tasks_of

PAIR_METHODS = losses.PAIR_LOSSES                   # dpo, reward_sft, spot_bce, spot_bco
TOKEN_METHODS = ("sft", "rft", "sft_plus", "dft")
NEEDS_PAIRS = PAIR_METHODS + ("sft_plus",)          # sft_plus is NLL on y+, so it needs the pair file
DELTA_FILE = "spot_delta.json"                      # SPoT-BCO's RunningMean, saved in every checkpoint
RESULT_FILE = "spot_train.json"                     # written next to the final model
PAPER_BATCH_SIZE = 32                               # App. C: processes x per-device batch x accumulation
SHARED_DATA_DIR = "shared_dataset"                  # <output_dir>/..., the tokenised data every rank reads
# Token losses take TRL's fused LM head (per-token log-probs in tiles, never the [B, T, V] logits) when a
# micro-batch's logits could exceed this many elements (32 MiB in float32): Qwen3-8B's [2, 8192, 151936]
# are 2.5e9 (10 GB, kept for backward, plus the y- pass). A constant, not a profile setting: both paths
# give the same loss and gradients to float rounding, and the choice follows from settings that the run
# keys already hold (batch, max_length, base model), so tiny (16 x 512 x 102 = 8e5) stays on its
# bit-identical logits path while an 8B profile, and paper_smoke's stand-in, take the fused one.
TOKEN_LOGITS_LIMIT = 2 ** 23
assert set(PAIR_METHODS + TOKEN_METHODS) == set(METHODS)


# -----------------------------------------------------------------------------
# data


def to_dataset(method: str, records: Sequence[dict], tokenizer) -> tuple[Dataset, bool]:
    """TRL's standard preference format (prompt, chosen, rejected) from our records.

    Pair records (data.PAIR_FIELDS) keep y+ as chosen and y- as rejected. SFT-style records
    (prompt/question, response) become chosen = response, rejected = "" (TRL appends the end
    token), and the returned flag paired=False tells the trainer to skip the rejected half.
    `prompt` is already chat-formatted; without it the question is formatted here.
    TRL tokenizes the prompt text with special tokens added: a tokenizer that prepends its BOS
    itself (Llama-3) would put a second one before the one its chat template wrote, so that text BOS
    is dropped here and the model sees exactly one (Qwen3 and the tiny tokenizer add none: unchanged).
    """
    if not records:
        raise ValueError(f"no training records for {method!r}")
    bos = tokenizer.bos_token
    if not bos or tokenizer("")["input_ids"][:1] != [tokenizer.bos_token_id]:
        bos = None  # the tokenizer adds no BOS: keep the prompt text as the template wrote it
    rows, kinds = [], set()
    for i, rec in enumerate(records):
        if "prompt" in rec:
            prompt = rec["prompt"]
        elif "question" in rec:
            prompt = prompt_text(tokenizer, rec["question"])
        else:
            raise ValueError(f"record {i} has neither 'prompt' nor 'question': {sorted(rec)}")
        if bos:
            prompt = prompt.removeprefix(bos)
        if "chosen" in rec and "rejected" in rec:
            rows.append({"prompt": prompt, "chosen": rec["chosen"], "rejected": rec["rejected"]})
            kinds.add("pair")
        elif "response" in rec:
            rows.append({"prompt": prompt, "chosen": rec["response"], "rejected": ""})
            kinds.add("response")
        else:
            raise ValueError(f"record {i} has neither chosen/rejected nor response: {sorted(rec)}")
    if len(kinds) > 1:
        raise ValueError("mixed pair and response records; train on one kind at a time")
    paired = kinds == {"pair"}
    if method in NEEDS_PAIRS and not paired:
        raise ValueError(f"{method!r} trains on pairs (chosen, rejected); got records with 'response' only")
    return Dataset.from_list(rows), paired


# -----------------------------------------------------------------------------
# the trainer


class SPoTTrainer(DPOTrainer):
    """TRL's DPOTrainer with the SPoT losses.

    Override: `compute_loss` (the `transformers.Trainer` hook for the loss of one micro-batch,
    which DPOTrainer itself overrides only to call `_compute_loss`). TRL 1.16 computes its loss
    inside `_compute_loss`, a ~300-line method where the policy forward, a fixed if/elif chain of
    loss types and the metrics are interleaved, with no hook for a new loss; none of its types is
    Reward-SFT (Eq. 5) or SPoT-BCO with a delta (TRL 1.x's "bco_pair" has no delta). So we replace
    that single call: one forward, summed completion log-probs, and `losses.pair_loss` (or
    `losses.nll` / `losses.dft`), then the same reward metrics TRL logs. Reference log-probs come
    from the batch (`precompute_ref_log_probs=True` is required): TRL computed them once with the
    untouched policy in `__init__` and then holds no reference model.

    SPoT-BCO's delta (Eq. 8) is a `losses.RunningMean` owned by the trainer:
      * every micro-batch of an optimizer step uses the SAME delta, its value before the step;
      * after the optimizer step (callback `on_step_end`) it is updated once with the mean of the
        step's training rewards, chosen and rejected together, over all its micro-batches (and
        averaged over processes inside RunningMean.update);
      * evaluation batches use delta but never move it;
      * it is written to `spot_delta.json` in every checkpoint and read back on resume.
    TRL 0.20-0.28 instead updated delta inside the loss of every forward (each accumulation
    micro-batch, and eval batches too) and used the freshly updated value for that same batch
    (`losses.bco_pair_trl028`). With one micro-batch per step the two differ by one step of lag:
    here delta is a baseline fixed before the step, so the step's gradient does not depend on
    the step's own reward statistics. The updates are in `delta_trace`.
    """

    def __init__(self, *args, method: str, paired: bool = True, delta_mode: str = "cumulative",
                 delta_momentum: float = 0.9, ref_cache_dir: str | Path | None = None, length_group_rows: int = 0,
                 shared_prefix_forward: bool = False, **kwargs):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        if not kwargs["args"].precompute_ref_log_probs:
            raise ValueError("SPoTTrainer reads reference log-probs from the batch: set precompute_ref_log_probs=True")
        if length_group_rows < 0:
            raise ValueError(f"length_group_rows must be >= 0, got {length_group_rows}")
        self.method, self.paired, self.group_rows = method, paired, length_group_rows
        # Pair methods score y+ and y- together (their loss needs both, with gradient); the token methods
        # train on y+ alone, so their policy and reference passes stay on separate rows.
        self.shared_prefix = shared_prefix_forward and method in PAIR_METHODS
        if self.shared_prefix:  # before TRL's reference pass runs in __init__
            shared_prefix.check_attention(kwargs["model"].config._attn_implementation)
        self.ref_cache_dir = Path(ref_cache_dir) if ref_cache_dir else None
        self.delta = losses.RunningMean(delta_mode, delta_momentum) if method == "spot_bco" else None
        self.delta_trace: list[dict] = []       # one row per delta update (this train() call)
        self._step_rewards: list[torch.Tensor] = []  # this optimizer step's training rewards so far
        if kwargs["args"].full_determinism:
            # Deterministic algorithms, but no NaN-filling of every torch.empty: TRL's fused LM head
            # allocates a (tokens x 32768) scratch buffer per forward, and filling it took most of a
            # tiny run's time. The buffer is fully written before it is read, so nothing changes.
            torch.utils.deterministic.fill_uninitialized_memory = False
        super().__init__(*args, **kwargs)
        self.add_callback(_OptimizerStepEnd(self))
        length = self.args.max_length or float("inf")  # None: no truncation, so no bound on the logits
        self.fused_token_loss = fused_token_loss(self.args.per_device_train_batch_size, length,
                                                 self.model.config.get_text_config().vocab_size)

    # --- the loss of one micro-batch -------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise NotImplementedError("SPoTTrainer computes no logits for compute_metrics")
        mode = "train" if self.model.training else "eval"
        completion = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion == 0, -100)  # score completion tokens only
        if self.method in PAIR_METHODS:
            loss, chosen_logps, rejected_logps = self._pair_loss(model, inputs, labels, mode)
        else:
            loss, chosen_logps, rejected_logps = self._token_loss(model, inputs, labels)
        self._log_rewards(mode, inputs, chosen_logps, rejected_logps)
        return loss

    def _pair_loss(self, model, inputs, labels, mode):
        chosen_logps, rejected_logps = self._summed_logps(model, inputs, labels).chunk(2)  # batch is [chosen; rejected]
        delta = 0.0
        if self.delta is not None:
            delta = self.delta.value
            self._metrics[mode]["delta"].append(delta)
        per_example = losses.pair_loss(self.method, chosen_logps, rejected_logps, inputs["ref_chosen_logps"],
                                       inputs["ref_rejected_logps"], self.beta, delta)
        return per_example.mean(), chosen_logps, rejected_logps

    def _summed_logps(self, model, inputs, labels):
        """Summed completion log-probs of every row [chosen; rejected], in forwards over similar-length rows
        (`length_groups`), or over one packed row per pair (`training.shared_prefix`). TRL's fused LM head
        returns per-token log-probs (0 off the completion) without building the [B, T, V] logits; the
        reference pass uses this same forward, so at step 0 policy and reference log-probs agree and r = 0
        (to float rounding)."""
        if self.shared_prefix:
            return torch.cat(self._shared_prefix_logps(model, inputs))
        parts, order = [], []
        for rows, out, _ in self._forwards(model, inputs, labels, torch.arange(len(labels)), fused=True):
            parts.append(out.log_probs.sum(dim=1))
            order.append(rows)
        return torch.cat(parts)[torch.argsort(torch.cat(order))]  # back in batch order

    def _shared_prefix_logps(self, model, inputs):
        """(y+, y-) summed log-probs per pair, each pair one row over prompt + common prefix + both
        suffixes (spot_utils.shared_prefix), in groups of similar packed length."""
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        spans = shared_prefix.pair_spans(ids, attention)
        lengths = torch.tensor([shared_prefix.packed_length(*span) for span in spans])
        chosen, rejected = torch.zeros(len(spans), device=ids.device), torch.zeros(len(spans), device=ids.device)
        pad = self.processing_class.pad_token_id or 0
        kernel, dtype = self.model.config._attn_implementation, next(model.parameters()).dtype
        for group, _ in groups_by_length(lengths, torch.arange(len(spans)), self.group_rows):
            packed = shared_prefix.pack_pairs(ids, attention, inputs["completion_mask"], group, spans, pad)
            out = model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                        attention_mask=shared_prefix.model_mask(packed.attention_mask, kernel, dtype),
                        shift_labels=packed.shift_labels, fused_lm_head=True, use_cache=False)
            group = group.to(ids.device)
            chosen[group], rejected[group] = packed.summed_logps(out.log_probs)
        return chosen, rejected

    def compute_ref_log_probs(self, model, inputs):
        """TRL's reference log-probs of one padded batch, computed like the policy's (length groups, shared
        prefix). Without either TRL's own method runs (adapters, DeepSpeed engine)."""
        if not self.group_rows and not self.shared_prefix:
            return super().compute_ref_log_probs(model, inputs)
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        with (torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
              self.accelerator.autocast()):
            return self._summed_logps(model, inputs, labels).chunk(2)

    def _token_loss(self, model, inputs, labels):
        # Only the chosen half (y+, or the response) is trained. Mean over the micro-batch's completion
        # tokens; transformers divides by the accumulation steps (DPOTrainer.loss_is_scaled_for_ga = False).
        n = labels.size(0) // 2
        loss_fn = losses.token_dft if self.method == "dft" else losses.token_nll
        loss_sum, chosen_logps = 0.0, torch.zeros(n, device=labels.device)
        for rows, token_logps, mask in self._token_logps(model, inputs, labels, torch.arange(n)):
            loss_sum = loss_sum + loss_fn(token_logps, mask, reduction="sum")
            chosen_logps[rows] = token_logps.detach().sum(-1)
        loss = loss_sum / (labels[:n, 1:] != -100).sum()  # the mean over the micro-batch's completion tokens
        rejected_logps = None
        if self.paired:  # y- is never trained on; no-grad forwards to log its reward (Fig. 4's pull-up)
            rejected_logps = torch.zeros(n, device=labels.device)
            with torch.no_grad():
                for rows, token_logps, _ in self._token_logps(model, inputs, labels, torch.arange(n, 2 * n)):
                    rejected_logps[rows - n] = token_logps.sum(-1)
        return loss, chosen_logps, rejected_logps

    def _token_logps(self, model, inputs, labels, rows):
        """(rows, per-token log-probs [rows, T-1] with 0 off the completion, mask) for each length group.
        Above TOKEN_LOGITS_LIMIT from TRL's fused LM head (with gradient, in tiles of positions and
        vocabulary), else from the logits (the tiny profile's numbers)."""
        for group, out, group_labels in self._forwards(model, inputs, labels, rows, fused=self.fused_token_loss):
            if self.fused_token_loss:
                yield group, out.log_probs, group_labels[:, 1:] != -100
            else:
                yield group, *losses.sequence_logps(out.logits, group_labels)[1:]

    def _forwards(self, model, inputs, labels, rows, fused=False):
        """(rows, model output, their labels) for each length group of `rows` (see length_groups).
        fused: TRL's fused LM head, whose output holds per-token log-probs instead of logits."""
        for group, length in length_groups(inputs["attention_mask"], rows, self.group_rows):
            group_labels = labels[group, :length]
            head = {"labels": group_labels, "fused_lm_head": True} if fused else {}
            out = model(input_ids=inputs["input_ids"][group, :length],
                        attention_mask=inputs["attention_mask"][group, :length], use_cache=False, **head)
            yield group, out, group_labels

    def _log_rewards(self, mode, inputs, chosen_logps, rejected_logps):
        """Implicit rewards r = beta * (log pi - log pi_ref) (Eq. 3), averaged by TRL's `log` over the
        logging interval. Training rewards of spot_bco are also kept for this step's delta update."""
        gather, m = self.accelerator.gather, self._metrics[mode]
        r_pos = self.beta * (chosen_logps.detach() - inputs["ref_chosen_logps"])
        m["rewards/chosen"].append(gather(r_pos).mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        if rejected_logps is None:
            return
        r_neg = self.beta * (rejected_logps.detach() - inputs["ref_rejected_logps"])
        m["rewards/rejected"].append(gather(r_neg).mean().item())
        m["rewards/margins"].append(gather(r_pos - r_neg).mean().item())
        m["rewards/accuracies"].append(gather((r_pos > r_neg).float()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        if mode == "train" and self.delta is not None:
            self._step_rewards.append(torch.cat([r_pos, r_neg]).double())

    # --- reference log-probs: one pass per (reference weights, data), shared across runs -----

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """TRL's reference pass, cached on disk when `ref_cache_dir` is set. Every method and seed of
        notebooks 02/03 trains from the same base on the same pairs, so the pass (as long as a third
        of a tiny run) is done once. The key holds the reference weights (TRL's own hash), the
        tokenised data, the batch size and the thread count: the cached numbers are bit-identical to
        what this run would compute."""
        dataset = self._shared_by_ranks(dataset)
        if self.ref_cache_dir is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        columns = [c for c in ("prompt_ids", "chosen_ids", "rejected_ids", "input_ids") if c in dataset.column_names]
        forward = "shared_prefix" if self.shared_prefix else f"rows{self.group_rows}"  # other forward, other rounding
        h = hashlib.sha256(f"{self._precompute_model_hash}|{batch_size}|{torch.get_num_threads()}|{forward}".encode())
        table = dataset.select_columns(columns)[:]  # a dict of plain lists
        for column in columns:
            h.update(json.dumps(table[column]).encode())
        path = self.ref_cache_dir / f"{h.hexdigest()[:20]}.pt"
        if path.exists():
            cached = torch.load(path)
            return dataset.add_column("ref_chosen_logps", cached["chosen"].tolist()).add_column(
                "ref_rejected_logps", cached["rejected"].tolist())
        # experiments.run_grid fills each entry once before its parallel runs start; should two
        # processes still compute one entry, the write is atomic, so a reader never sees half a file.
        out = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.args.should_save:
            self.ref_cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save({"chosen": torch.tensor(out["ref_chosen_logps"]),
                        "rejected": torch.tensor(out["ref_rejected_logps"])}, tmp)
            tmp.replace(path)
        return out

    def _shared_by_ranks(self, dataset):
        """With several processes, `dataset` backed by one Arrow file in the run folder.
        TRL writes the reference log-probs next to the dataset's cache files; an in-memory dataset
        (Dataset.from_list) has none, so each process would use its own temporary folder and
        ranks >= 1 would look for the file rank 0 wrote in theirs (FileNotFoundError)."""
        if self.accelerator.num_processes == 1 or dataset.cache_files:
            return dataset
        fingerprint = [dataset._fingerprint]
        broadcast_object_list(fingerprint, from_process=0)  # one name for every rank
        folder = Path(self.args.output_dir, SHARED_DATA_DIR)
        with self.accelerator.main_process_first():  # rank 0 writes it, the others then load it
            folder.mkdir(parents=True, exist_ok=True)
            return dataset.map(None, cache_file_name=str(folder / f"{fingerprint[0]}.arrow"),
                               load_from_cache_file=True, new_fingerprint=f"{fingerprint[0]}-shared")

    # --- delta: once per optimizer step, saved with checkpoints ----------------------------

    def _end_optimizer_step(self, global_step: int) -> None:
        if self.delta is None:
            return
        if not self._step_rewards:  # every rank runs >= 1 micro-batch per step, so this is a bug
            raise RuntimeError(f"no training rewards recorded for optimizer step {global_step}")
        step_mean = torch.cat(self._step_rewards).mean()  # all micro-batches of the step, this process
        self._step_rewards = []
        used = self.delta.value
        new = self.delta.update(step_mean)  # averages step_mean over processes first
        self.delta_trace.append({"step": global_step, "step_mean_reward": float(step_mean),
                                 "delta_used": used, "delta": new})

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.delta is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            (folder / DELTA_FILE).write_text(json.dumps(self.delta.state_dict()))

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in {self.args.output_dir}")
        if resume_from_checkpoint and self.delta is not None:
            path = Path(resume_from_checkpoint, DELTA_FILE)
            if not path.exists():  # resuming with delta = 0 would silently change the run
                raise FileNotFoundError(f"{path} is missing: the checkpoint holds no SPoT-BCO delta")
            self.delta.load_state_dict(json.loads(path.read_text()))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


def fused_token_loss(rows: int, length: float, vocab: int) -> bool:
    """Whether the token losses of micro-batches of `rows` x `length` tokens take the fused LM head."""
    return rows * length * vocab > TOKEN_LOGITS_LIMIT


def length_groups(attention_mask: torch.Tensor, rows: torch.Tensor, group_rows: int) -> list[tuple[torch.Tensor, int]]:
    """`rows` of a right-padded batch in groups of about `group_rows` rows of similar length (0: one
    group), each with the length of its longest row. A forward per group on [rows, :length] gives the
    same per-row values as one forward on the whole batch (causal attention: no real token sees the
    padding to its right), on fewer padded tokens: in one forward the batch's longest response sets
    the length of every row (tiny pairs: 43% of the tokens were padding; 10% in groups of 8)."""
    return groups_by_length(attention_mask[rows].sum(dim=1), rows, group_rows)


def groups_by_length(lengths: torch.Tensor, rows: torch.Tensor, group_rows: int) -> list[tuple[torch.Tensor, int]]:
    """`rows` (with their `lengths`) in groups of about `group_rows` similar lengths (0: one group), each
    with its longest length."""
    order = torch.argsort(lengths, stable=True)
    groups = max(1, len(order) // group_rows) if group_rows > 0 else 1
    return [(rows[chunk], int(lengths[chunk].max())) for chunk in order.chunk(groups)]


class _OptimizerStepEnd(TrainerCallback):
    """Calls the trainer after each optimizer step (on_step_end runs only when the optimizer stepped)."""

    def __init__(self, trainer: SPoTTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_optimizer_step(state.global_step)


class ProbeCallback(TrainerCallback):
    """Greedy accuracy on a small fixed probe list, for "accuracy across steps" curves (Fig. 2).

    Every `every_n_steps` optimizer steps (and before the first and after the last) it answers each
    example (id, task, question, ground_truth; e.g. a tiny.world.Example) with temperature 0, grades it
    with `grade(task, response, ground_truth)` (e.g. tiny.world.grade), and appends
    {"step": s, "probe/<task>": accuracy, ...} to the trainer's `state.log_history`. It runs on the
    main process only (fine under ZeRO-2, where every process holds the full weights) and inside
    `torch.random.fork_rng`, so probing never changes the run's random stream.
    """

    def __init__(self, examples: Sequence, grade, every_n_steps: int, max_new_tokens: int = 96,
                 batch_size: int = 256):
        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be > 0, got {every_n_steps}")
        self.examples, self.grade, self.every = list(examples), grade, every_n_steps
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:
            self._probe(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._probe(state, model, processing_class)

    def accuracy(self, model, tokenizer) -> dict[str, float]:
        return greedy_accuracy(model, tokenizer, self.examples, self.grade, self.max_new_tokens, self.batch_size)

    def _probe(self, state, model, tokenizer):
        if not state.is_world_process_zero or not self.examples:
            return
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            row = self.accuracy(model, tokenizer)
        state.log_history.append({"step": state.global_step, **row})


# -----------------------------------------------------------------------------
# configuration and the entry point


def trainer_settings(method: str, profile: Profile) -> dict[str, Any]:
    """The DPOConfig keyword arguments that come from the profile (App. C for the paper profiles).
    A plain dict, so the paper settings can be checked on a machine without GPUs or DeepSpeed."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    t = profile.training
    return {
        "beta": t.beta_of(method),
        "learning_rate": t.lr[method],
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps if t.max_steps > 0 else -1,
        "per_device_train_batch_size": t.per_device_batch_size,
        "per_device_eval_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": t.warmup_ratio,  # transformers 5: a value < 1 is a ratio of the total steps
        "weight_decay": t.weight_decay,
        "adam_beta1": t.adam_beta1,
        "adam_beta2": t.adam_beta2,
        "max_grad_norm": t.max_grad_norm,
        "max_length": t.max_length,
        "bf16": t.bf16,
        "gradient_checkpointing": t.gradient_checkpointing,
        "logging_steps": t.logging_steps,
        "save_strategy": "steps" if t.save_steps > 0 else "no",
        "save_steps": t.save_steps if t.save_steps > 0 else 500,
        "save_total_limit": t.save_total_limit or None,  # 0: keep every checkpoint
        "deepspeed": str(REPO_ROOT / t.deepspeed) if t.deepspeed else None,
        "precompute_ref_log_probs": True,  # one reference pass, then no reference model in memory
        "disable_dropout": True,
        "full_determinism": t.full_determinism,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning is a GPU-only speed-up
        "report_to": "none",
    }


def training_args(method: str, profile: Profile, output_dir: str | Path, seed: int | None = None,
                  progress: bool = True) -> DPOConfig:
    seed = profile.seed if seed is None else seed
    return DPOConfig(output_dir=str(output_dir), seed=seed, data_seed=seed, disable_tqdm=not progress,
                     **trainer_settings(method, profile))


@dataclass
class TrainResult:
    method: str
    model_dir: Path                     # the final model + tokenizer (save_pretrained)
    log_history: list[dict]             # transformers' log rows: loss, rewards/*, delta, probe/* ...
    global_step: int
    delta: float | None = None          # spot_bco: final value of the running mean
    delta_trace: list[dict] = field(default_factory=list)  # spot_bco: one row per optimizer step

    def logs(self, key: str) -> list[tuple[int, float]]:
        """(step, value) for every log row holding `key`, e.g. result.logs("rewards/chosen")."""
        return [(row["step"], row[key]) for row in self.log_history if key in row]


def build_trainer(method: str, data, profile: Profile, output_dir: str | Path, model=None, tokenizer=None,
                  callbacks: Sequence[TrainerCallback] = (), seed: int | None = None,
                  progress: bool = True, ref_cache_dir: str | Path | None = None) -> SPoTTrainer:
    """The SPoTTrainer `train` runs, with reference log-probs already precomputed (for inspection)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    records = read_jsonl(data) if isinstance(data, (str, Path)) else list(data)
    if model is None:
        model, tokenizer = tasks_of(profile).load_policy(method)
    else:
        if tokenizer is None:
            raise ValueError("pass tokenizer= together with model=")
        model = copy.deepcopy(_unpatch(model))  # never train the caller's model in place
    dataset, paired = to_dataset(method, records, tokenizer)
    check_launch(profile, model)
    args = training_args(method, profile, output_dir, seed, progress)
    check_distributed(args)
    with _quiet_datasets(not progress):
        trainer = SPoTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=list(callbacks), method=method, paired=paired,
                              delta_mode=profile.training.delta_mode,
                              delta_momentum=profile.training.delta_momentum, ref_cache_dir=ref_cache_dir,
                              length_group_rows=profile.training.length_group_rows,
                              shared_prefix_forward=profile.training.shared_prefix)
    if not progress:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    return trainer


def paper_batch_processes(t) -> int:
    """Processes that make the global batch (training.global_batch, the paper's 32) from training section
    `t` (per-device batch x accumulation): what a launch must start (experiments.launcher's {processes}, make plan)."""
    batch = t.global_batch or PAPER_BATCH_SIZE
    return max(1, batch // (t.per_device_batch_size * t.gradient_accumulation_steps))


def check_launch(profile: Profile, model) -> None:
    """Refuse launches that would run but not train as the paper did (clear errors, before any work)."""
    t = profile.training
    launched = launched_processes()
    batch = launched * t.per_device_batch_size * t.gradient_accumulation_steps
    if t.global_batch and batch != t.global_batch:
        raise ValueError(f"profile {profile.name!r}: {launched} processes x per-device batch "
                         f"{t.per_device_batch_size} x accumulation {t.gradient_accumulation_steps} = {batch}, "
                         f"not the batch of {t.global_batch} (training.global_batch); launch {paper_batch_processes(t)} "
                         "processes or change training.per_device_batch_size / gradient_accumulation_steps")
    dtype = next(model.parameters()).dtype
    if dtype in (torch.bfloat16, torch.float16) and not t.deepspeed:
        # AdamW would add lr-sized updates to 16-bit weights, and most round away (lr 1e-6: 965 of
        # 87,168 weights moved in 8 steps); DeepSpeed keeps float32 master weights, plain torch does not
        raise ValueError(f"the model's weights are {dtype} and training.deepspeed is empty: most updates would "
                         "round away. Train with DeepSpeed (training.deepspeed, e.g. configs/deepspeed_zero2.json) "
                         "or load the model in float32 (model.dtype: float32; bf16: true still computes in bf16)")


def launched_processes() -> int:
    """How many processes torchrun / accelerate launch started (1 when launched alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_distributed(args: DPOConfig) -> None:
    """The launched processes must form one job (e.g. accelerate on CPU without --cpu runs N copies)."""
    launched = launched_processes()
    if launched != args.world_size:
        raise RuntimeError(f"{launched} processes were launched (WORLD_SIZE) but the Trainer sees a world of "
                           f"{args.world_size}: they would train {launched} independent copies. On CPU launch "
                           "with `accelerate launch --cpu` or set ACCELERATE_USE_CPU=1.")


def train(method: str, data, profile: Profile, output_dir: str | Path, model=None, tokenizer=None,
          resume_from_checkpoint: str | bool | None = None, callbacks: Sequence[TrainerCallback] = (),
          seed: int | None = None, progress: bool = True, ref_cache_dir: str | Path | None = None) -> TrainResult:
    """Train `method` on `data` (a JSONL path or a list of records) and save the final model to
    <output_dir>/final, with spot_train.json (config, delta state, log history) beside it.

    `model`/`tokenizer` default to the profile's base (its tasks' `load_policy`); a given model is
    copied, never trained in place, so one base serves every method. The reference of Eq. 3 is
    the model as given: its log-probs are precomputed before any step, also when resuming from a
    checkpoint (pass the same base model and data). Checkpoints go to <output_dir>/checkpoint-N
    every `training.save_steps` steps; `resume_from_checkpoint` takes such a folder (or True for
    the last one). Same seed, data and profile give the same weights (full determinism on tiny).
    `ref_cache_dir` keeps the reference log-probs on disk for the next run on the same base and data.
    """
    trainer = build_trainer(method, data, profile, output_dir, model, tokenizer, callbacks, seed, progress,
                            ref_cache_dir)
    with _quiet_datasets(not progress):
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)

    model_dir = Path(output_dir) / "final"
    _unpatch(trainer.model)  # drop TRL's fused-head forward before saving
    trainer.save_model(str(model_dir))
    result = TrainResult(method, model_dir, list(trainer.state.log_history), trainer.state.global_step,
                         trainer.delta.value if trainer.delta else None, list(trainer.delta_trace))
    if trainer.args.should_save:
        meta = {"method": method, "profile": profile.name, "seed": trainer.args.seed, "paired": trainer.paired,
                "examples": len(trainer.train_dataset), "training": profile.to_dict()["training"],
                "delta_state": trainer.delta.state_dict() if trainer.delta else None,
                "global_step": result.global_step, "log_history": result.log_history}
        (model_dir / RESULT_FILE).write_text(json.dumps(meta, indent=1))
    return result


@contextmanager
def _quiet_datasets(quiet: bool):
    was_on = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet and was_on:
            datasets.enable_progress_bars()


def _unpatch(model):
    """TRL's `add_fused_lm_head` sets an instance-level `forward` whose closure points at the
    original object; a deep copy would keep calling the original. Removing it restores the class
    forward (identical when fused_lm_head is not asked for)."""
    model.__dict__.pop("forward", None)
    return model
