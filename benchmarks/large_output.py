"""Fused linear cross-entropy against plain PyTorch, the three-matmul floor and cut-cross-entropy.

For each (N, D, V) and dtype, every method runs in a fresh subprocess: forward + backward with
gradients for h and W, median of 3 timed runs after one warm-up, and the extra peak memory (peak RSS
minus the RSS once inputs exist). The floor is the three matrix products of any exact method
(h·Wᵀ, G·W, Gᵀ·h) and nothing else; the gradient buffers dW + dh are the only unavoidable extra memory.

    python benchmarks/large_output.py [--sizes small|all] [--dtypes float32,bfloat16] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

SIZES = {"small": [(2048, 1024, 32768)], "medium": [(2048, 1024, 32768), (4096, 1024, 65536)],
         "big": [(8192, 2048, 131072)],
         "all": [(2048, 1024, 32768), (4096, 1024, 65536), (8192, 2048, 131072)]}
METHODS = ["losskit", "plain", "floor", "cce"]


def child(method: str, n: int, d: int, v: int, dtype_name: str, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _measure import time_and_peak

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, d, generator=g).to(dtype).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) / d ** 0.5).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g)

    if method == "losskit":
        from losskit.functional import linear_cross_entropy

        def step():
            linear_cross_entropy(h, w, y).backward()
    elif method == "plain":
        def step():
            F.cross_entropy((h @ w.T).float(), y).backward()
    elif method == "floor":
        def step():
            with torch.no_grad():
                z = h @ w.T
                h.grad = z @ w
                w.grad = z.T @ h
    elif method == "cce":
        try:
            from cut_cross_entropy import linear_cross_entropy as cce
        except ImportError:
            return {"skipped": "cut-cross-entropy not installed"}

        def step():
            cce(h, w, y, impl="torch_compile").backward()
    else:
        raise ValueError(method)

    def free_grads():
        h.grad = w.grad = None

    seconds, extra = time_and_peak(step, before=free_grads)
    return {"seconds": seconds, "extra_bytes": extra}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="all", choices=sorted(SIZES))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        method, n, d, v, dt = a.args
        print(json.dumps(child(method, int(n), int(d), int(v), dt, a.threads)))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _measure import run_child

    methods = a.methods.split(",")
    gib = 2 ** 30
    print(f"linear + cross-entropy, forward+backward (grads of h and W), {a.threads} threads, median of 3 after "
          f"a warm-up, each cell in a fresh process; extra = peak RSS above the inputs")
    for dt in a.dtypes.split(","):
        print(f"\n[{dt}]")
        print(f"{'N, D, V':>22s} {'method':>8s} {'time s':>8s} {'extra GiB':>10s} {'x floor':>8s} {'x plain':>8s} "
              f"{'mem x grads':>12s}")
        for n, d, v in SIZES[a.sizes]:
            res = {m: run_child(__file__, [m, str(n), str(d), str(v), dt, "--threads", str(a.threads)])
                   for m in methods}
            elem = 2 if dt in ("bfloat16", "float16") else 4
            grads = (v * d + n * d) * elem
            for m in methods:
                r = res[m]
                if "seconds" not in r:
                    print(f"{f'{n}, {d}, {v}':>22s} {m:>8s}  {r.get('error') or r.get('skipped')}")
                    continue
                floor = res.get("floor", {}).get("seconds")
                plain = res.get("plain", {}).get("seconds")
                print(f"{f'{n}, {d}, {v}':>22s} {m:>8s} {r['seconds']:8.2f} {r['extra_bytes'] / gib:10.2f} "
                      f"{(r['seconds'] / floor) if floor else float('nan'):8.2f} "
                      f"{(r['seconds'] / plain) if plain else float('nan'):8.2f} "
                      f"{r['extra_bytes'] / grads:12.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
