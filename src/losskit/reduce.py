"""The one implementation of ``reduction``, ``weight``, ``mask`` and the empty case.

Every loss computes its *terms* (one value per sample, token, pixel, pair, class ...) and hands them
here. The semantics, identical for every loss:

* ``"none"``: the terms with their natural shape, times ``weight``; terms excluded by ``mask`` (or
  by ``ignore_index``) are 0.
* ``"sum"``: Σ mask·w·ℓ.
* ``"mean"``: Σ mask·w·ℓ / Σ mask·w·n, the weighted mean over kept terms. ``n`` is a per-term
  normaliser a loss may pass (class-weighted cross-entropy divides by Σ w[y], as torch does);
  it is 1 otherwise.
* A selection with no kept term (all masked, all ignored, an empty batch) gives a zero that is still
  connected to the graph: ``backward()`` works and yields zero gradients, never NaN.

Terms arrive in the computation dtype (float32 for float16/bfloat16 inputs); the sums accumulate
there and the result is cast to ``out_dtype`` (the input dtype).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .checks import check_broadcastable, check_choice, check_finite, check_tensor, checks_enabled
from .errors import LossInputError

__all__ = ["REDUCTIONS", "LossComponents", "reduce_terms", "reduce_loss", "combine_masks", "compute_dtype",
           "check_term_weight"]

REDUCTIONS = ("mean", "sum", "none")


class LossComponents(NamedTuple):
    """A multi-term loss's result with ``return_components=True``: the total and its named parts,
    each reduced the same way as the total (so parts of a "mean" loss add up to the total)."""

    loss: torch.Tensor
    components: dict[str, torch.Tensor]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other floating dtype computes in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the masks that are given, or None if none is.

    The first mask is the caller's ``mask`` argument: it must be bool and broadcast to the others.
    """
    out = None
    for m in masks:
        if m is None:
            continue
        if out is None:
            check_tensor("mask", m, dtype="bool")
            out = m
            continue
        try:
            shape = torch.broadcast_shapes(out.shape, m.shape)
        except RuntimeError:
            shape = None
        if shape != m.shape:
            raise LossInputError("mask", f"a bool tensor broadcastable to the terms of shape {tuple(m.shape)}",
                                 f"shape {tuple(out.shape)}")
        out = out & m
    return out


def check_term_weight(weight, shape, name: str = "weight") -> torch.Tensor:
    check_tensor(name, weight, dtype="float")
    check_broadcastable(name, weight, shape)
    if checks_enabled() and weight.numel():
        check_finite(name, weight)
        if bool((weight < 0).any()):
            raise LossInputError(name, "non-negative per-term weights", "negative entries")
    return weight


def _check_mask(mask, shape) -> torch.Tensor:
    check_tensor("mask", mask, dtype="bool")
    check_broadcastable("mask", mask, shape)
    return mask


def reduce_terms(terms: torch.Tensor, reduction: str = "mean", *, weight: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, norm: torch.Tensor | None = None,
                 out_dtype: torch.dtype | None = None, validate: bool = True) -> torch.Tensor:
    """Reduce loss terms under the shared contract (see the module docstring).

    ``weight`` and ``mask`` must broadcast to ``terms.shape`` without enlarging it. ``validate=False``
    is for internal callers that pass masks they built themselves.
    """
    if validate:
        check_choice("reduction", reduction, REDUCTIONS)
        if weight is not None:
            weight = check_term_weight(weight, terms.shape)
        if mask is not None:
            mask = _check_mask(mask, terms.shape)
    if weight is not None:
        weight = weight.to(terms.dtype)
    out_dtype = out_dtype or terms.dtype
    if mask is not None:
        # where(), not a product: terms at masked positions may hold anything finite or not
        kept = torch.where(mask, terms, terms.new_zeros(()))
    else:
        kept = terms
    weighted = kept if weight is None else kept * weight
    if reduction == "none":
        return weighted.to(out_dtype)
    total = weighted.sum()
    if reduction == "sum":
        return total.to(out_dtype)
    # mean: Σ mask·w·ℓ / Σ mask·w·n
    den = torch.ones((), dtype=terms.dtype, device=terms.device)
    den = den.expand(terms.shape)
    if norm is not None:
        den = den * norm.to(terms.dtype)
    if weight is not None:
        den = den * weight
    if mask is not None:
        den = torch.where(mask, den, den.new_zeros(()))
    den = den.sum()
    # an empty selection: total is an exact, graph-connected 0 and den is 0 -> 0 / 1
    den = torch.where(den == 0, torch.ones_like(den), den)
    return (total / den).to(out_dtype)


def reduce_loss(terms: torch.Tensor, reduction: str = "mean", *, weight=None, mask=None, norm=None,
                out_dtype=None, components: dict[str, torch.Tensor] | None = None,
                return_components: bool = False, weight_name: str = "weight"):
    """:func:`reduce_terms` for the total, and, when ``return_components``, for each named part.

    ``weight_name`` is how errors call the per-term weight (losses whose classifier is ``weight``
    take ``weight_per_token``)."""
    check_choice("reduction", reduction, REDUCTIONS)
    if weight is not None:
        weight = check_term_weight(weight, terms.shape, weight_name)
    if mask is not None:
        mask = _check_mask(mask, terms.shape)
    total = reduce_terms(terms, reduction, weight=weight, mask=mask, norm=norm, out_dtype=out_dtype,
                         validate=False)
    if not return_components:
        return total
    parts = {name: reduce_terms(t.expand(terms.shape) if t.dim() == 0 else t, reduction, weight=weight,
                                mask=mask, norm=norm, out_dtype=out_dtype, validate=False)
             for name, t in (components or {}).items()}
    return LossComponents(total, parts)
