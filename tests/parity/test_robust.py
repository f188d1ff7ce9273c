"""NCE, NFL, RCE, MAE, APL and SCE against literal transcriptions of Ma et al. 2020 (eqs. 3-8) and
Wang et al. 2019, with explicit one-hot label vectors and log 0 := A; float64, rtol 1e-10."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import losskit.functional as LF

from ._helpers import assert_same, logits64, targets


def one_hot(y, c):
    return torch.nn.functional.one_hot(y, c).double()


def ce_vec(p, q):
    return -(q * torch.log(p)).sum(-1)


def fl_vec(p, gamma):  # FL for every class k: −(1−p_k)^γ log p_k
    return -((1 - p) ** gamma) * torch.log(p)


def rce_vec(p, q, a):
    log_q = torch.where(q > 0, torch.log(q.clamp_min(1e-300)), torch.full_like(q, a))
    return -(p * log_q).sum(-1)


def reference(name, h, y, gamma=0.5, a=-4.0):
    c = h.shape[1]
    p = torch.softmax(h, -1)
    q = one_hot(y, c)
    out = []
    for i in range(h.shape[0]):
        if name == "nce":
            out.append(ce_vec(p[i], q[i]) / sum(ce_vec(p[i], one_hot(torch.tensor(k), c)) for k in range(c)))
        elif name == "nfl":
            out.append(fl_vec(p[i], gamma)[y[i]] / fl_vec(p[i], gamma).sum())
        elif name == "rce":
            out.append(rce_vec(p[i], q[i], a))
        elif name == "mae":
            out.append((p[i] - q[i]).abs().sum())
        elif name == "ce":
            out.append(ce_vec(p[i], q[i]))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["nce", "nfl", "rce", "mae"])
@pytest.mark.parametrize("seed", [0, 1])
def test_single_losses_match_paper(name, seed):
    h = logits64(8, 5, seed=seed)
    y = targets(8, 5, seed=seed)
    fn = getattr(LF, name)
    assert_same(lambda: fn(h, y, reduction="none"), lambda: reference(name, h, y), h)


@pytest.mark.parametrize("gamma,a", [(0.0, -4.0), (2.0, math.log(1e-4))])
def test_nfl_gamma_and_rce_log_zero(gamma, a):
    h = logits64(6, 4, seed=3)
    y = targets(6, 4, seed=3)
    assert_same(lambda: LF.nfl(h, y, gamma=gamma, reduction="none"), lambda: reference("nfl", h, y, gamma=gamma), h)
    assert_same(lambda: LF.rce(h, y, log_zero=a, reduction="none"), lambda: reference("rce", h, y, a=a), h)
    # nfl with γ = 0 is nce
    assert_same(lambda: LF.nfl(h, y, gamma=0.0), lambda: LF.nce(h, y), h)


@pytest.mark.parametrize("active,passive", list(itertools.product(["nce", "nfl", "ce"], ["rce", "mae"])))
def test_apl_combinations(active, passive):
    h = logits64(7, 6, seed=4)
    y = targets(7, 6, seed=4)
    alpha, beta = 10.0, 0.1
    assert_same(lambda: LF.apl(h, y, active=active, passive=passive, alpha=alpha, beta=beta, reduction="none"),
                lambda: alpha * reference(active, h, y) + beta * reference(passive, h, y), h)
    out = LF.apl(h, y, active=active, passive=passive, alpha=alpha, beta=beta, return_components=True)
    assert set(out.components) == {active, passive}


def test_normalized_losses_are_bounded_and_symmetric():
    """NCE ∈ [0, 1]; Σ_k NCE(f, k) = 1 for every input: the symmetry condition of Ma et al. (Lemma 1)."""
    h = logits64(5, 4, seed=5)
    total = sum(LF.nce(h, torch.full((5,), k), reduction="none") for k in range(4))
    torch.testing.assert_close(total, torch.ones(5, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    total = sum(LF.nfl(h, torch.full((5,), k), gamma=1.5, reduction="none") for k in range(4))
    torch.testing.assert_close(total, torch.ones(5, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # MAE and RCE: Σ_k over labels is a constant (2(C−1) and −A(C−1))
    total = sum(LF.mae(h, torch.full((5,), k), reduction="none") for k in range(4))
    torch.testing.assert_close(total, torch.full((5,), 6.0, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (1.0, 0.0), (0.5, 0.5)])
def test_symmetric_ce_hard_labels(alpha, beta):
    h = logits64(8, 5, seed=6)
    y = targets(8, 5, seed=6)
    assert_same(lambda: LF.symmetric_ce(h, y, alpha=alpha, beta=beta, reduction="none"),
                lambda: alpha * reference("ce", h, y) + beta * reference("rce", h, y), h)


def test_symmetric_ce_with_teacher_distribution_is_rmt_consistency():
    """RMT: −½[Σ q log p + Σ p log q] for student p and teacher q (both softmax distributions)."""
    h = logits64(6, 4, seed=7)
    teacher = torch.softmax(torch.randn(6, 4, dtype=torch.float64), -1)

    def rmt():
        p = torch.softmax(h, -1)
        return -0.5 * ((teacher * torch.log(p)).sum(-1) + (p * torch.log(teacher)).sum(-1))

    assert_same(lambda: LF.symmetric_ce(h, teacher, alpha=0.5, beta=0.5, log_zero=-1e9, reduction="none"), rmt, h)
