"""Which CPU operations give other bits on another CPU: one short hash per operation and shape.

Why: tiny.portable.numerics_fingerprint says *whether* two machines compute the same training bits; when
they do not, this says *where*. It probes the operations a portable tiny model runs (spot_utils.tiny.portable's
products, attention, and torch's own kernels). Run it with the Makefile's pins on one machine to save its
hashes, on the other to compare:
    ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 \
        .venv/bin/python scripts/numerics_probe.py --json > a.json
    ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 \
        .venv/bin/python scripts/numerics_probe.py --compare a.json
Without an option it prints one line per operation, shape and thread count: the hash of the output bits.
Inputs are seeded, so equal hashes mean equal bits.
    .venv/bin/python scripts/numerics_probe.py --settings
prints the numerics fingerprint under each setting a CPU or a library could change (MKL's branch and CPU
detection, OpenBLAS's and torch's kernel family): on one machine, what the pins hold and what they must.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from spot_utils.environment import NUMERICS_PINS, cpu_model  # noqa: E402
from spot_utils.tiny import portable  # noqa: E402
from spot_utils.tiny.portable import numerics_fingerprint  # noqa: E402


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def probes():
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    # the tiny model's shapes: hidden 128 (ModelConfig default 64), MLP 512, vocab ~100, rows = batch x length
    for rows in (1, 37, 64, 651, 1024, 1170):
        for k, n in ((64, 64), (64, 256), (256, 64), (128, 512), (512, 128), (128, 102)):
            x, w = rand(rows, k), rand(n, k)
            yield f"linear {rows}x{k} @ {k}x{n}", portable.linear(x, w)
            yield f"linear grad_w {n}x{rows} @ {rows}x{k}", portable.matmul(rand(rows, n).t(), x)
    for b, h, t, d in ((1, 4, 37, 16), (7, 4, 93, 16), (16, 4, 64, 32), (9, 2, 130, 32)):
        q, kk, v = rand(b, h, t, d).requires_grad_(), rand(b, h, t, d).requires_grad_(), rand(b, h, t, d).requires_grad_()
        causal = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
        out, _ = portable.attention(SimpleNamespace(num_key_value_groups=1, training=False), q, kk, v, causal, d ** -0.5)
        out.backward(rand(b, t, h, d))
        yield f"attention causal {b}x{h}x{t}x{d} fwd+bwd", (out, q.grad, kk.grad, v.grad)
        bmm = portable.matmul(q.detach(), kk.detach().transpose(-1, -2))
        yield f"bmm {b}x{h}x{t}x{d}", bmm
    x = rand(651, 128)
    yield "softmax 651x128", torch.softmax(x, -1)
    yield "log_softmax 651x128", torch.log_softmax(x, -1)
    yield "rmsnorm 651x128", x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    yield "exp/log/tanh/sigmoid/silu", (x.exp(), x.abs().log(), x.tanh(), x.sigmoid(), F.silu(x))
    yield "sum/mean 651x128", (x.sum(), x.sum(0), x.mean(-1))
    logits, labels = rand(651, 102).requires_grad_(), torch.randint(0, 102, (651,), generator=g)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    yield "cross_entropy fwd+bwd 651x102", (loss, logits.grad)
    emb = rand(102, 64).requires_grad_()
    ids = torch.randint(0, 102, (7, 93), generator=g)
    F.embedding(ids, emb).backward(rand(7, 93, 64))  # as nn.Embedding runs (indexing emb[ids] races at 2 threads)
    yield "embedding backward 7x93x64", emb.grad
    p = [rand(128, 64).requires_grad_(), rand(512).requires_grad_()]
    opt = torch.optim.AdamW(p, lr=1e-3)
    for _ in range(3):
        for t in p:
            t.grad = rand(*t.shape)
        opt.step()
    yield "adamw 3 steps", tuple(p)


def hashes(threads=(1, 2)) -> dict[str, str]:
    """{"operation shape | n thread(s)": hash of its output bits} for every probe at each thread count."""
    rows = {}
    before = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            for name, out in probes():
                rows[f"{name} | {n} thread(s)"] = digest(*(out if isinstance(out, tuple) else (out,)))
    finally:
        torch.set_num_threads(before)
    return rows


# Each row: what a CPU or a library might change, and the variables that simulate it on this machine.
SETTINGS = (
    ("the pins", {}),
    ("MKL on its AVX2 branch", {"MKL_CBWR": "AVX2"}),
    ("MKL on its COMPATIBLE branch", {"MKL_CBWR": "COMPATIBLE"}),
    ("MKL told the CPU is an Intel one", {"MKL_DEBUG_CPU_TYPE": "5"}),
    ("MKL limited to SSE4.2", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
    ("oneDNN limited to AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("OpenBLAS with an AMD Zen's kernels", {"OPENBLAS_CORETYPE": "Zen"}),
    ("OpenBLAS with an AVX-512 Intel's kernels (unpinned there)", {"OPENBLAS_CORETYPE": "SkylakeX"}),
    ("OpenBLAS at 2 threads (unpinned)", {"OPENBLAS_NUM_THREADS": "2"}),
    ("torch's AVX-512 kernels (unpinned, where the CPU has them)", {"ATEN_CPU_CAPABILITY": "avx512"}),
)


def fingerprint_under_settings() -> list[tuple[str, str]]:
    """(setting, fingerprint at 1 / 2 threads), each in its own process (the variables are read at load)."""
    code = ("from spot_utils.tiny.portable import numerics_fingerprint as f; "
            "print(f(threads=1), '/', f(threads=2))")
    rows = []
    for name, variables in SETTINGS:
        env = {**os.environ, **NUMERICS_PINS, **variables}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        rows.append((name, out.stdout.strip()))
    return rows


def main():
    if "--settings" in sys.argv:
        rows = fingerprint_under_settings()
        print(f"{cpu_model()}: numerics fingerprint (1 / 2 threads) under each setting")
        for name, value in rows:
            print(f"  {value}  {name}{'' if value == rows[0][1] else '   <- other bits'}")
        return
    rows = hashes()
    info = {"cpu": cpu_model(), "cpu capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            **{k: os.environ.get(k, "(unset)") for k in NUMERICS_PINS},
            "numerics fingerprint (1 / 2 threads)": f"{numerics_fingerprint(1)} / {numerics_fingerprint(2)}"}
    if "--json" in sys.argv:
        print(json.dumps({"info": info, "hashes": rows}, indent=1))
        return
    if "--compare" in sys.argv:
        other = json.loads(Path(sys.argv[sys.argv.index("--compare") + 1]).read_text())
        differ = [name for name, h in rows.items() if other["hashes"].get(name) != h]
        print(f"this machine: {info}\nother: {other['info']}")
        print(f"{len(differ)} of {len(rows)} operations give other bits" + (":" if differ else ""))
        for name in differ:
            print(f"  {name}")
        return
    print(info)
    for name, h in rows.items():
        print(f"{h}  {name}")



if __name__ == "__main__":
    main()
