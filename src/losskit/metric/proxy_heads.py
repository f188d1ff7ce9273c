"""Proxy-based heads: Proxy-Anchor, Proxy-NCA and Circle loss with class proxies.

Each proxy is a learned class centre (the ``centers`` of :mod:`heads_core`), so these share the head
module face; they differ from the margin-softmax heads in how the cosines to the proxies are scored.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_real
from ..errors import LossInputError
from ..reduce import reduce_loss
from ..registry import Example, attach_module, register
from .adaptive_heads import _log1p_exp, sample_mask
from .heads_core import HeadModule, check_head_inputs, cosine_logits, head_example

__all__ = ["proxy_anchor", "ProxyAnchor", "proxy_nca", "ProxyNCA", "circle_class", "CircleClass"]

FAMILY = "metric"
HEAD_KW = {"num_classes": 5, "embedding_dim": 8}
PROXY_ANCHOR = "Proxy Anchor Loss for Deep Metric Learning"
PROXY_NCA = "No Fuss Distance Metric Learning using Proxies"
CIRCLE = "Circle Loss: A Unified Perspective of Pair Similarity Optimization"


def _at_least_two_classes(c: int, why: str) -> None:
    if c < 2:
        raise LossInputError("centers", f"at least 2 class proxies ({why})", f"{c}")


def proxy_anchor_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """:func:`head_example` with terms per proxy (C,) and the mask per sample (N,)."""
    ex = head_example(size, seed, variant)
    ex.term_shape = (ex.inputs["centers"].shape[0],)
    return ex


@register("proxy_anchor", family=FAMILY, kind="head", input="emb", source=PROXY_ANCHOR,
          oracle="pml ProxyAnchorLoss", tier=2, example=proxy_anchor_example, module_kwargs=HEAD_KW,
          multi_term=True, hyper_errors={"scale": 0.0, "margin": -0.1})
def proxy_anchor(embeddings, labels, centers, *, scale=32.0, margin=0.1, reduction="mean", weight=None, mask=None,
                 return_components=False):
    """Proxy-Anchor: L = (1/|P⁺|)·Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + (1/|P|)·Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)}).

    s is the cosine, P the proxies (classes), P⁺ those with a positive sample in the batch, X_p⁺ / X_p⁻
    the batch samples of / not of class p (Kim et al. 2020). α = ``scale``, δ = ``margin``.
    The terms are **per proxy**, shape (C,): ℓ_p = (C/|P⁺|)·pos_p + neg_p, with pos_p = 0 for a proxy
    without positives. The C/|P⁺| factor makes the mean over the C terms exactly the paper's loss (its
    positive part averages over P⁺ only, its negative part over all of P); "sum" is C times that,
    ``weight`` (C,) weights proxies. ``mask`` is per *sample* (N,): masked samples leave every X_p⁺ and
    X_p⁻ (and P⁺), exactly as if removed from the batch; all samples masked gives 0.
    ``return_components=True`` gives the parts "positive" and "negative".

    Defaults: scale α=32, margin δ=0.1 (paper, pml ProxyAnchorLoss). Source: "Proxy Anchor Loss for
    Deep Metric Learning" (Kim, Kim, Cho, Kwak, CVPR 2020); official code tjddus9597/Proxy-Anchor-CVPR2020.
    """
    check_real("scale", scale, low=0.0, low_inclusive=False)
    check_real("margin", margin, low=0.0)
    c = check_head_inputs(embeddings, labels, centers)
    keep = sample_mask(mask, embeddings.shape[0])
    cos = cosine_logits(embeddings, centers)                       # (N, C)
    pos = F.one_hot(labels, c).bool()
    neg = ~pos
    if keep is not None:
        pos, neg = pos & keep[:, None], neg & keep[:, None]
    one = cos.new_zeros(1, c)                                      # the "1 +" inside the log
    pos_p = torch.logsumexp(torch.cat([(scale * (margin - cos)).masked_fill(~pos, -math.inf), one]), 0)
    neg_p = torch.logsumexp(torch.cat([(scale * (cos + margin)).masked_fill(~neg, -math.inf), one]), 0)
    with_pos = pos.any(0).sum()
    pos_part = pos_p * (c / with_pos.clamp_min(1).to(pos_p.dtype))
    return reduce_loss(pos_part + neg_p, reduction, weight=weight, out_dtype=embeddings.dtype,
                       components={"positive": pos_part, "negative": neg_p}, return_components=return_components)


@register("proxy_nca", family=FAMILY, kind="head", input="emb", source=PROXY_NCA, oracle="pml ProxyNCALoss", tier=2,
          example=head_example, module_kwargs=HEAD_KW, hyper_errors={"scale": 0.0})
def proxy_nca(embeddings, labels, centers, *, scale=1.0, exclude_positive=False, reduction="mean", weight=None,
              mask=None):
    """Proxy-NCA: ℓ_i = −log( e^{−s·d(x_i, p_y)} / Σ_z e^{−s·d(x_i, p_z)} ), d(x, p) = ‖x/‖x‖ − p/‖p‖‖².

    NCA over class proxies with unit-normalised embeddings and proxies; as d = 2 − 2·cos, it is the
    cross-entropy of the logits 2s·cos. The sum runs over all proxies, the positive included, as in pml's
    ProxyNCALoss (and ProxyNCA++); ``exclude_positive=True`` gives the original paper's denominator
    Σ_{z≠y} (Movshovitz-Attias et al. 2017), which is unbounded below (needs C ≥ 2).
    Differences from pml: pml drops the terms whose softmax probability underflows to exactly 0 (they
    would be inf); here log-softmax keeps them finite and counted.

    Defaults: scale s=1 (pml's softmax_scale; ProxyNCA++ uses 1/τ = 9), exclude_positive=False.
    Source: "No Fuss Distance Metric Learning using Proxies" (Movshovitz-Attias et al., ICCV 2017).
    """
    check_real("scale", scale, low=0.0, low_inclusive=False)
    c = check_head_inputs(embeddings, labels, centers)
    if exclude_positive:
        _at_least_two_classes(c, "exclude_positive=True needs a negative proxy")
    logits = (2.0 * scale) * (cosine_logits(embeddings, centers) - 1.0)   # −s·‖x̂ − p̂‖²
    if exclude_positive:
        y = labels[:, None]
        others = logits.scatter(1, y, -math.inf)
        terms = torch.logsumexp(others, 1) - logits.gather(1, y).squeeze(1)
    else:
        terms = F.cross_entropy(logits, labels, reduction="none")
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=embeddings.dtype)


@register("circle_class", family=FAMILY, kind="head", input="emb", source=CIRCLE,
          oracle="formula (pml CircleLoss with proxies as ref_emb)", tier=2, example=head_example,
          module_kwargs=HEAD_KW, hyper_errors={"scale": 0.0, "margin": -0.1},
          # α_p, α_n are stop-gradient weights (the authors' reference code and pml detach them)
          gradcheck=False)
def circle_class(embeddings, labels, centers, *, margin=0.25, scale=256.0, reduction="mean", weight=None,
                 mask=None):
    """Circle loss, class-level labels: ℓ_i = log(1 + Σ_{j≠y} e^{γα_n^j(s_n^j − Δ_n)} · e^{−γα_p(s_p − Δ_p)}).

    s_p = cos(x_i, w_{y_i}) is the one within-class similarity, s_n^j = cos(x_i, w_j), j ≠ y_i, the C−1
    between-class ones (Sun et al. 2020, the Circle loss with K = 1, L = C−1; the proxies are the class weights).
    α_p = [1 + m − s_p]₊, α_n^j = [s_n^j + m]₊ are detached (constants in the gradient), Δ_p = 1 − m,
    Δ_n = m, γ = ``scale``. Computed as log(1 + e^{logsumexp_j(·) − γα_p(s_p − Δ_p)}), exact for
    every argument (pml's Softplus returns its argument above 20, off by up to 2e-9). Treating α as constants in the gradient follows the paper's gradient analysis
    and the reference code; the value is the paper's.

    Defaults: margin m=0.25, scale γ=256: the paper's face-recognition setting, the one that uses
    class-level labels (pml's pair-wise CircleLoss defaults to the retrieval setting m=0.4, γ=80).
    Source: "Circle Loss: A Unified Perspective of Pair Similarity Optimization" (Sun et al., CVPR 2020).
    """
    check_real("margin", margin, low=0.0)
    check_real("scale", scale, low=0.0, low_inclusive=False)
    c = check_head_inputs(embeddings, labels, centers)
    _at_least_two_classes(c, "Circle loss needs a between-class similarity")
    cos = cosine_logits(embeddings, centers)
    y = labels[:, None]
    s_p = cos.gather(1, y).squeeze(1)
    alpha_p = (1 + margin - s_p.detach()).clamp_min(0)
    alpha_n = (cos.detach() + margin).clamp_min(0)
    logit_n = (scale * alpha_n * (cos - margin)).scatter(1, y, -math.inf)
    terms = _log1p_exp(torch.logsumexp(logit_n, 1) - scale * alpha_p * (s_p - (1 - margin)))
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=embeddings.dtype)


class ProxyAnchor(HeadModule):
    """:func:`proxy_anchor` owning its proxies: ``ProxyAnchor(num_classes, embedding_dim, scale=32, margin=0.1)``.

    pml initialises the proxies with kaiming_normal (fan_out) and the paper trains them with a 100× learning
    rate; here they start N(0, 0.01) like every head (the loss only sees their directions)."""

    function = staticmethod(proxy_anchor)


class ProxyNCA(HeadModule):
    """:func:`proxy_nca` owning its proxies: ``ProxyNCA(num_classes, embedding_dim, scale=1)``."""

    function = staticmethod(proxy_nca)


class CircleClass(HeadModule):
    """:func:`circle_class` owning its class proxies: ``CircleClass(num_classes, embedding_dim, margin=0.25, scale=256)``."""

    function = staticmethod(circle_class)


attach_module("proxy_anchor", ProxyAnchor)
attach_module("proxy_nca", ProxyNCA)
attach_module("circle_class", CircleClass)
