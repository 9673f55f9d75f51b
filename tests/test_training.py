"""spot_utils.training: the real TRL trainer on a real (tiny, random-init) Qwen3 model, in seconds."""
import json
import math
import random
from collections import defaultdict

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from spot_utils import losses, training
from spot_utils.config import METHODS, REPO_ROOT, ConfigError, load_profile
from spot_utils.modeling import prompt_text
from spot_utils.tiny import arithmetic, world
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

N_EXAMPLES = 32


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def corrupt(p: arithmetic.Problem, rng: random.Random) -> str:
    """A wrong answer sharing a prefix with the right one: one step's result is off, and the
    following lines carry the error forward (the kind of answer the Oracle rectifies)."""
    k = rng.randrange(p.steps)
    lines, v = [], p.start
    for i, (op, b) in enumerate(p.ops):
        w = arithmetic.OPS[op](v, b) + (rng.choice([-2, -1, 1, 2]) if i == k else 0)
        lines.append(f"{v}{op}{b}={w}")
        v = w
    return "\n".join(lines + [f"Answer: {v}"])


def make_records(tok, method, n=N_EXAMPLES, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = arithmetic.random_problem(rng, rng.choice([2, 3]))
        q = arithmetic.question_text(p)
        rec = {"id": f"t{i}", "prompt": prompt_text(tok, q), "question": q, "ground_truth": p.answer}
        if method == "sft":      # the Oracle's direct answers, in its own style
            rec["response"] = arithmetic.direct_solution_text(p)
        elif method == "rft":    # the policy's own correct answers
            rec["response"] = arithmetic.solution_text(p)
        else:
            rec.update(chosen=arithmetic.solution_text(p), rejected=corrupt(p, rng), change_ratio=0.1, source="test")
        out.append(rec)
    return out


def setup(profile, method, lr=3e-3, steps=10, batch=8, accum=1, save_steps=0):
    t = profile.training
    t.lr[method], t.max_steps, t.per_device_batch_size = lr, steps, batch
    t.gradient_accumulation_steps, t.logging_steps, t.save_steps = accum, 1, save_steps
    t.beta_by_method = {}  # one beta for all: the comparisons below are of numerics, whose float error scales with beta
    return profile


def base(profile, tok):
    return build_tiny_model(profile.model, tok, seed=0)


def run(method, profile, tok, out, **kw):
    return training.train(method, make_records(tok, method), profile, out, model=base(profile, tok), tokenizer=tok,
                          progress=False, **kw)


def weights(result):
    return load_file(str(result.model_dir / "model.safetensors"))


@torch.no_grad()
def mean_token_prob(model, tok, records):
    """Mean p_t over the y+ tokens: DFT's loss -sg(p) log p has the gradient of -p_t (see losses.dft)."""
    rows = [tok.encode(r["prompt"] + r["chosen"] + tok.eos_token, add_special_tokens=False) for r in records]
    n_prompt = [len(tok.encode(r["prompt"], add_special_tokens=False)) for r in records]
    total, count = 0.0, 0
    for ids, k in zip(rows, n_prompt):
        x = torch.tensor([ids])
        labels = x.clone()
        labels[:, :k] = -100
        _, token_logps, mask = losses.sequence_logps(model(input_ids=x).logits, labels)
        total, count = total + token_logps[mask].exp().sum().item(), count + int(mask.sum())
    return total / count


@pytest.mark.parametrize("method", METHODS)
def test_every_method_lowers_its_training_loss(method, tiny_profile, tok, tmp_path):
    setup(tiny_profile, method, steps=12)
    result = run(method, tiny_profile, tok, tmp_path / method)
    loss = [v for _, v in result.logs("loss")]
    assert len(loss) == 12 and result.global_step == 12
    first, last = sum(loss[:3]) / 3, sum(loss[-3:]) / 3
    if method == "dft":
        # -p log p RISES while p < 1/e (a random init has p ~ 1/|V|), although DFT trains: its
        # gradient is that of -p_t, the quantity that must fall
        records = make_records(tok, method)
        trained = type(base(tiny_profile, tok)).from_pretrained(result.model_dir)
        before, after = mean_token_prob(base(tiny_profile, tok), tok, records), mean_token_prob(trained, tok, records)
        assert after > 1.5 * before, (before, after)
    else:
        assert last < first - 0.02, (method, loss)
    assert result.logs("rewards/chosen")  # implicit rewards are logged for every method
    has_pairs = method not in ("sft", "rft")
    assert bool(result.logs("rewards/rejected")) == has_pairs
    assert bool(result.logs("delta")) == (method == "spot_bco")
    meta = json.loads((result.model_dir / training.RESULT_FILE).read_text())
    assert meta["method"] == method and (result.model_dir / "tokenizer.json").exists()


class StopAt(TrainerCallback):
    """Simulates a crash right after the checkpoint of step `step`."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("method", ["spot_bco", "sft_plus"])
def test_resume_gives_the_same_weights_and_delta(method, tiny_profile, tok, tmp_path):
    setup(tiny_profile, method, steps=8, save_steps=4)
    full = run(method, tiny_profile, tok, tmp_path / "full")
    cut = run(method, tiny_profile, tok, tmp_path / "cut", callbacks=[StopAt(4)])
    assert cut.global_step == 4
    ckpt = tmp_path / "cut" / "checkpoint-4"
    assert (ckpt / training.DELTA_FILE).exists() == (method == "spot_bco")
    resumed = run(method, tiny_profile, tok, tmp_path / "cut", resume_from_checkpoint=str(ckpt))
    assert resumed.global_step == 8
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.delta == full.delta
    if method == "spot_bco":
        assert full.delta != 0.0 and len(resumed.delta_trace) == 4
        assert resumed.delta_trace[0]["delta_used"] == full.delta_trace[3]["delta"]  # restored, not restarted at 0
        # a checkpoint without its delta state is refused instead of silently restarting delta at 0
        (ckpt / training.DELTA_FILE).unlink()
        with pytest.raises(FileNotFoundError, match="delta"):
            run(method, tiny_profile, tok, tmp_path / "cut2", resume_from_checkpoint=str(ckpt))


def test_delta_is_updated_once_per_optimizer_step(tiny_profile, tok, tmp_path, monkeypatch):
    """With 2 micro-batches per step: both use the delta from before the step, and after the step delta
    becomes the cumulative mean of the per-step mean rewards (chosen and rejected together)."""
    calls, updates = [], []
    pair_loss, update = losses.pair_loss, losses.RunningMean.update

    def spy_loss(name, c, r, ref_c, ref_r, beta, delta=0.0):
        calls.append({"rewards": torch.cat([beta * (c - ref_c), beta * (r - ref_r)]).detach().double(),
                      "delta": float(delta)})
        return pair_loss(name, c, r, ref_c, ref_r, beta, delta)

    def spy_update(self, batch_mean, sync=True):
        updates.append(float(batch_mean))
        return update(self, batch_mean, sync)

    monkeypatch.setattr(losses, "pair_loss", spy_loss)
    monkeypatch.setattr(losses.RunningMean, "update", spy_update)
    steps = 6  # 32 pairs / (4 x 2) = 4 steps per epoch: crosses an epoch boundary
    setup(tiny_profile, "spot_bco", steps=steps, batch=4, accum=2)
    result = run("spot_bco", tiny_profile, tok, tmp_path / "bco")

    assert len(calls) == 2 * steps and len(updates) == steps == len(result.delta_trace)
    step_means = []
    for s in range(steps):
        a, b = calls[2 * s], calls[2 * s + 1]
        expected_delta = sum(step_means) / len(step_means) if step_means else 0.0
        assert a["delta"] == b["delta"]  # one delta for the whole step
        assert a["delta"] == pytest.approx(expected_delta, abs=1e-12)
        step_means.append(float(torch.cat([a["rewards"], b["rewards"]]).mean()))
        assert updates[s] == pytest.approx(step_means[-1], abs=1e-12)
    assert result.delta == pytest.approx(sum(step_means) / steps, abs=1e-12)
    assert step_means[-1] != 0.0


def test_reference_is_precomputed_and_bce_starts_at_2log2(tiny_profile, tok, tmp_path, monkeypatch):
    setup(tiny_profile, "spot_bce", steps=1)
    trainer = training.build_trainer("spot_bce", make_records(tok, "spot_bce"), tiny_profile, tmp_path / "bce",
                                     model=base(tiny_profile, tok), tokenizer=tok, progress=False)
    assert trainer.ref_model is None  # no reference model kept in memory
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)

    per_example = []
    pair_loss = losses.pair_loss
    monkeypatch.setattr(losses, "pair_loss", lambda *a, **k: per_example.append(pair_loss(*a, **k)) or per_example[-1])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    # policy == reference, so r+ = r- = 0 and every example costs -2 log s(0) = 2 log 2 (Eq. 7)
    assert torch.allclose(per_example[0], torch.full((8,), 2 * math.log(2)), atol=1e-5)
    assert loss.item() == pytest.approx(2 * math.log(2), abs=1e-5)


def test_eval_batches_use_delta_but_never_move_it(tiny_profile, tok, tmp_path):
    setup(tiny_profile, "spot_bco", steps=1)
    trainer = training.build_trainer("spot_bco", make_records(tok, "spot_bco", n=8), tiny_profile, tmp_path / "ev",
                                     model=base(tiny_profile, tok), tokenizer=tok, progress=False)
    trainer.delta.update(0.25)
    state = trainer.delta.state_dict()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    assert trainer.delta.state_dict() == state and trainer._step_rewards == []
    assert trainer._metrics["eval"]["delta"] == [0.25] and not trainer._metrics["train"]


def test_probe_callback_logs_accuracy_across_steps(tiny_profile, tok, tmp_path):
    setup(tiny_profile, "spot_bce", steps=4)
    rng = random.Random(1)
    probe = [world.arithmetic_example(rng, 2, tiny_profile.world, f"p{i}") for i in range(4)]
    probe += [world.skill_example(rng, 1, tiny_profile.world, f"s{i}") for i in range(2)]
    cb = training.ProbeCallback(probe, world.grade, every_n_steps=2, max_new_tokens=4)
    result = run("spot_bce", tiny_profile, tok, tmp_path / "probe", callbacks=[cb])
    rows = [r for r in result.log_history if "probe/arithmetic" in r]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert all(0.0 <= r["probe/arithmetic"] <= 1.0 and "probe/skill" in r for r in rows)


def test_data_checks(tok):
    with pytest.raises(ValueError, match="trains on pairs"):
        training.to_dataset("spot_bco", make_records(tok, "sft", n=2), tok)
    with pytest.raises(ValueError, match="mixed"):
        training.to_dataset("dft", make_records(tok, "sft", n=1) + make_records(tok, "dpo", n=1), tok)
    ds, paired = training.to_dataset("rft", [{"question": "Compute: 1+2", "response": "1+2=3\nAnswer: 3"}], tok)
    assert not paired and ds[0]["prompt"] == prompt_text(tok, "Compute: 1+2") and ds[0]["rejected"] == ""
    with pytest.raises(ValueError, match="unknown method"):
        training.trainer_settings("ppo", load_profile("tiny"))


def test_training_config_tiny_and_paper():
    tiny = load_profile("tiny").training
    assert set(tiny.lr) == set(METHODS) and not tiny.bf16 and tiny.delta_mode == "cumulative"
    qwen, llama = load_profile("paper").training, load_profile("paper_llama31_8b").training
    for t in (qwen, llama):  # App. C
        assert (t.beta, t.epochs, t.max_length, t.bf16, t.gradient_checkpointing) == (0.1, 2.0, 8192, True, True)
        assert (t.per_device_batch_size, t.gradient_accumulation_steps) == (2, 2)
        assert t.shared_prefix  # pair methods: one packed row per pair (on SDPA, see tasks.PaperTasks.load_policy)
        assert (t.lr_scheduler, t.warmup_ratio, t.weight_decay, t.adam_beta1, t.adam_beta2) == \
            ("cosine", 0.05, 0.01, 0.9, 0.95)
    assert (qwen.lr["spot_bco"], qwen.lr["spot_bce"], qwen.lr["sft"], qwen.lr["rft"], qwen.lr["sft_plus"]) == \
        (1e-6, 1e-6, 5e-6, 5e-6, 5e-6)
    assert (llama.lr["spot_bco"], llama.lr["sft"], llama.lr["sft_plus"]) == (2e-7, 1e-6, 1e-6)
    s = training.trainer_settings("spot_bco", load_profile("paper"))
    assert s["learning_rate"] == 1e-6 and s["precompute_ref_log_probs"] and not s["full_determinism"]
    assert s["deepspeed"] == str(REPO_ROOT / "configs/deepspeed_zero2.json")
    ds = json.loads((REPO_ROOT / "configs/deepspeed_zero2.json").read_text())
    acc = yaml.safe_load((REPO_ROOT / "configs/accelerate_zero2.yaml").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] in (True, "auto")
    assert acc["num_processes"] * 2 * 2 == 32 and acc["distributed_type"] == "DEEPSPEED"
    assert acc["deepspeed_config"]["deepspeed_config_file"] == qwen.deepspeed


def test_training_config_errors(tmp_path):
    def bad(text):
        p = tmp_path / "bad.yaml"
        p.write_text("name: x\ntraining:\n" + text)
        return p

    with pytest.raises(ConfigError, match=r"line 3.*unknown method\(s\) ppo"):
        load_profile(bad("  lr:\n    ppo: 1.0e-6\n"))
    with pytest.raises(ConfigError, match="missing: rft"):
        load_profile("tiny", **{"training.lr": {m: 1e-4 for m in METHODS if m != "rft"}})
    with pytest.raises(ConfigError, match="must be > 0 for every method"):
        load_profile("tiny", **{"training.lr.dpo": 0.0})
    with pytest.raises(ConfigError, match="'training.delta_mode' is 'mean'; allowed: cumulative, ema"):
        load_profile(bad("  delta_mode: mean\n"))
    with pytest.raises(ConfigError, match="warmup_ratio"):
        load_profile("tiny", **{"training.warmup_ratio": 1.5})
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile("tiny", **{"training.deepspeed": "configs/nope.json"})
    with pytest.raises(ConfigError, match="must be > 0"):
        load_profile("tiny", **{"training.per_device_batch_size": 0})


def test_length_groups_cover_every_row_once_shortest_first():
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in (5, 9, 2, 7, 3, 8)])
    groups = training.length_groups(mask, torch.arange(6), group_rows=2)
    assert [(rows.tolist(), length) for rows, length in groups] == [([2, 4], 3), ([0, 3], 7), ([5, 1], 9)]
    assert [(rows.tolist(), length) for rows, length in training.length_groups(mask, torch.arange(3, 6), 0)] == \
        [([4, 3, 5], 8)]  # 0: one group, trimmed to its longest row


def forward_variants_agree(trainer, batch, variants):
    """Loss, gradients and logged rewards of one batch under each trainer setting in `variants`
    (attribute -> value dicts) equal the first's, up to float rounding (sums in another order)."""
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy off the reference: rewards are then far from 0 (and their signs stable)
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = []
    for settings in variants:
        for name, value in settings.items():
            setattr(trainer, name, value)
        trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
        results.append((loss.item(), grads, dict(trainer._metrics["train"])))
    (loss0, grads0, logs0), *others = results
    for settings, (loss, grads, logs) in zip(variants[1:], others):
        assert loss == pytest.approx(loss0, rel=1e-5, abs=1e-6), settings
        assert len(grads0) == len(grads)
        for a, b in zip(grads0, grads):  # float32 sums in another order: ~1e-6 of the tensor's scale
            assert (a - b).abs().max() <= 2e-5 * a.abs().max(), settings
        assert logs0.keys() == logs.keys() and "rewards/chosen" in logs0
        for key in logs0:
            assert logs[key] == pytest.approx(logs0[key], rel=1e-4, abs=1e-5), (settings, key)


def pair_batch(trainer, n=12):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # there is padding to save
    return batch


@pytest.mark.parametrize("method", ["spot_bco", "dpo", "sft_plus", "dft", "rft"])
def test_length_groups_change_no_loss_gradient_or_reward(method, tiny_profile, tok, tmp_path):
    """Forwards over similar-length groups (training.length_group_rows) compute what one padded
    forward computes: the same loss, gradients and logged rewards, up to float rounding."""
    setup(tiny_profile, method, steps=1)
    trainer = training.build_trainer(method, make_records(tok, method, n=12), tiny_profile, tmp_path / method,
                                     model=base(tiny_profile, tok), tokenizer=tok, progress=False)
    forward_variants_agree(trainer, pair_batch(trainer), [{"group_rows": 0}, {"group_rows": 3}])


@pytest.mark.parametrize("method", ["spot_bco", "spot_bce", "dpo", "reward_sft"])
def test_shared_prefix_changes_no_loss_gradient_or_reward(method, tiny_profile, tok, tmp_path):
    """One packed row per pair (training.shared_prefix) computes what two rows per pair compute, alone
    and in length groups."""
    setup(tiny_profile, method, steps=1).training.shared_prefix = True
    trainer = training.build_trainer(method, make_records(tok, method, n=12), tiny_profile, tmp_path / method,
                                     model=base(tiny_profile, tok), tokenizer=tok, progress=False)
    assert trainer.shared_prefix
    forward_variants_agree(trainer, pair_batch(trainer), [{"shared_prefix": False, "group_rows": 0},
                                                          {"shared_prefix": True, "group_rows": 0},
                                                          {"shared_prefix": True, "group_rows": 3}])


def test_shared_prefix_is_for_pair_methods_and_sdpa(tiny_profile, tok, tmp_path):
    setup(tiny_profile, "sft_plus", steps=1).training.shared_prefix = True
    trainer = training.build_trainer("sft_plus", make_records(tok, "sft_plus", n=4), tiny_profile, tmp_path / "a",
                                     model=base(tiny_profile, tok), tokenizer=tok, progress=False)
    assert not trainer.shared_prefix  # trains on y+ alone: its passes stay on separate rows
    model = base(tiny_profile, tok)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="training.shared_prefix needs an attention kernel"):
        training.build_trainer("dpo", make_records(tok, "dpo", n=4), tiny_profile, tmp_path / "b", model=model,
                               tokenizer=tok, progress=False)


def test_reference_pass_in_length_groups_equals_trls(tiny_profile, tok, tmp_path, monkeypatch):
    setup(tiny_profile, "dpo", steps=1)
    calls, groups = [], training.length_groups
    monkeypatch.setattr(training, "length_groups", lambda *a: calls.append(a[2]) or groups(*a))
    columns = {}
    for group_rows, shared in ((0, False), (3, False), (0, True), (3, True)):  # 0, False: TRL's own method
        tiny_profile.training.length_group_rows, tiny_profile.training.shared_prefix = group_rows, shared
        trainer = training.build_trainer("dpo", make_records(tok, "dpo", n=12), tiny_profile, tmp_path / str(group_rows),
                                         model=base(tiny_profile, tok), tokenizer=tok, progress=False)
        columns[group_rows, shared] = torch.tensor([trainer.train_dataset["ref_chosen_logps"],
                                                    trainer.train_dataset["ref_rejected_logps"]])
    assert calls and set(calls) == {3}  # the grouped pass ran (TRL's own does not group)
    trl = columns[0, False]
    assert (trl != 0).all()
    for key, column in columns.items():
        assert torch.allclose(column, trl, rtol=1e-5, atol=1e-4), key


def test_only_shared_prefix_pair_runs_trade_flash_attention_for_sdpa(monkeypatch):
    """A paper profile's "auto" kernel (FlashAttention-2 on a GPU box) becomes SDPA only where the block
    mask is used: pair methods with training.shared_prefix. Token methods keep what "auto" picks."""
    from spot_utils import tasks

    monkeypatch.setattr(tasks, "attention_implementation", lambda requested, device: requested)
    monkeypatch.setattr(tasks, "load_model", lambda *a, attn_implementation, **kw: attn_implementation)
    paper = load_profile("paper")
    assert paper.model.attn_implementation == "auto" and paper.training.shared_prefix
    assert tasks.tasks_of(paper).load_policy("spot_bco") == "sdpa"
    assert tasks.tasks_of(paper).load_policy("sft") == "auto"
    paper.training.shared_prefix = False
    assert tasks.tasks_of(paper).load_policy("spot_bco") == "auto"
