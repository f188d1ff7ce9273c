"""linear_cross_entropy against the naive expression that builds the logits:
F.cross_entropy(softcap(h @ W.T + b), y) + λ·logsumexp² with the same options, reduced by hand.

float64: values and gradients to rtol 1e-10; float32: 1e-5 (loss) and 1e-4 (gradients), as the
large-output issue states. Every option is crossed with both schedules and several block sizes.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import losskit
from losskit import LossInputError
from losskit.functional import linear_cross_entropy


def naive(h, w, y, *, bias=None, ignore_index=-100, label_smoothing=0.0, softcap=None, z_loss=0.0,
          reduction="mean", weight_per_token=None, mask=None, shift=False):
    if shift:
        h, y = h[:, :-1], y[:, 1:]
    shape = y.shape
    h, y = h.reshape(-1, h.shape[-1]), y.reshape(-1)
    z = h @ w.T
    if bias is not None:
        z = z + bias
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    terms = F.cross_entropy(z, y, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="none")
    keep = y != ignore_index
    if z_loss:
        terms = terms + z_loss * torch.logsumexp(z, -1) ** 2 * keep
    wt = torch.ones_like(terms) if weight_per_token is None else weight_per_token.reshape(-1).to(terms.dtype)
    if mask is not None:
        keep = keep & mask.reshape(-1)
    wt = wt * keep
    terms = terms * wt
    if reduction == "none":
        return terms.reshape(shape)
    if reduction == "sum":
        return terms.sum()
    return terms.sum() / wt.sum()


def make(n=10, d=6, v=13, dtype=torch.float64, seed=0, bias=False, batch=None):
    g = torch.Generator().manual_seed(seed)
    lead = (n,) if batch is None else (batch, n)
    h = torch.randn(*lead, d, generator=g, dtype=dtype).requires_grad_(True)
    w = (torch.randn(v, d, generator=g, dtype=dtype) * 0.7).requires_grad_(True)
    b = (torch.randn(v, generator=g, dtype=dtype) * 0.5).requires_grad_(True) if bias else None
    y = torch.randint(0, v, lead, generator=g)
    y.view(-1)[::3] = -100
    return h, w, b, y


def grads(out, tensors):
    out.sum().backward()
    gs = [t.grad.clone() if t is not None else None for t in tensors]
    for t in tensors:
        if t is not None:
            t.grad = None
    return gs


def compare(kw_ours, kw_naive=None, dtype=torch.float64, rtol=1e-10, atol=1e-12, grtol=None, batch=None, **make_kw):
    h, w, b, y = make(dtype=dtype, batch=batch, **make_kw)
    kw_naive = dict(kw_ours if kw_naive is None else kw_naive)
    for k in ("mode", "chunk_size"):
        kw_naive.pop(k, None)
    ours = linear_cross_entropy(h, w, y, bias=b, **kw_ours)
    g_ours = grads(ours, [h, w, b])
    ref = naive(h, w, y, bias=b, **kw_naive)
    g_ref = grads(ref, [h, w, b])
    torch.testing.assert_close(ours, ref.detach(), rtol=rtol, atol=atol)
    for a, r in zip(g_ours, g_ref):
        if r is not None:
            torch.testing.assert_close(a, r, rtol=grtol or rtol, atol=atol)


OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"softcap": 3.0},
    {"z_loss": 1e-2},
    {"label_smoothing": 0.2, "softcap": 2.0, "z_loss": 1e-3},
]


@pytest.mark.parametrize("options,reduction,mode,chunk,bias", [
    pytest.param(o, r, m, c, b, id=f"{'-'.join(o) or 'plain'}-{r}-{m}-{c}-{'bias' if b else 'nobias'}")
    for o, r, m, c, b in itertools.product(OPTIONS, ["mean", "sum", "none"], ["auto", "recompute"], [None, 3],
                                           [False, True])])
def test_matches_naive_float64(options, reduction, mode, chunk, bias):
    compare(dict(options, reduction=reduction, mode=mode, chunk_size=chunk), bias=bias)


@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_matches_naive_float32(mode):
    compare(dict(mode=mode, chunk_size=4, label_smoothing=0.1, z_loss=1e-4), dtype=torch.float32, rtol=1e-5,
            atol=1e-6, grtol=1e-4, n=64, d=32, v=200, bias=True)


@pytest.mark.parametrize("mode", ["fused", "recompute"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_token_weights_mask_and_shift(mode, reduction):
    h, w, b, y = make(batch=3, n=7)
    wt = torch.rand(3, 6, dtype=torch.float64) + 0.1
    wt[0, 2] = 0.0
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4] = False
    kw = dict(weight_per_token=wt, mask=mask, shift=True, reduction=reduction)
    ours = linear_cross_entropy(h, w, y, mode=mode, chunk_size=5, **kw)
    g1 = grads(ours, [h, w])
    ref = naive(h, w, y, **kw)
    g2 = grads(ref, [h, w])
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-10, atol=1e-12)
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_tokens_ignored_is_a_connected_zero(reduction):
    h, w, _, y = make()
    y[:] = -100
    out = linear_cross_entropy(h, w, y, reduction=reduction)
    out.sum().backward()
    assert (out == 0).all() and out.requires_grad
    assert torch.equal(h.grad, torch.zeros_like(h)) and torch.equal(w.grad, torch.zeros_like(w))


def test_downstream_scaling_and_second_backward():
    """The fused schedule scales its stored gradients by the incoming gradient; a retained graph can be
    backpropagated again (recomputed from the saved inputs)."""
    h, w, _, y = make()
    out = linear_cross_entropy(h, w, y)
    (3.5 * out).backward(retain_graph=True)
    g1 = h.grad.clone()
    h.grad = None
    out.backward()
    torch.testing.assert_close(g1, 3.5 * h.grad, rtol=1e-12, atol=1e-14)


def test_return_lse_and_module_with_linear():
    h, w, b, y = make(bias=True)
    loss, lse = linear_cross_entropy(h, w, y, bias=b, return_lse=True)
    z = h @ w.T + b
    keep = y != -100
    torch.testing.assert_close(lse[keep], torch.logsumexp(z, -1)[keep].detach(), rtol=1e-12, atol=1e-12)
    head = torch.nn.Linear(6, 13).double()
    module = losskit.nn.LinearCrossEntropyLoss(head, label_smoothing=0.1)
    out = module(h, y)
    torch.testing.assert_close(out, naive(h, head.weight, y, bias=head.bias, label_smoothing=0.1))
    out.backward()
    assert head.weight.grad is not None and head.bias.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(dtype):
    h, w, _, y = make(n=32, d=16, v=50, dtype=torch.float32)
    hh, wh = h.detach().to(dtype).requires_grad_(True), w.detach().to(dtype).requires_grad_(True)
    out = linear_cross_entropy(hh, wh, y)
    assert out.dtype == dtype
    ref = naive(hh.detach().float(), wh.detach().float(), y)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_bad_inputs():
    h, w, _, y = make()
    with pytest.raises(LossInputError, match="target"):
        linear_cross_entropy(h, w, torch.full_like(y, 13))
    with pytest.raises(LossInputError, match="weight"):
        linear_cross_entropy(h, w[:, :5], y)
    with pytest.raises(LossInputError, match="weight"):
        linear_cross_entropy(h, w.float(), y)
    with pytest.raises(LossInputError, match="mode"):
        linear_cross_entropy(h, w, y, reduction="none", mode="fused")
