"""Defects of the paper profile found before its first launch (issue 12), each checked on CPU."""
import shutil

import pandas as pd
import pytest
import torch

from spot_utils import experiments, tables, training
from spot_utils.config import load_profile
from spot_utils.modeling import prompt_text
from spot_utils.tiny.model import build_char_tokenizer, build_tiny_model


def records(tok, n=4):
    return [{"prompt": prompt_text(tok, f"Compute: {i}+1"), "chosen": f"Answer: {i + 1}", "rejected": "Answer: 0"}
            for i in range(n)]


def test_bf16_weights_without_deepspeed_are_refused(tiny_profile, tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tiny_profile.model, tok).to(torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16 and training.deepspeed is empty"):
        training.build_trainer("spot_bco", records(tok), tiny_profile, tmp_path / "out", model=model, tokenizer=tok,
                               progress=False)


def test_paper_batch_is_checked_against_the_launched_processes(tmp_path):
    tok = build_char_tokenizer()
    paper = load_profile("paper_qwen3_8b", run_dir=str(tmp_path))
    model = build_tiny_model(load_profile("tiny").model, tok)  # float32: only the batch check can fail
    # one process x per-device batch 2 x accumulation 2 = 4, not 32
    with pytest.raises(ValueError, match=r"1 processes x per-device batch 2 x accumulation 2 = 4, not the batch "
                                         r"of 32 \(training.global_batch\); launch 8 processes"):
        training.build_trainer("sft_plus", records(tok), paper, tmp_path / "out", model=model, tokenizer=tok,
                               progress=False)


def test_processes_launched_but_not_distributed_are_refused(tiny_profile, tmp_path, monkeypatch):
    tok = build_char_tokenizer()
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it, while this process runs undistributed
    with pytest.raises(RuntimeError, match="2 processes were launched .* world of 1"):
        training.build_trainer("sft_plus", records(tok), tiny_profile, tmp_path / "out",
                               model=build_tiny_model(tiny_profile.model, tok), tokenizer=tok, progress=False)


@pytest.mark.parametrize("name", ["paper_qwen3_8b", "paper_llama31_8b"])
def test_paper_runs_save_resumable_checkpoints(name):
    settings = training.trainer_settings("spot_bco", load_profile(name))
    assert settings["save_strategy"] == "steps" and 0 < settings["save_steps"] <= 100
    assert settings["save_total_limit"] == 2
    tiny = training.trainer_settings("spot_bco", load_profile("tiny"))
    assert tiny["save_strategy"] == "no" and tiny["save_total_limit"] is None  # tiny: unchanged


def test_cli_names_the_valid_methods(capsys):
    with pytest.raises(SystemExit):
        experiments.main(["--method", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "spot_bco" in err and "sft_plus" in err


def test_cli_resume_continues_from_the_last_checkpoint(tiny_profile, monkeypatch):
    seen = {}

    def fake_run_one(profile, spec, **kwargs):
        seen.update(spec=spec, **kwargs)
        return {"name": spec.name, "seed": spec.seed, "headline": {}}

    monkeypatch.setattr(experiments, "run_one", fake_run_one)
    experiments.main(["--method", "spot_bco", "--resume"])
    assert seen["resume"] is True and seen["spec"] == experiments.RunSpec("spot_bco", "pairs", 0)
    experiments.main(["--method", "sft"])
    assert seen["resume"] is False


@pytest.mark.slow
def test_run_one_resume_goes_through_the_trainers_checkpoint(tiny_profile):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiments import fake_rectification_output

    from spot_utils.tiny.pretrain import pretrain_base

    fake_rectification_output(tiny_profile)
    pretrain_base(tiny_profile, progress=False)
    t = tiny_profile.training
    t.max_steps, t.per_device_batch_size, t.logging_steps, t.save_steps = 2, 4, 1, 1
    tiny_profile.experiments.probe_every = 0
    spec = experiments.RunSpec("spot_bco", "pairs", 0)
    with pytest.raises(ValueError, match="no checkpoint found"):  # nothing to resume from yet
        experiments.run_one(tiny_profile, spec, resume=True)
    whole = experiments.run_one(tiny_profile, spec)
    folder = experiments.run_dir(tiny_profile, spec)
    for done in (experiments.RUN_FILE, "checkpoint-2", "final"):  # as if the job died after checkpoint-1
        shutil.rmtree(folder / done) if (folder / done).is_dir() else (folder / done).unlink()
    resumed = experiments.run_one(tiny_profile, spec, resume=True)
    assert resumed["steps"] == 2 and resumed["delta"] == whole["delta"]  # delta restored from checkpoint-1
    assert [r["step"] for r in resumed["delta_trace"]] == [2]  # only step 2 was trained again


def test_llama_profile_is_compared_with_the_llama_numbers():
    tab = pd.DataFrame({c: [10.0, 12.0] for c in tables.COLUMNS}, index=pd.Index(["base", "spot_bco@pairs"], name="run"))
    llama = tables.with_paper(tab, profile=load_profile("paper_llama31_8b"))
    assert llama.loc["spot_bco@pairs", "paper IF"] == tables.PAPER_TABLE_1["Llama-3.1-8B-Instruct"]["spot_bco"][2]
    qwen = tables.with_paper(tab, profile=load_profile("paper_qwen3_8b"))
    assert qwen.loc["spot_bco@pairs", "paper IF"] == tables.PAPER_TABLE_1["Qwen3-8B"]["spot_bco"][2]
    pd.testing.assert_frame_equal(tables.with_paper(tab), qwen)  # the default is unchanged
    with pytest.raises(ValueError, match="no paper numbers for 'Mistral'"):
        tables.with_paper(tab, model="Mistral")
