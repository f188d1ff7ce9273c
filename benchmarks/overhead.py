"""Contract overhead: losskit's cross_entropy and focal against the plain PyTorch expressions.

Forward + backward at N=4096, C=1000 (float32, CPU), measured side by side in one run: the cases
are interleaved round by round so that machine noise hits all of them alike, and the median over
rounds is reported. The ratio is losskit / plain; the contract's target is at most 1.15x.

    python benchmarks/overhead.py [--n 4096] [--c 1000] [--rounds 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import losskit


def plain_ce(x, t):
    return F.cross_entropy(x, t)


def plain_focal(x, t, gamma=2.0):
    logpt = torch.log_softmax(x, -1).gather(1, t[:, None]).squeeze(1)
    return (-(1 - logpt.exp()) ** gamma * logpt).mean()


def timed(fn, x, t):
    x.grad = None
    start = time.perf_counter()
    fn(x, t).backward()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--c", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.c, generator=g).requires_grad_(True)
    t = torch.randint(0, args.c, (args.n,), generator=g)
    cases = {
        "cross_entropy": (lambda a, b: losskit.functional.cross_entropy(a, b), plain_ce),
        "focal": (lambda a, b: losskit.functional.focal(a, b, gamma=2.0), plain_focal),
    }
    # correctness first: the two sides compute the same value and gradient
    for name, (ours, plain) in cases.items():
        torch.testing.assert_close(ours(x, t), plain(x, t), rtol=1e-5, atol=1e-6)
    times = {(name, side): [] for name in cases for side in ("losskit", "plain")}
    for _ in range(3):  # warm-up
        for name, (ours, plain) in cases.items():
            timed(ours, x, t), timed(plain, x, t)
    for _ in range(args.rounds):
        for name, (ours, plain) in cases.items():
            times[(name, "losskit")].append(timed(ours, x, t))
            times[(name, "plain")].append(timed(plain, x, t))
    print(f"forward+backward, N={args.n}, C={args.c}, float32, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds, torch {torch.__version__}")
    print(f"{'loss':15s} {'losskit ms':>11s} {'plain ms':>9s} {'ratio':>6s}  (target <= 1.15)")
    for name in cases:
        ours = statistics.median(times[(name, "losskit")]) * 1e3
        plain = statistics.median(times[(name, "plain")]) * 1e3
        print(f"{name:15s} {ours:11.2f} {plain:9.2f} {ours / plain:6.3f}")
    with losskit.checks(False):
        ours = statistics.median([timed(cases["cross_entropy"][0], x, t) for _ in range(args.rounds)]) * 1e3
    print(f"(cross_entropy with losskit.set_checks(False): {ours:.2f} ms)")


if __name__ == "__main__":
    main()
