"""LDR-KL and ALDR-KL against the DRO definition (Zhu et al. 2023) and its limits.

LDR-KL is checked against max_{p∈Δ} Σ p δ − λ KL(p‖u) evaluated at the maximiser p* = softmax(δ/λ)
(a different expression of the same quantity), with the λ→0 hinge and the c=0, λ=1 CE − log K limits.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF

from ._helpers import assert_same, logits64, targets, value_and_grad


def ldr_dual(f, y, lam, c):
    out = []
    k = f.shape[1]
    for i in range(f.shape[0]):
        delta = torch.stack([(c if j != y[i] else 0.0) + f[i, j] - f[i, y[i]] for j in range(k)])
        p = torch.softmax(delta / lam, 0)
        kl = (p * torch.log(p * k)).sum()
        out.append((p * delta).sum() - lam * kl)
    return torch.stack(out)


@pytest.mark.parametrize("lam,c", [(1.0, 1.0), (0.3, 2.0), (5.0, 0.5), (1.0, 0.0)])
def test_ldr_kl_matches_dro_definition(lam, c):
    f = logits64(7, 5, seed=1)
    y = targets(7, 5, seed=1)
    assert_same(lambda: LF.ldr_kl(f, y, lam=lam, margin=c, reduction="none"), lambda: ldr_dual(f, y, lam, c), f)


def test_ldr_kl_limits():
    f = logits64(9, 6, seed=2)
    y = targets(9, 6, seed=2)
    # c = 0, λ = 1: CE − log K
    assert_same(lambda: LF.ldr_kl(f, y, lam=1.0, margin=0.0), lambda: F.cross_entropy(f, y) - math.log(6), f)
    # λ → 0: the Crammer–Singer hinge max(0, max_{k≠y} c + f_k − f_y)
    c = 1.0
    fy = f.gather(1, y[:, None])
    other = (f + c).scatter(1, y[:, None], -float("inf"))
    hinge = (other.max(1).values - fy.squeeze(1)).clamp_min(0)
    torch.testing.assert_close(LF.ldr_kl(f, y, lam=1e-4, margin=c, reduction="none"), hinge.detach(),
                               rtol=0, atol=1e-3)
    # λ → ∞: the mean margin (1/K) Σ_k δ_k
    delta = (f - fy + c).scatter(1, y[:, None], 0.0)
    torch.testing.assert_close(LF.ldr_kl(f, y, lam=1e6, margin=c, reduction="none"), delta.mean(1).detach(),
                               rtol=0, atol=1e-4)


def test_ldr_kl_normalisations():
    f = logits64(5, 4, seed=3)
    y = targets(5, 4, seed=3)
    for name, g in (("l1", lambda v: v / v.abs().mean(1, keepdim=True)),
                    ("softplus", lambda v: F.softplus(v) / F.softplus(v).mean(1, keepdim=True))):
        assert_same(lambda: LF.ldr_kl(f, y, normalize=name, reduction="none"),
                    lambda: ldr_dual(g(f), y, 1.0, 1.0), f)


def aldr_reference(f, y, lam_old, lam0, c, alpha):
    """One ALDR-KL step per sample, literally: λ from the KL of softmax(f/λ_old), then the loss."""
    k = f.shape[1]
    values, lams = [], []
    for i in range(f.shape[0]):
        p = torch.softmax(f[i].detach() / lam_old[i], 0)
        kl = (p * torch.log(p * k)).sum()
        lam = max(lam0 - lam0 * kl.item() / (alpha * math.log(k)), lam0 * (1 - 1 / alpha))
        value = ldr_dual(f[i:i + 1], y[i:i + 1], lam, c)[0] - alpha * math.log(k) / (2 * lam0) * (lam - lam0) ** 2
        values.append(value)
        lams.append(lam)
    return torch.stack(values), torch.tensor(lams, dtype=torch.float64)


def test_aldr_kl_matches_two_steps_of_the_update():
    f = logits64(6, 5, seed=4)
    y = targets(6, 5, seed=4)
    lam0, c, alpha = 1.0, 1.0, 2.0
    module = losskit.nn.ALDRKLLoss(num_samples=20, lam0=lam0, margin=c, alpha=alpha, reduction="none").double()
    idx = torch.tensor([3, 0, 7, 19, 11, 5])
    lam_old = torch.full((6,), lam0, dtype=torch.float64)
    for step in range(3):
        ours, g_ours = value_and_grad(lambda: module(f, y, idx), f)
        (ref, lam_new) = aldr_reference(f, y, lam_old, lam0, c, alpha)
        _, g_ref = value_and_grad(lambda: aldr_reference(f, y, lam_old, lam0, c, alpha)[0], f)
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(module.lam[idx], lam_new, rtol=1e-10, atol=1e-12)
        if step:
            assert not torch.equal(lam_new, lam_old), "λ must move between visits"
        lam_old = lam_new
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert (module.lam[untouched] == lam0).all()
    assert (module.lam[idx] >= lam0 * (1 - 1 / alpha)).all()


def test_aldr_kl_without_state_uses_lam0_and_ignored_rows_keep_their_state():
    f = logits64(4, 3, seed=5)
    y = torch.tensor([0, -100, 2, 1])
    state = torch.full((10,), 1.0, dtype=torch.float64)
    idx = torch.tensor([0, 1, 2, 3])
    LF.aldr_kl(f, y, sample_index=idx, state=state)
    assert state[1] == 1.0 and (state[[0, 2, 3]] != 1.0).all()
    mask = torch.tensor([True, True, False, True])
    state2 = torch.full((10,), 1.0, dtype=torch.float64)
    LF.aldr_kl(f, y, sample_index=idx, state=state2, mask=mask)
    assert state2[2] == 1.0
