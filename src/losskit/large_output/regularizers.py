"""Logit regularisers: PaLM / ST-MoE's z-loss λ·(log Z)²."""
from __future__ import annotations

import torch

from ..checks import check_finite, check_real, check_tensor
from ..examples import logits_example
from ..reduce import combine_masks, compute_dtype, reduce_loss
from ..registry import Example, register

__all__ = ["logit_z_regularizer"]


def _example(size="small", seed=0, variant="normal") -> Example:
    ex = logits_example(size, seed, variant)
    ex.inputs = {"logits": ex.inputs["logits"]}
    ex.batch = ("logits",)
    ex.bad = [(a, {"logits": i["logits"]}) for a, i in ex.bad if a == "logits"]
    return ex


@register("logit_z_regularizer", family="large_output", kind="loss", input="logits", source="anchor",
          oracle="formula", tier=1, example=_example, hyper_errors={"coefficient": -1e-4})
def logit_z_regularizer(logits, *, coefficient=1e-4, reduction="mean", weight=None, mask=None):
    """Auxiliary z-loss ℓ = λ·(log Z)², log Z = logsumexp of the logits over the last dim.

    Pushes the softmax normaliser towards 1 (log Z → 0), which keeps logits from drifting and stabilises
    bf16 training of large models. Terms have the logits' leading shape ((N,) or (B, T)); use ``mask`` for
    padding. Not the spherical Z-loss (:func:`z_loss_spherical`).

    Defaults: coefficient λ=1e-4 (PaLM; ST-MoE uses 1e-3 on router logits). Source: anchor (Chowdhery et
    al., "PaLM"; Zoph et al., "ST-MoE").
    """
    check_tensor("logits", logits, min_ndim=2, dtype="float")
    check_real("coefficient", coefficient, low=0.0)
    check_finite("logits", logits)
    lse = torch.logsumexp(logits.to(compute_dtype(logits)), -1)
    return reduce_loss(coefficient * lse * lse, reduction, weight=weight, mask=combine_masks(mask),
                       out_dtype=logits.dtype)
