"""Angular and cosine margin heads: NormFace, CosFace, ArcFace, SphereFace, sub-center ArcFace, ElasticFace.

Every head is the cross-entropy of s·cos θ_ic (x̂ = x/‖x‖, ŵ_c = w_c/‖w_c‖) with the target entry
replaced by s·ψ(cos θ_y) (:func:`losskit.metric.heads_core.margin_softmax_terms`). The margin
policies ψ are small picklable callables on the target cosines (insightface's separation of the
margin policy from where the centres live), so they plug into any classifier backend, e.g.
``partial_fc(x, y, W, margin=arcface_margin(0.5))``:

* :func:`cosface_margin` ψ(c) = c − m;
* :func:`arcface_margin` ψ(c) = cos(θ + m), with the easy-margin and threshold variants;
* :func:`sphereface_margin` ψ(c) = (−1)^k cos(mθ) − 2k, θ ∈ [kπ/m, (k+1)π/m].

ArcFace stability. cos(θ + m) = c·cos m − sin θ·sin m. Writing sin θ = √(1 − c²) (or θ = arccos c,
as pml and insightface do) gives an infinite derivative at |c| = 1 (NaN after the chain rule: the
identical-embedding-and-centre case) and a catastrophically cancelled one near it (in float32, c
rounds to 1 for θ < 3·10⁻⁴). The heads here never differentiate through √(1 − c²): they take
sin θ from the vectors themselves, sin θ = ½·‖x̂ − ŵ_y‖·‖x̂ + ŵ_y‖ (exact for unit vectors, since
‖x̂ ∓ ŵ‖² = 2 ∓ 2c), whose value and gradient are accurate at every angle. The norms use a "safe
norm" (√ of the squared norm where it is > 0, 0 with zero gradient where it is 0), so at exactly
θ = 0 or θ = π, where ψ as a function of x has a cone-shaped kink, the gradient is the finite
subgradient 0 of the kink's radial part; everywhere else it is the exact gradient. No clamp is applied.
A margin callable used with cosines only (``psi(cos)``, as ``partial_fc`` calls it) computes
sin θ = √((1 − c)(1 + c)) with the same safe square root: exact gradient for |c| < 1, value and
gradient finite (derivative of sin θ taken as 0) at |c| ≥ 1.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..checks import check_broadcastable, check_choice, check_real
from ..reduce import combine_masks, compute_dtype, reduce_loss
from ..registry import attach_module, register
from .heads_core import HeadModule, check_head_inputs, cosine_logits, head_example, margin_softmax_terms

__all__ = ["normalized_softmax", "cosface", "arcface", "sphereface", "subcenter_arcface", "elasticface",
           "cosface_margin", "arcface_margin", "sphereface_margin", "CosFaceMargin", "ArcFaceMargin",
           "SphereFaceMargin", "safe_sqrt", "sin_between",
           "NormalizedSoftmax", "CosFace", "ArcFace", "SphereFace", "SubCenterArcFace", "ElasticFace"]

FAMILY = "metric"
HYPERSPHERICAL = "Hyperspherical embedding for novel class classification"
ELASTICFACE = "ElasticFace: Elastic Margin Loss for Deep Face Recognition"
_MODULE_KW = {"num_classes": 5, "embedding_dim": 8}


# ---------------------------------------------------------------------------------------------
# numerics
# ---------------------------------------------------------------------------------------------

def safe_sqrt(t: torch.Tensor) -> torch.Tensor:
    """√t for t > 0 and 0 (with zero gradient) for t ≤ 0: no infinite derivative at 0, no NaN from
    ``where`` (the square root never sees a non-positive argument), exact gradient wherever t > 0."""
    pos = t > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, t, torch.ones_like(t))), torch.zeros_like(t))


def sin_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sin of the angle between unit vectors (rows), ½·‖u − v‖·‖u + v‖: accurate at every angle
    (no cancellation near 0 or π), finite gradient everywhere (0 at exactly 0 or π)."""
    a = safe_sqrt((u - v).square().sum(-1))
    b = safe_sqrt((u + v).square().sum(-1))
    return 0.5 * a * b


def _sin_from_cos(c: torch.Tensor) -> torch.Tensor:
    return safe_sqrt((1 - c) * (1 + c))


# ---------------------------------------------------------------------------------------------
# margin policies: callables on the target cosines
# ---------------------------------------------------------------------------------------------

def _check_margin_value(name, m, low, high):
    if not isinstance(m, torch.Tensor):
        check_real(name, m, low=low, high=high, low_inclusive=False, high_inclusive=False)


class CosFaceMargin:
    """ψ(c) = c − m (CosFace / large-margin cosine). ``m`` a float or a tensor broadcastable to c."""

    def __init__(self, margin=0.35):
        _check_margin_value("margin", margin, -2.0, 2.0)
        self.margin = margin

    def __call__(self, cos: torch.Tensor, sin: torch.Tensor | None = None) -> torch.Tensor:
        m = self.margin.to(cos.dtype) if isinstance(self.margin, torch.Tensor) else self.margin
        return cos - m

    def __repr__(self):
        return f"cosface_margin({self.margin!r})"


class ArcFaceMargin:
    """ψ(c) = cos(θ + m) = c·cos m − sin θ·sin m, θ = arccos c (ArcFace's additive angular margin).

    ``easy_margin``: ψ = cos(θ + m) where c > 0, c elsewhere (insightface's easy margin).
    ``threshold`` (default, ignored with ``easy_margin``): where θ + m > π, i.e. c < cos(π − m) =
    −cos m, ψ = c − m·sin m (pml ArcFaceLoss, insightface's older ``th``/``mm`` form), so that ψ keeps
    decreasing in θ; ``threshold=False`` is the plain cos(θ + m) of the current insightface
    CombinedMarginLoss and of ElasticFace's code (non-monotone past π − m).
    Call ``psi(cos)`` or, with an accurately computed sin θ (see the module docstring), ``psi(cos, sin)``.
    """

    def __init__(self, margin=0.5, easy_margin=False, threshold=True):
        _check_margin_value("margin", margin, -math.pi, math.pi)
        self.margin, self.easy_margin, self.threshold = margin, bool(easy_margin), bool(threshold)

    def __call__(self, cos: torch.Tensor, sin: torch.Tensor | None = None) -> torch.Tensor:
        m = self.margin
        if isinstance(m, torch.Tensor):
            m = m.to(cos.dtype)
            cos_m, sin_m = torch.cos(m), torch.sin(m)
        else:
            cos_m, sin_m = math.cos(m), math.sin(m)
        if sin is None:
            sin = _sin_from_cos(cos)
        phi = cos * cos_m - sin * sin_m
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        if self.threshold:
            return torch.where(cos >= -cos_m, phi, cos - m * sin_m)
        return phi

    def __repr__(self):
        return f"arcface_margin({self.margin!r}, easy_margin={self.easy_margin}, threshold={self.threshold})"


class SphereFaceMargin:
    """ψ(c) = (−1)^k·cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m], k ∈ {0..m−1} (A-Softmax's monotone
    extension of cos(mθ)); with ``annealing`` λ > 0, (λ·c + ψ)/(1 + λ) (SphereFace's annealing).

    cos(mθ) is the Chebyshev polynomial T_m(c), so neither arccos nor √(1 − c²) is differentiated;
    k is piecewise constant (computed without gradient) and ψ is C¹ across the pieces."""

    def __init__(self, margin=4, annealing=0.0):
        check_real("margin", margin, low=1, integer=True)
        check_real("annealing", annealing, low=0.0)
        self.margin, self.annealing = int(margin), float(annealing)

    def __call__(self, cos: torch.Tensor, sin: torch.Tensor | None = None) -> torch.Tensor:
        m = self.margin
        t_prev, t = torch.ones_like(cos), cos
        for _ in range(m - 1):  # T_{n+1} = 2c·T_n − T_{n−1}
            t_prev, t = t, 2 * cos * t - t_prev
        with torch.no_grad():
            theta = torch.acos(cos.detach().clamp(-1, 1))
            k = torch.floor(theta * (m / math.pi)).clamp(0, m - 1)
            sign = 1 - 2 * torch.remainder(k, 2)
        psi = sign * t - 2 * k
        if self.annealing:
            psi = (self.annealing * cos + psi) / (1 + self.annealing)
        return psi

    def __repr__(self):
        return f"sphereface_margin({self.margin}, annealing={self.annealing})"


def cosface_margin(margin=0.35) -> CosFaceMargin:
    """The CosFace margin policy ψ(c) = c − m, a callable on target cosines (for ``partial_fc`` etc.)."""
    return CosFaceMargin(margin)


def arcface_margin(margin=0.5, easy_margin=False, threshold=True) -> ArcFaceMargin:
    """The ArcFace margin policy ψ(c) = cos(arccos c + m), a callable on target cosines; see
    :class:`ArcFaceMargin` for the variants and the module docstring for its numerics."""
    return ArcFaceMargin(margin, easy_margin, threshold)


def sphereface_margin(margin=4, annealing=0.0) -> SphereFaceMargin:
    """The SphereFace margin policy ψ(c) = (−1)^k cos(mθ) − 2k, a callable on target cosines."""
    return SphereFaceMargin(margin, annealing)


# ---------------------------------------------------------------------------------------------
# shared head plumbing
# ---------------------------------------------------------------------------------------------

def _angular_cos_sin(embeddings, labels, centers, sub_centers=1):
    """cos θ (N, C) (max over sub-centres) and the target's sin θ_y (N, 1) from the vectors."""
    acc = compute_dtype(embeddings)
    xh = F.normalize(embeddings.to(acc), dim=1)
    wh = F.normalize(centers.to(acc), dim=1)
    full = xh @ wh.t()
    k = int(sub_centers)
    if k > 1:
        grouped = full.view(full.shape[0], -1, k)
        cos = grouped.amax(-1)
        with torch.no_grad():
            best = grouped.gather(1, labels.view(-1, 1, 1).expand(-1, 1, k)).squeeze(1).argmax(-1)
        rows = labels * k + best
    else:
        cos, rows = full, labels
    sin_y = sin_between(xh, wh.index_select(0, rows))
    return cos, sin_y[:, None]


def _reduce(terms, embeddings, reduction, weight, mask):
    return reduce_loss(terms, reduction, weight=weight, mask=combine_masks(mask), out_dtype=embeddings.dtype)


def _check_scale(scale):
    check_real("scale", scale, low=0.0, low_inclusive=False)


# ---------------------------------------------------------------------------------------------
# heads
# ---------------------------------------------------------------------------------------------

@register("normalized_softmax", family=FAMILY, kind="head", input="emb", source=HYPERSPHERICAL, oracle="pml",
          tier=1, example=head_example, module_kwargs=_MODULE_KW, hyper_errors={"temperature": 0.0})
def normalized_softmax(embeddings, labels, centers, *, temperature=0.05, reduction="mean", weight=None,
                       mask=None):
    """Normalised (cosine) softmax: ℓ_i = −log softmax_c(cos θ_ic / τ)[y_i], cos θ_ic = x̂_i·ŵ_c.

    Embeddings and class centres are L2-normalised, so the logits are cosines divided by the
    temperature τ (NormFace; the paper's hyperspherical classifier; pml NormalizedSoftmaxLoss).
    Per-class weights (pml #532): pass ``weight=class_weight[labels]``.

    Defaults: temperature τ=0.05 (pml's default; the paper's value is uncertain). Source:
    "Hyperspherical embedding for novel class classification" (same loss as NormFace).
    """
    check_head_inputs(embeddings, labels, centers)
    check_real("temperature", temperature, low=0.0, low_inclusive=False)
    cos = cosine_logits(embeddings, centers)
    terms = margin_softmax_terms(cos, labels, 1.0 / float(temperature))
    return _reduce(terms, embeddings, reduction, weight, mask)


@register("cosface", family=FAMILY, kind="head", input="emb", source="anchor", oracle="pml", tier=1,
          example=head_example, module_kwargs=_MODULE_KW, hyper_errors={"scale": 0.0, "margin": 3.0})
def cosface(embeddings, labels, centers, *, margin=0.35, scale=64.0, reduction="mean", weight=None, mask=None):
    """CosFace (large-margin cosine loss): ℓ_i = CE(s·[cos θ_ij, with the target entry s·(cos θ_y − m)]).

    Additive cosine margin m on the target class, scale s, on L2-normalised embeddings and centres.
    Computed in float32 for half inputs (pml's fp16 NaNs, #209/#530, come from half-precision math).
    Per-class weights: pass ``weight=class_weight[labels]``. The margin policy alone is
    :func:`cosface_margin` (|m| < 2).

    Defaults: margin m=0.35, scale s=64 (the paper's and pml's). Source: anchor (pml CosFaceLoss);
    original paper "CosFace: Large Margin Cosine Loss for Deep Face Recognition".
    """
    check_head_inputs(embeddings, labels, centers)
    _check_scale(scale)
    psi = cosface_margin(margin)
    terms = margin_softmax_terms(cosine_logits(embeddings, centers), labels, float(scale), psi)
    return _reduce(terms, embeddings, reduction, weight, mask)


def _arc_terms(embeddings, labels, centers, psi, scale, sub_centers=1):
    cos, sin_y = _angular_cos_sin(embeddings, labels, centers, sub_centers)
    return margin_softmax_terms(cos, labels, float(scale), lambda c: psi(c, sin_y))


@register("arcface", family=FAMILY, kind="head", input="emb", source="anchor", oracle="pml", tier=1,
          example=head_example, module_kwargs=_MODULE_KW, hyper_errors={"scale": 0.0, "margin": 4.0})
def arcface(embeddings, labels, centers, *, margin=0.5, scale=64.0, easy_margin=False, threshold=True,
            reduction="mean", weight=None, mask=None):
    """ArcFace (additive angular margin): ℓ_i = CE(s·[cos θ_ij, with the target entry s·cos(θ_y + m)]).

    θ_ij is the angle between the L2-normalised embedding and centre, m is in radians.
    ``threshold`` (default): where θ_y + m > π the target logit is s·(cos θ_y − m·sin m), keeping it
    decreasing in θ (pml ArcFaceLoss; insightface's ``th``/``mm``); ``threshold=False``: the plain
    cos(θ_y + m) (current insightface CombinedMarginLoss). ``easy_margin``: the margin only where
    cos θ_y > 0. Numerics: cos(θ+m) = cos θ·cos m − sin θ·sin m with sin θ = ½‖x̂−ŵ‖·‖x̂+ŵ‖ from the
    vectors: value and gradient finite at θ = 0 and θ = π exactly (identical or opposite embedding and
    centre; the gradient there is the subgradient 0 of the kink) and exact elsewhere, no arccos, no
    clamp; float32 computation for half inputs (pml #209/#530, insightface #1486/#1555). The margin
    policy alone is :func:`arcface_margin` (for ``partial_fc``). Per-class weights:
    ``weight=class_weight[labels]``.

    Defaults: margin m=0.5 rad (the paper; pml's 28.6° = 0.499 rad), scale s=64, easy_margin=False,
    threshold=True. Source: anchor (pml ArcFaceLoss); original paper "ArcFace: Additive Angular Margin
    Loss for Deep Face Recognition".
    """
    check_head_inputs(embeddings, labels, centers)
    _check_scale(scale)
    psi = arcface_margin(margin, easy_margin, threshold)
    return _reduce(_arc_terms(embeddings, labels, centers, psi, scale), embeddings, reduction, weight, mask)


@register("sphereface", family=FAMILY, kind="head", input="emb", source="anchor", oracle="pml", tier=2,
          example=head_example, module_kwargs=_MODULE_KW,
          hyper_errors={"scale": 0.0, "margin": 0, "annealing": -1.0})
def sphereface(embeddings, labels, centers, *, margin=4, scale=1.0, annealing=0.0, reduction="mean",
               weight=None, mask=None):
    """SphereFace (A-Softmax): ℓ_i = CE(s·‖x_i‖·[cos θ_ij, with the target entry ψ(θ_y)]),
    ψ(θ) = (−1)^k·cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m].

    Multiplicative angular margin m (an integer) with the monotone extension ψ; centres are
    normalised, the embedding norm ‖x‖ is kept (A-Softmax; pml SphereFaceLoss multiplies every logit
    by s·‖x‖). cos(mθ) is evaluated as the Chebyshev polynomial T_m(cos θ) (no arccos in the
    gradient). ``annealing`` λ: target logit (λ·cos θ_y + ψ(θ_y))/(1 + λ), the paper's training
    schedule (λ decays from large to ~5); λ = 0 is pml's loss. At θ = π exactly k = m − 1 (pml: m).

    Defaults: margin m=4 (paper and pml), scale s=1 (pml), annealing λ=0. Source: anchor (pml
    SphereFaceLoss); original paper "SphereFace: Deep Hypersphere Embedding for Face Recognition".
    """
    check_head_inputs(embeddings, labels, centers)
    _check_scale(scale)
    psi = sphereface_margin(margin, annealing)
    acc = compute_dtype(embeddings)
    norm = torch.linalg.vector_norm(embeddings.to(acc), dim=1, keepdim=True)
    terms = margin_softmax_terms(cosine_logits(embeddings, centers), labels, norm * float(scale), psi)
    return _reduce(terms, embeddings, reduction, weight, mask)


@register("subcenter_arcface", family=FAMILY, kind="head", input="emb", source="anchor", oracle="pml", tier=2,
          example=functools.partial(head_example, sub_centers=3), module_kwargs=_MODULE_KW,
          hyper_errors={"scale": 0.0, "sub_centers": 0})
def subcenter_arcface(embeddings, labels, centers, *, margin=0.5, scale=64.0, sub_centers=3, easy_margin=False,
                      threshold=True, reduction="mean", weight=None, mask=None):
    """Sub-center ArcFace: ArcFace on cos θ_ic = max_k x̂_i·ŵ_ck over K sub-centres per class.

    ``centers`` is (C·K, D), grouped class-major (rows c·K .. c·K+K−1 are class c; pml's W is the
    transpose, columns grouped the same way). The target's sin θ is taken against its closest
    sub-centre; margin variants and numerics as :func:`arcface`. pml's ``get_outliers`` (dropping
    samples far from the dominant sub-centre) is a data-cleaning step, not part of the loss.

    Defaults: margin m=0.5 rad (pml 28.6°), scale s=64, sub_centers K=3 (paper and pml). Source: anchor
    (pml SubCenterArcFaceLoss); original paper "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces".
    """
    check_head_inputs(embeddings, labels, centers, sub_centers=sub_centers)
    _check_scale(scale)
    psi = arcface_margin(margin, easy_margin, threshold)
    terms = _arc_terms(embeddings, labels, centers, psi, scale, sub_centers)
    return _reduce(terms, embeddings, reduction, weight, mask)


_ELASTIC_MARGIN = {"arc": 0.5, "cos": 0.35}
_ELASTIC_STD = {("arc", False): 0.05, ("cos", False): 0.05, ("arc", True): 0.0175, ("cos", True): 0.02}


def _draw_margins(keep, count, mean, std, generator, device, dtype):
    """N(mean, std²) margins for the kept samples (in order; masked ones get the mean)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(count, generator=generator, device=gdev, dtype=torch.float32).to(device=device, dtype=dtype)
    drawn = mean + std * z
    if keep is None:
        return drawn
    out = torch.full(keep.shape, float(mean), dtype=dtype, device=device)
    return out.masked_scatter(keep, drawn)


@register("elasticface", family=FAMILY, kind="head", input="emb", source=ELASTICFACE,
          oracle="formula (σ=0 equals arcface/cosface)", tier=1, example=head_example, stochastic=True,
          module_kwargs=_MODULE_KW, hyper_errors={"scale": 0.0, "std": -0.1, "variant": "sphere"})
def elasticface(embeddings, labels, centers, *, variant="arc", margin=None, std=None, plus=False, scale=64.0,
                easy_margin=False, threshold=True, reduction="mean", weight=None, mask=None, generator=None):
    """ElasticFace: ArcFace/CosFace with a per-sample margin m_i ~ N(m, σ²) redrawn at every call;
    target logit s·cos(θ_y + m_i) ("arc") or s·(cos θ_y − m_i) ("cos"), non-targets s·cos θ_ij, then CE.

    ``plus`` (ElasticFace+): the drawn margins are sorted and handed out by the target cosine, the
    largest margin to the sample with the smallest cos θ_y (farthest from its centre). The reference
    code indexes ``sorted_margins[argsort(cos, descending)]``, which applies the ranking permutation
    instead of its inverse; this implements the stated rank matching (assumption). Margins are drawn
    only for kept samples (``mask``), in batch order, so masking a sample equals removing it, and the
    "+" ranks are among kept samples. Draws are float32 standard normals from ``generator``. σ = 0
    gives exactly :func:`arcface` / :func:`cosface`. "arc" uses :class:`ArcFaceMargin` (same
    numerics and variants as arcface; the reference code is the plain cos(θ+m), ``threshold=False``).

    Defaults: variant="arc", scale s=64, margin None → m=0.5 (arc) / 0.35 (cos), std None → σ=0.05
    (arc and cos), 0.0175 (arc, plus), 0.02 (cos, plus) (the reference repository's training configs;
    its class defaults say 0.0125), easy_margin=False, threshold=True. Source: "ElasticFace: Elastic
    Margin Loss for Deep Face Recognition".
    """
    check_head_inputs(embeddings, labels, centers)
    check_choice("variant", variant, ("arc", "cos"))
    _check_scale(scale)
    m = _ELASTIC_MARGIN[variant] if margin is None else margin
    sigma = _ELASTIC_STD[(variant, bool(plus))] if std is None else std
    if variant == "arc":
        check_real("margin", m, low=-math.pi, high=math.pi, low_inclusive=False, high_inclusive=False)
    else:
        check_real("margin", m, low=-2.0, high=2.0, low_inclusive=False, high_inclusive=False)
    check_real("std", sigma, low=0.0)
    n = labels.shape[0]
    keep = None
    if mask is not None:
        combine_masks(mask)  # a bool tensor
        check_broadcastable("mask", mask, (n,))
        keep = torch.broadcast_to(mask, (n,))
    if variant == "arc":
        cos, sin_y = _angular_cos_sin(embeddings, labels, centers)
    else:
        cos, sin_y = cosine_logits(embeddings, centers), None
    if sigma == 0:
        margins = float(m)  # exactly arcface / cosface
    else:
        count = n if keep is None else int(keep.sum())
        margins = _draw_margins(keep, count, float(m), float(sigma), generator, cos.device, cos.dtype)
        if plus:
            with torch.no_grad():
                cos_y = cos.gather(1, labels[:, None]).squeeze(1)
                idx = torch.arange(n, device=cos.device) if keep is None else keep.nonzero().squeeze(1)
                order = cos_y[idx].argsort(descending=True, stable=True)  # largest cosine first
                ranked = margins[idx].sort().values                        # smallest margin first
                margins = margins.clone()
                margins[idx[order]] = ranked
        margins = margins[:, None]
    if variant == "arc":
        psi = ArcFaceMargin(margins, easy_margin, threshold)
        terms = margin_softmax_terms(cos, labels, float(scale), lambda c: psi(c, sin_y))
    else:
        terms = margin_softmax_terms(cos, labels, float(scale), CosFaceMargin(margins))
    return _reduce(terms, embeddings, reduction, weight, mask)


# ---------------------------------------------------------------------------------------------
# module faces
# ---------------------------------------------------------------------------------------------

class NormalizedSoftmax(HeadModule):
    """:func:`normalized_softmax` owning its (C, D) centres: ``NormalizedSoftmax(num_classes, embedding_dim)``."""

    function = staticmethod(normalized_softmax)


class CosFace(HeadModule):
    """:func:`cosface` owning its (C, D) centres: ``CosFace(num_classes, embedding_dim, margin=0.35)``."""

    function = staticmethod(cosface)


class ArcFace(HeadModule):
    """:func:`arcface` owning its (C, D) centres: ``ArcFace(num_classes, embedding_dim, margin=0.5)``."""

    function = staticmethod(arcface)


class SphereFace(HeadModule):
    """:func:`sphereface` owning its (C, D) centres: ``SphereFace(num_classes, embedding_dim, margin=4)``."""

    function = staticmethod(sphereface)


class SubCenterArcFace(HeadModule):
    """:func:`subcenter_arcface` owning its (C·K, D) centres: ``SubCenterArcFace(num_classes,
    embedding_dim, sub_centers=3)``."""

    function = staticmethod(subcenter_arcface)


class ElasticFace(HeadModule):
    """:func:`elasticface` owning its (C, D) centres: ``ElasticFace(num_classes, embedding_dim,
    variant="arc")``; ``forward(embeddings, labels, generator=None)`` draws this step's margins."""

    function = staticmethod(elasticface)


for _id, _cls in [("normalized_softmax", NormalizedSoftmax), ("cosface", CosFace), ("arcface", ArcFace),
                  ("sphereface", SphereFace), ("subcenter_arcface", SubCenterArcFace),
                  ("elasticface", ElasticFace)]:
    attach_module(_id, _cls)
del _id, _cls
