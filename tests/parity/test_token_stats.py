"""linear_token_stats and token_entropy against the naive expressions on materialised logits
(torch.logsumexp, log_softmax.gather, torch.distributions.Categorical.entropy); values and the
gradients of an arbitrary combination of the three outputs, float64, rtol 1e-10."""
from __future__ import annotations

import pytest
import torch

from losskit.functional import linear_token_stats, token_entropy


def naive_stats(h, w, y, bias=None, softcap=None):
    z = h @ w.T
    if bias is not None:
        z = z + bias
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    lse = torch.logsumexp(z, -1)
    keep = y != -100
    logp = torch.log_softmax(z, -1).gather(-1, y.clamp_min(0)[..., None]).squeeze(-1) * keep
    ent = torch.distributions.Categorical(logits=z).entropy()
    return lse, logp, ent


@pytest.mark.parametrize("softcap,bias,chunk", [(None, False, None), (2.5, True, 3), (None, True, 1)])
def test_stats_and_their_gradients(softcap, bias, chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, 11, (3, 5), generator=g)
    y[0, 1] = -100
    coeffs = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    params = [t for t in (h, w, b) if t is not None]
    ours = linear_token_stats(h, w, y, bias=b, softcap=softcap, chunk_size=chunk)
    ref = naive_stats(h, w, y, b, softcap)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    g_ours = torch.autograd.grad(sum((c * o).sum() for c, o in zip(coeffs, ours)), params)
    g_ref = torch.autograd.grad(sum((c * o).sum() for c, o in zip(coeffs, ref)), params)
    for a, r in zip(g_ours, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_shift_and_single_output_gradient():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (2, 6), generator=g)
    seq_logp = linear_token_stats(h, w, y, shift=True).logp.sum(-1)  # sequence log-probabilities
    ref = torch.log_softmax(h[:, :-1] @ w.T, -1).gather(-1, y[:, 1:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(seq_logp, ref, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(seq_logp.sum(), (h, w))
    gb = torch.autograd.grad(ref.sum(), (h, w))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_token_entropy_matches_categorical_and_window_loop():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 2] = False
    ref = torch.distributions.Categorical(logits=z).entropy()
    torch.testing.assert_close(token_entropy(z, reduction="none"), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(token_entropy(z, mask=mask), ref[mask].mean(), rtol=1e-12, atol=1e-12)
    w = 3
    out = token_entropy(z, window=w, mask=mask, reduction="none")
    for b in range(2):
        for t in range(7):
            window = [ref[b, s] for s in range(max(0, t - w + 1), t + 1) if mask[b, s]]
            expected = torch.stack(window).mean() if window else torch.zeros((), dtype=torch.float64)
            if mask[b, t]:
                torch.testing.assert_close(out[b, t], expected, rtol=1e-12, atol=1e-12)
