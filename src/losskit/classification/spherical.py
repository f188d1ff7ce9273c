"""The Z-loss of the spherical family (de Brébisson & Vincent 2016), on logits.

Not the PaLM / ST-MoE "z-loss" λ·(log Z)² (that is ``logit_z_regularizer`` in the large-output family).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_real
from ..inputs import class_inputs
from ..reduce import combine_masks, reduce_loss
from ..registry import register
from ._common import FAMILY, hard_example

__all__ = ["z_loss_spherical", "z_scores"]

SOURCE = "The Z-loss: a shift and scale invariant classification loss belonging to the Spherical Family"


def z_scores(logits: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(o − μ)/σ along the last dim, σ the population standard deviation (σ² floored by ``eps``)."""
    mu = logits.mean(-1, keepdim=True)
    centred = logits - mu
    var = (centred * centred).mean(-1, keepdim=True)
    return centred / torch.sqrt(var + eps)


@register("z_loss_spherical", family=FAMILY, kind="loss", input="logits", source=SOURCE, oracle="formula",
          tier=1, example=hard_example, hyper_errors={"a": 0.0})
def z_loss_spherical(logits, target, *, a=1.0, b=2.0, ignore_index=-100, reduction="mean", weight=None,
                     mask=None):
    """Spherical Z-loss ℓ = (1/a)·softplus(a·(b − z_y)), z_y = (o_y − μ)/σ (de Brébisson & Vincent 2016).

    μ and σ are the mean and population standard deviation of the C outputs, so the loss is invariant
    to shifting and scaling the logits; it depends on o only through o_y, Σ_k o_k and Σ_k o_k², which
    is what makes the output-size-independent training of the spherical family possible
    (``z_loss_spherical_linear``). a sets the sharpness, b the target z-score (at most √(C − 1)).
    The paper tunes a and b per task and gives no universal default: a=1, b=2 here are assumptions.
    σ² is floored at 1e-12 so equal logits give z = 0 instead of 0/0.

    Defaults: a=1.0, b=2.0, ignore_index=-100. Source: "The Z-loss: a shift and scale invariant
    classification loss belonging to the Spherical Family".
    """
    check_real("a", a, low=0.0, low_inclusive=False)
    check_real("b", b)
    x = class_inputs(logits, target, ignore_index=ignore_index, min_classes=2)
    z_y = z_scores(x.logits).gather(-1, x.target[:, None]).squeeze(-1)
    terms = F.softplus(a * (b - z_y)) / a
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)
