"""Training defects of the paper profile (issue 12), checked on CPU with a scratch model:
the token losses never build the [B, T, V] logits of an 8B model, and every method of a paper run
trains on the paper's number of examples (experiments.train_examples)."""
import json
import random
import warnings
from collections import defaultdict

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spot_utils import experiments, losses, training
from spot_utils.config import ConfigError, load_profile
from spot_utils.data import read_jsonl, write_jsonl
from spot_utils.modeling import prompt_text
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

TOKEN_METHODS = ("sft", "rft", "sft_plus", "dft")
VOCAB = 8192  # the scratch model's head: wide next to its width (32), so the logits dwarf every other tensor


# -----------------------------------------------------------------------------
# token losses without the full logits


def token_records(tok, method, n=8):
    rng = random.Random(0)
    out = []
    for i in range(n):
        a, b = rng.randrange(10, 60), rng.randrange(1, 30)
        right = "".join(f"{a}+{b}={a + b}\n" for _ in range(1 + i % 3)) + f"Answer: {a + b}"
        rec = {"id": f"t{i}", "prompt": prompt_text(tok, f"Compute {a} plus {b}.")}
        if method in ("sft", "rft"):
            rec["response"] = right
        else:
            rec.update(chosen=right, rejected=right.replace("Answer: ", "Answer: 1"))
        out.append(rec)
    return out


def trainer_and_batch(method, profile, tmp_path, vocab=None):
    tok = build_char_tokenizer()
    profile.training.max_steps, profile.training.per_device_batch_size = 1, 8
    model = build_tiny_model(profile.model, tok, seed=0)
    if vocab:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    trainer = training.build_trainer(method, token_records(tok, method), profile, tmp_path / method, model=model,
                                     tokenizer=tok, progress=False)
    torch.manual_seed(0)
    with torch.no_grad():  # off the reference: rewards are not 0, and DFT's weights p_t are not all alike
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(8)])


def loss_and_grads(trainer, batch, fused):
    trainer.fused_token_loss = fused
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, dict(trainer._metrics["train"])


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_fused_token_loss_equals_the_logits_path(method, tiny_profile, tmp_path):
    """The fused LM head (per-token log-probs in tiles) gives the loss, gradients and logged rewards
    of the logits path, to float32 rounding; for DFT with its stopgrad(p_t) weights."""
    trainer, batch = trainer_and_batch(method, tiny_profile, tmp_path)
    head_calls = []
    trainer.model.get_output_embeddings().register_forward_hook(lambda *_: head_calls.append(1))
    loss0, grads0, logs0 = loss_and_grads(trainer, batch, fused=False)
    assert head_calls  # the logits path runs the head on whole rows
    head_calls.clear()
    loss1, grads1, logs1 = loss_and_grads(trainer, batch, fused=True)
    assert not head_calls  # the fused path only reads its weight, in tiles
    assert loss1 == pytest.approx(loss0, rel=1e-5)
    assert grads0.keys() == grads1.keys() and "model.embed_tokens.weight" in grads0  # tied head: its gradient too
    for name, g in grads0.items():
        assert (grads1[name] - g).abs().max() <= 1e-5 * g.abs().max(), name
    assert logs0.keys() == logs1.keys() and "rewards/chosen" in logs0
    assert ("rewards/rejected" in logs0) == (method in ("sft_plus", "dft"))  # y- is logged for pair data
    for key in logs0:  # rewards are differences of summed log-probs (~1e2): float32 rounding is ~1e-5
        assert logs1[key] == pytest.approx(logs0[key], rel=1e-4, abs=2e-5), key


def test_dft_weights_tokens_by_their_detached_probability():
    token_logps = torch.log(torch.tensor([[0.5, 0.1]])).requires_grad_()
    mask = torch.tensor([[True, True]])
    loss = losses.token_dft(token_logps, mask, reduction="sum")
    loss.backward()
    assert loss.item() == pytest.approx(-(0.5 * torch.log(torch.tensor(0.5)) + 0.1 * torch.log(torch.tensor(0.1))))
    assert token_logps.grad[0].tolist() == pytest.approx([-0.5, -0.1])  # d/dlog p of -sg(p) log p = -p
    assert losses.token_nll(token_logps, mask).item() == pytest.approx(-(torch.tensor(0.05).log() / 2).item())


class LargestTensor(TorchDispatchMode):
    """The largest tensor any op creates (forward and backward), in elements."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.parametrize("method", ["sft_plus", "dft"])
def test_fused_token_loss_never_builds_the_full_logits(method, tiny_profile, tmp_path, monkeypatch):
    """On the fused path the head is never run on the whole batch and no tensor (forward, backward,
    the y- pass) comes near the [rows, T, V] logits. TRL tiles 4096 positions x 32768 vocabulary
    entries; shrunk here so that a tiny batch spans many tiles."""
    monkeypatch.setattr("trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE", 32)
    monkeypatch.setattr("trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE", 512)
    trainer, batch = trainer_and_batch(method, tiny_profile, tmp_path, vocab=VOCAB)
    head_outputs = []
    trainer.model.get_output_embeddings().register_forward_hook(lambda m, i, out: head_outputs.append(out.shape))
    largest = {}
    for fused in (False, True):
        head_outputs.clear()
        with LargestTensor() as mode:
            loss_and_grads(trainer, batch, fused)
        largest[fused] = mode.numel, list(head_outputs)
    rows, length = batch["input_ids"].shape[0] // 2, batch["input_ids"].shape[1]
    full, weight = rows * length * VOCAB, VOCAB * tiny_profile.model.hidden_size
    assert full > 10 * weight
    assert largest[False][0] >= full / 2 and largest[False][1]  # the logits path: [rows, <= T, V] logits
    assert largest[True][1] == []  # fused: the head module never runs
    assert largest[True][0] <= weight, (largest, full)  # the largest tensor is the head (or its gradient), not logits


def test_the_paper_profiles_take_the_fused_path_and_tiny_does_not(tiny_profile, tmp_path, monkeypatch):
    for name, vocab in (("paper_qwen3_8b", 151936), ("paper_llama31_8b", 128256)):  # Qwen3-8B's, Llama-3.1's vocab
        t = load_profile(name).training
        assert training.fused_token_loss(t.per_device_batch_size, t.max_length, vocab), name
    tiny = load_profile("tiny").training
    assert not training.fused_token_loss(tiny.per_device_batch_size, tiny.max_length, len(build_char_tokenizer()))
    trainer, _ = trainer_and_batch("sft_plus", tiny_profile, tmp_path / "a")
    assert trainer.fused_token_loss is False  # tiny keeps its bit-identical logits path
    monkeypatch.setattr(training, "TOKEN_LOGITS_LIMIT", 1000)  # a micro-batch above the limit: fused
    trainer, _ = trainer_and_batch("sft_plus", tiny_profile, tmp_path / "b")
    assert trainer.fused_token_loss is True


# -----------------------------------------------------------------------------
# the training budget: experiments.train_examples


def write_rectification_output(profile, n_pairs=30, n_all=40, n_correct=25, no_direct_every=7):
    """Notebook 01's files in miniature; questions q000, q007, q014, ... have no verified direct answer."""
    out = profile.runs / "data"
    rec = [{"id": f"q{i:03d}", "prompt": f"p{i}", "question": f"question {i}"} for i in range(max(n_all, n_correct))]
    pairs = [{**r, "chosen": f"right {r['id']}", "rejected": f"wrong {r['id']}"} for r in rec[:n_all]]
    write_jsonl(out / f"pairs_gamma{profile.rectification.gamma:g}.jsonl", pairs[:n_pairs])
    write_jsonl(out / "pairs_all.jsonl", pairs)
    write_jsonl(out / "sft_direct.jsonl", [{**r, "response": f"direct {r['id']}"} for i, r in enumerate(rec[:n_all])
                                           if not no_direct_every or i % no_direct_every])
    write_jsonl(out / "correct.jsonl", [{**r, "response": f"own {r['id']}"} for r in rec[:n_correct]])
    return pairs[:n_pairs]


def table_sets(profile):
    return {name: read_jsonl(path) for name, path in experiments.table_datasets(profile).items()}


def test_a_budget_caps_every_method_to_the_same_seeded_subset(tiny_profile):
    pairs = write_rectification_output(tiny_profile, no_direct_every=0)
    tiny_profile.experiments.train_examples = 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough of everything: nothing to warn about
        sets = table_sets(tiny_profile)
    assert {name: len(sets[name]) for name in ("pairs", "correct", "gamma1", "half")} == \
        {"pairs": 12, "correct": 12, "gamma1": 12, "half": 6}
    ids = [p["id"] for p in sets["pairs"]]
    assert ids == sorted(ids) and set(ids) < {p["id"] for p in pairs}  # a subset, in id order
    assert [r["id"] for r in sets["sft_direct"]] == [r["id"] for r in sets["direct_pairs"]] == ids  # SFT: same questions
    assert {r["id"] for r in sets["half"]} < set(ids)
    for name in TOKEN_METHODS + ("spot_bco", "dpo"):  # each method's Table 1-2 set holds at most the budget
        assert len(sets[experiments.METHOD_DATA[name]]) <= 12
    report = json.loads((tiny_profile.runs / "data" / "tables" / experiments.BUDGET_FILE).read_text())
    assert report == {"train_examples": 12, "budget": 12,
                      "available": {"pairs": 30, "sft_direct": 40, "correct": 25, "gamma1": 40},
                      "used": {name: len(records) for name, records in sets.items()}}
    assert table_sets(tiny_profile) == sets  # deterministic
    tiny_profile.seed = 1
    assert [p["id"] for p in table_sets(tiny_profile)["pairs"]] != ids  # seeded


def test_a_budget_above_what_is_available_is_reported(tiny_profile):
    write_rectification_output(tiny_profile, n_correct=20)
    tiny_profile.experiments.train_examples = 50
    with pytest.warns(UserWarning, match=r"train_examples = 50, but these training sets are smaller: pairs 30, "
                                         r"sft_direct 25, correct 20, direct_pairs 25, gamma1 30 \(available: "
                                         r"pairs 30, sft_direct 34, correct 20, gamma1 40"):
        sets = table_sets(tiny_profile)
    assert {name: len(r) for name, r in sets.items()} == \
        {"pairs": 30, "sft_direct": 25, "correct": 20, "direct_pairs": 25, "half": 15, "gamma1": 30}
    report = json.loads((tiny_profile.runs / "data" / "tables" / experiments.BUDGET_FILE).read_text())
    assert report["budget"] == 30 and report["used"]["correct"] == 20


def test_no_budget_keeps_todays_data_sets(tiny_profile):
    """train_examples 0 (tiny): every set as before the budget existed; a budget that cuts nothing
    gives the same sets."""
    pairs = write_rectification_output(tiny_profile)
    data = tiny_profile.runs / "data"
    tiny_profile.experiments.train_examples = 0  # no budget
    rng = random.Random(tiny_profile.seed)  # today's recipe: the pair count is the budget, subsets in this order

    def subsample(records, k):
        return [records[i] for i in sorted(rng.sample(range(len(records)), min(k, len(records))))]

    direct = {r["id"]: r for r in read_jsonl(data / "sft_direct.jsonl")}
    expected = {"pairs": pairs, "sft_direct": [direct[p["id"]] for p in pairs if p["id"] in direct],
                "correct": subsample(read_jsonl(data / "correct.jsonl"), 30),
                "direct_pairs": [{**p, "chosen": direct[p["id"]]["response"], "source": "oracle_direct"}
                                 for p in pairs if p["id"] in direct],
                "half": subsample(pairs, 15), "gamma1": subsample(read_jsonl(data / "pairs_all.jsonl"), 30)}
    assert tiny_profile.experiments.train_examples == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert table_sets(tiny_profile) == expected
    tiny_profile.experiments.train_examples = 30
    with pytest.warns(UserWarning, match="smaller: sft_direct 25, correct 25, direct_pairs 25 "):  # 5 lack a direct answer
        assert table_sets(tiny_profile) == expected


def test_train_examples_in_the_profiles(tmp_path):
    assert load_profile("paper_qwen3_8b").experiments.train_examples == 4000  # the paper's 4k pairs
    assert load_profile("paper_llama31_8b").experiments.train_examples == 1500  # 1.5k: Llama's correct answers
    tiny = load_profile("tiny")
    assert tiny.experiments.train_examples == 800  # 50 steps of 16: make reproduce's time budget (issue 16)
    # unset (0) leaves the keys as they were before the budget existed; set, it re-keys the runs
    unset = load_profile("tiny", **{"experiments.train_examples": 0}).section_hash("experiments")
    assert unset == "84a33e74b9ce584d" and tiny.section_hash("experiments") != unset
    assert load_profile("tiny", **{"experiments.train_examples": 100}).section_hash("experiments") != unset
    with pytest.raises(ConfigError, match="train_examples' must be >= 0"):
        load_profile("tiny", **{"experiments.train_examples": -1})
