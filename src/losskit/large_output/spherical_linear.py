"""The spherical Z-loss of o = W·h computed from h, Wᵀ1 and WᵀW, never forming the V outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_real, check_shape, check_tensor
from ..errors import LossInputError
from ..examples import hidden_weight_example
from ..reduce import combine_masks, compute_dtype, reduce_loss
from ..registry import register
from .linear_ce import classifier_rows

__all__ = ["z_loss_spherical_linear", "spherical_statistics"]

SOURCE = "The Z-loss: a shift and scale invariant classification loss belonging to the Spherical Family"


def spherical_statistics(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wᵀ1, WᵀW): the D-vector and D×D matrix that give Σ_k o_k = h·Wᵀ1 and Σ_k o_k² = hᵀWᵀWh."""
    w = weight.to(compute_dtype(weight))
    return w.sum(0), w.t() @ w


@register("z_loss_spherical_linear", family="large_output", kind="loss", input="hidden+W", source=SOURCE,
          oracle="formula", tier=2, example=hidden_weight_example, hyper_errors={"a": -1.0}, term_weight_name="weight_per_token")
def z_loss_spherical_linear(hidden, weight, target, *, a=1.0, b=2.0, column_sum=None, gram=None,
                            ignore_index=-100, eps=1e-12, reduction="mean", mask=None, weight_per_token=None):
    """Spherical Z-loss of o = W·h from O(D²) statistics per example (de Brébisson & Vincent 2016).

    With S1 = h·(Wᵀ1), S2 = hᵀ(WᵀW)h and o_y = w_y·h: μ = S1/V, σ² = S2/V − μ², z_y = (o_y − μ)/σ,
    ℓ = (1/a)·softplus(a·(b − z_y)): the same value as :func:`z_loss_spherical` on the logits, at
    O(D²) per example instead of O(V·D). ``column_sum`` (D,) and ``gram`` (D, D) may be passed when
    cached across steps (their gradient then flows only if they carry one); by default they are computed
    from ``weight`` (O(V·D²) once per call, exact gradients). The factored O(D²) weight update of
    Vincent et al. (2015) that makes training output-size independent is not implemented: the weight's
    gradient is formed densely by autograd. σ² is floored at ``eps``.

    Defaults: a=1, b=2 (assumed, as for z_loss_spherical), eps=1e-12, ignore_index=-100.
    Source: "The Z-loss: a shift and scale invariant classification loss belonging to the Spherical Family".
    """
    check_real("a", a, low=0.0, low_inclusive=False)
    check_real("b", b)
    h, y, shape, keep = classifier_rows(hidden, weight, target, ignore_index=ignore_index)
    v, d = weight.shape
    acc = compute_dtype(h)
    if column_sum is None or gram is None:
        col, gr = spherical_statistics(weight)
    if column_sum is not None:
        check_tensor("column_sum", column_sum, ndim=1, dtype="float")
        check_shape("column_sum", column_sum, (d,))
        col = column_sum.to(acc)
    if gram is not None:
        check_tensor("gram", gram, ndim=2, dtype="float")
        check_shape("gram", gram, (d, d))
        gr = gram.to(acc)
    if v < 2:
        raise LossInputError("weight", "at least 2 classes", f"{v}")
    y_safe = torch.where(keep, y, torch.zeros_like(y))
    hf = h.to(acc)
    s1 = hf @ col
    s2 = ((hf @ gr) * hf).sum(1)
    o_y = (hf * weight.to(acc).index_select(0, y_safe)).sum(1)
    mu = s1 / v
    var = (s2 / v - mu * mu).clamp_min(0) + eps
    z = (o_y - mu) / torch.sqrt(var)
    terms = F.softplus(a * (b - z)) / a
    return reduce_loss(terms.reshape(shape), reduction, weight=weight_per_token,
                       mask=combine_masks(mask, keep.reshape(shape)), out_dtype=hidden.dtype,
                       weight_name="weight_per_token")
