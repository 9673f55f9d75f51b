"""What the notebooks print first: the software and hardware a result was produced on, and whether
the CPU numerics are pinned so that the tiny profile's numbers are the same on every x86-64 CPU with
AVX2 (README, "Reproducibility"); where the notebooks write their outputs.

    report = environment_report()       # versions, CPU kernels, the pins, the GPU
    warn_if_numerics_unpinned()         # the tiny profile's numbers need the pins below
(The fingerprint of those numerics, to compare machines by, is spot_utils.tiny.portable.numerics_fingerprint.)"""
from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

from .config import REPO_ROOT

# What makes every x86-64 CPU with AVX2, Intel or AMD, compute the tiny profile's bits. torch would pick
# AVX-512 kernels where the CPU has them, so its own kernels are held to AVX2; the matrix products of a
# portable model (spot_utils.tiny.portable) run on OpenBLAS, held to its Haswell (AVX2) kernels and to one
# thread (a second OpenBLAS thread, started at load, spins against torch's: pretraining ran 6x slower),
# never on MKL, which chooses its code by CPU vendor; and torch runs 2 threads wherever a step does not
# set its own count (its reductions split by thread). They are read when torch and numpy load: the
# Makefile and the Jupyter kernel `make setup` registers set them; a library cannot set them for a
# process already running.
NUMERICS_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1",
                 "OMP_NUM_THREADS": "2"}


def _cpuinfo() -> str:
    """/proc/cpuinfo's text ("" where there is none, e.g. macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_vector_extensions() -> str:
    """The widest of AVX-512 / AVX2 this CPU offers (Linux), else the machine name (e.g. aarch64)."""
    flags = _cpuinfo()
    return "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else platform.machine())


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere what platform knows), for benchmark records."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def openblas_coretype() -> str | None:
    """The kernel family numpy's OpenBLAS runs (None without OpenBLAS); portable bits need the pinned one
    (NUMERICS_PINS["OPENBLAS_CORETYPE"])."""
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("internal_api") == "openblas" and "numpy" in i["filepath"]]
    return found[0].get("architecture") if found else None


def numerics_problems() -> list[str]:
    """What keeps this process from the pinned CPU numerics ([] when pinned, or not an x86-64 CPU)."""
    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []  # the promise is for x86-64; elsewhere (e.g. ARM) the last bits differ anyway
    problems = [f"{k}={os.environ.get(k, '(unset)')} (want {v})" for k, v in NUMERICS_PINS.items()
                if os.environ.get(k) != v]
    kernels = torch.backends.cpu.get_cpu_capability()
    if kernels not in ("AVX2", "DEFAULT"):
        problems.append(f"torch runs {kernels} kernels (want AVX2; set the variable before torch is imported)")
    blas, want = openblas_coretype(), NUMERICS_PINS["OPENBLAS_CORETYPE"]
    if blas != want:
        problems.append(f"numpy's OpenBLAS runs {blas} kernels (want {want}; set OPENBLAS_CORETYPE before "
                        "numpy is imported)")
    return problems


def warn_if_numerics_unpinned() -> None:
    """Warn loudly when the tiny profile runs without the pins: its numbers will not be the committed ones."""
    problems = numerics_problems()
    if problems:
        warnings.warn("CPU numerics are not pinned: " + "; ".join(problems) + ". On this CPU the tiny profile's "
                      "numbers will differ from the committed ones. Run through `make` or the 'Python (SPoT repro)' "
                      "kernel, or export " + " ".join(f"{k}={v}" for k, v in NUMERICS_PINS.items())
                      + " before starting Python.", RuntimeWarning, stacklevel=3)


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
        "cpu vector extensions": cpu_vector_extensions(),
        "torch CPU kernels": torch.backends.cpu.get_cpu_capability(),
        "OpenBLAS kernels (numpy)": str(openblas_coretype()),
        **{k: os.environ.get(k, "(unset)") for k in NUMERICS_PINS},
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


def output_root() -> Path:
    """Where notebooks write the committed figures/ and results/: the repository, or $SPOT_OUTPUT_ROOT.
    `make nbval` points it under runs/, so executing the notebooks under test never rewrites a committed
    file; only `make reproduce` (or a notebook run by hand) refreshes them."""
    root = os.environ.get("SPOT_OUTPUT_ROOT")
    return Path(root).resolve() if root else REPO_ROOT


def repo_relative(path) -> str:
    """A path as printed in notebook outputs: relative to the repository when inside it, so committed
    outputs do not carry the directory of the machine that made them."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
