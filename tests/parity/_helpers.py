"""Small input builders shared by the parity tests (float64, seeded)."""
from __future__ import annotations

import torch


def logits64(n, c, *spatial, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, *spatial, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


def targets(n, c, *spatial, seed=0, ignore=None):
    g = torch.Generator().manual_seed(seed + 100)
    t = torch.randint(0, c, (n, *spatial), generator=g)
    if ignore is not None:
        t.view(-1)[::4] = ignore
    return t


def value_and_grad(fn, x):
    """(value, d sum(value)/dx) of fn() with x a leaf that requires grad."""
    x.grad = None
    out = fn()
    out.sum().backward()
    return out.detach(), x.grad.clone()


def assert_same(fn_a, fn_b, x, rtol=1e-10, atol=1e-12):
    """Same value and same gradient with respect to x."""
    a, ga = value_and_grad(fn_a, x)
    b, gb = value_and_grad(fn_b, x)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    torch.testing.assert_close(ga, gb, rtol=rtol, atol=atol)
