"""Validation helpers shared by every loss.

Structural checks (ranks, shapes, dtypes, hyperparameter ranges) cost O(1) Python work and always
run. Data-dependent checks (finite values, class-index ranges, non-negative weights) need one cheap
reduction over a tensor, which on an accelerator is a host synchronisation; ``set_checks(False)``
skips them for speed once a pipeline is known to be sound.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch

from .errors import LossInputError

__all__ = [
    "set_checks", "checks_enabled", "checks", "describe", "check_tensor", "check_floating",
    "check_finite", "check_same_batch", "check_shape", "check_class_target", "check_probabilities",
    "check_real", "check_choice", "check_broadcastable", "check_same_device", "check_feature_dim",
]

_CHECKS = True


def set_checks(enabled: bool) -> None:
    """Turn the data-dependent input checks on or off, process-wide (structural checks stay on)."""
    global _CHECKS
    _CHECKS = bool(enabled)


def checks_enabled() -> bool:
    return _CHECKS


@contextlib.contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_checks`."""
    previous = _CHECKS
    set_checks(enabled)
    try:
        yield
    finally:
        set_checks(previous)


def describe(x) -> str:
    """A short description of a value for error messages."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    if x is None:
        return "None"
    return f"{type(x).__name__} {x!r}"


def check_tensor(name: str, x, *, ndim: int | Sequence[int] | None = None, min_ndim: int | None = None,
                 dtype: str | None = None) -> torch.Tensor:
    """``x`` is a tensor of the given rank; ``dtype`` is "float", "int" or "bool" when given."""
    if not isinstance(x, torch.Tensor):
        raise LossInputError(name, "a torch.Tensor", describe(x))
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise LossInputError(name, f"a tensor with {want} dimensions", describe(x))
    if min_ndim is not None and x.dim() < min_ndim:
        raise LossInputError(name, f"a tensor with at least {min_ndim} dimensions", describe(x))
    if dtype == "float" and not x.is_floating_point():
        raise LossInputError(name, "a floating-point tensor", describe(x))
    if dtype == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise LossInputError(name, "an integer tensor of class indices", describe(x))
    if dtype == "bool" and x.dtype != torch.bool:
        raise LossInputError(name, "a bool tensor (True = keep)", describe(x))
    return x


def check_floating(name: str, x, **kw) -> torch.Tensor:
    return check_tensor(name, x, dtype="float", **kw)


def check_finite(name: str, x: torch.Tensor) -> None:
    """Data-dependent: every entry is finite (skipped when checks are off).

    A finite sum proves every entry finite (NaN and ±inf propagate), and one vectorised sum costs a
    fraction of ``isfinite(x).all()`` (0.3 ms against 5.9 ms for 4096×1000 on 2 CPU threads); only a
    non-finite sum, which finite inputs can also give by overflow, pays for the exact test.
    """
    if not _CHECKS or not x.numel():
        return
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    if bool(torch.isfinite(x.detach().sum(dtype=acc))):
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise LossInputError(name, "finite values", f"{bad} non-finite entries (NaN or inf) in {describe(x)}")


def check_same_batch(names: Iterable[str], tensors: Iterable[torch.Tensor], dim: int = 0) -> None:
    """All tensors have the same size along ``dim`` (the batch dimension by default)."""
    names, tensors = list(names), list(tensors)
    sizes = [t.shape[dim] for t in tensors]
    if len(set(sizes)) > 1:
        raise LossInputError(names[1], f"batch size {sizes[0]} (as {names[0]})",
                             f"{sizes[1]}: " + ", ".join(f"{n}={s}" for n, s in zip(names, sizes)))


def check_shape(name: str, x: torch.Tensor, shape: Sequence[int], like: str | None = None) -> None:
    """``x`` has exactly ``shape`` (no silent broadcasting)."""
    if tuple(x.shape) != tuple(shape):
        want = f"shape {tuple(shape)}" + (f" (as {like})" if like else "")
        raise LossInputError(name, want, describe(x))


def check_feature_dim(name: str, x: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """``x`` (M, D) has the feature dimension D of ``like`` (N, D) (embeddings against centres, refs...)."""
    if x.shape[-1] != like.shape[-1]:
        raise LossInputError(name, f"shape (M, {like.shape[-1]}) (D of {like_name})", f"shape {tuple(x.shape)}")


def check_class_target(name: str, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    """Integer class indices in [0, num_classes), except entries equal to ``ignore_index``."""
    check_tensor(name, target, dtype="int")
    if not _CHECKS or target.numel() == 0:
        return
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        extra = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise LossInputError(name, f"class indices in [0, {num_classes}){extra}", f"index {bad}")


def check_probabilities(name: str, p: torch.Tensor, dim: int = -1, atol: float = 1e-3) -> None:
    """Data-dependent: non-negative entries that sum to one along ``dim``."""
    if not _CHECKS or p.numel() == 0:
        return
    check_finite(name, p)
    if bool((p < 0).any()) or not bool(torch.allclose(p.float().sum(dim), torch.ones((), device=p.device),
                                                       atol=atol)):
        raise LossInputError(name, f"probabilities (non-negative, summing to 1 along dim {dim})",
                             "values outside the simplex")


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_inclusive: bool = True, high_inclusive: bool = True, integer: bool = False) -> None:
    """A scalar hyperparameter in a range, e.g. ``check_real("gamma", gamma, low=0)``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return  # per-element hyperparameters are checked by the loss itself
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LossInputError(name, "a number", describe(value))
    if integer and int(value) != value:
        raise LossInputError(name, "an integer", describe(value))
    if math.isnan(value):
        raise LossInputError(name, "a number", "nan")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        left = "" if low is None else (f"{low} <=" if low_inclusive else f"{low} <")
        right = "" if high is None else (f"<= {high}" if high_inclusive else f"< {high}")
        raise LossInputError(name, f"a value with {left} {name} {right}".replace("  ", " ").strip(),
                             repr(value))


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise LossInputError(name, "one of " + ", ".join(repr(c) for c in choices), repr(value))


def check_broadcastable(name: str, x: torch.Tensor, shape: Sequence[int], like: str = "the loss terms") -> None:
    """``x`` broadcasts to ``shape`` without enlarging it (a weight or mask for the terms)."""
    try:
        out = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    except RuntimeError:
        out = None
    if out != torch.Size(shape):
        raise LossInputError(name, f"a tensor broadcastable to {like} of shape {tuple(shape)}", describe(x))


def check_same_device(names: Sequence[str], tensors: Sequence[torch.Tensor | None]) -> None:
    pairs = [(n, t) for n, t in zip(names, tensors) if isinstance(t, torch.Tensor)]
    if not pairs:
        return
    first_name, first = pairs[0]
    for n, t in pairs[1:]:
        if t.device != first.device:
            raise LossInputError(n, f"a tensor on {first.device} (as {first_name})", f"one on {t.device}")
