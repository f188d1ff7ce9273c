"""Adaptive heads (adaface, sphereface2) and proxy heads (proxy_anchor, proxy_nca, circle_class) vs their oracles.

* pml (float64, the same proxies: pml stores them (C, D), the layout of ``centers``, so they are copied
  as they are): ProxyAnchorLoss (DivisorReducer, its default; per-proxy terms through DoNothingReducer),
  ProxyNCALoss (MeanReducer, its default) and, for circle_class, the pair-wise CircleLoss scoring the
  embeddings against ``ref_emb`` = the proxies with ``ref_labels`` = 0..C−1 (AvgNonZeroReducer, its
  default; every Circle term is > 0 here, so it is the mean). Values and gradients w.r.t. embeddings and
  proxies agree to rtol 1e-9, atol 1e-11 over a grid of hyperparameters and seeds. Circle: pml's final
  Softplus is x itself above 20 (an error up to e^-20 that ours does not make), so the shipped pml is
  compared on values at rtol 1e-8, and pml with that Softplus made exact on values and gradients.
* Formula rows: naive per-sample, per-class loops transcribing the papers' equations (float64, values
  and gradients, same tolerance unless stated), plus the special cases and limits.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers

import losskit
import losskit.functional as LF
from losskit.metric.adaptive_heads import sphereface2_bias

TOL = dict(rtol=1e-9, atol=1e-11)
F64 = torch.float64


def make_inputs(n, c, d, seed, absent=0, spread=False):
    """float64 embeddings (N, D), labels in [0, C − absent), proxies (C, D)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, d, generator=g, dtype=F64)
    if spread:  # feature norms over about two decades
        emb = emb * torch.exp(1.2 * torch.randn(n, 1, generator=g, dtype=F64))
    centers = torch.randn(c, d, generator=g, dtype=F64)
    labels = torch.randint(0, c - absent, (n,), generator=g)
    return emb, labels, centers


def ours(fn, emb, labels, centers, **kw):
    """(value, d/d embeddings, d/d centers) of fn's output summed."""
    e = emb.detach().clone().requires_grad_(True)
    w = centers.detach().clone().requires_grad_(True)
    out = fn(e, labels, w, **kw)
    out.sum().backward()
    return out.detach(), e.grad, w.grad


def pml_proxy(loss_fn, emb, labels, centers):
    """(value, d/d embeddings, d/d proxies) of a pml proxy loss whose proxies are set to ``centers``."""
    e = emb.detach().clone().requires_grad_(True)
    loss_fn.proxies = torch.nn.Parameter(centers.detach().clone())
    out = loss_fn(e, labels)
    out.backward()
    return out.detach(), e.grad, loss_fn.proxies.grad


def assert_all_close(a, b, **tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **(tol or TOL))


# ---------------------------------------------------------------- proxy_anchor vs pml ProxyAnchorLoss


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (16.0, 0.0), (8.0, 0.3)])
@pytest.mark.parametrize("absent", [0, 3], ids=["all-classes", "3-classes-without-positives"])
def test_proxy_anchor_matches_pml(seed, alpha, delta, absent):
    c, d = 7, 6
    emb, labels, centers = make_inputs(10, c, d, seed, absent)
    ref = pml_proxy(pml_losses.ProxyAnchorLoss(c, d, margin=delta, alpha=alpha), emb, labels, centers)
    got = ours(LF.proxy_anchor, emb, labels, centers, scale=alpha, margin=delta)
    assert_all_close(got, ref)


def test_proxy_anchor_terms_are_pmls_per_proxy_terms():
    """reduction='none' components = pml's per-proxy pos_loss·C/|P⁺| and neg_loss (DoNothingReducer)."""
    c, d = 6, 5
    emb, labels, centers = make_inputs(9, c, d, seed=4, absent=2)
    fn = pml_losses.ProxyAnchorLoss(c, d, reducer=pml_reducers.DoNothingReducer())
    fn.proxies = torch.nn.Parameter(centers.clone())
    parts = fn(emb, labels)
    pos, neg = parts["pos_loss"]["losses"].detach(), parts["neg_loss"]["losses"].detach()
    with_pos = parts["pos_loss"]["divisor"]
    assert with_pos == labels.unique().numel() < c
    out = LF.proxy_anchor(emb, labels, centers, reduction="none", return_components=True)
    torch.testing.assert_close(out.components["positive"], pos * c / with_pos, **TOL)
    torch.testing.assert_close(out.components["negative"], neg, **TOL)
    torch.testing.assert_close(out.loss, pos * c / with_pos + neg, **TOL)
    mean = LF.proxy_anchor(emb, labels, centers)
    torch.testing.assert_close(mean, pos.sum() / with_pos + neg.sum() / c, **TOL)
    torch.testing.assert_close(LF.proxy_anchor(emb, labels, centers, reduction="sum"), c * mean, **TOL)


def test_proxy_anchor_sample_mask_is_pml_on_the_kept_samples():
    """A per-sample mask removes samples from X_p⁺, X_p⁻ and P⁺ (class 0 loses all its samples)."""
    c, d = 5, 4
    emb, labels, centers = make_inputs(12, c, d, seed=5)
    keep = torch.ones(12, dtype=torch.bool)
    keep[labels == 0] = False
    keep[3] = False
    ref = pml_proxy(pml_losses.ProxyAnchorLoss(c, d), emb[keep], labels[keep], centers)
    val, g_emb, g_w = ours(LF.proxy_anchor, emb, labels, centers, mask=keep)
    torch.testing.assert_close(val, ref[0], **TOL)
    torch.testing.assert_close(g_emb[keep], ref[1], **TOL)
    assert (g_emb[~keep] == 0).all()
    torch.testing.assert_close(g_w, ref[2], **TOL)


# ---------------------------------------------------------------- proxy_nca vs pml ProxyNCALoss


def naive_proxy_nca(emb, labels, centers, s, exclude_positive):
    """Movshovitz-Attias et al. (Proxy-NCA) as a loop: −log(e^{−s d(x, p_y)} / Σ_z e^{−s d(x, p_z)})."""
    out = []
    for i in range(emb.shape[0]):
        x = emb[i] / emb[i].norm()
        d = [((x - centers[j] / centers[j].norm()) ** 2).sum() for j in range(centers.shape[0])]
        y = int(labels[i])
        den = sum(torch.exp(-s * d[j]) for j in range(len(d)) if not (exclude_positive and j == y))
        out.append(-torch.log(torch.exp(-s * d[y]) / den))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 3.0, 9.0])
def test_proxy_nca_matches_pml(seed, scale):
    c, d = 6, 5
    emb, labels, centers = make_inputs(10, c, d, seed, absent=1)
    ref = pml_proxy(pml_losses.ProxyNCALoss(c, d, softmax_scale=scale), emb, labels, centers)
    assert_all_close(ours(LF.proxy_nca, emb, labels, centers, scale=scale), ref)
    # per-sample terms: pml's DoNothingReducer (no term underflows here, so pml drops none)
    fn = pml_losses.ProxyNCALoss(c, d, softmax_scale=scale, reducer=pml_reducers.DoNothingReducer())
    fn.proxies = torch.nn.Parameter(centers.clone())
    terms = fn(emb, labels)["loss"]["losses"].detach()
    torch.testing.assert_close(LF.proxy_nca(emb, labels, centers, scale=scale, reduction="none"), terms, **TOL)


@pytest.mark.parametrize("exclude_positive", [False, True])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_proxy_nca_matches_the_paper_loop(exclude_positive, scale):
    emb, labels, centers = make_inputs(7, 5, 4, seed=6)
    ref = ours(lambda e, y, w: naive_proxy_nca(e, y, w, scale, exclude_positive), emb, labels, centers)
    got = ours(LF.proxy_nca, emb, labels, centers, scale=scale, exclude_positive=exclude_positive, reduction="none")
    assert_all_close(got, ref)


def test_proxy_nca_exclude_positive_needs_two_proxies():
    emb, labels, centers = make_inputs(3, 1, 4, seed=0)
    with pytest.raises(losskit.LossInputError) as info:
        LF.proxy_nca(emb, labels, centers, exclude_positive=True)
    assert info.value.argument == "centers"


# ---------------------------------------------------------------- circle_class


def naive_circle_class(emb, labels, centers, m, gamma):
    """Sun et al. Circle loss with K = 1 positive (own proxy) and the other proxies as the L = C−1 negatives."""
    out = []
    for i in range(emb.shape[0]):
        x = emb[i] / emb[i].norm()
        s = [x @ (centers[j] / centers[j].norm()) for j in range(centers.shape[0])]
        y = int(labels[i])
        a_p = torch.relu(1 + m - s[y]).detach()
        log_pos = -gamma * a_p * (s[y] - (1 - m))  # e^{log_pos} alone can exceed float64 for γ = 256
        neg = sum(torch.exp(gamma * torch.relu(s[j] + m).detach() * (s[j] - m)) for j in range(len(s)) if j != y)
        out.append(torch.logaddexp(torch.log(neg) + log_pos, torch.zeros((), dtype=F64)))  # log(1 + neg·pos)
    return torch.stack(out)


class ExactSoftplus(torch.nn.Module):
    def forward(self, x):
        return torch.logaddexp(x, torch.zeros((), dtype=x.dtype))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m,gamma", [(0.25, 256.0), (0.4, 80.0), (0.1, 32.0)])
def test_circle_class_matches_pml_pairwise_circle_with_proxies_as_references(seed, m, gamma):
    c, d = 6, 5
    emb, labels, centers = make_inputs(10, c, d, seed)
    got = ours(LF.circle_class, emb, labels, centers, margin=m, scale=gamma)
    # pml as shipped: its Softplus returns its argument above 20 (value off by ≤ e^-20 ≈ 2e-9; its
    # gradient 1 instead of σ(x) is off by as much relative to each pair's term), so values only, rtol 1e-8
    shipped = pml_losses.CircleLoss(m=m, gamma=gamma)(emb, labels, ref_emb=centers, ref_labels=torch.arange(c))
    torch.testing.assert_close(got[0], shipped, rtol=1e-8, atol=0)
    # pml with its final Softplus replaced by the exact log(1 + eˣ): everything else (pairs, α, Δ, the
    # masked logsumexps, the reducer) is pml's; values and gradients to the common tolerance
    circle = pml_losses.CircleLoss(m=m, gamma=gamma)
    circle.soft_plus = ExactSoftplus()
    e = emb.clone().requires_grad_(True)
    w = centers.clone().requires_grad_(True)
    ref = circle(e, labels, ref_emb=w, ref_labels=torch.arange(c))
    ref.backward()
    assert_all_close(got, (ref.detach(), e.grad, w.grad))


@pytest.mark.parametrize("m,gamma", [(0.25, 256.0), (0.4, 80.0)])
def test_circle_class_matches_the_paper_loop(m, gamma):
    emb, labels, centers = make_inputs(8, 5, 4, seed=7)
    ref = ours(lambda e, y, w: naive_circle_class(e, y, w, m, gamma), emb, labels, centers)
    got = ours(LF.circle_class, emb, labels, centers, margin=m, scale=gamma, reduction="none")
    assert_all_close(got, ref)


# ---------------------------------------------------------------- adaface


def naive_adaface(emb, labels, centers, s, m, h, momentum, stats, keep=None):
    """AdaFace margin function with the official code's EMA (update, then normalise), per sample, via arccos."""
    norms = emb.detach().norm(dim=1).clamp(1e-3, 100.0)
    kept = norms if keep is None else norms[keep]
    mu = (1 - momentum) * stats[0] + momentum * kept.mean()
    sd = (1 - momentum) * stats[1] + momentum * kept.std()
    out = []
    for i in range(emb.shape[0]):
        x = emb[i] / emb[i].norm()
        cos = torch.stack([x @ (centers[j] / centers[j].norm()) for j in range(centers.shape[0])])
        y = int(labels[i])
        z = torch.clamp((norms[i] - mu) / (sd + 1e-3) * h, -1.0, 1.0)
        theta = torch.acos(cos[y])
        target = torch.cos(torch.clamp(theta - m * z, 0.0, math.pi)) - (m * z + m)
        logits = torch.cat([s * cos[:y], (s * target)[None], s * cos[y + 1:]])
        out.append(torch.logsumexp(logits, 0) - s * target)
    return torch.stack(out)


ADAFACE_GRID = [  # (margin, h, momentum, initial state or None)
    (0.4, 0.333, 0.01, None),
    (0.4, 0.333, 1.0, None),          # pure batch statistics: ẑ spread over (−1, 1), some clipped
    (0.2, 1.0, 0.5, (3.0, 1.0)),
    (0.5, 2.0, 0.1, (1.0, 0.5)),      # most ẑ clipped at ±1
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("m,h,momentum,init", ADAFACE_GRID)
def test_adaface_matches_the_paper_loop(seed, m, h, momentum, init):
    emb, labels, centers = make_inputs(9, 5, 6, seed, spread=True)
    stats = torch.tensor(init if init is not None else (20.0, 100.0), dtype=F64)
    ref = ours(lambda e, y, w: naive_adaface(e, y, w, 64.0, m, h, momentum, stats), emb, labels, centers)
    state = None if init is None else stats.clone()
    got = ours(LF.adaface, emb, labels, centers, margin=m, h=h, momentum=momentum, state=state, reduction="none")
    assert_all_close(got, ref)


def test_adaface_state_is_the_ema_of_the_kept_clipped_norms():
    emb, labels, centers = make_inputs(8, 5, 4, seed=2, spread=True)
    emb[0] *= 1e4 / emb[0].norm()   # norm clipped to 100
    emb[1] *= 1e-6 / emb[1].norm()  # norm clipped to 0.001
    mask = torch.ones(8, dtype=torch.bool)
    mask[2] = False
    state = torch.tensor([20.0, 100.0], dtype=F64)
    out = LF.adaface(emb, labels, centers, momentum=0.1, state=state, mask=mask, reduction="none")
    norms = emb.norm(dim=1).clamp(1e-3, 100.0)[mask]
    torch.testing.assert_close(state, torch.stack([0.9 * 20 + 0.1 * norms.mean(), 0.9 * 100 + 0.1 * norms.std()]),
                               **TOL)
    assert out[2] == 0
    # the masked sample is out of the statistics: the loss is the loop's with keep = mask
    ref = naive_adaface(emb, labels, centers, 64.0, 0.4, 0.333, 0.1, torch.tensor([20.0, 100.0], dtype=F64), mask)
    torch.testing.assert_close(out[mask], ref[mask], **TOL)
    # one kept sample updates μ only; no kept sample updates nothing
    one = torch.tensor([5.0, 2.0], dtype=F64)
    LF.adaface(emb[3:4], labels[3:4], centers, momentum=0.5, state=one)
    torch.testing.assert_close(one, torch.stack([0.5 * 5 + 0.5 * emb[3].norm().clamp(1e-3, 100.0), torch.tensor(2.0, dtype=F64)]), **TOL)
    none = torch.tensor([5.0, 2.0], dtype=F64)
    LF.adaface(emb, labels, centers, state=none, mask=torch.zeros(8, dtype=torch.bool))
    assert none.tolist() == [5.0, 2.0]


def test_adaface_module_keeps_the_ema_across_steps():
    emb, labels, centers = make_inputs(8, 5, 4, seed=3, spread=True)
    module = losskit.nn.AdaFace(5, 4, momentum=0.1).double()
    assert module.norm_stats.tolist() == [20.0, 100.0]
    state = torch.tensor([20.0, 100.0], dtype=F64)
    for step in range(3):
        x = emb * (1 + step)
        torch.testing.assert_close(module(x, labels, centers), LF.adaface(x, labels, centers, momentum=0.1, state=state),
                                   rtol=0, atol=0)
    torch.testing.assert_close(module.norm_stats, state, rtol=0, atol=0)
    assert module.norm_stats[0] != 20.0
    fresh = losskit.nn.AdaFace(5, 4, momentum=0.1).double()
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh.norm_stats, state, rtol=0, atol=0)


def test_adaface_margin_zero_is_the_normalised_softmax():
    emb, labels, centers = make_inputs(9, 5, 6, seed=4, spread=True)
    ref = ours(lambda e, y, w: F.cross_entropy(30.0 * F.normalize(e) @ F.normalize(w).t(), y, reduction="none"),
               emb, labels, centers)
    assert_all_close(ours(LF.adaface, emb, labels, centers, margin=0.0, scale=30.0, reduction="none"), ref)


def cosface(e, y, w, m, s=64.0):
    cos = F.normalize(e) @ F.normalize(w).t()
    return F.cross_entropy(s * (cos - m * F.one_hot(y, w.shape[0]).to(cos)), y, reduction="none")


def arcface_like(e, y, w, angle, add, s=64.0):
    """Target logit s·(cos(clip(θ_y + angle, 0, π)) − add), others s·cos θ."""
    cos = F.normalize(e) @ F.normalize(w).t()
    theta = torch.acos(cos.gather(1, y[:, None]))
    target = torch.cos(torch.clamp(theta + angle, 0.0, math.pi)) - add
    return F.cross_entropy(s * cos.scatter(1, y[:, None], target), y, reduction="none")


def test_adaface_constant_quality_gives_a_constant_margin():
    emb, labels, centers = make_inputs(9, 5, 6, seed=5, spread=True)
    # h → 0: ẑ = 0 for every sample, CosFace with margin m
    got = ours(LF.adaface, emb, labels, centers, h=1e-12, reduction="none")
    assert_all_close(got, ours(lambda e, y, w: cosface(e, y, w, 0.4), emb, labels, centers), rtol=1e-8, atol=1e-9)
    # one feature norm for all samples and batch statistics (momentum 1): σ = 0, ẑ = 0, CosFace again
    fixed = F.normalize(emb) * 3.0
    got = ours(LF.adaface, fixed, labels, centers, momentum=1.0, reduction="none")
    assert_all_close(got, ours(lambda e, y, w: cosface(e, y, w, 0.4), fixed, labels, centers), rtol=1e-8, atol=1e-9)
    # h → ∞ with every norm below μ (norms ≈ 2.5 < μ ≈ 19.8 of the fresh state): ẑ = −1, ArcFace with margin m
    plain, _, _ = make_inputs(9, 5, 6, seed=5)
    got = ours(LF.adaface, plain, labels, centers, h=1e9, reduction="none")
    assert_all_close(got, ours(lambda e, y, w: arcface_like(e, y, w, 0.4, 0.0), plain, labels, centers))
    # every norm far below μ (ẑ = −1): ArcFace with margin m; far above (ẑ = +1): cos(θ − m) − 2m
    low = ours(LF.adaface, emb, labels, centers, state=torch.tensor([1e3, 1.0], dtype=F64), reduction="none")
    assert_all_close(low, ours(lambda e, y, w: arcface_like(e, y, w, 0.4, 0.0), emb, labels, centers))
    high = ours(LF.adaface, emb * 1e-3, labels, centers, state=torch.tensor([0.0, 1e-6], dtype=F64), h=1e3,
                reduction="none")
    assert_all_close(high, ours(lambda e, y, w: arcface_like(e, y, w, -0.4, 0.8), emb * 1e-3, labels, centers))


def test_adaface_gradient_in_the_centres_is_exact():
    """The margin depends on ‖x‖ only (stop-gradient), so gradcheck holds in the centres."""
    emb, labels, centers = make_inputs(5, 4, 3, seed=6, spread=True)
    w = centers.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: LF.adaface(emb, labels, c, scale=8.0, momentum=1.0, reduction="sum"),
                                    (w,), eps=1e-6, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- sphereface2


def naive_sphereface2(emb, labels, centers, lam, r, m, t, b):
    """SphereFace2-C eq. 5 as a loop over samples and classes."""
    out = []
    for i in range(emb.shape[0]):
        x = emb[i] / emb[i].norm()
        total = 0.0
        for j in range(centers.shape[0]):
            g = 2 * ((x @ (centers[j] / centers[j].norm()) + 1) / 2) ** t - 1
            if j == int(labels[i]):
                total = total + lam / r * torch.log1p(torch.exp(-(r * (g - m) + b)))
            else:
                total = total + (1 - lam) / r * torch.log1p(torch.exp(r * (g + m) + b))
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lam,r,m,t", [(0.7, 40.0, 0.4, 3.0), (0.5, 10.0, 0.0, 1.0), (0.3, 64.0, 0.2, 2.0)])
@pytest.mark.parametrize("learned_bias", [False, True])
def test_sphereface2_matches_the_paper_loop(seed, lam, r, m, t, learned_bias):
    emb, labels, centers = make_inputs(7, 5, 6, seed)
    c = centers.shape[0]
    if learned_bias:
        b_ours = torch.tensor(0.7, dtype=F64, requires_grad=True)
        b_ref = torch.tensor(0.7, dtype=F64, requires_grad=True)
    else:
        b_ours = b_ref = None
    init = sphereface2_bias(c, lam, r, m, t)
    ref = ours(lambda e, y, w: naive_sphereface2(e, y, w, lam, r, m, t, init if b_ref is None else b_ref),
               emb, labels, centers)
    got = ours(LF.sphereface2, emb, labels, centers, lam=lam, scale=r, margin=m, t=t, bias=b_ours, reduction="none")
    assert_all_close(got, ref)
    if learned_bias:
        torch.testing.assert_close(b_ours.grad, b_ref.grad, **TOL)


def opensphere_sphereface2(emb, labels, centers, lam, r, m, t, b, lw=50.0):
    """ydwen/opensphere SphereFace2 (magn_type 'C') forward, re-typed: BCE-with-logits over all (i, j) with
    weights lw·C/r·(λ or 1−λ) and the adjustment g(cos) − cos detached."""
    c = centers.shape[0]
    cos = F.normalize(emb) @ F.normalize(centers).t()
    with torch.no_grad():
        one_hot = F.one_hot(labels, c).to(cos)
        g = 2.0 * ((cos + 1.0) / 2.0).pow(t) - 1.0
        d_theta = g - m * (2.0 * one_hot - 1.0) - cos
    logits = r * (cos + d_theta) + b
    weight = lw * c / r * (lam * one_hot + (1.0 - lam) * (1.0 - one_hot))
    return F.binary_cross_entropy_with_logits(logits, one_hot, weight=weight)


@pytest.mark.parametrize("lam,r,m,t", [(0.7, 40.0, 0.4, 3.0), (0.6, 30.0, 0.3, 5.0)])
def test_sphereface2_is_opensphere_without_its_loss_weight(lam, r, m, t):
    """Value: opensphere = 50 × ours (mean). Embedding gradient: opensphere's detached adjustment equals
    ``detach_adjustment=True`` (opensphere renormalises W in place outside autograd, so its W gradient
    has no normalisation Jacobian and is not compared)."""
    emb, labels, centers = make_inputs(8, 6, 5, seed=8)
    b = sphereface2_bias(6, lam, r, m, t)
    ref = ours(lambda e, y, w: opensphere_sphereface2(e, y, w, lam, r, m, t, b) / 50.0, emb, labels, centers)
    got = ours(LF.sphereface2, emb, labels, centers, lam=lam, scale=r, margin=m, t=t, detach_adjustment=True)
    assert_all_close(got[:2], ref[:2])
    exact = ours(LF.sphereface2, emb, labels, centers, lam=lam, scale=r, margin=m, t=t)
    torch.testing.assert_close(exact[0], got[0], **TOL)   # same value
    assert not torch.allclose(exact[1], got[1])          # a different (true) gradient


def test_sphereface2_initial_bias_zeroes_its_gradient_at_orthogonal_features():
    """opensphere's init: ∂ℓ/∂b = 0 when every cos θ = 0 (features orthogonal to all centres)."""
    eye = torch.eye(8, dtype=F64)
    centers = eye[:5] * 2.0
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 3, generator=g, dtype=F64) @ eye[5:]
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for lam, r, m, t in [(0.7, 40.0, 0.4, 3.0), (0.5, 10.0, 0.1, 1.0)]:
        init = sphereface2_bias(5, lam, r, m, t)
        for shift, small in ((0.0, True), (1.0, False)):
            b = torch.tensor(init + shift, dtype=F64, requires_grad=True)
            LF.sphereface2(emb, labels, centers, lam=lam, scale=r, margin=m, t=t, bias=b).backward()
            assert (abs(float(b.grad)) < 1e-12) == small


def test_sphereface2_large_scale_limit_is_a_hinge():
    """(1/r)·log(1 + e^{r·u}) → [u]₊ as r → ∞ (bias 0): λ[m − g(cos θ_y)]₊ + (1−λ)Σ_{j≠y}[g(cos θ_j) + m]₊."""
    emb, labels, centers = make_inputs(7, 5, 6, seed=9)
    lam, m, t = 0.7, 0.4, 3.0
    cos = F.normalize(emb) @ F.normalize(centers).t()
    g = 2 * ((cos + 1) / 2) ** t - 1
    onehot = F.one_hot(labels, 5).bool()
    hinge = torch.where(onehot, lam * torch.relu(m - g), (1 - lam) * torch.relu(g + m)).sum(1)
    got = LF.sphereface2(emb, labels, centers, lam=lam, scale=1e5, margin=m, t=t, bias=0.0, reduction="none")
    torch.testing.assert_close(got, hinge, rtol=0, atol=5 * math.log(2) / 1e5)


def test_sphereface2_module_learns_its_bias():
    module = losskit.nn.SphereFace2(5, 6).double()
    assert module.bias.item() == pytest.approx(sphereface2_bias(5))
    emb, labels, centers = make_inputs(7, 5, 6, seed=10)
    out = module(emb, labels, centers)
    torch.testing.assert_close(out, LF.sphereface2(emb, labels, centers, bias=module.bias.detach()), rtol=0, atol=0)
    out.backward()
    assert module.bias.grad is not None and module.bias.grad != 0
    assert losskit.nn.SphereFace2(5, 6, bias=-3.0).bias.item() == -3.0
