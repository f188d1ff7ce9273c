"""Logit adjustment, balanced softmax (Menon et al. 2021; Ren et al. 2020) and the spherical Z-loss
(de Brébisson & Vincent 2016) against literal transcriptions; float64, rtol 1e-10."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF

from ._helpers import assert_same, logits64, targets


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_ce(tau):
    z = logits64(9, 5, seed=1)
    y = targets(9, 5, seed=1, ignore=-100)
    counts = torch.tensor([500.0, 120.0, 30.0, 8.0, 2.0], dtype=torch.float64)
    prior = counts / counts.sum()

    def ref():
        out = []
        for i in range(9):
            if y[i] == -100:
                continue
            adj = z[i] + tau * torch.log(prior)
            out.append(-(adj[y[i]] - torch.logsumexp(adj, 0)))
        return torch.stack(out).mean()

    assert_same(lambda: LF.logit_adjusted_ce(z, y, prior=prior, tau=tau), ref, z)
    # counts instead of frequencies: the constant factor cancels in the softmax
    assert_same(lambda: LF.logit_adjusted_ce(z, y, prior=counts, tau=tau), ref, z)


def test_balanced_softmax_is_the_count_weighted_softmax_likelihood():
    z = logits64(8, 4, 2, seed=2)
    y = targets(8, 4, 2, seed=2)
    n = torch.tensor([100.0, 10.0, 5.0, 1.0], dtype=torch.float64)

    def ref():
        e = n[None, :, None] * torch.exp(z)
        p = e / e.sum(1, keepdim=True)
        return -torch.log(p.gather(1, y[:, None])).mean()

    assert_same(lambda: LF.balanced_softmax(z, y, class_counts=n), ref, z)
    uniform = torch.full((4,), 7.0, dtype=torch.float64)
    assert_same(lambda: LF.balanced_softmax(z, y, class_counts=uniform), lambda: F.cross_entropy(z, y), z)


@pytest.mark.parametrize("a,b", [(1.0, 2.0), (0.1, 10.0), (5.0, 0.5)])
def test_z_loss_spherical_matches_paper(a, b):
    o = logits64(7, 6, seed=3)
    y = targets(7, 6, seed=3)

    def ref():
        out = []
        for i in range(7):
            mu = o[i].mean()
            sigma = torch.sqrt(((o[i] - mu) ** 2).mean())
            z = (o[i, y[i]] - mu) / sigma
            out.append(torch.log1p(torch.exp(a * (b - z))) / a)
        return torch.stack(out)

    assert_same(lambda: LF.z_loss_spherical(o, y, a=a, b=b, reduction="none"), ref, o, rtol=1e-9, atol=1e-11)


def test_z_loss_spherical_is_shift_and_scale_invariant():
    o = logits64(5, 8, seed=4)
    y = targets(5, 8, seed=4)
    base = LF.z_loss_spherical(o, y, reduction="none")
    torch.testing.assert_close(LF.z_loss_spherical(3.5 * o - 11.0, y, reduction="none"), base, rtol=1e-10, atol=1e-12)
    equal = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    out = LF.z_loss_spherical(equal, torch.tensor([0, 3]))  # σ = 0: z = 0, finite, no NaN
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(equal.grad).all()
