"""Cross-entropy and its reweightings: focal (softmax and sigmoid) and the PolyLoss family."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..checks import check_choice, check_real, check_shape, check_tensor
from ..errors import LossInputError
from ..examples import binary_example
from ..inputs import binary_inputs, class_inputs
from ..reduce import combine_masks, reduce_loss
from ..registry import register
from ._common import FAMILY, class_vector, hard_example, one_minus_pt, target_log_prob

__all__ = ["cross_entropy", "focal", "sigmoid_focal", "poly1", "poly1_focal", "poly_n", "catlip"]

POLY = "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions"


def _smoothed_ce(x, logp, label_smoothing, class_weight):
    """Per-term CE and its mean normaliser, with torch's semantics for class weights and smoothing.

    Hard targets: ℓ = (1−ε)·w_y·(−log p_y) + (ε/C)·Σ_c w_c·(−log p_c), normaliser w_y.
    Soft targets q: ℓ = −Σ_c w_c·q'_c·log p_c with q' = (1−ε)q + ε/C, normaliser 1.
    """
    c = x.num_classes
    w = None if class_weight is None else class_vector("class_weight", class_weight, c, x)
    if x.soft_target is not None:
        q = x.soft_target if label_smoothing == 0 else x.soft_target * (1 - label_smoothing) + label_smoothing / c
        if w is not None:
            q = q * w
        return -(q * logp).sum(-1), None
    nll = -target_log_prob(x, logp)
    w_y = None if w is None else w[x.target]
    terms = nll if w_y is None else w_y * nll
    if label_smoothing:
        uniform = -(logp if w is None else logp * w).sum(-1) / c
        terms = (1 - label_smoothing) * terms + label_smoothing * uniform
    return terms, w_y


@register("cross_entropy", family=FAMILY, kind="loss", input="logits", source="anchor", oracle="torch", tier=1,
          example=hard_example, hyper_errors={"label_smoothing": 1.5}, aliases=("ce",))
def cross_entropy(logits, target, *, class_weight=None, label_smoothing=0.0, ignore_index=-100,
                  reduction="mean", weight=None, mask=None):
    """Cross-entropy ℓ = −Σ_c q_c log softmax(z)_c, for hard (class index) or soft (probability) targets.

    With label smoothing ε the target is q' = (1−ε)·q + ε/C. ``class_weight`` (C,) scales the terms by
    w_c and, for hard targets, "mean" divides by Σ w_{y_i} over kept terms: exactly
    ``torch.nn.functional.cross_entropy``'s semantics (its ``weight`` is our ``class_weight``; our
    ``weight`` is a per-term weight as everywhere in losskit). Logits may be (N, C) or (N, C, d1, ...).

    Defaults: class_weight=None, label_smoothing=0, ignore_index=-100. Source: the standard softmax
    cross-entropy (anchor: torch.nn.functional.cross_entropy).
    """
    x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=True)
    check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    w = None if class_weight is None else class_vector("class_weight", class_weight, x.num_classes, x)
    # the terms come from torch's fused kernel (reduction="none"); losskit reduces them, so that an
    # all-ignored batch is a connected zero (torch: NaN) and weight/mask compose with class weights
    terms = F.cross_entropy(x.logits, x.soft_target if x.target is None else x.target, weight=w,
                            label_smoothing=label_smoothing, reduction="none")
    norm = None if (w is None or x.target is None) else w[x.target]
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       norm=None if norm is None else x.terms(norm), out_dtype=x.dtype)


def _focal_terms(x, logp, gamma, alpha):
    log_pt = target_log_prob(x, logp)
    terms = -(one_minus_pt(log_pt) ** gamma) * log_pt
    if alpha is not None:
        if isinstance(alpha, torch.Tensor):
            terms = terms * class_vector("alpha", alpha, x.num_classes, x)[x.target]
        else:
            check_real("alpha", alpha, low=0.0)
            terms = terms * alpha
    return terms, log_pt


@register("focal", family=FAMILY, kind="loss", input="logits", source="anchor (PolyLoss)", oracle="smp, torch",
          tier=1, example=hard_example, hyper_errors={"gamma": -1.0})
def focal(logits, target, *, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Softmax focal loss ℓ = −α_y·(1 − p_y)^γ·log p_y (Lin et al., "Focal Loss for Dense Object Detection").

    ``alpha`` is a scalar or a per-class tensor (C,) (None: no α). "mean" averages over kept terms
    (α does not enter the denominator, as in the RetinaNet recipe). γ=0, α=None is cross-entropy.
    1 − p_y is computed as −expm1(log p_y) so the modulating factor keeps its precision near p_y = 1.

    Defaults: gamma=2.0, alpha=None, ignore_index=-100. For the binary/multi-label form see
    :func:`sigmoid_focal`. Source: Lin et al., "Focal Loss for Dense Object Detection" (registered from
    the anchors; PolyLoss builds on it).
    """
    check_real("gamma", gamma, low=0.0)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    terms, _ = _focal_terms(x, torch.log_softmax(x.logits, -1), gamma, alpha)
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)


def _sigmoid_focal_terms(z, t, gamma, alpha):
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    # 1 − p_t = t·σ(−z) + (1 − t)·σ(z), without forming p_t
    one_minus = (t * torch.sigmoid(-z) + (1 - t) * torch.sigmoid(z)).clamp_min(torch.finfo(z.dtype).tiny)
    terms = ce * one_minus ** gamma
    if alpha is not None:
        check_real("alpha", alpha, low=0.0, high=1.0)
        terms = terms * (alpha * t + (1 - alpha) * (1 - t))
    return terms, one_minus


@register("sigmoid_focal", family=FAMILY, kind="loss", input="logits", source="anchor", oracle="smp", tier=1,
          example=functools.partial(binary_example, labels=3), hyper_errors={"gamma": -0.5, "alpha": 1.5})
def sigmoid_focal(logits, target, *, gamma=2.0, alpha=0.25, reduction="mean", weight=None, mask=None):
    """Binary / multi-label focal loss on sigmoid outputs (RetinaNet).

    ℓ = α_t·(1 − p_t)^γ·BCE(z, t), with p = σ(z), p_t = p·t + (1 − p)(1 − t) and
    α_t = α·t + (1 − α)(1 − t); targets t ∈ [0, 1] have the shape of the logits. alpha=None drops α_t.

    Defaults: gamma=2.0, alpha=0.25 (as torchvision.ops.sigmoid_focal_loss; smp's FocalLoss defaults to
    alpha=None). Source: Lin et al., "Focal Loss for Dense Object Detection".
    """
    check_real("gamma", gamma, low=0.0)
    z, t = binary_inputs(logits, target)
    terms, _ = _sigmoid_focal_terms(z, t, gamma, alpha)
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=logits.dtype)


@register("poly1", family=FAMILY, kind="loss", input="logits", source=POLY, oracle="formula", tier=1,
          example=hard_example, multi_term=True, hyper_errors={"label_smoothing": -0.1})
def poly1(logits, target, *, epsilon=1.0, label_smoothing=0.0, ignore_index=-100, reduction="mean",
          weight=None, mask=None, return_components=False):
    """Poly-1 loss ℓ = CE + ε·(1 − p_t) (Leng et al., PolyLoss, eq. 3).

    p_t = Σ_c q_c·p_c is the probability mass on the (smoothed or soft) target q, so label smoothing
    carries over as in the paper's code. ε = 0 is cross-entropy; ε = −1 removes CE's first polynomial
    term. Components: ``ce`` and ``poly``.

    Defaults: epsilon=1.0 (the paper uses ε=2 on ImageNet), label_smoothing=0, ignore_index=-100.
    Source: "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions".
    """
    return _poly(logits, target, (epsilon,), label_smoothing, ignore_index, reduction, weight, mask,
                 return_components)


@register("poly_n", family=FAMILY, kind="loss", input="logits", source=POLY, oracle="formula", tier=2,
          example=hard_example, multi_term=True, test_hyper={"epsilons": (1.0, -0.5, 0.25)})
def poly_n(logits, target, *, epsilons=(1.0,), label_smoothing=0.0, ignore_index=-100, reduction="mean",
           weight=None, mask=None, return_components=False):
    """Poly-N loss ℓ = CE + Σ_{j=1..N} ε_j·(1 − p_t)^j (PolyLoss, eq. 2 truncated after N terms).

    Perturbs the first N coefficients of CE's Taylor expansion −log p_t = Σ_j (1 − p_t)^j / j.
    ``epsilons`` = (ε_1, ..., ε_N); a single ε is Poly-1. Components: ``ce`` and ``poly``.

    Defaults: epsilons=(1.0,), label_smoothing=0, ignore_index=-100. Source: "PolyLoss: A Polynomial
    Expansion Perspective of Classification Loss Functions".
    """
    eps = tuple(epsilons) if isinstance(epsilons, (tuple, list)) else None
    if not eps or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in eps):
        raise LossInputError("epsilons", "a non-empty sequence of numbers (ε_1, ..., ε_N)", repr(epsilons))
    return _poly(logits, target, eps, label_smoothing, ignore_index, reduction, weight, mask, return_components)


def _poly(logits, target, epsilons, label_smoothing, ignore_index, reduction, weight, mask, return_components):
    x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=True)
    check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    logp = torch.log_softmax(x.logits, dim=-1)
    ce, _ = _smoothed_ce(x, logp, label_smoothing, None)
    q = x.one_hot()
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / x.num_classes
    one_minus = (q * (-torch.expm1(logp))).sum(-1)  # 1 − Σ q·p, summed without cancellation
    poly = sum(e * one_minus ** (j + 1) for j, e in enumerate(epsilons))
    terms = ce + poly
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype, components={"ce": x.terms(ce), "poly": x.terms(poly)},
                       return_components=return_components)


@register("poly1_focal", family=FAMILY, kind="loss", input="logits", source=POLY, oracle="formula", tier=1,
          example=hard_example, multi_term=True, hyper_errors={"gamma": -1.0})
def poly1_focal(logits, target, *, epsilon=1.0, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean",
                weight=None, mask=None, return_components=False):
    """Poly-1 focal loss ℓ = FL_γ + ε·(1 − p_t)^{γ+1} (PolyLoss, eq. 5), on softmax probabilities.

    FL_γ = −α_y·(1 − p_t)^γ·log p_t as in :func:`focal`. The paper's detection experiments use the
    sigmoid focal loss: that form is ``sigmoid_focal`` plus the same ε-term; here the softmax form is
    registered, matching ``focal``. Components: ``focal`` and ``poly``.

    Defaults: epsilon=1.0 (the paper finds ε=−1 best for RetinaNet), gamma=2.0, alpha=None.
    Source: "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions".
    """
    check_real("gamma", gamma, low=0.0)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    fl, log_pt = _focal_terms(x, torch.log_softmax(x.logits, -1), gamma, alpha)
    poly = epsilon * one_minus_pt(log_pt) ** (gamma + 1)
    terms = fl + poly
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype, components={"focal": x.terms(fl), "poly": x.terms(poly)},
                       return_components=return_components)


CATLIP = "CatLIP: CLIP-level Visual Recognition Accuracy with 2.7x Faster Pre-training on Web-scale Image-Text Data"


def _multilabel_example(size="small", seed=0, variant="normal"):
    """Multi-hot targets over 6 labels; one term per sample."""
    ex = binary_example(size, seed, variant, labels=6)
    ex.term_shape = ex.mask_shape = ex.term_shape[:1]
    return ex


@register("catlip", family=FAMILY, kind="loss", input="logits", source=CATLIP, oracle="torch", tier=3,
          example=_multilabel_example, hyper_errors={"class_reduction": "max"})
def catlip(logits, target, *, pos_weight=None, class_reduction="mean", reduction="mean", weight=None, mask=None):
    """CatLIP's multi-label objective: ℓ_i = (1/V)·Σ_v BCE(z_iv, y_iv), y the multi-hot synset targets.

    CatLIP (Mehta et al. 2024) turns image-text pre-training into multi-label classification: the nouns
    of each caption, mapped to WordNet synsets, form a multi-hot target over a vocabulary of V classes,
    and an image-only model is trained with sigmoid binary cross-entropy averaged over the vocabulary.
    One term per sample: the mean (``class_reduction="mean"``, the paper's) or the sum over the V labels,
    so "mean" over samples equals torch's ``binary_cross_entropy_with_logits`` mean. ``pos_weight`` (V,)
    up-weights positives as torch does. Extracting the synsets from captions is data preparation, not
    part of the loss. Tier 3: the paper gives no further options; none are assumed.

    Defaults: pos_weight=None, class_reduction="mean". Source: "CatLIP: CLIP-level Visual Recognition
    Accuracy with 2.7x Faster Pre-training on Web-scale Image-Text Data".
    """
    check_choice("class_reduction", class_reduction, ("mean", "sum"))
    check_tensor("logits", logits, ndim=2, dtype="float")
    z, t = binary_inputs(logits, target)
    pw = None
    if pos_weight is not None:
        check_tensor("pos_weight", pos_weight, ndim=1, dtype="float")
        check_shape("pos_weight", pos_weight, (logits.shape[1],), like="one value per label")
        pw = pos_weight.to(z.dtype)
    per_label = F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    terms = per_label.mean(1) if class_reduction == "mean" else per_label.sum(1)
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=logits.dtype)
