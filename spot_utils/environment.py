"""What the notebooks print first: the software and hardware a result was produced on."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def environment_report() -> dict[str, str]:
    import torch
    import transformers
    import trl

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def pretrained_availability(name_or_path: str) -> dict[str, object]:
    """Whether a pretrained model's weights are on this machine (a local directory or the Hugging Face
    cache). Never downloads: it only looks."""
    local = Path(name_or_path)
    if local.is_dir():
        return {"model": name_or_path, "available": (local / "config.json").exists(), "where": str(local)}
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # a malformed repo id is simply "not here"
        hit = None
    found = isinstance(hit, str)
    return {"model": name_or_path, "available": found, "where": hit if found else "not in the local HF cache"}
