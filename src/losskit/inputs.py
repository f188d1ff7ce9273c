"""Validation and normalisation of the common input kinds, shared by every family.

``class_inputs`` turns ``logits`` of shape (N, C) or (N, C, d1, ...) and a target of class indices
(N,) / (N, d1, ...) or of class probabilities (same shape as ``logits``) into flat (M, C) logits in
the computation dtype, a gather-safe target, and the mask of positions that are not
``ignore_index``. Terms are computed on the flat view and reshaped to ``shape`` for reduction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import (check_class_target, check_finite, checks_enabled, check_probabilities, check_same_device, check_shape,
                     check_tensor)
from .errors import LossInputError
from .reduce import compute_dtype

__all__ = ["ClassInputs", "class_inputs", "binary_inputs", "flatten_classes"]


@dataclass
class ClassInputs:
    logits: torch.Tensor              # (M, C), computation dtype
    target: torch.Tensor | None       # (M,) long, ignored positions replaced by 0 (safe to gather)
    soft_target: torch.Tensor | None  # (M, C) probabilities, computation dtype
    keep: torch.Tensor | None         # (M,) bool, False where target == ignore_index; None if all kept
    shape: torch.Size                 # natural shape of the terms: (N,) or (N, d1, ...)
    dtype: torch.dtype                # dtype of the result (the logits' dtype)
    num_classes: int

    def terms(self, flat: torch.Tensor) -> torch.Tensor:
        """Reshape flat (M,) terms to their natural shape."""
        return flat.reshape(self.shape)

    def keep_mask(self) -> torch.Tensor | None:
        return None if self.keep is None else self.keep.reshape(self.shape)

    def one_hot(self) -> torch.Tensor:
        """(M, C) target distribution (one-hot of hard targets, or the soft target)."""
        if self.soft_target is not None:
            return self.soft_target
        return torch.nn.functional.one_hot(self.target, self.num_classes).to(self.logits.dtype)


def flatten_classes(x: torch.Tensor) -> torch.Tensor:
    """(N, C, d1, ...) -> (N·d1·..., C)."""
    if x.dim() == 2:
        return x
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def class_inputs(logits, target, *, ignore_index: int | None = -100, allow_soft: bool = False,
                 min_classes: int = 1, logits_name: str = "logits", target_name: str = "target") -> ClassInputs:
    check_tensor(logits_name, logits, min_ndim=2, dtype="float")
    check_tensor(target_name, target)
    check_same_device([logits_name, target_name], [logits, target])
    n, c = logits.shape[0], logits.shape[1]
    if c < min_classes:
        raise LossInputError(logits_name, f"at least {min_classes} classes along dim 1", f"{c}")
    check_finite(logits_name, logits)
    dt = compute_dtype(logits)
    flat = flatten_classes(logits).to(dt)
    natural = torch.Size((n, *logits.shape[2:]))
    if target.is_floating_point():
        if not allow_soft:
            raise LossInputError(target_name, f"integer class indices of shape {tuple(natural)}", "a float tensor "
                                 f"of shape {tuple(target.shape)} (this loss takes no soft targets)")
        check_shape(target_name, target, logits.shape, like=f"{logits_name}, for class probabilities")
        soft = flatten_classes(target).to(dt)
        check_probabilities(target_name, soft)
        return ClassInputs(flat, None, soft, None, natural, logits.dtype, c)
    if tuple(target.shape) != tuple(natural):
        if target.dim() >= 1 and target.shape[0] != n:
            raise LossInputError(target_name, f"batch size {n} (as {logits_name})",
                                 f"{target.shape[0]} in a tensor of shape {tuple(target.shape)}")
        raise LossInputError(target_name, f"class indices of shape {tuple(natural)} (as {logits_name} without "
                             f"its class dim)", f"shape {tuple(target.shape)}")
    check_class_target(target_name, target, c, ignore_index)
    t = target.reshape(-1).long()
    keep = None
    if ignore_index is not None:
        keep = t != ignore_index
        t = torch.where(keep, t, torch.zeros_like(t))
    return ClassInputs(flat, t, None, keep, natural, logits.dtype, c)


def binary_inputs(logits, target, *, logits_name: str = "logits", target_name: str = "target"):
    """Binary / multi-label inputs: ``target`` in [0, 1] with exactly the shape of ``logits``.

    Returns (logits, target) in the computation dtype.
    """
    check_tensor(logits_name, logits, min_ndim=1, dtype="float")
    check_tensor(target_name, target)
    check_same_device([logits_name, target_name], [logits, target])
    if target.shape != logits.shape:
        if target.dim() >= 1 and logits.dim() >= 1 and target.shape[0] != logits.shape[0]:
            raise LossInputError(target_name, f"batch size {logits.shape[0]} (as {logits_name})",
                                 f"{target.shape[0]}")
        check_shape(target_name, target, logits.shape, like=logits_name)
    check_finite(logits_name, logits)
    dt = compute_dtype(logits)
    t = target.to(dt)
    if checks_enabled() and t.numel() and bool(((t < 0) | (t > 1)).any()):
        raise LossInputError(target_name, "binary targets in [0, 1]", "values outside [0, 1]")
    return logits.to(dt), t
