"""Anchor-chunked evaluation of per-anchor pair terms without the N×M similarity matrix in memory.

A pair loss's math is a *row function* ``fn(rows, q_rows, *tensors) -> tuple of (len(rows),) tensors``:
the per-anchor terms (and flags such as "has a valid pair") of the anchors ``rows``, computed from
their similarities to all M references. ``dense`` calls it once on every row. ``chunked`` calls it on
blocks of ``chunk_size`` anchors inside one autograd Function (recomputation, as activation
checkpointing): the forward keeps no block's (chunk, M) intermediates, and backward recomputes one
block at a time, so autograd
holds O(chunk·M) (O(chunk·M²) for all-triplet losses) instead of O(N·M). The block results are
concatenated; the rows are independent, so the result equals the dense one up to floating-point
rounding of the same sums, and the gradients reaching ``q`` and every tensor in ``tensors`` (the
references, shared matrices) are accumulated across blocks into one buffer each. The chunked
schedule supports first-order gradients (no double backward).

Tensors that do not depend on the anchor block (the references) go through ``tensors``; the row
function slices nothing but the anchors it is given.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

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
    with recomputation in backward (:class:`_RowBlocks`).
    """
    n = q.shape[0]
    blocks = anchor_blocks(n, chunk_size)
    if len(blocks) == 1:
        return tuple(fn(blocks[0], q, *tensors))
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (q, *tensors)):
        with torch.no_grad():
            outs = [fn(sl, q[sl], *tensors) for sl in blocks]
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return _RowBlocks.apply(fn, blocks, q, *tensors)


class _RowBlocks(torch.autograd.Function):
    """The chunked schedule as one autograd node (instead of one ``checkpoint`` per block).

    Forward: every block under ``no_grad`` (no graph, nothing saved but the inputs). Backward: per
    block, the row function is re-run with grad enabled on detached leaves and differentiated with
    that block's slice of the incoming gradient; the gradients of ``q`` (its rows) and of every
    shared tensor are accumulated into one preallocated buffer each. Same math and the same
    recomputation as activation checkpointing, without its per-block hooks, graph building in the
    forward and the per-block (M, D) gradient tensors that autograd would add up.
    """

    @staticmethod
    def forward(ctx, fn, blocks, q, *tensors):
        outs = [fn(sl, q[sl], *tensors) for sl in blocks]  # forward of a Function runs without grad
        res = tuple(torch.cat(parts) for parts in zip(*outs))
        ctx.fn, ctx.blocks = fn, blocks
        ctx.save_for_backward(q, *tensors)
        ctx.mark_non_differentiable(*[o for o in res if not o.is_floating_point()])
        return res

    @staticmethod
    def backward(ctx, *grads):
        q, *tensors = ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        gq = torch.zeros_like(q) if need[0] else None
        gts = [torch.zeros_like(t) if nd else None for t, nd in zip(tensors, need[1:])]
        used = [i for i, g in enumerate(grads) if g is not None]
        for sl in ctx.blocks:
            with torch.enable_grad():
                qb = q[sl].detach().requires_grad_(need[0])
                ts = [t.detach().requires_grad_(nd) for t, nd in zip(tensors, need[1:])]
                outs = ctx.fn(sl, qb, *ts)
                pairs = [(outs[i], grads[i][sl]) for i in used if outs[i].requires_grad]
                leaves = ([qb] if need[0] else []) + [t for t, nd in zip(ts, need[1:]) if nd]
                if not pairs or not leaves:
                    continue
                gs = list(torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs],
                                              allow_unused=True))
            if need[0]:
                g = gs.pop(0)
                if g is not None:
                    gq[sl] += g
            for acc, nd in zip(gts, need[1:]):
                if nd:
                    g = gs.pop(0)
                    if g is not None:
                        acc += g
        return (None, None, gq, *gts)
