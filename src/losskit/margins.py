"""The margin hook shared by every softmax over class centres (Partial FC, UNPG, the margin heads).

A margin is None (plain normalised softmax), the string "cosface" (cos θ_y − m) or any callable
ψ(cos θ_y) → modified target cosine, e.g. ``losskit.metric.margin_heads.arcface_margin(0.5)``.
"""
from __future__ import annotations

import torch

from .errors import LossInputError

__all__ = ["apply_target_margin"]


def apply_target_margin(cos_y: torch.Tensor, margin, value: float) -> torch.Tensor:
    """ψ(cos θ_y) for the margin spec ``margin`` (None, "cosface" with m = ``value``, or a callable)."""
    if margin is None:
        return cos_y
    if margin == "cosface":
        return cos_y - value
    if callable(margin):
        return margin(cos_y)
    raise LossInputError("margin", "None, 'cosface' or a callable cos_y -> modified cos_y", repr(margin))
