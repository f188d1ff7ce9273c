"""Long-tail corrections of cross-entropy: logit adjustment and balanced softmax."""
from __future__ import annotations

import torch

from ..checks import check_real
from ..errors import LossInputError
from ..inputs import class_inputs
from ..registry import register
from ._common import FAMILY, class_vector, hard_example
from .cross_entropy import cross_entropy

__all__ = ["logit_adjusted_ce", "balanced_softmax"]


def _per_class(ex):
    """A long-tailed per-class vector matching an example's class count (for the generic tests)."""
    c = ex.inputs["logits"].shape[1]
    return torch.logspace(0, 1.5, c)


def _adjusted(logits, target, vector_name, vector, shift_scale, ignore_index, **ce):
    if vector is None:
        raise LossInputError(vector_name, "a tensor with one value per class", "None")
    x = class_inputs(logits, target, ignore_index=ignore_index)  # validates before broadcasting
    v = class_vector(vector_name, vector, x.num_classes, x, positive=True)
    shape = (1, -1) + (1,) * (logits.dim() - 2)
    adjusted = logits.to(x.logits.dtype) + shift_scale * torch.log(v).reshape(shape)
    out = cross_entropy(adjusted, target, ignore_index=ignore_index, **ce)
    return out.to(logits.dtype)


@register("logit_adjusted_ce", family=FAMILY, kind="loss", input="logits",
          source="anchor (long-tail literature)", oracle="formula", tier=2, example=hard_example,
          hyper_errors={"tau": -1.0}, test_hyper={"prior": _per_class})
def logit_adjusted_ce(logits, target, *, prior=None, tau=1.0, ignore_index=-100, reduction="mean", weight=None,
                      mask=None):
    """Logit-adjusted cross-entropy ℓ = −log softmax(z + τ·log π)_y (Menon et al., ICLR 2021).

    π (C,) is the training label prior (class frequencies; counts work too, a constant factor cancels in
    the softmax). Training with the adjusted logits and predicting with the raw ones targets the
    balanced error. τ = 0 is plain CE. Defaults: prior=None (required), tau=1.0, ignore_index=-100.
    Source: Menon et al., "Long-tail learning via logit adjustment".
    """
    check_real("tau", tau, low=0.0)
    return _adjusted(logits, target, "prior", prior, float(tau), ignore_index, reduction=reduction, weight=weight,
                     mask=mask)


@register("balanced_softmax", family=FAMILY, kind="loss", input="logits", source="anchor", oracle="formula",
          tier=2, example=hard_example, test_hyper={"class_counts": _per_class})
def balanced_softmax(logits, target, *, class_counts=None, ignore_index=-100, reduction="mean", weight=None,
                     mask=None):
    """Balanced softmax ℓ = −log( n_y·e^{z_y} / Σ_c n_c·e^{z_c} ) = CE(z + log n, y) (Ren et al., NeurIPS 2020).

    n (C,) holds the training class counts (strictly positive). It is logit adjustment with τ = 1,
    derived as the likelihood under the shift between the long-tailed training and the balanced test
    label distribution. Defaults: class_counts=None (required), ignore_index=-100. Source: Ren et al.,
    "Balanced Meta-Softmax for Long-Tailed Visual Recognition".
    """
    return _adjusted(logits, target, "class_counts", class_counts, 1.0, ignore_index, reduction=reduction,
                     weight=weight, mask=mask)
