"""Overlap and confusion-matrix losses: soft Dice, Tversky / focal-Tversky, soft Jaccard, the Jaccard
metric losses (JML), Lovász-softmax / Lovász-hinge, the self-adjusting Dice (DSC) and AnyLoss.

Shared conventions of the set-level losses (dice, tversky, jaccard, jaccard_metric, lovasz_softmax):

* ``mode`` as in segmentation_models_pytorch (smp):

  - ``"multiclass"`` (default): ``logits`` (N, C, *spatial), ``target`` class indices (N, *spatial)
    with ``ignore_index``, or class probabilities of the shape of ``logits`` (soft labels);
    probabilities are the softmax over dim 1.
  - ``"multilabel"``: ``logits`` (N, C, *spatial), ``target`` in [0, 1] of the same shape; sigmoid.
  - ``"binary"``: ``logits`` of any shape (N, ...), ``target`` in [0, 1] of the same shape; sigmoid;
    everything is one class.

  In binary/multilabel mode a target entry equal to ``ignore_index`` marks an ignored element (as in
  smp). ``from_logits=False`` takes probabilities instead of logits.
* The terms are per class, shape (C,) ((1,) in binary mode): the statistics are sums over the whole
  batch and every pixel (smp's ``dims=(0, 2)``). ``weight`` is per class; ``reduction="mean"`` is
  Σ w·ℓ_c / Σ w over all C classes, smp's ``class_weights`` aggregation.
* ``mask`` is over the input elements, (N, *spatial) (multilabel also accepts the full (N, C, *spatial)),
  True = keep. Masked or ignored elements contribute nothing to any sum, so masking sample 0 is the
  same as removing it.
* Soft statistics per class c (one helper, :func:`_soft_stats`): S_p = Σ p, S_y = Σ y,
  D = Σ |p − y| and TP = (S_p + S_y − D)/2, FP = S_p − TP, FN = S_y − TP. For hard labels TP = Σ p·y;
  for soft labels this is the L1 form of smp ≥ 0.5 and of the Jaccard/Dice metric losses (Wang &
  Blaschko), which is minimised at p = y.
* Classes without any true pixel (S_y = 0 after masking) have loss 0, as in smp, and still count in the
  mean. Lovász-softmax follows smp/Berman instead: classes="present" leaves absent classes out of the
  mean.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from ..checks import check_broadcastable, check_choice, check_real, check_tensor, checks_enabled
from ..errors import LossInputError
from ..examples import binary_example, logits_example
from ..inputs import binary_inputs, class_inputs, flatten_classes
from ..reduce import combine_masks, reduce_loss
from ..registry import Example, register
from ._common import FAMILY, one_minus_pt

__all__ = ["dice", "self_adjusting_dice", "tversky", "jaccard", "jaccard_metric", "lovasz_softmax", "anyloss"]

MODES = ("multiclass", "multilabel", "binary")
DICE_NLP = "Dice Loss for Data-imbalanced NLP Tasks"
JML = "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels"
ANYLOSS = "AnyLoss: Transforming Classification Metrics into Loss Functions"


# ----------------------------------------------------------------------------------------------------
# inputs: probabilities and targets as (M, C) plus the kept elements
# ----------------------------------------------------------------------------------------------------

class _Flat(NamedTuple):
    prob: torch.Tensor              # (M, C) probabilities, computation dtype
    target: torch.Tensor            # (M, C) targets in [0, 1]; 0 where not kept
    keep: torch.Tensor | None       # (M, C) or (M, 1) bool, None if every element is kept
    logits: torch.Tensor | None     # (M, C) raw scores (binary/multilabel with from_logits), for the hinge
    dtype: torch.dtype              # result dtype
    num_classes: int


def _check_probabilities(name: str, p: torch.Tensor) -> None:
    if checks_enabled() and p.numel() and bool(((p < 0) | (p > 1)).any()):
        raise LossInputError(name, "probabilities in [0, 1] (from_logits=False)", "values outside [0, 1]")


def _check_mask(mask, shape, like) -> torch.Tensor:
    check_tensor("mask", mask, dtype="bool")
    check_broadcastable("mask", mask, shape, like=like)
    return mask.expand(shape)


def _binary_inputs_ignore(logits, target, mode, ignore_index):
    """Binary / multilabel inputs whose target may hold ``ignore_index``: (logits, target, keep) with the
    ignored targets set to 0 and keep = target != ignore_index (None without ignore_index)."""
    check_tensor("logits", logits, min_ndim=2 if mode == "multilabel" else 1, dtype="float")
    keep = None
    if ignore_index is not None and isinstance(target, torch.Tensor) and target.shape == logits.shape:
        keep = target != ignore_index
        target = torch.where(keep, target, torch.zeros_like(target))
    z, y = binary_inputs(logits, target)
    return z, y, keep


def _flat_inputs(logits, target, *, mode, ignore_index, mask, from_logits, allow_soft=True) -> _Flat:
    """Validate and flatten the inputs of one of the three modes (see the module docstring)."""
    if mode == "multiclass":
        x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=allow_soft)
        if from_logits:
            prob = torch.softmax(x.logits, -1)
        else:
            _check_probabilities("logits", x.logits)
            prob = x.logits
        keep = x.keep
        if mask is not None:
            m = _check_mask(mask, x.shape, "the input elements (N, *spatial)").reshape(-1)
            keep = m if keep is None else keep & m
        keep = None if keep is None else keep[:, None]
        return _Flat(prob, x.one_hot(), keep, None, x.dtype, x.num_classes)

    z, y, keep = _binary_inputs_ignore(logits, target, mode, ignore_index)
    if mask is not None:
        if mode == "multilabel" and isinstance(mask, torch.Tensor) and mask.dim() == logits.dim() - 1:
            mask = mask.unsqueeze(1)
        m = _check_mask(mask, logits.shape, "the input elements (N, *spatial)")
        keep = m if keep is None else keep & m
    if from_logits:
        prob = torch.sigmoid(z)
    else:
        _check_probabilities("logits", z)
        prob = z
    if mode == "binary":
        flat = lambda t: t.reshape(-1, 1)  # noqa: E731
    else:
        flat = flatten_classes
    keep = None if keep is None else flat(keep)
    return _Flat(flat(prob), flat(y), keep, flat(z) if from_logits else None, logits.dtype, flat(z).shape[1])


class _Stats(NamedTuple):
    """Per-class soft statistics, each (C,); the optional sums are None unless asked for."""

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    p_sum: torch.Tensor
    y_sum: torch.Tensor
    l1: torch.Tensor                 # Σ |p − y|
    present: torch.Tensor            # bool, Σ y > 0
    py: torch.Tensor | None = None   # Σ p·y          (product=True)
    pp: torch.Tensor | None = None   # Σ p²           (squares=True)
    yy: torch.Tensor | None = None   # Σ y²           (squares=True)


def _soft_stats(f: _Flat, *, product: bool = False, squares: bool = False) -> _Stats:
    """Soft TP/FP/FN sums per class over every kept element (masked and ignored elements add 0)."""
    p, y = f.prob, f.target
    if f.keep is not None:
        zero = p.new_zeros(())
        p = torch.where(f.keep, p, zero)
        y = torch.where(f.keep, y, zero)
    p_sum, y_sum = p.sum(0), y.sum(0)
    l1 = (p - y).abs().sum(0)
    tp = (p_sum + y_sum - l1) / 2
    py = (p * y).sum(0) if product else None
    pp, yy = ((p * p).sum(0), (y * y).sum(0)) if squares else (None, None)
    return _Stats(tp, p_sum - tp, y_sum - tp, p_sum, y_sum, l1, y_sum > 0, py, pp, yy)


def _overlap_terms(score: torch.Tensor, stats: _Stats, *, log_loss: bool, eps: float,
                   gamma: float = 1.0) -> torch.Tensor:
    """ℓ_c = (1 − score_c)^γ (or (−log score_c)^γ), zero for classes with no true pixel (smp)."""
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1.0 - score
    if gamma != 1.0:
        # a fractional power of 0 has an infinite derivative: floor at the smallest normal number
        loss = loss.clamp_min(torch.finfo(loss.dtype).tiny) ** gamma
    return loss * stats.present.to(loss.dtype)


def _check_common(mode, smooth, eps):
    check_choice("mode", mode, MODES)
    check_real("smooth", smooth, low=0.0)
    check_real("eps", eps, low=0.0, low_inclusive=False)


def _tversky_score(s: _Stats, alpha, beta, smooth, eps):
    return (s.tp + smooth) / (s.tp + alpha * s.fp + beta * s.fn + smooth).clamp_min(eps)


# ----------------------------------------------------------------------------------------------------
# example factories
# ----------------------------------------------------------------------------------------------------

SPATIAL = (3, 3)
_seg_base = functools.partial(logits_example, spatial=SPATIAL, ignore_index=-100)


def seg_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """(N, C, 3, 3) logits and (N, 3, 3) class indices (one equals ignore_index); terms per class (C,),
    mask over pixels (N, 3, 3)."""
    ex = _seg_base(size, seed, variant)
    n, c = ex.inputs["logits"].shape[:2]
    return Example(ex.inputs, grad=ex.grad, batch=ex.batch, term_shape=(c,), mask_shape=(n, *SPATIAL),
                   bad=ex.bad, kept=None)


def lovasz_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """As :func:`seg_example`; the terms of classes absent from the target are excluded (``kept``)."""
    ex = seg_example(size, seed, variant)
    t = ex.inputs["target"]
    c = ex.term_shape[0]
    present = torch.bincount(t[t != -100].reshape(-1), minlength=c) > 0
    return Example(ex.inputs, grad=ex.grad, batch=ex.batch, term_shape=ex.term_shape, mask_shape=ex.mask_shape,
                   bad=ex.bad, kept=present)


def batch_binary_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """Binary (N,) logits and {0, 1} targets; one batch-level term (), mask per sample (N,)."""
    ex = binary_example(size, seed, variant)
    n = ex.inputs["logits"].shape[0]
    return Example(ex.inputs, grad=ex.grad, batch=ex.batch, term_shape=(), mask_shape=(n,), bad=ex.bad)


token_example = functools.partial(logits_example, ignore_index=-100)


# ----------------------------------------------------------------------------------------------------
# Dice, Tversky, Jaccard, Jaccard metric losses
# ----------------------------------------------------------------------------------------------------

@register("dice", family=FAMILY, kind="loss", input="logits", source=DICE_NLP, oracle="smp", tier=1,
          example=seg_example, hyper_errors={"mode": "segmentation", "smooth": -1.0, "eps": 0.0})
def dice(logits, target, *, mode="multiclass", smooth=0.0, squared=False, log_loss=False, from_logits=True,
         eps=1e-7, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Soft Dice loss per class ℓ_c = 1 − (TP_c + s)/(TP_c + ½FP_c + ½FN_c + s)
    = 1 − (2TP + 2s)/(S_p + S_y + 2s).

    smp's ``DiceLoss`` (Tversky with α = β = ½; its smooth ``s`` counts in TP units). ``squared=True``
    uses the squared denominator of Milletari et al. / Li et al.: 1 − (TP + s)/(½(Σp² + Σy²) + s).
    ``log_loss`` gives −log(score) (floored at eps). Denominators are floored at ``eps``. Classes with no
    true pixel have loss 0 (smp); see the module docstring for modes, terms (C,), weight and mask.

    Defaults: mode="multiclass", smooth=0, squared=False, log_loss=False, from_logits=True, eps=1e-7
    (smp's), ignore_index=-100. Source: "Dice Loss for Data-imbalanced NLP Tasks" (anchor: smp DiceLoss).
    """
    _check_common(mode, smooth, eps)
    f = _flat_inputs(logits, target, mode=mode, ignore_index=ignore_index, mask=mask, from_logits=from_logits)
    s = _soft_stats(f, squares=squared)
    if squared:
        score = (s.tp + smooth) / ((s.pp + s.yy) / 2 + smooth).clamp_min(eps)
    else:
        score = _tversky_score(s, 0.5, 0.5, smooth, eps)
    terms = _overlap_terms(score, s, log_loss=log_loss, eps=eps)
    return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)


@register("tversky", family=FAMILY, kind="loss", input="logits", source=DICE_NLP, oracle="smp", tier=1,
          example=seg_example, hyper_errors={"alpha": -0.5, "beta": -0.5, "gamma": 0.0, "mode": "seg"})
def tversky(logits, target, *, mode="multiclass", alpha=0.5, beta=0.5, gamma=1.0, smooth=0.0, log_loss=False,
            from_logits=True, eps=1e-7, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Tversky / focal-Tversky loss per class ℓ_c = (1 − (TP + s)/(TP + α·FP + β·FN + s))^γ.

    α weighs false positives, β false negatives; α = β = ½ is :func:`dice`, α = β = 1 is :func:`jaccard`.
    γ is the exponent of the per-class loss (focal-Tversky; Abraham & Khan write it 1/γ with γ = 4/3, i.e.
    pass gamma=0.75). smp applies γ to the class mean instead, (mean_c ℓ_c)^γ: the two agree for γ = 1
    and for a single class (binary mode); here the terms stay per class so weight/mask/reduction keep
    their meaning. For γ ≠ 1 the base is floored at the smallest normal number. Classes with no true
    pixel have loss 0 (smp).

    Defaults: mode="multiclass", alpha=0.5, beta=0.5, gamma=1.0, smooth=0, log_loss=False,
    from_logits=True, eps=1e-7 (smp's), ignore_index=-100. Source: "Dice Loss for Data-imbalanced NLP
    Tasks" (Tversky index; anchor: smp TverskyLoss).
    """
    _check_common(mode, smooth, eps)
    check_real("alpha", alpha, low=0.0)
    check_real("beta", beta, low=0.0)
    check_real("gamma", gamma, low=0.0, low_inclusive=False)
    f = _flat_inputs(logits, target, mode=mode, ignore_index=ignore_index, mask=mask, from_logits=from_logits)
    s = _soft_stats(f)
    terms = _overlap_terms(_tversky_score(s, alpha, beta, smooth, eps), s, log_loss=log_loss, eps=eps,
                           gamma=gamma)
    return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)


@register("jaccard", family=FAMILY, kind="loss", input="logits", source=JML, oracle="smp", tier=1,
          example=seg_example, hyper_errors={"smooth": -1.0, "mode": "seg", "eps": -1.0})
def jaccard(logits, target, *, mode="multiclass", smooth=0.0, log_loss=False, from_logits=True, eps=1e-7,
            ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Soft Jaccard (IoU) loss per class ℓ_c = 1 − (TP_c + s)/(TP_c + FP_c + FN_c + s).

    smp's ``JaccardLoss``. With TP in the L1 form this is, for soft labels, the Jaccard metric loss JML1
    with smoothing 2s (:func:`jaccard_metric`); for hard labels it is the usual Σpy/(Σp + Σy − Σpy).
    Denominators are floored at ``eps``; classes with no true pixel have loss 0 (smp).

    Defaults: mode="multiclass", smooth=0, log_loss=False, from_logits=True, eps=1e-7 (smp's),
    ignore_index=-100. Source: "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels"
    (anchor: smp JaccardLoss).
    """
    _check_common(mode, smooth, eps)
    f = _flat_inputs(logits, target, mode=mode, ignore_index=ignore_index, mask=mask, from_logits=from_logits)
    s = _soft_stats(f)
    terms = _overlap_terms(_tversky_score(s, 1.0, 1.0, smooth, eps), s, log_loss=log_loss, eps=eps)
    return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)


@register("jaccard_metric", family=FAMILY, kind="loss", input="logits", source=JML, oracle="formula", tier=2,
          example=seg_example, hyper_errors={"variant": "jml3", "smooth": -1.0, "mode": "seg"})
def jaccard_metric(logits, target, *, mode="multiclass", variant="jml1", smooth=1.0, log_loss=False,
                   from_logits=True, eps=1e-7, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Jaccard metric losses per class, x = probabilities, y = (soft) labels, norms over the kept pixels:
    JML1 ℓ_c = 1 − (‖x+y‖₁ − ‖x−y‖₁ + s)/(‖x+y‖₁ + ‖x−y‖₁ + s),
    JML2 ℓ_c = 1 − (⟨x,y⟩ + s)/(⟨x,y⟩ + ‖x−y‖₁ + s).

    Both accept soft labels (label smoothing, teacher probabilities: in multiclass mode pass a target of
    class probabilities of the shape of ``logits``) and equal the soft Jaccard loss for hard labels
    (JML2 with the same s; JML1 is :func:`jaccard` with smoothing s/2, the smoothing convention of the
    authors' code). Assumptions where the authors' code differs: the statistics are over the whole batch
    (its ``per_image=False``), and, for consistency with the rest of this group, classes with no label
    mass have loss 0 and count in the mean (the authors' ``classes="present"`` averages over present
    classes only: take reduction="sum" and divide by the number of present classes for that).

    Defaults: mode="multiclass", variant="jml1", smooth=1.0 (authors' code), log_loss=False,
    from_logits=True, eps=1e-7, ignore_index=-100. Source: "Jaccard Metric Losses: Optimizing the
    Jaccard Index with Soft Labels" (Wang & Blaschko 2023).
    """
    _check_common(mode, smooth, eps)
    check_choice("variant", variant, ("jml1", "jml2"))
    f = _flat_inputs(logits, target, mode=mode, ignore_index=ignore_index, mask=mask, from_logits=from_logits)
    s = _soft_stats(f, product=variant == "jml2")
    if variant == "jml1":
        card = s.p_sum + s.y_sum  # ‖x + y‖₁ for non-negative x, y
        score = (card - s.l1 + smooth) / (card + s.l1 + smooth).clamp_min(eps)
    else:
        score = (s.py + smooth) / (s.py + s.l1 + smooth).clamp_min(eps)
    terms = _overlap_terms(score, s, log_loss=log_loss, eps=eps)
    return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)


# ----------------------------------------------------------------------------------------------------
# Lovász
# ----------------------------------------------------------------------------------------------------

def _lovasz_sorted(errors: torch.Tensor, fg: torch.Tensor, keep: torch.Tensor | None,
                   hinge: bool) -> torch.Tensor:
    """Σ_k f(e_(k))·(J_k − J_{k−1}) per column: the Lovász extension of the Jaccard loss at the errors
    sorted in decreasing order (Berman et al. 2018, Alg. 1); errors, fg (M, C). Elements not kept are
    sorted last and add nothing (the same as leaving them out)."""
    if keep is not None:
        keep = keep.expand_as(errors)
        fg = torch.where(keep, fg, torch.zeros_like(fg))
        key = torch.where(keep, errors, torch.full_like(errors, -torch.inf))
    else:
        key = errors
    perm = torch.sort(key.detach(), dim=0, descending=True).indices
    e = errors.gather(0, perm)
    fg_s = fg.gather(0, perm)
    if hinge:
        e = torch.relu(e)
    if keep is not None:
        e = torch.where(keep.gather(0, perm), e, torch.zeros_like(e))
    gts = fg_s.sum(0)
    inter = gts - fg_s.cumsum(0)
    union = gts + (1 - fg_s).cumsum(0)  # >= 1 at every position
    jac = 1 - inter / union
    grad = torch.cat([jac[:1], jac[1:] - jac[:-1]], 0)
    return (e * grad).sum(0)


@register("lovasz_softmax", family=FAMILY, kind="loss", input="logits", source="anchor (smp LovaszLoss)",
          oracle="smp", tier=2, example=lovasz_example, hyper_errors={"classes": "some", "mode": "seg"})
def lovasz_softmax(logits, target, *, mode="multiclass", classes="present", ignore_index=-100, reduction="mean",
                   weight=None, mask=None):
    """Lovász-softmax per class ℓ_c = Σ_k e_c,(k)·g_k with e_c = |1[y=c] − p_c| sorted decreasingly and g the
    discrete gradient of the Jaccard loss along that order (Berman et al. 2018, Alg. 1): the Lovász
    extension of 1 − IoU_c.

    Multiclass mode: p = softmax(logits); ``classes="present"`` (Berman's and smp's default) leaves
    classes with no true pixel out of the terms (their term is 0 and does not count in the mean);
    ``classes="all"`` keeps them (their loss is then max_pixel p_c). Binary / multilabel mode: the
    Lovász hinge on the logits, errors 1 − z·(2y − 1) through ReLU, labels in {0, 1}; binary mode is one
    problem over every element (term (1,)), multilabel one per label (terms (C,)) — smp instead flattens
    multilabel inputs into one binary problem. Statistics are over the whole batch (smp's
    per_image=False; per-image is not offered). Piecewise linear in the probabilities; the sort is
    not differentiated (as in the reference code).

    Defaults: mode="multiclass", classes="present", ignore_index=-100. Source: Berman, Rannen Triki,
    Blaschko, "The Lovász-Softmax loss" (anchor: smp LovaszLoss).
    """
    check_choice("mode", mode, MODES)
    check_choice("classes", classes, ("present", "all"))
    f = _flat_inputs(logits, target, mode=mode, ignore_index=ignore_index, mask=mask, from_logits=True,
                     allow_soft=False)
    if mode == "multiclass":
        fg = f.target
        terms = _lovasz_sorted((fg - f.prob).abs(), fg, f.keep, hinge=False)
        if classes == "present":
            kept_fg = fg if f.keep is None else torch.where(f.keep, fg, torch.zeros_like(fg))
            present = kept_fg.sum(0) > 0
            return reduce_loss(terms, reduction, weight=weight, mask=present, out_dtype=f.dtype)
        return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)
    y = f.target
    if checks_enabled() and y.numel() and bool(((y != 0) & (y != 1)).any()):
        raise LossInputError("target", "hard labels in {0, 1} for the Lovász hinge", "fractional values")
    terms = _lovasz_sorted(1.0 - f.logits * (2 * y - 1), y, f.keep, hinge=True)
    return reduce_loss(terms, reduction, weight=weight, out_dtype=f.dtype)


# ----------------------------------------------------------------------------------------------------
# self-adjusting Dice (per sample)
# ----------------------------------------------------------------------------------------------------

@register("self_adjusting_dice", family=FAMILY, kind="loss", input="logits", source=DICE_NLP, oracle="formula",
          tier=1, example=token_example, hyper_errors={"alpha": -1.0, "smooth": -1.0, "mode": "seg"})
def self_adjusting_dice(logits, target, *, mode="multiclass", alpha=1.0, smooth=1.0, ignore_index=-100,
                        reduction="mean", weight=None, mask=None):
    """Self-adjusting Dice per sample ℓ_i = 1 − (2(1−p_i)^α·p_i·y_i + γ)/((1−p_i)^α·p_i + y_i + γ)
    (Li et al. 2020, the DSC loss), γ = ``smooth``.

    The factor (1 − p)^α down-weights easy examples; α = 0 is the plain per-sample soft Dice
    (2py + γ)/(p + y + γ). Binary / multilabel mode: p = sigmoid(logits), y in [0, 1], one term per
    element (the shape of ``logits``). Multiclass mode: p = softmax over dim 1, one-vs-rest for every
    class and, as in the authors' released code, the per-class losses are summed: one term per sample
    (N, *spatial), with ``ignore_index``; a multilabel pixel mask (N, *spatial) applies to every label.
    (1 − p) is computed without cancellation and floored at the
    smallest normal number so fractional α keeps a finite gradient. Unlike the set-level losses of this
    file the terms are per sample, so weight and mask are per sample too.

    Defaults: mode="multiclass", alpha=1.0 (the paper's (1 − p)·p form), smooth=1.0 (γ = 1),
    ignore_index=-100. Source: "Dice Loss for Data-imbalanced NLP Tasks".
    """
    check_choice("mode", mode, MODES)
    check_real("alpha", alpha, low=0.0)
    check_real("smooth", smooth, low=0.0)
    if mode == "multiclass":
        x = class_inputs(logits, target, ignore_index=ignore_index)
        logp = torch.log_softmax(x.logits, -1)
        p, q, y = logp.exp(), one_minus_pt(logp), x.one_hot()
        tiny = torch.finfo(p.dtype).tiny
        w = p * q ** alpha if alpha != 0 else p
        dsc = (2 * w * y + smooth) / (w + y + smooth).clamp_min(tiny)
        terms = (1 - dsc).sum(-1)
        return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                           out_dtype=x.dtype)
    z, y, keep = _binary_inputs_ignore(logits, target, mode, ignore_index)
    p = torch.sigmoid(z)
    q = torch.sigmoid(-z).clamp_min(torch.finfo(p.dtype).tiny)
    w = p * q ** alpha if alpha != 0 else p
    dsc = (2 * w * y + smooth) / (w + y + smooth).clamp_min(torch.finfo(p.dtype).tiny)
    if mode == "multilabel" and isinstance(mask, torch.Tensor) and mask.dim() == logits.dim() - 1:
        mask = mask.unsqueeze(1)  # a pixel mask (N, *spatial) applies to every label
    return reduce_loss(1 - dsc, reduction, weight=weight, mask=combine_masks(mask, keep), out_dtype=logits.dtype)


# ----------------------------------------------------------------------------------------------------
# AnyLoss
# ----------------------------------------------------------------------------------------------------

ANY_METRICS = ("accuracy", "f1", "fbeta", "gmean", "balanced_accuracy", "mcc")


@register("anyloss", family=FAMILY, kind="loss", input="logits", source=ANYLOSS, oracle="formula", tier=1,
          example=batch_binary_example,
          hyper_errors={"metric": "auc", "L": 0.0, "beta": 0.0, "eps": -1.0})
def anyloss(logits, target, *, metric="f1", L=73.0, beta=1.0, from_logits=True, eps=1e-5, reduction="mean",
            weight=None, mask=None):
    """AnyLoss ℓ = 1 − M(TP, FN, FP, TN) with A = 1/(1 + exp(−L·(p − ½))), p = sigmoid(logits), TP = Σ y·A,
    FN = Σ y·(1 − A), FP = Σ (1 − y)·A, TN = Σ (1 − y)·(1 − A) over the batch (Han et al. 2024).

    Metrics M, with n₁ = Σ y, n₀ = Σ (1 − y) and s = ``eps`` added to each denominator as in the
    authors' code: accuracy (TP + TN)/(n₁ + n₀ + s); f1 and fbeta (1 + β²)TP/(β²n₁ + ΣA + s); gmean
    TP·TN/(n₁n₀ + s), the squared G-mean TPR·TNR that the authors' code optimises (monotone in
    √(TPR·TNR), no infinite gradient at 0); balanced_accuracy (n₀TP + n₁TN)/(2n₁n₀ + s); mcc
    (TP·TN − FP·FN)/(√((TP+FP)(TP+FN)(TN+FP)(TN+FN)) + s) (the product floored at the smallest normal
    number under the root), so ℓ ∈ [0, 2] for mcc. p − ½ = ½·tanh(z/2) and 1 − A = σ(−L(p − ½)) are
    computed without cancellation. ``from_logits=False`` takes p directly.

    Binary (N,) inputs give one batch-level term (); multi-label (N, K) inputs give one term per label
    (K,) (one-vs-rest; reduction="mean" is the macro average; assumption: the paper is binary only).
    ``mask`` is per sample, (N,) (or the shape of the inputs); a term with no kept sample is excluded.
    Targets y are in [0, 1].

    Defaults: metric="f1", L=73 (the paper's amplifying scale), beta=1, from_logits=True, eps=1e-5 (the
    authors' s). Source: "AnyLoss: Transforming Classification Metrics into Loss Functions".
    """
    check_choice("metric", metric, ANY_METRICS)
    check_real("L", L, low=0.0, low_inclusive=False)
    check_real("beta", beta, low=0.0, low_inclusive=False)
    check_real("eps", eps, low=0.0, low_inclusive=False)
    check_tensor("logits", logits, ndim=(1, 2), dtype="float")
    z, y = binary_inputs(logits, target)
    if from_logits:
        u = 0.5 * torch.tanh(z / 2)           # p − ½
    else:
        _check_probabilities("logits", z)
        u = z - 0.5
    a, a_bar = torch.sigmoid(L * u), torch.sigmoid(-L * u)
    keep = None
    if mask is not None:
        check_tensor("mask", mask, dtype="bool")
        if z.dim() == 2 and mask.dim() == 1:
            mask = mask.unsqueeze(1)
        keep = _check_mask(mask, z.shape, "the samples (N,) or the inputs")
        zero = z.new_zeros(())
        a, a_bar = torch.where(keep, a, zero), torch.where(keep, a_bar, zero)
        y_bar = torch.where(keep, 1 - y, zero)
        y = torch.where(keep, y, zero)
    else:
        y_bar = 1 - y
    tp, fn = (y * a).sum(0), (y * a_bar).sum(0)
    fp, tn = (y_bar * a).sum(0), (y_bar * a_bar).sum(0)
    n1, n0 = y.sum(0), y_bar.sum(0)
    if metric == "accuracy":
        m = (tp + tn) / (n1 + n0 + eps)
    elif metric in ("f1", "fbeta"):
        b2 = 1.0 if metric == "f1" else float(beta) ** 2
        m = (1 + b2) * tp / (b2 * n1 + (tp + fp) + eps)
    elif metric == "gmean":
        m = tp * tn / (n1 * n0 + eps)
    elif metric == "balanced_accuracy":
        m = (n0 * tp + n1 * tn) / (2 * n1 * n0 + eps)
    else:  # mcc
        prod = (tp + fp) * n1 * n0 * (tn + fn)
        m = (tp * tn - fp * fn) / (torch.sqrt(prod.clamp_min(torch.finfo(prod.dtype).tiny)) + eps)
    terms = 1 - m
    kept = None if keep is None else keep.any(0)
    return reduce_loss(terms, reduction, weight=weight, mask=kept, out_dtype=logits.dtype)
