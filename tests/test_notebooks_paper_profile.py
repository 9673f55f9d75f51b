"""The notebooks run with the paper profile on a machine without the weights: they say so clearly,
download nothing, and leave the committed (tiny) notebooks untouched."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook00_paper_profile_reports_missing_weights(tmp_path):
    nb = ROOT / "notebooks" / "00_setup_and_base_model.ipynb"
    before = nb.read_bytes()
    out = tmp_path / "00_paper.ipynb"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing here
    subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), "-k", "spot-repro", "--cwd",
                    str(nb.parent), "-p", "profile", "paper", "--no-progress-bar"], check=True, env=env,
                   capture_output=True, timeout=300)
    text = out.read_text()
    assert "loads Qwen/Qwen3-8B" in text
    assert "weights on this machine: NO" in text and "nothing here downloads them" in text
    assert "does not pretrain" in text
    assert nb.read_bytes() == before
    assert not list((tmp_path / "hf").rglob("*.safetensors"))


def _smoke_profile(tmp_path) -> Path:
    """paper_smoke with its assets and artifacts under tmp_path (the notebooks take a YAML path)."""
    import yaml

    from spot_utils import smoke_assets

    assets = tmp_path / "assets"
    smoke_assets.write_smoke_assets(assets)
    data = yaml.safe_load((ROOT / "configs" / "paper_smoke.yaml").read_text())
    data["run_dir"] = str(tmp_path / "runs")
    data["model"]["name_or_path"] = str(assets / smoke_assets.MODEL_DIR)
    data["rectification"]["dataset"] = str(assets / smoke_assets.DATASET_DIR)
    path = tmp_path / "paper_smoke.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _papermill(nb: Path, out: Path, profile: Path, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), "-k", "spot-repro", "--cwd",
                           str(nb.parent), "-p", "profile", str(profile), "--no-progress-bar"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text()


@pytest.mark.slow
def test_paper_branch_of_notebooks_00_and_02_on_the_cpu_smoke(tmp_path):
    """The paper profile's code path on CPU: notebook 00 loads the (stand-in) pretrained model and
    evaluates it on the nine suites; notebook 02 elicits its errors, rectifies them through the
    local OpenAI-compatible Oracle with the App. F math prompts, and writes the data sets."""
    import json

    import pandas as pd

    profile = _smoke_profile(tmp_path)
    before = {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    text = _papermill(ROOT / "notebooks" / "00_setup_and_base_model.ipynb", tmp_path / "00.ipynb", profile, tmp_path)
    assert "weights on this machine: YES" in text
    rows = pd.read_csv(tmp_path / "runs" / "base" / "eval_rows.csv")
    assert rows["suite"].nunique() == 9
    assert "Overall Avg" in text
    text = _papermill(ROOT / "notebooks" / "02_oracle_rectification.ipynb", tmp_path / "02.ipynb", profile, tmp_path)
    data = tmp_path / "runs" / "data"
    errors = [json.loads(line) for line in (data / "errors.jsonl").read_text().splitlines()]
    correct = (data / "correct.jsonl").read_text().splitlines()
    assert errors and correct  # the stand-in gets some right and some wrong
    assert "\\boxed" in errors[0]["prompt"]  # asked with the evaluation's math instruction
    pairs = (data / "pairs_gamma0.6.jsonl").read_text().splitlines()
    assert pairs, "no rectified pair survived"
    assert (data / "sft_direct.jsonl").read_text().strip()
    assert {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")} == before
