"""Tests for spot_utils/losses.py: hand-computed values, gradient identities, TRL parity."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from spot_utils.losses import (
    PAIR_LOSSES,
    RunningMean,
    bco_pair_trl028,
    dft,
    implicit_reward,
    nll,
    pair_loss,
    sequence_logps,
    tether,
)

f64 = torch.float64


def softplus(z):
    # -log sigmoid(z) = log(1 + e^-z), written out by hand
    return math.log(1.0 + math.exp(-z))


# two examples, beta = 0.1:
#   ex 0: chosen -10 vs ref -12 -> r+ = 0.2 ; rejected -15 vs ref -14 -> r- = -0.1
#   ex 1: chosen  -5 vs ref  -4 -> r+ = -0.1; rejected -20 vs ref -25 -> r- = 0.5
BETA = 0.1
CHOSEN, REF_CHOSEN = [-10.0, -5.0], [-12.0, -4.0]
REJECTED, REF_REJECTED = [-15.0, -20.0], [-14.0, -25.0]
R_POS, R_NEG = [0.2, -0.1], [-0.1, 0.5]


def pair_inputs():
    return [torch.tensor(v, dtype=f64) for v in (CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED)]


def test_implicit_reward_eq3():
    c, _, rc, _ = pair_inputs()
    torch.testing.assert_close(implicit_reward(c, rc, BETA), torch.tensor(R_POS, dtype=f64), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "name, expected",
    [
        # Eq. 4: -log s(r+ - r-)
        ("dpo", [softplus(0.2 - (-0.1)), softplus(-0.1 - 0.5)]),
        # Eq. 5: -log s(r+)
        ("reward_sft", [softplus(0.2), softplus(-0.1)]),
        # Eq. 7: -log s(r+) - log s(-r-)
        ("spot_bce", [softplus(0.2) + softplus(0.1), softplus(-0.1) + softplus(-0.5)]),
    ],
)
def test_pair_losses_by_hand(name, expected):
    out = pair_loss(name, *pair_inputs(), beta=BETA)
    assert out.shape == (2,) and out.dtype == f64
    for got, want in zip(out.tolist(), expected):
        assert abs(got - want) < 1e-6


def test_spot_bco_by_hand_with_delta():
    # Eq. 8 with delta = 0.05: -log s(r+ - 0.05) - log s(-(r- - 0.05))
    expected = [softplus(0.2 - 0.05) + softplus(0.1 + 0.05), softplus(-0.1 - 0.05) + softplus(-0.5 + 0.05)]
    for delta in (0.05, torch.tensor(0.05, dtype=f64)):
        out = pair_loss("spot_bco", *pair_inputs(), beta=BETA, delta=delta)
        for got, want in zip(out.tolist(), expected):
            assert abs(got - want) < 1e-6
    # delta = 0 reduces SPoT-BCO to SPoT-BCE
    torch.testing.assert_close(
        pair_loss("spot_bco", *pair_inputs(), beta=BETA), pair_loss("spot_bce", *pair_inputs(), beta=BETA)
    )


def test_pair_loss_stable_for_extreme_rewards():
    # r+ = -100 * ... : log(sigmoid(z)) would underflow to -inf; logsigmoid gives ~ -z
    c, r, rc, rr = (torch.tensor([x], dtype=torch.float32) for x in (-5000.0, 0.0, 0.0, -5000.0))
    out = pair_loss("spot_bce", c, r, rc, rr, beta=0.1)
    assert torch.isfinite(out).all() and abs(out.item() - 1000.0) < 1e-2


def test_delta_is_a_constant():
    c, r, rc, rr = pair_inputs()
    c.requires_grad_(True)
    delta = torch.tensor(0.3, dtype=f64, requires_grad=True)
    pair_loss("spot_bco", c, r, rc, rr, beta=BETA, delta=delta * 1.0).sum().backward()
    assert delta.grad is None and c.grad is not None


def test_pair_loss_bad_arguments():
    with pytest.raises(ValueError) as err:
        pair_loss("ipo", *pair_inputs(), beta=BETA)
    for name in PAIR_LOSSES:
        assert name in str(err.value)
    with pytest.raises(ValueError):  # delta would be silently ignored
        pair_loss("spot_bce", *pair_inputs(), beta=BETA, delta=0.1)
    c, _, rc, _ = pair_inputs()
    with pytest.raises(ValueError):
        pair_loss("dpo", c, None, rc, None, beta=BETA)
    torch.testing.assert_close(pair_loss("reward_sft", c, None, rc, None, beta=BETA), -F.logsigmoid(BETA * (c - rc)))


# -----------------------------------------------------------------------------
# Eq. 6: gradient of Reward-SFT and the tether


def tiny_policy(seed=0, B=3, T=5, V=7, D=4):
    """policy log-probs as a differentiable function of a weight matrix W."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, D, generator=g, dtype=f64, requires_grad=True)
    feats = torch.randn(B, T, D, generator=g, dtype=f64)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :2] = -100  # a prompt
    return W, feats, labels


def test_tether_value():
    assert abs(tether(10.0).item() - 1.0 / (1.0 + math.exp(10.0))) < 1e-15
    assert abs(tether(10.0).item() - 4.54e-5) < 1e-7
    assert abs(tether(0.0).item() - 0.5) < 1e-15
    torch.testing.assert_close(tether(torch.tensor([-3.0, 2.0])), 1 - torch.sigmoid(torch.tensor([-3.0, 2.0])))


def test_reward_sft_gradient_eq6():
    W, feats, labels = tiny_policy()
    beta = 0.5
    ref = torch.tensor([-9.0, -6.0, -14.0], dtype=f64)  # spreads r over both signs
    logps, _, _ = sequence_logps(feats @ W.T, labels)
    r = implicit_reward(logps.detach(), ref, beta)
    assert (r > 0).any() and (r < 0).any()
    losses = pair_loss("reward_sft", logps, None, ref, None, beta=beta)
    for i in range(len(losses)):
        (g_loss,) = torch.autograd.grad(losses[i], W, retain_graph=True)
        (g_nll,) = torch.autograd.grad(-logps[i], W, retain_graph=True)
        torch.testing.assert_close(g_loss, tether(r[i]) * beta * g_nll, atol=1e-12, rtol=1e-10)
        assert g_nll.abs().max() > 1e-3  # not a vacuous 0 == 0


# -----------------------------------------------------------------------------
# token-level: sequence_logps, nll, dft


def logits_and_labels(seed=1, B=2, T=6, V=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=f64, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100  # prompt
    labels[1, -2:] = -100  # padding
    return logits, labels


def test_sequence_logps_shift_and_mask():
    logits, labels = logits_and_labels()
    summed, token_logps, mask = sequence_logps(logits, labels)
    B, T, _ = logits.shape
    assert summed.shape == (B,) and token_logps.shape == mask.shape == (B, T - 1)
    logp = torch.log_softmax(logits.detach(), -1)
    for b in range(B):
        want = 0.0
        for t in range(T - 1):  # logits at t score the label at t + 1
            if labels[b, t + 1] != -100:
                want += logp[b, t, labels[b, t + 1]].item()
                assert mask[b, t]
            else:
                assert not mask[b, t] and token_logps[b, t] == 0
        assert abs(summed[b].item() - want) < 1e-12
    # labels[:, 0] is never scored, whatever it is
    labels2 = labels.clone()
    labels2[1, 0] = (labels[1, 0] + 1) % logits.shape[-1]
    torch.testing.assert_close(sequence_logps(logits, labels2)[0], summed)


def test_sequence_logps_bf16_upcast():
    logits, labels = logits_and_labels()
    summed, _, _ = sequence_logps(logits.detach().to(torch.bfloat16), labels)
    assert summed.dtype == torch.float32


def test_nll_matches_cross_entropy():
    logits, labels = logits_and_labels()
    V = logits.shape[-1]
    flat_logits, flat_labels = logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1)
    torch.testing.assert_close(nll(logits, labels), F.cross_entropy(flat_logits, flat_labels))
    ce_sum = F.cross_entropy(flat_logits, flat_labels, reduction="sum")
    torch.testing.assert_close(nll(logits, labels, reduction="sum"), ce_sum)
    per_token = nll(logits, labels, reduction="none")
    assert per_token.shape == (2, 5)
    ce = F.cross_entropy(flat_logits, flat_labels, reduction="none").view(2, 5)  # 0 at ignored positions
    torch.testing.assert_close(per_token, ce)
    assert (per_token[labels[:, 1:] == -100] == 0).all()
    with pytest.raises(ValueError):
        nll(logits, labels, reduction="mean")
    # no response token at all: 0, not nan
    assert nll(logits, torch.full_like(labels, -100)).item() == 0.0


def test_dft_value_and_detached_gradient():
    logits, labels = logits_and_labels()
    loss = dft(logits, labels)
    probs = torch.softmax(logits.detach(), -1)
    B, T, V = logits.shape
    n = int((labels[:, 1:] != -100).sum())
    want_loss, want_grad = 0.0, torch.zeros(B, T, V, dtype=f64)
    for b in range(B):
        for t in range(T - 1):
            y = labels[b, t + 1].item()
            if y == -100:
                continue
            p = probs[b, t, y].item()
            want_loss += -p * math.log(p) / n
            # d(-log p_y)/dlogits = softmax - onehot(y); DFT scales it by the detached p_y
            onehot = F.one_hot(torch.tensor(y), V).to(f64)
            want_grad[b, t] = p * (probs[b, t] - onehot) / n
    assert abs(loss.item() - want_loss) < 1e-12
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, want_grad, atol=1e-12, rtol=1e-10)
    # without the stop-gradient the gradient would differ (it would be that of -p/n)
    _, token_logps, _ = sequence_logps(logits, labels)
    (grad_no_detach,) = torch.autograd.grad((-token_logps.exp() * token_logps).sum() / n, logits)
    assert (grad_no_detach - grad).abs().max() > 1e-3
    # reductions
    per_token = dft(logits, labels, reduction="none")
    assert per_token.shape == (B, T - 1) and (per_token[labels[:, 1:] == -100] == 0).all()
    torch.testing.assert_close(dft(logits, labels, reduction="sum"), per_token.sum())
    torch.testing.assert_close(loss, per_token.sum() / n)


# -----------------------------------------------------------------------------
# RunningMean


def test_running_mean_cumulative_is_plain_mean():
    rm = RunningMean()
    assert rm.value == 0.0
    values = [0.7, -1.3, 2.25, 0.01, -0.4, 3.3]
    assert rm.update(values[0]) == values[0]  # 1e-24 + 1 == 1.0: the first update is exact
    assert rm.count == 1.0
    for k in range(1, len(values)):
        out = rm.update(torch.tensor(values[k], dtype=f64))  # tensors are accepted too
        assert abs(out - sum(values[: k + 1]) / (k + 1)) < 1e-9
    assert isinstance(rm.value, float) and rm.count == len(values)


def test_running_mean_ema_by_hand():
    rm = RunningMean("ema", momentum=0.9)
    assert rm.update(1.0) == 1.0  # first value taken as is
    assert abs(rm.update(2.0) - (0.9 * 1.0 + 0.1 * 2.0)) < 1e-12  # 1.1
    assert abs(rm.update(4.0) - (0.9 * 1.1 + 0.1 * 4.0)) < 1e-12  # 1.39
    rm = RunningMean("ema", momentum=0.5)
    rm.update(-2.0)
    assert abs(rm.update(2.0) - 0.0) < 1e-12


@pytest.mark.parametrize("mode", ["cumulative", "ema"])
def test_running_mean_state_dict_round_trip(mode):
    a = RunningMean(mode)
    for x in (0.3, -0.2, 1.7):
        a.update(x)
    state = json.loads(json.dumps(a.state_dict()))  # checkpoint-friendly: plain Python values
    b = RunningMean(mode)
    b.load_state_dict(state)
    assert b.value == a.value
    for x in (0.9, -4.0):
        assert a.update(x) == b.update(x)
    other = "ema" if mode == "cumulative" else "cumulative"
    with pytest.raises(ValueError):
        RunningMean(other).load_state_dict(a.state_dict())


def test_running_mean_bad_arguments():
    with pytest.raises(ValueError):
        RunningMean("median")
    with pytest.raises(ValueError):
        RunningMean("ema", momentum=1.0)
    with pytest.raises(ValueError):
        RunningMean().update(torch.tensor([1.0, 2.0]))  # needs the batch mean, not the batch


def test_running_mean_update_takes_a_graph_tensor():
    x = torch.tensor(0.5, requires_grad=True) * 2
    assert RunningMean().update(x) == 1.0


def test_running_mean_distributed_average(tmp_path, monkeypatch):
    """A real single-process gloo group, dressed up as rank 0 of 2.

    Spawning two real ranks costs ~10 s of imports here, so the second rank is simulated:
    the real all_reduce runs (checking the call is valid) and then the other rank's value
    is added, which is what SUM over two ranks returns.
    """
    import torch.distributed as dist

    other_rank = iter([3.0, 20.0])  # rank 1's batch means at steps 1 and 2
    real_all_reduce = dist.all_reduce

    def two_rank_all_reduce(t, op=dist.ReduceOp.SUM, **kw):
        assert op == dist.ReduceOp.SUM
        real_all_reduce(t, op=op, **kw)
        t += next(other_rank)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
        monkeypatch.setattr(dist, "all_reduce", two_rank_all_reduce)
        rm, local = RunningMean(), RunningMean()
        for x in (1.0, 10.0):  # rank 0's batch means
            rm.update(torch.tensor(x))
            local.update(x, sync=False)
    finally:
        monkeypatch.undo()
        dist.destroy_process_group()
    assert rm.value == 8.5  # global step means are (1+3)/2 = 2 and (10+20)/2 = 15
    assert local.value == 5.5  # sync=False: rank 0's own mean
    with pytest.raises(StopIteration):  # exactly one reduction per synced update
        next(other_rank)


# -----------------------------------------------------------------------------
# TRL parity


def test_spot_bco_equals_trl028_bco_pair_over_5_batches():
    g = torch.Generator().manual_seed(3)
    beta = 0.1
    trl_running, ours_running = RunningMean(), RunningMean()
    batch_means = []
    for step in range(5):
        c, r, rc, rr = (-20 * torch.rand(4, generator=g, dtype=f64) for _ in range(4))
        trl_losses = bco_pair_trl028(c - rc, r - rr, beta, trl_running)
        # the trainer's order for SPoT-BCO: update with this batch first, then use the new delta
        batch_mean = torch.cat([implicit_reward(c, rc, beta), implicit_reward(r, rr, beta)]).mean()
        batch_means.append(batch_mean.item())
        delta = ours_running.update(batch_mean)
        ours = pair_loss("spot_bco", c, r, rc, rr, beta=beta, delta=delta)
        torch.testing.assert_close(ours, trl_losses, atol=1e-12, rtol=0)
        # TRL's ordering: delta already includes the current batch (at step 0 it is that batch's mean)
        assert abs(trl_running.value - sum(batch_means) / len(batch_means)) < 1e-9
        rp, rn = beta * (c - rc), beta * (r - rr)
        by_hand = [softplus(a - delta) + softplus(-(b - delta)) for a, b in zip(rp.tolist(), rn.tolist())]
        assert max(abs(x - y) for x, y in zip(trl_losses.tolist(), by_hand)) < 1e-9
    with pytest.raises(ValueError):
        bco_pair_trl028(c - rc, r - rr, beta, RunningMean("ema"))


def _tiny_dpo_trainer(output_dir):
    """A DPOTrainer(loss_type="bco_pair") on a random 2-layer Llama and a word-level tokenizer."""
    import datasets
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    datasets.disable_progress_bars()
    words = ["<pad>", "<eos>", "a", "b", "c", "d", "e", "f", "g", "h"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
        pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )
    torch.manual_seed(0)
    model, ref_model = LlamaForCausalLM(config), LlamaForCausalLM(config)  # different random weights
    data = datasets.Dataset.from_dict(
        {"prompt": ["a b", "c d e", "f"], "chosen": [" c d", " f", " g h a"], "rejected": [" e", " a b", " b"]}
    )
    args = DPOConfig(
        output_dir=output_dir, loss_type=["bco_pair"], beta=0.1, report_to="none", use_cpu=True,
        per_device_train_batch_size=3, save_strategy="no", logging_strategy="no",
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(data))])
    return trainer, batch


@pytest.mark.slow  # ~1 s of work, but the first import of trl/transformers/datasets costs ~5 s
def test_spot_bce_equals_trl116_bco_pair(tmp_path):
    # TRL 1.16's "bco_pair" is inline in DPOTrainer._compute_loss, so it is only reachable
    # through a trainer: -logsigmoid(beta*chosen_logratios) - logsigmoid(-beta*rejected_logratios)
    trainer, batch = _tiny_dpo_trainer(str(tmp_path))
    model, ref_model = trainer.model, trainer.ref_model
    trl_loss = trainer.compute_loss(model, batch)
    trl_grads = torch.autograd.grad(trl_loss, list(model.parameters()))

    # the same batch through this module: batch is [chosen; rejected], labels = completion tokens
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logps, _, _ = sequence_logps(model(**inputs).logits, labels)
    with torch.no_grad():
        ref_logps, _, _ = sequence_logps(ref_model(**inputs).logits, labels)
    (c, r), (rc, rr) = logps.chunk(2), ref_logps.chunk(2)
    ours = pair_loss("spot_bce", c, r, rc, rr, beta=trainer.beta).mean()
    assert abs(ours.item() - trl_loss.item()) < 1e-5
    for g_ours, g_trl in zip(torch.autograd.grad(ours, list(model.parameters())), trl_grads):
        torch.testing.assert_close(g_ours, g_trl, atol=1e-6, rtol=1e-4)

    # and TRL 1.16 has no running-mean delta: no state, the same batch gives the same loss
    assert not hasattr(trainer, "running")
    assert trainer.compute_loss(model, batch).item() == trl_loss.item()
    # whereas a non-zero delta (what TRL <= 0.28 used) changes the loss
    bco = pair_loss("spot_bco", c, r, rc, rr, beta=trainer.beta, delta=0.5).mean()
    assert abs(bco.item() - trl_loss.item()) > 1e-3
