"""Anchor-chunked evaluation of per-anchor pair terms without the N×M similarity matrix in memory.

A pair loss's math is a *row function* ``fn(rows, q_rows, *tensors) -> tuple of (len(rows),) tensors``:
the per-anchor terms (and flags such as "has a valid pair") of the anchors ``rows``, computed from
their similarities to all M references. ``dense`` calls it once on every row. ``chunked`` calls it on
blocks of ``chunk_size`` anchors, each under ``torch.utils.checkpoint`` (non-reentrant): the forward
keeps no block's (chunk, M) intermediates, and backward recomputes one block at a time, so autograd
holds O(chunk·M) (O(chunk·M²) for all-triplet losses) instead of O(N·M). The block results are
concatenated; the rows are independent, so the result equals the dense one up to floating-point
rounding of the same sums, and the gradients reaching ``q`` and every tensor in ``tensors`` (the
references, shared matrices) are accumulated across blocks by autograd.

Tensors that do not depend on the anchor block (the references) go through ``tensors``; the row
function slices nothing but the anchors it is given.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["anchor_blocks", "per_anchor"]


def anchor_blocks(n: int, chunk_size: int | None) -> list[slice]:
    """The row blocks of the chunked schedule (one block = the dense schedule)."""
    if n == 0:
        return [slice(0, 0)]
    step = n if chunk_size is None else max(1, int(chunk_size))
    return [slice(s, min(s + step, n)) for s in range(0, n, step)]


def per_anchor(fn: Callable[..., tuple[torch.Tensor, ...]], q: torch.Tensor, *tensors: torch.Tensor,
               chunk_size: int | None = None) -> tuple[torch.Tensor, ...]:
    """Per-anchor outputs of ``fn(rows, q[rows], *tensors)`` for all N anchors of ``q``.

    ``chunk_size=None`` (or ≥ N) is the dense schedule; an int runs blocks of that many anchors
    under activation checkpointing.
    """
    n = q.shape[0]
    blocks = anchor_blocks(n, chunk_size)
    if len(blocks) == 1:
        return tuple(fn(blocks[0], q, *tensors))
    outs = [checkpoint(fn, sl, q[sl], *tensors, use_reentrant=False) for sl in blocks]
    return tuple(torch.cat(parts) for parts in zip(*outs))
