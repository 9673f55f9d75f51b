"""The notebooks run with the paper profile on a machine without the weights: they say so clearly,
download nothing, and leave the committed (tiny) notebooks untouched."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook00_on_the_paper_profile_stops_at_once_naming_what_is_missing(tmp_path):
    nb = ROOT / "notebooks" / "00_setup_and_base_model.ipynb"
    before = nb.read_bytes()
    out = tmp_path / "00_paper.ipynb"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing here
    env.pop("GEMINI_API_KEY", None)
    done = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(out), "-k", "spot-repro", "--cwd",
                           str(nb.parent), "-p", "profile", "paper", "--no-progress-bar"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0  # the first code cell stops the run (spot_utils.plan.require)
    text = out.read_text()
    assert "PlanError" in text and "cannot run on this machine" in text
    assert "huggingface-cli download Qwen/Qwen3-8B" in text and "GEMINI_API_KEY" in text
    assert nb.read_bytes() == before
    assert not list((tmp_path / "hf").rglob("*.safetensors"))


# The paper_smoke profile's five notebooks run in `make smoke` (part of make test); tests/check_paper_smoke.py
# checks what they wrote.
