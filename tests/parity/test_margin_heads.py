"""Parity of the margin heads (normalized_softmax, cosface, arcface, sphereface, subcenter_arcface,
elasticface) with pytorch-metric-learning and with loop transcriptions of the papers.

pml is run on the same float64 inputs with our centres copied into its ``W`` (layout (D, C): our
(C, D) transposed; sub-centres class-major in both), the same margin (pml's ArcFace margins are in
degrees: we pass ``math.degrees(m)``) and scale, and ``reducer=MeanReducer()`` (pml's default for
these losses; ``reduction="mean"`` here). Value and gradients w.r.t. embeddings and centres agree to
rtol=1e-8, atol=1e-10 (float64; pml goes through arccos, we do not, hence not 1e-12).
"""
from __future__ import annotations

import math

import pytest
import torch

import losskit
from losskit.metric.margin_heads import arcface_margin, cosface_margin, sphereface_margin

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning.reducers import MeanReducer  # noqa: E402

F = losskit.functional
TOL = {"rtol": 1e-8, "atol": 1e-10}
N, D, C = 16, 8, 5


def make_inputs(seed, k=1, n=N, d=D, c=C):
    """float64 embeddings, labels, (C·K, D) centres; rows 0-1 near their target centre (θ ≈ 0.05-0.1),
    rows 2-4 near its antipode (θ > π − 0.5: ArcFace's threshold branch, SphereFace's last piece)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c * k, d, generator=g, dtype=torch.float64)
    labels = (torch.arange(n) % c)[torch.randperm(n, generator=g)]
    emb = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    for i, (sign, eps) in enumerate([(1, 0.05), (1, 0.1), (-1, 0.05), (-1, 0.2), (-1, 0.3)]):
        w = centers[labels[i] * k]
        emb[i] = sign * w * 1.3 + eps * w.norm() * noise[i]
    return emb, labels, centers


def ours(fn, emb, labels, centers, **hyper):
    e, w = emb.clone().requires_grad_(True), centers.clone().requires_grad_(True)
    loss = fn(e, labels, w, **hyper)
    loss.backward()
    return loss.detach(), e.grad, w.grad


def pml(cls, emb, labels, centers, num_classes=C, **kw):
    loss_fn = cls(num_classes=num_classes, embedding_size=emb.shape[1], reducer=MeanReducer(), **kw)
    loss_fn.W.data = centers.t().contiguous().clone()  # pml's layout: W is (D, C)
    e = emb.clone().requires_grad_(True)
    loss = loss_fn(e, labels)
    loss.backward()
    return loss.detach(), e.grad, loss_fn.W.grad.t()


def assert_triples(a, b, **tol):
    tol = tol or TOL
    for name, x, y in zip(("value", "grad embeddings", "grad centers"), a, b):
        torch.testing.assert_close(x, y, **tol, msg=lambda m, name=name: f"{name}: {m}")


def target_cos(emb, labels, centers, k=1):
    cos = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(centers, dim=1).t()
    return cos.view(len(labels), -1, k).amax(-1).gather(1, labels[:, None]).squeeze(1)


# ------------------------------------------------------------------------------------------ pml


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_normalized_softmax_matches_pml(seed, temperature):
    emb, labels, centers = make_inputs(seed)
    assert_triples(ours(F.normalized_softmax, emb, labels, centers, temperature=temperature),
                   pml(pml_losses.NormalizedSoftmaxLoss, emb, labels, centers, temperature=temperature))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margin,scale", [(0.35, 64.0), (0.1, 16.0), (0.6, 8.0)])
def test_cosface_matches_pml(seed, margin, scale):
    emb, labels, centers = make_inputs(seed)
    assert_triples(ours(F.cosface, emb, labels, centers, margin=margin, scale=scale),
                   pml(pml_losses.CosFaceLoss, emb, labels, centers, margin=margin, scale=scale))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("degrees,scale", [(28.6, 64.0), (10.0, 64.0), (28.6, 10.0), (57.3, 16.0)])
def test_arcface_matches_pml(seed, degrees, scale):
    emb, labels, centers = make_inputs(seed)
    m = math.radians(degrees)
    # the threshold branch (θ_y + m > π) and the ordinary branch are both exercised
    cy = target_cos(emb, labels, centers)
    assert (cy < -math.cos(m)).any() and (cy > -math.cos(m)).any()
    assert_triples(ours(F.arcface, emb, labels, centers, margin=m, scale=scale),
                   pml(pml_losses.ArcFaceLoss, emb, labels, centers, margin=degrees, scale=scale))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("margin", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_sphereface_matches_pml(seed, margin, scale):
    emb, labels, centers = make_inputs(seed)
    assert_triples(ours(F.sphereface, emb, labels, centers, margin=margin, scale=scale),
                   pml(pml_losses.SphereFaceLoss, emb, labels, centers, margin=margin, scale=scale))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("degrees", [28.6, 15.0])
def test_subcenter_arcface_matches_pml(seed, k, degrees):
    emb, labels, centers = make_inputs(seed, k=k)
    m = math.radians(degrees)
    assert_triples(ours(F.subcenter_arcface, emb, labels, centers, margin=m, scale=64.0, sub_centers=k),
                   pml(pml_losses.SubCenterArcFaceLoss, emb, labels, centers, margin=degrees, scale=64.0,
                       sub_centers=k))


def test_subcenter_with_one_subcenter_is_arcface():
    emb, labels, centers = make_inputs(3)
    assert_triples(ours(F.subcenter_arcface, emb, labels, centers, sub_centers=1),
                   ours(F.arcface, emb, labels, centers), rtol=0, atol=0)


# ------------------------------------------------------------------- formula transcriptions


def loop_ce(emb, labels, centers, target_logit, other_scale):
    """Mean over i of −log softmax, built entry by entry: target_logit(i, cos_y, x_i) gives the
    target logit, other_scale(i, x_i) multiplies the non-target cosines."""
    losses = []
    for i in range(emb.shape[0]):
        x = emb[i]
        logits = []
        for c in range(centers.shape[0]):
            cos = (x @ centers[c]) / (x.norm() * centers[c].norm())
            logits.append(target_logit(i, cos, x) if c == labels[i] else other_scale(i, x) * cos)
        z = torch.stack(logits)
        losses.append(torch.logsumexp(z, 0) - z[labels[i]])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("annealing", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("margin", [2, 4])
def test_sphereface_matches_the_paper_with_annealing(margin, annealing):
    emb, labels, centers = make_inputs(5)
    scale = 0.7

    def target(i, cos, x):
        theta = torch.acos(cos)
        k = math.floor(theta.item() * margin / math.pi)
        psi = (-1) ** k * torch.cos(margin * theta) - 2 * k
        return x.norm() * scale * (annealing * cos + psi) / (1 + annealing)

    ref = lambda e, lab, w: loop_ce(e, lab, w, target, lambda i, x: x.norm() * scale)  # noqa: E731
    assert_triples(ours(F.sphereface, emb, labels, centers, margin=margin, scale=scale, annealing=annealing),
                   ours(ref, emb, labels, centers))


def elastic_draws(seed, n, mean, std):
    """The margins elasticface draws: float32 standard normals from a generator seeded ``seed``."""
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    return (mean + std * z.double()).tolist()


@pytest.mark.parametrize("variant", ["arc", "cos"])
@pytest.mark.parametrize("plus", [False, True])
def test_elasticface_matches_a_loop_transcription(variant, plus):
    """The paper with the drawn margins (defaults m, σ per variant); "+": sorted margins, the largest to
    the sample with the smallest target cosine. Arc uses the plain cos(θ + m_i) (threshold=False)."""
    emb, labels, centers = make_inputs(7)
    mean = {"arc": 0.5, "cos": 0.35}[variant]
    std = {("arc", False): 0.05, ("cos", False): 0.05, ("arc", True): 0.0175, ("cos", True): 0.02}[(variant, plus)]
    draws = elastic_draws(3, N, mean, std)
    if plus:
        cy = target_cos(emb, labels, centers).tolist()
        by_cos = sorted(range(N), key=lambda i: -cy[i])  # largest cosine first
        margin = [0.0] * N
        for rank, i in enumerate(by_cos):
            margin[i] = sorted(draws)[rank]                # ... gets the smallest margin
        assert margin[max(range(N), key=lambda i: cy[i])] == min(draws)
        assert margin[min(range(N), key=lambda i: cy[i])] == max(draws)
    else:
        margin = draws
    s = 64.0

    def target(i, cos, x):
        if variant == "arc":
            return s * torch.cos(torch.acos(cos) + margin[i])
        return s * (cos - margin[i])

    ref = lambda e, lab, w: loop_ce(e, lab, w, target, lambda i, x: s)  # noqa: E731
    got = ours(F.elasticface, emb, labels, centers, variant=variant, plus=plus, threshold=False,
               generator=torch.Generator().manual_seed(3))
    assert_triples(got, ours(ref, emb, labels, centers))


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("threshold", [True, False])
def test_elasticface_with_zero_std_is_arcface_and_cosface(plus, threshold):
    emb, labels, centers = make_inputs(8)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    exact = {"rtol": 0, "atol": 0}
    assert_triples(ours(F.elasticface, emb, labels, centers, variant="arc", margin=0.4, std=0.0, plus=plus,
                        threshold=threshold, scale=30.0, generator=g()),
                   ours(F.arcface, emb, labels, centers, margin=0.4, scale=30.0, threshold=threshold), **exact)
    assert_triples(ours(F.elasticface, emb, labels, centers, variant="cos", std=0.0, plus=plus, generator=g()),
                   ours(F.cosface, emb, labels, centers), **exact)
    # the drawn-margin path (a tensor of margins) converges to the same loss as σ → 0
    assert_triples(ours(F.elasticface, emb, labels, centers, variant="arc", margin=0.4, std=1e-12, plus=plus,
                        threshold=threshold, scale=30.0, generator=g()),
                   ours(F.arcface, emb, labels, centers, margin=0.4, scale=30.0, threshold=threshold))
    assert_triples(ours(F.elasticface, emb, labels, centers, variant="cos", std=1e-12, plus=plus, generator=g()),
                   ours(F.cosface, emb, labels, centers))


def test_elasticface_is_stochastic_and_seeded():
    emb, labels, centers = make_inputs(9)
    a = F.elasticface(emb, labels, centers, generator=torch.Generator().manual_seed(1))
    b = F.elasticface(emb, labels, centers, generator=torch.Generator().manual_seed(1))
    c = F.elasticface(emb, labels, centers, generator=torch.Generator().manual_seed(2))
    assert a.item() == b.item() and a.item() != c.item()


def test_arcface_easy_margin_matches_insightface_formula():
    """insightface's easy margin: φ = cos(θ + m) where cos θ > 0, cos θ elsewhere."""
    emb, labels, centers = make_inputs(4)
    m, s = 0.5, 32.0

    def target(i, cos, x):
        return s * (torch.cos(torch.acos(cos) + m) if cos > 0 else cos)

    ref = lambda e, lab, w: loop_ce(e, lab, w, target, lambda i, x: s)  # noqa: E731
    assert_triples(ours(F.arcface, emb, labels, centers, margin=m, scale=s, easy_margin=True),
                   ours(ref, emb, labels, centers))


# ------------------------------------------------------------------- margins as plug-ins


@pytest.mark.parametrize("seed", [0, 1])
def test_margin_policies_plug_into_partial_fc(seed):
    """partial_fc at sample_rate=1 with a margin policy is the corresponding head on the same centres."""
    emb, labels, centers = make_inputs(seed)
    pfc = F.partial_fc
    assert_triples(ours(pfc, emb, labels, centers, sample_rate=1.0, scale=64.0, margin=arcface_margin(0.5)),
                   ours(F.arcface, emb, labels, centers, margin=0.5, scale=64.0))
    assert_triples(ours(pfc, emb, labels, centers, sample_rate=1.0, scale=20.0,
                        margin=arcface_margin(0.3, threshold=False)),
                   ours(F.arcface, emb, labels, centers, margin=0.3, scale=20.0, threshold=False))
    assert_triples(ours(pfc, emb, labels, centers, sample_rate=1.0, scale=64.0, margin=cosface_margin(0.35)),
                   ours(F.cosface, emb, labels, centers, margin=0.35, scale=64.0))
    assert_triples(ours(pfc, emb, labels, centers, sample_rate=1.0, scale=64.0, margin="cosface",
                        margin_value=0.35),
                   ours(F.cosface, emb, labels, centers, margin=0.35, scale=64.0))
    # sphereface's ψ through the hook: the head also scales by ‖x‖ (whose gradient is radial), so compare
    # on unit embeddings the value and the centres' gradient
    unit = torch.nn.functional.normalize(emb, dim=1)
    a = ours(pfc, unit, labels, centers, sample_rate=1.0, scale=3.0, margin=sphereface_margin(3))
    b = ours(F.sphereface, unit, labels, centers, margin=3, scale=3.0)
    torch.testing.assert_close(a[0], b[0], **TOL)
    torch.testing.assert_close(a[2], b[2], **TOL)


# ------------------------------------------------------------------- ArcFace numerics


def _exact_pairs(dtype, sign):
    """Embeddings exactly equal (sign=1) or opposite (sign=−1) to their target centre."""
    emb, labels, centers = make_inputs(11)
    centers = centers.to(dtype)
    emb = (sign * centers[labels]).clone()
    return emb, labels, centers


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sign", [1, -1], ids=["theta0", "thetapi"])
@pytest.mark.parametrize("variant", [{}, {"threshold": False}, {"easy_margin": True}], ids=["thr", "plain", "easy"])
def test_arcface_finite_at_exact_zero_and_pi(dtype, sign, variant):
    emb, labels, centers = _exact_pairs(dtype, sign)
    for fn, kw in [(F.arcface, {}), (F.subcenter_arcface, {"sub_centers": 1}),
                   (F.elasticface, {"generator": torch.Generator().manual_seed(0)}),
                   (F.partial_fc, {"sample_rate": 1.0, "margin": arcface_margin(0.5, **variant)})]:
        kw = dict(kw) if fn is F.partial_fc else {**kw, **variant}
        e, w = emb.clone().requires_grad_(True), centers.clone().requires_grad_(True)
        loss = fn(e, labels, w, **kw)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(e.grad).all() and torch.isfinite(w.grad).all(), fn
    # the margin policy alone, on cosines of exactly ±1
    c = torch.tensor([1.0, -1.0, 0.3], dtype=torch.float64, requires_grad=True)
    arcface_margin(0.5, **variant)(c).sum().backward()
    assert torch.isfinite(c.grad).all()


def _at_angle(theta, dtype=torch.float64, seed=12):
    """Embeddings at angle exactly ~theta from their target centre (in a random plane)."""
    emb, labels, centers = make_inputs(seed)
    w = torch.nn.functional.normalize(centers[labels], dim=1)
    r = torch.randn(emb.shape, generator=torch.Generator().manual_seed(seed + 1000), dtype=torch.float64)
    u = torch.nn.functional.normalize(r - (r * w).sum(1, keepdim=True) * w, dim=1)
    x = (math.cos(theta) * w + math.sin(theta) * u) * 2.5
    assert torch.allclose(torch.linalg.norm(torch.nn.functional.normalize(x, dim=1) - w, dim=1),
                          torch.full((x.shape[0],), 2 * math.sin(theta / 2), dtype=torch.float64), rtol=1e-9)
    return x.to(dtype), labels, centers.to(dtype)


@pytest.mark.parametrize("theta", [1e-3, 1e-2, math.pi - 1e-2, math.pi - 1e-3])
@pytest.mark.parametrize("threshold", [True, False])
def test_arcface_gradient_near_zero_and_pi_matches_finite_differences(theta, threshold):
    emb, labels, centers = _at_angle(theta)
    e, w = emb.clone().requires_grad_(True), centers.clone().requires_grad_(True)
    fn = lambda a, b: F.arcface(a, labels, b, scale=16.0, threshold=threshold)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (e, w), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_arcface_float32_gradient_near_zero_is_accurate():
    """At θ = 10⁻⁴ float32 rounds cos θ to 1, so √(1 − cos²θ) has no correct digit; sin θ from the
    vectors keeps the float32 gradient within 1% of float64 (the true derivative is s·sin m·..., not 0)."""
    ref = ours(F.arcface, *_at_angle(1e-4))
    got = ours(F.arcface, *_at_angle(1e-4, torch.float32))
    cy = target_cos(*_at_angle(1e-4, torch.float32)).double()
    naive = (1 - cy ** 2).clamp_min(0).sqrt()  # √(1 − cos²θ) in float32: no correct digit at this angle
    assert (naive - math.sin(1e-4)).abs().max() > 0.5 * math.sin(1e-4)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-2, atol=1e-4)
