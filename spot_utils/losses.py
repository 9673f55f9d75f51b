"""
Losses for Surgical Post-Training (SPoT, arXiv 2603.01683) and its baselines.

Everything here is a pure function of log-probabilities (or logits), so the same code
serves the notebooks, the trainer and the tests. Equation numbers refer to the paper.

    implicit reward   r(x, y) = beta * (log pi_theta(y|x) - log pi_ref(y|x))       (Eq. 3)
    SFT+              token-level NLL on y+                                         (Eq. 2)
    DPO               -log s(r+ - r-)                                               (Eq. 4)
    Reward-SFT        -log s(r+)                                                    (Eq. 5)
    SPoT-BCE          -log s(r+) - log s(-r-)                                       (Eq. 7)
    SPoT-BCO          -log s(r+ - delta) - log s(-(r- - delta))                     (Eq. 8)
    DFT               -stopgrad(p_t) * log p_t per token        (Wu et al., 2025)

where s is the logistic sigmoid and log-probs in r are SUMMED over response tokens.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

PAIR_LOSSES = ("dpo", "reward_sft", "spot_bce", "spot_bco")
REDUCTIONS = ("token_mean", "sum", "none")
RUNNING_MODES = ("cumulative", "ema")

# -----------------------------------------------------------------------------
# sequence-level (pair) losses


def implicit_reward(policy_logps, ref_logps, beta):
    """Implicit reward of Eq. 3: beta * (log pi_theta(y|x) - log pi_ref(y|x)), summed log-probs."""
    return beta * (policy_logps - ref_logps)


def tether(r):
    """The "elastic tether" of Eq. 6: lambda = 1 - sigmoid(r).

    grad L_RWSFT = -lambda * beta * grad log pi(y+|x), so the pull on y+ fades once
    r+ is large (lambda(10) ~ 4.5e-5) instead of driving the policy away from pi_ref forever.
    Computed as sigmoid(-r), which is the same number without the cancellation in 1 - s(r).
    """
    r = r if torch.is_tensor(r) else torch.tensor(float(r), dtype=torch.float64)
    return torch.sigmoid(-r)


def pair_loss(name, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, delta=0.0):
    """Per-example loss, shape [B], for one of PAIR_LOSSES.

    All log-prob inputs are summed over response tokens, shape [B]. For "reward_sft" the
    rejected inputs are unused and may be None.
      dpo        (Eq. 4)  -log s(r+ - r-)
      reward_sft (Eq. 5)  -log s(r+)
      spot_bce   (Eq. 7)  -log s(r+) - log s(-r-)
      spot_bco   (Eq. 8)  -log s(r+ - delta) - log s(-(r- - delta))
    delta (float or 0-dim tensor) is the SPoT-BCO baseline, see RunningMean. It is a
    constant: any graph attached to it is cut, so no gradient flows into the baseline.
    F.logsigmoid is used throughout because log(sigmoid(z)) underflows for z << 0.
    """
    if name not in PAIR_LOSSES:
        raise ValueError(f"unknown pair loss {name!r}; expected one of {PAIR_LOSSES}")
    # a non-zero delta passed to another loss is almost surely a config mistake: fail loudly
    if name != "spot_bco" and not (isinstance(delta, (int, float)) and delta == 0):
        raise ValueError(f"delta is only used by 'spot_bco', got delta={delta!r} for {name!r}")
    r_pos = implicit_reward(chosen_logps, ref_chosen_logps, beta)
    if name == "reward_sft":
        return -F.logsigmoid(r_pos)
    if rejected_logps is None or ref_rejected_logps is None:
        raise ValueError(f"{name!r} needs rejected_logps and ref_rejected_logps")
    r_neg = implicit_reward(rejected_logps, ref_rejected_logps, beta)
    if name == "dpo":
        return -F.logsigmoid(r_pos - r_neg)
    if name == "spot_bce":
        return -F.logsigmoid(r_pos) - F.logsigmoid(-r_neg)
    delta = torch.as_tensor(delta, dtype=r_pos.dtype, device=r_pos.device).detach()
    return -F.logsigmoid(r_pos - delta) - F.logsigmoid(-(r_neg - delta))


# -----------------------------------------------------------------------------
# token-level log-probs and losses


def sequence_logps(logits, labels, ignore_index=-100):
    """Log-probs of the label tokens under a causal LM.

    logits [B, T, V] come from the model run on input_ids [B, T]; labels [B, T] are the
    input_ids with every non-response position (prompt, padding) set to ignore_index.
    The shift: logits[:, t] is the distribution of token t+1, so logits[:, :-1] scores
    labels[:, 1:]. The last logit predicts nothing and labels[:, 0] is never scored.

    Returns (summed_logps [B], token_logps [B, T-1], mask [B, T-1]); token_logps is 0
    where mask is False, so summed_logps is log pi(y|x) of Eq. 3.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != ignore_index
    # log_softmax in at least fp32: bf16 log-probs summed over hundreds of tokens drift
    logps = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    safe_labels = labels.masked_fill(~mask, 0)  # ignore_index is not a valid gather index
    token_logps = logps.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    token_logps = torch.where(mask, token_logps, torch.zeros_like(token_logps))
    return token_logps.sum(-1), token_logps, mask


def _reduce(per_token, mask, reduction):
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    if reduction == "token_mean":
        # clamp: a batch with no response tokens gives 0, not nan (F.cross_entropy gives nan)
        return per_token.sum() / mask.sum().clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def nll(logits, labels, ignore_index=-100, reduction="token_mean"):
    """SFT / SFT+ loss (Eq. 2): -log p_t for every response token.

    "token_mean" averages over all non-ignored tokens of the batch (what F.cross_entropy
    does); "sum" sums them; "none" returns [B, T-1] with zeros at ignored positions.
    With gradient accumulation, token_mean per micro-batch is not the token mean of the
    optimizer step: use "sum" and divide by the step's token count in the trainer.
    """
    _, token_logps, mask = sequence_logps(logits, labels, ignore_index)
    return token_nll(token_logps, mask, reduction)


def dft(logits, labels, ignore_index=-100, reduction="token_mean"):
    """Dynamic Fine-Tuning (Wu et al., 2025): loss_t = -stopgrad(p_t) * log p_t.

    The gradient is p_t * grad(-log p_t): the SFT gradient rescaled per token by the
    model's own (detached) probability, so low-probability tokens stop dominating.
    Without the detach this would be grad(-p_t), a different objective.
    Reductions as in nll().
    """
    _, token_logps, mask = sequence_logps(logits, labels, ignore_index)
    return token_dft(token_logps, mask, reduction)


# The same two losses from per-token log-probs [B, T-1] (0 where mask is False), e.g. those of TRL's
# fused LM head, which never builds the [B, T, V] logits (training.TOKEN_LOGITS_LIMIT).


def token_nll(token_logps, mask, reduction="token_mean"):
    """nll() from per-token log-probs and their mask (sequence_logps' second and third outputs)."""
    return _reduce(-token_logps, mask, reduction)


def token_dft(token_logps, mask, reduction="token_mean"):
    """dft() from per-token log-probs and their mask: -stopgrad(p_t) * log p_t, p_t = exp(log p_t)."""
    probs = token_logps.detach().exp()  # exp(0) = 1 at ignored positions, times a 0 log-prob
    return _reduce(-probs * token_logps, mask, reduction)


# -----------------------------------------------------------------------------
# SPoT-BCO baseline delta (Eq. 8)


class RunningMean:
    """Running mean of batch-mean rewards: the delta of SPoT-BCO (Eq. 8).

    Two modes:
      "cumulative" (default): count-weighted mean of every value seen, starting from mean 0
        and count 1e-24. This is the mean of TRL's RunningMoments (trl/trainer/utils.py,
        identical in TRL 0.20.0 and 0.28.0), which DPOTrainer(loss_type="bco_pair") used
        and which the released SPoT code ran on (TRL <= 0.20). There, update(xs) with a
        0-dim xs has batch count 1 and batch variance 0, and the Welford/Chan merge gives
        tot = count + 1, mean += (x - mean) / tot, count = tot. Since 1e-24 + 1 == 1.0 in
        float64 the first update sets mean = x exactly and later means are the plain average
        of the values. Two deviations, both at float32 rounding level (~1e-7): TRL cast the batch
        mean to float32 and computed the increment in float32 (here everything is float64); under
        multi-GPU it merged a batch of count world_size (here: average over ranks, count 1;
        the mean is the same). TRL also tracked var/std, which bco_pair never used; not kept.
      "ema": the paper's wording, "an exponential moving average of the batch statistics":
        m <- momentum * m + (1 - momentum) * x. The first update sets m = x rather than
        decaying from 0, so delta is not biased towards 0 during the first ~1/(1-momentum)
        steps (the same start as "cumulative").

    WHEN to call update() is the trainer's job, not this class's:
      * once per optimizer step, with the mean of the chosen and rejected rewards
        (concatenated) of that step's training batch;
      * from training batches only, never from evaluation (TRL <= 0.28 updated inside the
        loss, so eval batches and every gradient-accumulation micro-batch moved delta);
      * every micro-batch of a step uses the same delta;
      * save state_dict() with the checkpoint (TRL did not, so a resumed run restarted at 0).
    Ordering: TRL <= 0.28 updated with the CURRENT batch first and then used the updated
    mean as delta for that same batch; bco_pair_trl028() reproduces that. A trainer can
    match it when one optimizer step is one forward (no gradient accumulation): compute
    the rewards, update(), then the loss with delta = value. With accumulation the step's
    mean is only known after its last micro-batch, so either update after the step (delta
    lags one step) or accept TRL's per-micro-batch updates; say which in the run config.
    """

    def __init__(self, mode="cumulative", momentum=0.9):
        if mode not in RUNNING_MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {RUNNING_MODES}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.mode = mode
        self.momentum = float(momentum)
        self.mean = 0.0
        # cumulative: TRL's tiny prior count, which makes the first update exact;
        # ema: number of updates so far (0 marks "no value yet")
        self.count = 1e-24 if mode == "cumulative" else 0.0

    @property
    def value(self):
        """Current delta, a Python float."""
        return float(self.mean)

    @torch.no_grad()
    def update(self, batch_mean, sync=True):
        """Fold in one batch-mean reward (float or 1-element tensor); returns the new value.

        With sync=True and torch.distributed initialised, the batch means are averaged
        over processes first, so every rank holds the same delta.
        """
        x = _global_mean(batch_mean, sync)
        if self.mode == "cumulative":
            tot = self.count + 1.0
            self.mean += (x - self.mean) / tot
            self.count = tot
        else:
            self.mean = x if self.count == 0 else self.momentum * self.mean + (1.0 - self.momentum) * x
            self.count += 1.0
        return self.value

    def state_dict(self):
        return {"mode": self.mode, "momentum": self.momentum, "mean": self.mean, "count": self.count}

    def load_state_dict(self, state):
        # refuse a checkpoint from a differently configured run rather than silently mixing
        if state["mode"] != self.mode or state["momentum"] != self.momentum:
            raise ValueError(
                f"checkpoint has mode={state['mode']!r}, momentum={state['momentum']}; "
                f"this RunningMean has mode={self.mode!r}, momentum={self.momentum}"
            )
        self.mean, self.count = float(state["mean"]), float(state["count"])

    def __repr__(self):
        return f"RunningMean(mode={self.mode!r}, momentum={self.momentum}, value={self.mean:.6g}, count={self.count:g})"


def _global_mean(batch_mean, sync):
    """The batch mean as a Python float, averaged over processes when distributed."""
    # float64: a Python float must not be rounded to float32 on the way through torch
    t = batch_mean.detach() if torch.is_tensor(batch_mean) else torch.tensor(float(batch_mean), dtype=torch.float64)
    if t.numel() != 1:
        raise ValueError(f"update() takes the batch-mean reward (one number), got shape {tuple(t.shape)}")
    if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = t.device
        if dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())  # NCCL only reduces CUDA tensors
        # a copy: all_reduce works in place, and `.to` returns the caller's own tensor when it is
        # already float64 on this device (the trainer logs that tensor as the rank's own mean)
        t = t.to(device=device, dtype=torch.float64).reshape(1).clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # SUM then divide: ReduceOp.AVG is NCCL-only
        t = t / dist.get_world_size()
    return float(t.item())


def bco_pair_trl028(chosen_logratios, rejected_logratios, beta, running):
    """DPOTrainer(loss_type="bco_pair") of TRL 0.20-0.28, per-example losses [B].

    Reproduces trl/trainer/dpo_trainer.py (DPOTrainer.dpo_loss, branch "bco_pair") of
    TRL 0.28.0, formula and ordering: the running mean is updated with THIS batch's mean
    reward (chosen and rejected concatenated, detached) first, and the updated mean is the
    delta of this same batch. Logratios are policy minus reference summed log-probs.
    The same as pair_loss("spot_bco", ..., delta=running.update(batch_mean)). Mutates running.
    For comparing with the released code; TRL 1.x's "bco_pair" has no delta (= spot_bce).
    """
    if running.mode != "cumulative":
        raise ValueError("TRL's RunningMoments is the 'cumulative' mode")
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    delta = running.update(torch.cat((chosen_rewards, rejected_rewards)).mean().detach())
    return -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))
