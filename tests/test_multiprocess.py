"""A real 2-process CPU launch (torchrun, gloo) of experiments.run_one: the first launch works, every
rank holds the same delta, the delta trace is the mean over ranks, and only rank 0 writes shared files.

This file is also the launched script: `torchrun ... tests/test_multiprocess.py RUN_DIR OUT_DIR`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the tiny profile shrunk to seconds (as conftest.tiny_profile), with a few short steps
OVERRIDES = {
    "pretrain.steps": 4, "pretrain.batch_size": 8, "pretrain.log_every": 2, "pretrain.warmup_steps": 1,
    "pretrain.threads": 1, "pretrain.curriculum_steps": 2, "pretrain.probe_every": 4, "pretrain.probe_size": 2,
    "model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "model.num_kv_heads": 1,
    "model.intermediate_size": 64, "world.test_size_per_tier": 2, "world.connect4_test_size": 2,
    "generation.max_new_tokens": 24, "generation.batch_size": 16,
    "training.max_steps": 3, "training.per_device_batch_size": 2, "training.logging_steps": 1,
    "experiments.probe_every": 0,
}
RUNS = (("spot_bco", "pairs"), ("sft_plus", "pairs"), ("sft", "sft_direct"))


def profile_for(run_dir):
    from spot_utils.config import load_profile

    return load_profile("tiny", run_dir=str(run_dir), **OVERRIDES)


def worker(run_dir: Path, out: Path) -> None:
    """One rank: every run of RUNS through experiments.run_one, recording what this rank wrote."""
    import torch

    from spot_utils import data, experiments, training

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    written, results = [], {}
    write_jsonl, write_text = data.write_jsonl, Path.write_text

    def record_jsonl(path, records, *a, **k):
        written.append(str(path))
        return write_jsonl(path, records, *a, **k)

    def record_text(self, *a, **k):
        written.append(str(self))
        return write_text(self, *a, **k)

    train = training.train

    def record_train(method, *a, **k):
        result = train(method, *a, **k)
        results[method] = {"delta": result.delta, "delta_trace": result.delta_trace, "steps": result.global_step}
        return result

    experiments.write_jsonl, Path.write_text, training.train = record_jsonl, record_text, record_train
    profile = profile_for(run_dir)
    for method, data_name in RUNS:
        experiments.run_one(profile, experiments.RunSpec(method, data_name, 0))
    Path.write_text = write_text
    (out / f"rank{rank}.json").write_text(json.dumps({"written": written, "results": results}))


def test_two_process_launch_trains_like_one_job(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_experiments import fake_rectification_output

    from spot_utils.tiny.pretrain import pretrain_base

    profile = profile_for(tmp_path / "runs")
    fake_rectification_output(profile)
    pretrain_base(profile, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, str(tmp_path / "runs"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)  # bounded: a hung rendezvous or barrier fails the test
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]  # the FIRST launch succeeds
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    bco = [r["results"]["spot_bco"] for r in ranks]
    assert bco[0]["steps"] == bco[1]["steps"] == 3
    assert bco[0]["delta"] == bco[1]["delta"] and bco[0]["delta_trace"][-1]["delta"] == bco[0]["delta"]
    running = []  # delta (cumulative mode) is the running mean of the step means averaged over ranks
    for step, (row0, row1) in enumerate(zip(bco[0]["delta_trace"], bco[1]["delta_trace"])):
        assert row0["delta"] == row1["delta"] and row0["delta_used"] == row1["delta_used"]
        running.append((row0["step_mean_reward"] + row1["step_mean_reward"]) / 2)  # each rank logs its own mean
        assert row0["delta"] == pytest.approx(sum(running) / len(running), rel=1e-12, abs=1e-15)

    assert ranks[1]["written"] == []  # table data sets, spot_run.json, eval CSVs: rank 0 only
    assert any(p.endswith("spot_run.json") for p in ranks[0]["written"])
    assert any(p.endswith("pairs.jsonl") for p in ranks[0]["written"])
    for method, data_name in RUNS:
        summary = json.loads((tmp_path / "runs" / "train" / f"{method}@{data_name}" / "seed0" / "spot_run.json")
                             .read_text())
        assert summary["steps"] == 3


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
