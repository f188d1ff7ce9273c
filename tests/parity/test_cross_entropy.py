"""Parity of cross_entropy, focal, sigmoid_focal and the PolyLoss family with their oracles.

cross_entropy: torch.nn.functional.cross_entropy over a grid of options (values and gradients, float64,
rtol 1e-10). focal: a per-sample loop of −α(1−p)^γ log p and torch CE at γ=0. sigmoid_focal:
segmentation-models-pytorch's FocalLoss and torchvision.ops.sigmoid_focal_loss. Poly: loops over the
paper's equations (PolyLoss eqs. 2, 3, 5).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF

from ._helpers import logits64 as _logits
from ._helpers import targets as _targets

TOL = dict(rtol=1e-10, atol=1e-12)


def _grad(fn, x):
    x.grad = None
    out = fn()
    out.sum().backward()
    return out.detach(), x.grad.clone()


@pytest.mark.parametrize("reduction,smoothing,use_class_weight,ignore,spatial", list(itertools.product(
    ["mean", "sum", "none"], [0.0, 0.2], [False, True], [None, -100, 3], [(), (3, 2)])))
def test_cross_entropy_matches_torch(reduction, smoothing, use_class_weight, ignore, spatial):
    n, c = 9, 5
    x = _logits(n, c, *spatial)
    t = _targets(n, c, *spatial, ignore=ignore)
    cw = torch.rand(c, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.2
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    ii = -100 if ignore is None else ignore
    ours, g_ours = _grad(lambda: LF.cross_entropy(x, t, class_weight=cw if use_class_weight else None,
                                                  ignore_index=ii, **kw), x)
    ref, g_ref = _grad(lambda: F.cross_entropy(x, t, weight=cw if use_class_weight else None, ignore_index=ii,
                                               **kw), x)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(g_ours, g_ref, **TOL)


@pytest.mark.parametrize("reduction,smoothing,use_class_weight", list(itertools.product(
    ["mean", "sum", "none"], [0.0, 0.3], [False, True])))
def test_cross_entropy_soft_targets_match_torch(reduction, smoothing, use_class_weight):
    x = _logits(7, 4, seed=3)
    q = torch.softmax(torch.randn(7, 4, dtype=torch.float64), -1)
    cw = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64) if use_class_weight else None
    ours, g1 = _grad(lambda: LF.cross_entropy(x, q, class_weight=cw, label_smoothing=smoothing,
                                              reduction=reduction), x)
    ref, g2 = _grad(lambda: F.cross_entropy(x, q, weight=cw, label_smoothing=smoothing, reduction=reduction), x)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(g1, g2, **TOL)


def test_cross_entropy_all_ignored_is_zero_not_nan():
    x = _logits(4, 3)
    t = torch.full((4,), -100)
    out = LF.cross_entropy(x, t)
    assert out.item() == 0.0  # torch returns nan here
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def _focal_loop(x, t, gamma, alpha):
    out = []
    for i in range(x.shape[0]):
        p = torch.softmax(x[i], -1)[t[i]]
        a = 1.0 if alpha is None else (alpha[t[i]] if isinstance(alpha, torch.Tensor) else alpha)
        out.append(-a * (1 - p) ** gamma * torch.log(p))
    return torch.stack(out)


@pytest.mark.parametrize("gamma,alpha", [(0.0, None), (0.5, None), (2.0, None), (2.0, 0.25), (1.0, "vector"),
                                         (3.5, "vector")])
def test_focal_matches_loop(gamma, alpha):
    x = _logits(10, 6, seed=4)
    t = _targets(10, 6, seed=4)
    a = torch.linspace(0.1, 1.0, 6, dtype=torch.float64) if alpha == "vector" else alpha
    ours, g1 = _grad(lambda: LF.focal(x, t, gamma=gamma, alpha=a, reduction="none"), x)
    ref, g2 = _grad(lambda: _focal_loop(x, t, gamma, a), x)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(g1, g2, **TOL)


def test_focal_gamma_zero_is_torch_cross_entropy():
    x = _logits(8, 5, 4, seed=5)
    t = _targets(8, 5, 4, seed=5, ignore=-100)
    torch.testing.assert_close(LF.focal(x, t, gamma=0.0), F.cross_entropy(x, t), **TOL)


@pytest.mark.parametrize("gamma,alpha,reduction", list(itertools.product([0.0, 1.0, 2.0], [None, 0.25, 0.75],
                                                                        ["mean", "sum"])))
def test_sigmoid_focal_matches_smp(gamma, alpha, reduction):
    from segmentation_models_pytorch.losses import FocalLoss

    g = torch.Generator().manual_seed(6)
    x = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    t = (torch.rand(6, 4, generator=g) < 0.4).double()
    # smp's "binary" mode flattens and reduces elementwise (its "multilabel" mode averages per-class sums)
    oracle = FocalLoss(mode="binary", alpha=alpha, gamma=gamma, reduction=reduction)
    ours, g1 = _grad(lambda: LF.sigmoid_focal(x, t, gamma=gamma, alpha=alpha, reduction=reduction), x)
    ref, g2 = _grad(lambda: oracle(x, t), x)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, -1), (1.0, 0.9)])
def test_sigmoid_focal_matches_torchvision(gamma, alpha):
    from torchvision.ops import sigmoid_focal_loss

    g = torch.Generator().manual_seed(7)
    x = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    t = (torch.rand(5, 3, generator=g) < 0.5).double()
    ours, g1 = _grad(lambda: LF.sigmoid_focal(x, t, gamma=gamma, alpha=None if alpha < 0 else alpha,
                                              reduction="none"), x)
    ref, g2 = _grad(lambda: sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none"), x)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def _poly_loop(x, t, epsilons, smoothing=0.0):
    out = []
    c = x.shape[1]
    for i in range(x.shape[0]):
        p = torch.softmax(x[i], -1)
        q = torch.full((c,), smoothing / c, dtype=x.dtype)
        q[t[i]] += 1 - smoothing
        ce = -(q * torch.log(p)).sum()
        pt = (q * p).sum()
        out.append(ce + sum(e * (1 - pt) ** (j + 1) for j, e in enumerate(epsilons)))
    return torch.stack(out)


@pytest.mark.parametrize("epsilon,smoothing", [(1.0, 0.0), (2.0, 0.1), (-1.0, 0.0), (0.0, 0.2)])
def test_poly1_matches_paper(epsilon, smoothing):
    x = _logits(9, 7, seed=8)
    t = _targets(9, 7, seed=8)
    ours, g1 = _grad(lambda: LF.poly1(x, t, epsilon=epsilon, label_smoothing=smoothing, reduction="none"), x)
    ref, g2 = _grad(lambda: _poly_loop(x, t, (epsilon,), smoothing), x)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(g1, g2, **TOL)


def test_poly1_epsilon_zero_is_cross_entropy_and_poly_n_generalises_poly1():
    x = _logits(9, 7, seed=9)
    t = _targets(9, 7, seed=9, ignore=-100)
    torch.testing.assert_close(LF.poly1(x, t, epsilon=0.0), F.cross_entropy(x, t), **TOL)
    torch.testing.assert_close(LF.poly_n(x, t, epsilons=(1.5,)), LF.poly1(x, t, epsilon=1.5), **TOL)
    eps = (0.5, -0.25, 1.0, 0.1)
    valid = t != -100
    torch.testing.assert_close(LF.poly_n(x, t, epsilons=eps, reduction="sum"),
                               _poly_loop(x[valid], t[valid], eps).sum(), **TOL)


def test_poly_n_with_ce_coefficients_removed_leaves_the_tail():
    """CE = Σ_j (1−p)^j / j. With ε_j = −1/j for j ≤ N, Poly-N keeps only the tail Σ_{j>N} (1−p)^j / j,
    checked against the series summed directly (p_t ≥ 0.2 here, so 400 terms converge to 1e-40)."""
    x = _logits(6, 4, seed=10, scale=1.0)
    t = x.detach().argmax(1)  # the target is the arg-max class, so p_t >= 1/C
    n = 5
    ours = LF.poly_n(x, t, epsilons=tuple(-1.0 / j for j in range(1, n + 1)), reduction="none")
    pt = torch.softmax(x, -1).gather(1, t[:, None]).squeeze(1)
    tail = sum((1 - pt) ** j / j for j in range(n + 1, 400))
    torch.testing.assert_close(ours, tail, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("epsilon,gamma,alpha", [(1.0, 2.0, None), (-1.0, 2.0, 0.25), (0.5, 0.0, None)])
def test_poly1_focal_matches_paper(epsilon, gamma, alpha):
    x = _logits(8, 5, seed=11)
    t = _targets(8, 5, seed=11)
    ours, g1 = _grad(lambda: LF.poly1_focal(x, t, epsilon=epsilon, gamma=gamma, alpha=alpha, reduction="none"), x)

    def ref_fn():
        pt = torch.softmax(x, -1).gather(1, t[:, None]).squeeze(1)
        return _focal_loop(x, t, gamma, alpha) + epsilon * (1 - pt) ** (gamma + 1)

    ref, g2 = _grad(ref_fn, x)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(g1, g2, **TOL)
    assert math.isfinite(ours.sum().item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_pos_weight", [False, True])
def test_catlip_is_torch_multilabel_bce(reduction, use_pos_weight):
    g = torch.Generator().manual_seed(12)
    x = (torch.randn(7, 9, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    y = (torch.rand(7, 9, generator=g) < 0.2).double()
    pw = torch.rand(9, generator=g, dtype=torch.float64) * 4 + 0.5 if use_pos_weight else None
    per = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none").mean(1)
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    ours, g1 = _grad(lambda: LF.catlip(x, y, pos_weight=pw, reduction=reduction), x)
    ref_v, g2 = _grad(lambda: {"mean": F.binary_cross_entropy_with_logits(x, y, pos_weight=pw).reshape(()),
                               "sum": F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none")
                               .mean(1).sum(),
                               "none": F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none")
                               .mean(1)}[reduction], x)
    torch.testing.assert_close(ours, ref.detach(), **TOL)
    torch.testing.assert_close(ours, ref_v, **TOL)
    torch.testing.assert_close(g1, g2, **TOL)
    summed = LF.catlip(x, y, pos_weight=pw, class_reduction="sum", reduction="none")
    torch.testing.assert_close(summed, per.detach() * 9, **TOL)
