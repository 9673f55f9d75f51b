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


# The paper_smoke profile's five notebooks run in `make smoke` (part of make test); tests/check_paper_smoke.py
# checks what they wrote.
