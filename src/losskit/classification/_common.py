"""Pieces shared by the classification losses (not a public module)."""
from __future__ import annotations

import functools

import torch

from ..checks import check_shape, check_tensor, checks_enabled
from ..errors import LossInputError
from ..examples import logits_example
from ..inputs import ClassInputs

FAMILY = "classification"

# example factories of this family
hard_example = functools.partial(logits_example, ignore_index=-100)
hard_or_soft_example = hard_example
plain_example = logits_example


def target_log_prob(x: ClassInputs, logp: torch.Tensor) -> torch.Tensor:
    """log p_t: the log-probability of the target class, or Σ_c q_c log p_c for soft targets q."""
    if x.soft_target is not None:
        return (x.soft_target * logp).sum(-1)
    return logp.gather(-1, x.target[:, None]).squeeze(-1)


def target_prob(x: ClassInputs, logp: torch.Tensor) -> torch.Tensor:
    """p_t: the probability of the target class, or Σ_c q_c p_c for soft targets q."""
    if x.soft_target is not None:
        return (x.soft_target * logp.exp()).sum(-1)
    return target_log_prob(x, logp).exp()


def one_minus_pt(log_pt: torch.Tensor) -> torch.Tensor:
    """1 − p_t from log p_t without cancellation (−expm1), floored at the smallest normal number so that
    fractional powers keep a finite gradient where p_t rounds to 1 (the true gradient is ~0 there)."""
    return (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)


def class_vector(name: str, value, num_classes: int, x: ClassInputs, *, positive: bool = False,
                 nonnegative: bool = True) -> torch.Tensor:
    """A per-class hyperparameter (class weights, priors, counts) of shape (C,), in the compute dtype."""
    check_tensor(name, value, ndim=1, dtype="float")
    check_shape(name, value, (num_classes,), like="one value per class")
    v = value.to(device=x.logits.device, dtype=x.logits.dtype)
    if checks_enabled() and v.numel():
        if positive and not bool((v > 0).all()):
            raise LossInputError(name, "strictly positive values per class", "a zero or negative entry")
        if nonnegative and not bool((v >= 0).all()):
            raise LossInputError(name, "non-negative values per class", "a negative entry")
    return v
