"""Which CPU operations give other bits on another CPU: one short hash per operation and shape.

Why: environment.numerics_fingerprint says *whether* two machines compute the same training bits; when
they do not (Intel and AMD under the pins, see README "Reproducibility"), this says *where*. Run it with the
Makefile's pins on one machine to save its hashes, on the other to compare:
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=2 .venv/bin/python scripts/numerics_probe.py --json > a.json
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=2 .venv/bin/python scripts/numerics_probe.py --compare a.json
Without an option it prints one line per operation, shape and thread count: the hash of the output bits.
Inputs are seeded, so equal hashes mean equal bits.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too
from spot_utils.environment import NUMERICS_PINS, cpu_model, numerics_fingerprint  # noqa: E402


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
            yield f"linear {rows}x{k} @ {k}x{n}", F.linear(x, w)
            yield f"linear grad_w {n}x{rows} @ {rows}x{k}", rand(rows, n).t() @ x
    for b, h, t, d in ((1, 4, 37, 16), (7, 4, 93, 16), (16, 4, 64, 32), (9, 2, 130, 32)):
        q, kk, v = rand(b, h, t, d).requires_grad_(), rand(b, h, t, d).requires_grad_(), rand(b, h, t, d).requires_grad_()
        out = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        out.backward(rand(b, h, t, d))
        yield f"sdpa causal {b}x{h}x{t}x{d} fwd+bwd", (out, q.grad, kk.grad, v.grad)
        bmm = q.detach() @ kk.detach().transpose(-1, -2)
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


def main():
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
