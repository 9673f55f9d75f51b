import os

import pytest
import torch

# Tests are small: one thread each keeps them quick and deterministic on a 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_profile(tmp_path):
    """The tiny profile shrunk to seconds, writing under a temporary run directory."""
    from spot_utils.config import load_profile

    return load_profile("tiny", **{
        "run_dir": str(tmp_path / "runs"), "pretrain.steps": 4, "pretrain.batch_size": 8,
        "pretrain.log_every": 2, "pretrain.warmup_steps": 1, "pretrain.threads": 1, "pretrain.curriculum_steps": 2,
        "pretrain.probe_every": 4, "pretrain.probe_size": 2,
        "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "model.num_kv_heads": 1,
        "model.intermediate_size": 64, "world.test_size_per_tier": 5, "world.connect4_test_size": 10,
        "world.choice_test_size": 5, "world.sequence_test_size": 5,
        "generation.max_new_tokens": 24, "generation.batch_size": 16})


def random_policy_and_questions(profile, n: int, seed: int):
    """A random-weights tiny policy (every answer an error, each ended at the token limit so elicit
    keeps it) and n two-step arithmetic questions: the raw material of a rectified_pairs call."""
    import random

    from spot_utils.tiny import arithmetic
    from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(profile.model, tok, seed=0)
    model.generation_config.forced_eos_token_id = tok.eos_token_id
    rng = random.Random(seed)
    questions = []
    for i in range(n):
        p = arithmetic.random_problem(rng, 2)
        questions.append({"id": f"q{i}", "question": arithmetic.question_text(p), "ground_truth": p.answer,
                          "tier": "steps=2"})
    return model, tok, questions
