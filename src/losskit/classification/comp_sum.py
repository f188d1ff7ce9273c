"""The comp-sum family Φ^τ (Mao, Mohri, Zhong) and its GCE preset."""
from __future__ import annotations

import torch

from ..checks import check_real
from ..inputs import class_inputs
from ..reduce import combine_masks, reduce_loss
from ..registry import register
from ._common import FAMILY, hard_example, target_log_prob

__all__ = ["comp_sum", "gce"]

SOURCE = "Cross-Entropy Loss Functions: Theoretical Analysis and Applications"


def _comp_sum_terms(log_pt: torch.Tensor, tau: float) -> torch.Tensor:
    if tau == 1:
        return -log_pt
    # ((1 + u)^{1−τ} − 1)/(1 − τ) with 1 + u = 1/p_t  ->  expm1((τ − 1)·log p_t)/(1 − τ)
    return torch.expm1((tau - 1) * log_pt) / (1 - tau)


@register("comp_sum", family=FAMILY, kind="loss", input="logits", source=SOURCE, oracle="formula (+ tau=1 equals torch CE)",
          tier=1, example=hard_example, hyper_errors={"tau": -0.5}, test_hyper={"tau": 1.5})
def comp_sum(logits, target, *, tau=1.0, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Comp-sum loss Φ^τ(u) with u = Σ_{y'≠y} exp(z_{y'} − z_y) = 1/p_y − 1 (Mao et al. 2023, eq. 2).

    ℓ_τ = ((1 + u)^{1−τ} − 1)/(1 − τ) for τ ≠ 1 and log(1 + u) for τ = 1; computed as
    expm1((τ − 1)·log p_y)/(1 − τ). τ = 0: sum-exponential loss 1/p_y − 1; τ = 1: cross-entropy;
    τ ∈ (1, 2): generalized CE with q = τ − 1; τ = 2: 1 − p_y (MAE up to a factor 2).
    For τ < 1 the loss grows like p_y^{τ−1} and overflows for very confident mistakes (logit gaps of
    thousands); τ ≥ 1 is bounded by CE.

    Defaults: tau=1.0, ignore_index=-100. Source: "Cross-Entropy Loss Functions: Theoretical Analysis
    and Applications" (Mao, Mohri, Zhong, ICML 2023).
    """
    check_real("tau", tau, low=0.0)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    terms = _comp_sum_terms(target_log_prob(x, torch.log_softmax(x.logits, -1)), float(tau))
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)


@register("gce", family=FAMILY, kind="loss", input="logits", source=SOURCE, oracle="formula", tier=1,
          example=hard_example, hyper_errors={"q": 0.0})
def gce(logits, target, *, q=0.7, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Generalized cross-entropy ℓ = (1 − p_y^q)/q (Zhang & Sabuncu 2018), the comp-sum loss with τ = 1 + q.

    q → 0 recovers cross-entropy, q = 1 is 1 − p_y (MAE up to a factor 2). Computed as
    −expm1(q·log p_y)/q. Defaults: q=0.7 (Zhang & Sabuncu's choice), ignore_index=-100.
    Source: "Cross-Entropy Loss Functions: Theoretical Analysis and Applications" (as the τ∈(1,2)
    member of the comp-sum family); Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
    Neural Networks with Noisy Labels".
    """
    check_real("q", q, low=0.0, high=1.0, low_inclusive=False)
    x = class_inputs(logits, target, ignore_index=ignore_index)
    terms = _comp_sum_terms(target_log_prob(x, torch.log_softmax(x.logits, -1)), 1.0 + float(q))
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)
