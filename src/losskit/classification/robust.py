"""Noise-robust losses: normalized losses and active-passive combinations (Ma et al. 2020), and the
symmetric cross-entropy (Wang et al. 2019; as a two-distribution consistency loss in RMT)."""
from __future__ import annotations

import torch

from ..checks import check_choice, check_real
from ..inputs import class_inputs
from ..reduce import combine_masks, reduce_loss
from ..registry import register
from ._common import FAMILY, hard_example, one_minus_pt, target_log_prob

__all__ = ["nce", "nfl", "rce", "mae", "apl", "symmetric_ce"]

APL = "Normalized Loss Functions for Deep Learning with Noisy Labels"


def _terms(name, x, logp, *, gamma=0.5, log_zero=-4.0):
    """Per-sample terms of the named active or passive loss."""
    log_pt = target_log_prob(x, logp)
    if name == "nce":
        return (-log_pt) / (-logp).sum(-1)
    if name == "nfl":
        fl_all = -(one_minus_pt(logp) ** gamma) * logp
        return -(one_minus_pt(log_pt) ** gamma) * log_pt / fl_all.sum(-1)
    if name == "rce":
        return _rce(x, logp, log_zero)
    if name == "mae":
        return 2.0 * one_minus_pt(log_pt)
    if name == "ce":
        return -log_pt
    raise AssertionError(name)


def _rce(x, logp, log_zero):
    """−Σ_k p_k·log q_k with log q_k floored at A = log_zero (so log 0 := A)."""
    p = logp.exp()
    if x.soft_target is None:
        # one-hot q: log q_y = 0, log q_k = A elsewhere  ->  −A·(1 − p_y)
        return -log_zero * one_minus_pt(target_log_prob(x, logp))
    log_q = torch.log(x.soft_target).clamp_min(log_zero)
    return -(p * log_q).sum(-1)


def _reduce(x, terms, reduction, weight, mask, components=None, return_components=False):
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype, components={k: x.terms(v) for k, v in (components or {}).items()},
                       return_components=return_components)


@register("nce", family=FAMILY, kind="loss", input="logits", source=APL, oracle="formula", tier=1,
          example=hard_example)
def nce(logits, target, *, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Normalized cross-entropy ℓ = −log p_y / Σ_k (−log p_k), in [0, 1] (Ma et al. 2020, eq. 4).

    Robust to symmetric label noise (it is a normalized loss) but underfits alone: pair it with a
    passive loss in :func:`apl`. Defaults: ignore_index=-100. Source: "Normalized Loss Functions for
    Deep Learning with Noisy Labels".
    """
    x = class_inputs(logits, target, ignore_index=ignore_index)
    return _reduce(x, _terms("nce", x, torch.log_softmax(x.logits, -1)), reduction, weight, mask)


@register("nfl", family=FAMILY, kind="loss", input="logits", source=APL, oracle="formula", tier=1,
          example=hard_example, hyper_errors={"gamma": -1.0})
def nfl(logits, target, *, gamma=0.5, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Normalized focal loss ℓ = FL(p_y) / Σ_k FL(p_k), FL(p) = −(1 − p)^γ·log p (Ma et al. 2020).

    Defaults: gamma=0.5 (the paper's choice for NFL), ignore_index=-100. Source: "Normalized Loss
    Functions for Deep Learning with Noisy Labels".
    """
    check_real("gamma", gamma, low=0.0)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    return _reduce(x, _terms("nfl", x, torch.log_softmax(x.logits, -1), gamma=gamma), reduction, weight, mask)


@register("rce", family=FAMILY, kind="loss", input="logits", source=APL, oracle="formula", tier=1,
          example=hard_example, hyper_errors={"log_zero": 1.0})
def rce(logits, target, *, log_zero=-4.0, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Reverse cross-entropy ℓ = −Σ_k p_k·log q_k with log 0 := A, i.e. −A·(1 − p_y) for hard labels.

    A = ``log_zero`` < 0. Wang et al. (SCE) and Ma et al. state A = −4; Ma et al.'s released code
    clamps q at 1e-4, i.e. A = log 1e-4 ≈ −9.21: pass ``log_zero=math.log(1e-4)`` for that. Soft targets
    q are accepted (log q floored at A). Defaults: log_zero=−4, ignore_index=-100.
    Source: "Normalized Loss Functions for Deep Learning with Noisy Labels" (passive loss).
    """
    check_real("log_zero", log_zero, high=0.0, high_inclusive=False)
    x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=True)
    return _reduce(x, _rce(x, torch.log_softmax(x.logits, -1), log_zero), reduction, weight, mask)


@register("mae", family=FAMILY, kind="loss", input="logits", source=APL, oracle="formula", tier=1,
          example=hard_example)
def mae(logits, target, *, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Mean absolute error between softmax probabilities and the one-hot label: Σ_k |p_k − e_{y,k}| = 2(1 − p_y).

    Symmetric, hence noise-tolerant (Ghosh et al. 2017), but slow to fit. Defaults: ignore_index=-100.
    Source: "Normalized Loss Functions for Deep Learning with Noisy Labels" (passive loss).
    """
    x = class_inputs(logits, target, ignore_index=ignore_index)
    return _reduce(x, _terms("mae", x, torch.log_softmax(x.logits, -1)), reduction, weight, mask)


@register("apl", family=FAMILY, kind="loss", input="logits", source=APL, oracle="formula", tier=1,
          example=hard_example, multi_term=True, hyper_errors={"active": "mae", "alpha": -1.0})
def apl(logits, target, *, active="nce", passive="rce", alpha=1.0, beta=1.0, gamma=0.5, log_zero=-4.0,
        ignore_index=-100, reduction="mean", weight=None, mask=None, return_components=False):
    """Active-passive loss ℓ = α·active + β·passive (Ma et al. 2020, eq. 8).

    active ∈ {"nce", "nfl", "ce"}, passive ∈ {"rce", "mae"}: NCE+RCE (default), NCE+MAE, NFL+RCE,
    NFL+MAE. ``gamma`` is NFL's γ, ``log_zero`` RCE's A. Components are named after the two parts.

    Defaults: active="nce", passive="rce", alpha=1, beta=1 (the paper's CIFAR-10 setting; CIFAR-100
    uses α=10, β=0.1), gamma=0.5, log_zero=−4. Source: "Normalized Loss Functions for Deep Learning
    with Noisy Labels".
    """
    check_choice("active", active, ("nce", "nfl", "ce"))
    check_choice("passive", passive, ("rce", "mae"))
    check_real("alpha", alpha, low=0.0)
    check_real("beta", beta, low=0.0)
    check_real("gamma", gamma, low=0.0)
    check_real("log_zero", log_zero, high=0.0, high_inclusive=False)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    logp = torch.log_softmax(x.logits, -1)
    a = _terms(active, x, logp, gamma=gamma)
    p = _terms(passive, x, logp, log_zero=log_zero)
    return _reduce(x, alpha * a + beta * p, reduction, weight, mask, {active: alpha * a, passive: beta * p},
                   return_components)


@register("symmetric_ce", family=FAMILY, kind="loss", input="logits",
          source="Robust Mean Teacher for Continual and Gradual Test-Time Adaptation", oracle="formula", tier=1,
          example=hard_example, multi_term=True, hyper_errors={"alpha": -0.1})
def symmetric_ce(logits, target, *, alpha=0.1, beta=1.0, log_zero=-4.0, ignore_index=-100, reduction="mean",
                 weight=None, mask=None, return_components=False):
    """Symmetric cross-entropy ℓ = α·CE(q, p) + β·RCE(q, p) = −α·Σ q·log p − β·Σ p·log q.

    q is the label (one-hot: RCE = −A·(1 − p_y) with log 0 := A = ``log_zero``) or a distribution, e.g.
    an EMA teacher's softmax: with α = β = ½ and soft q this is the symmetric cross-entropy consistency
    loss of Robust Mean Teacher, −½[Σ q log p + Σ p log q] (log q floored at A). Components ``ce``, ``rce``.

    Defaults: alpha=0.1, beta=1.0 (Wang et al. 2019, CIFAR-10), log_zero=−4. Sources: Wang et al.,
    "Symmetric Cross Entropy for Robust Learning with Noisy Labels"; "Robust Mean Teacher for Continual
    and Gradual Test-Time Adaptation".
    """
    check_real("alpha", alpha, low=0.0)
    check_real("beta", beta, low=0.0)
    check_real("log_zero", log_zero, high=0.0, high_inclusive=False)
    x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=True)
    logp = torch.log_softmax(x.logits, -1)
    ce = -target_log_prob(x, logp)
    rce_terms = _rce(x, logp, log_zero)
    return _reduce(x, alpha * ce + beta * rce_terms, reduction, weight, mask,
                   {"ce": alpha * ce, "rce": beta * rce_terms}, return_components)
