"""comp_sum and gce against the paper's definition Φ^τ(u), u = Σ_{y'≠y} exp(h_{y'} − h_y) (Mao et al. 2023),
written literally with u (no log-space tricks), in float64, rtol 1e-9."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF

from ._helpers import assert_same, logits64, targets


def phi_tau_loop(h, y, tau):
    out = []
    for i in range(h.shape[0]):
        u = sum(torch.exp(h[i, k] - h[i, y[i]]) for k in range(h.shape[1]) if k != y[i])
        if tau == 1:
            out.append(torch.log1p(u))
        else:
            out.append(((1 + u) ** (1 - tau) - 1) / (1 - tau))
    return torch.stack(out)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.3, 1.7, 2.0, 3.0])
def test_comp_sum_matches_definition(tau):
    h = logits64(8, 5, seed=1, scale=1.5)
    y = targets(8, 5, seed=1)
    assert_same(lambda: LF.comp_sum(h, y, tau=tau, reduction="none"), lambda: phi_tau_loop(h, y, tau), h,
                rtol=1e-9, atol=1e-12)


def test_comp_sum_special_cases():
    h = logits64(10, 6, 2, seed=2)
    y = targets(10, 6, 2, seed=2, ignore=-100)
    # τ = 1 is torch's cross-entropy (with ignore_index and spatial dims)
    assert_same(lambda: LF.comp_sum(h, y, tau=1.0), lambda: F.cross_entropy(h, y), h)
    p = torch.softmax(h, 1).gather(1, y.clamp_min(0)[:, None]).squeeze(1)
    keep = y != -100
    none = LF.comp_sum(h, y, tau=2.0, reduction="none")
    torch.testing.assert_close(none[keep], (1 - p)[keep], rtol=1e-10, atol=1e-12)   # τ = 2: 1 − p_y
    none = LF.comp_sum(h, y, tau=0.0, reduction="none")
    torch.testing.assert_close(none[keep], (1 / p - 1)[keep], rtol=1e-9, atol=1e-12)  # τ = 0: sum-exp


@pytest.mark.parametrize("q", [0.1, 0.5, 0.7, 1.0])
def test_gce_is_comp_sum_with_tau_one_plus_q_and_matches_its_formula(q):
    h = logits64(9, 4, seed=3)
    y = targets(9, 4, seed=3)
    p = lambda: torch.softmax(h, 1).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    assert_same(lambda: LF.gce(h, y, q=q, reduction="none"), lambda: (1 - p() ** q) / q, h)
    assert_same(lambda: LF.gce(h, y, q=q), lambda: LF.comp_sum(h, y, tau=1 + q), h)


def test_gce_approaches_cross_entropy_as_q_goes_to_zero():
    h = logits64(9, 4, seed=4)
    y = targets(9, 4, seed=4)
    ce = F.cross_entropy(h, y)
    gaps = [abs(LF.gce(h, y, q=q) - ce).item() for q in (1e-1, 1e-2, 1e-3, 1e-5)]
    assert all(b < a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-4
