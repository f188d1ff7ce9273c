"""Parity of the smaller large-output entries with torch or a loop transcription of their paper:
online_logsumexp and two_pass_softmax (torch.logsumexp / softmax), logit_z_regularizer (λ·lse²),
partial_fc (full margin softmax at r=1; the sampled set), decoupled_softmax (DEXML's equation),
z_loss_spherical_linear (z_loss_spherical on the materialised logits). float64 throughout."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from losskit.large_output.sampled import sample_classes


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_online_logsumexp_matches_torch(chunk, dim):
    x = rand(5, 7, 3, seed=1, scale=30.0)
    ours = LF.online_logsumexp(x, dim=dim, chunk_size=chunk)
    ref = torch.logsumexp(x, dim=dim)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ga, = torch.autograd.grad(ours.sum(), x)
    gb, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


def test_online_logsumexp_recurrence_on_huge_values():
    x = torch.tensor([[1000.0, -1000.0, 999.0, 1001.0]], dtype=torch.float64)
    torch.testing.assert_close(LF.online_logsumexp(x, chunk_size=1), torch.logsumexp(x, -1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("scale", [1.0, 50.0, 700.0])
def test_two_pass_softmax_matches_softmax(scale):
    x = rand(4, 9, seed=2, scale=scale)
    ours = LF.two_pass_softmax(x)
    ref = torch.softmax(x, -1)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-300)
    v = torch.randn(4, 9, dtype=torch.float64)
    ga, = torch.autograd.grad((ours * v).sum(), x)
    gb, = torch.autograd.grad((ref * v).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_logit_z_regularizer():
    z = rand(3, 4, 6, seed=3)
    mask = torch.tensor([[True, True, False, True]] * 3)
    ref = 1e-3 * torch.logsumexp(z, -1) ** 2
    torch.testing.assert_close(LF.logit_z_regularizer(z, coefficient=1e-3, mask=mask), ref[mask].mean())


def margin_softmax_loop(x, labels, w, scale, m, classes):
    """CE over ``classes`` of s·cos with the CosFace margin on the target, one sample at a time."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i] / x[i].norm()
        cos = torch.stack([(xi * (w[c] / w[c].norm())).sum() for c in classes])
        j = classes.index(int(labels[i]))
        cos = torch.cat([cos[:j], cos[j:j + 1] - m, cos[j + 1:]]) * scale
        out.append(torch.logsumexp(cos, 0) - cos[j])
    return torch.stack(out).mean()


def test_partial_fc_full_rate_is_the_margin_softmax():
    x, w = rand(6, 5, seed=4), rand(9, 5, seed=5)
    labels = torch.tensor([0, 3, 3, 8, 1, 0])
    ours = LF.partial_fc(x, labels, w, sample_rate=1.0, scale=16.0, margin_value=0.3)
    ref = margin_softmax_loop(x, labels, w, 16.0, 0.3, list(range(9)))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(ours, (x, w))
    gb = torch.autograd.grad(ref, (x, w))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_partial_fc_samples_positives_plus_random_negatives():
    x, w = rand(6, 5, seed=6), rand(20, 5, seed=7)
    labels = torch.tensor([2, 2, 11, 5, 19, 5])
    classes = sample_classes(labels.unique(), 20, 0.5, torch.Generator().manual_seed(3)).tolist()
    assert len(classes) == 10 and {2, 5, 11, 19} <= set(classes)
    ours = LF.partial_fc(x, labels, w, sample_rate=0.5, scale=8.0, margin_value=0.2,
                         generator=torch.Generator().manual_seed(3))
    ref = margin_softmax_loop(x, labels, w, 8.0, 0.2, classes)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    g, = torch.autograd.grad(ours, w)
    unsampled = [c for c in range(20) if c not in classes]
    assert (g[unsampled] == 0).all() and (g[classes].abs().sum(1) > 0).all()


def test_partial_fc_callable_margin_and_no_margin():
    x, w = rand(4, 3, seed=8), rand(5, 3, seed=9)
    labels = torch.tensor([0, 1, 2, 4])
    plain = LF.partial_fc(x, labels, w, sample_rate=1.0, scale=10.0, margin=None)
    ref = F.cross_entropy(10.0 * F.normalize(x, dim=1) @ F.normalize(w, dim=1).T, labels)
    torch.testing.assert_close(plain, ref, rtol=1e-12, atol=1e-12)
    shifted = LF.partial_fc(x, labels, w, sample_rate=1.0, scale=10.0, margin=lambda c: c - 0.25)
    torch.testing.assert_close(shifted, LF.partial_fc(x, labels, w, sample_rate=1.0, scale=10.0, margin_value=0.25))


def decoupled_loop(q, lab, t, tau, normalize=True):
    if normalize:
        q, lab = F.normalize(q, dim=1), F.normalize(lab, dim=1)
    s = q @ lab.T / tau
    out = []
    for i in range(q.shape[0]):
        pos = [l for l in range(lab.shape[0]) if t[i, l]]
        neg = [l for l in range(lab.shape[0]) if not t[i, l]]
        terms = []
        for l in pos:
            den = torch.exp(s[i, l]) + sum(torch.exp(s[i, n]) for n in neg)
            terms.append(-torch.log(torch.exp(s[i, l]) / den))
        out.append(torch.stack(terms).mean())
    return torch.stack(out)


@pytest.mark.parametrize("chunk,normalize,tau", [(None, True, 0.5), (2, True, 0.3), (3, False, 2.0)])
def test_decoupled_softmax_matches_dexml(chunk, normalize, tau):
    q, lab = rand(5, 4, seed=10), rand(7, 4, seed=11)
    t = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) < 0.3
    t[torch.arange(5), torch.arange(5)] = True
    ours = LF.decoupled_softmax(q, lab, t, temperature=tau, normalize=normalize, chunk_size=chunk, reduction="none")
    ref = decoupled_loop(q, lab, t, tau, normalize)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(ours.sum(), (q, lab))
    gb = torch.autograd.grad(ref.sum(), (q, lab))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_decoupled_softmax_single_positive_is_softmax_ce():
    q, lab = rand(4, 3, seed=12), rand(6, 3, seed=13)
    y = torch.tensor([0, 5, 2, 2])
    t = F.one_hot(y, 6).bool()
    ref = F.cross_entropy(F.normalize(q, dim=1) @ F.normalize(lab, dim=1).T / 0.1, y)
    torch.testing.assert_close(LF.decoupled_softmax(q, lab, t, temperature=0.1), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("a,b", [(1.0, 2.0), (0.5, 4.0)])
def test_z_loss_spherical_linear_equals_the_logit_version(a, b):
    h, w = rand(7, 5, seed=14), rand(11, 5, seed=15)
    y = torch.tensor([0, 3, 10, 4, -100, 7, 7])
    ours = LF.z_loss_spherical_linear(h, w, y, a=a, b=b)
    ref = LF.z_loss_spherical(h @ w.T, y, a=a, b=b)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    ga = torch.autograd.grad(ours, (h, w))
    gb = torch.autograd.grad(ref, (h, w))
    for x, r in zip(ga, gb):
        torch.testing.assert_close(x, r, rtol=1e-8, atol=1e-11)
    from losskit.large_output.spherical_linear import spherical_statistics
    col, gram = spherical_statistics(w.detach())
    cached = LF.z_loss_spherical_linear(h, w, y, a=a, b=b, column_sum=col, gram=gram)
    torch.testing.assert_close(cached, ref.detach(), rtol=1e-9, atol=1e-12)
    assert math.isfinite(cached.item())
