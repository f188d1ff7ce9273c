"""Row-chunked evaluation of softmax statistics of ``h·Wᵀ (+ b)`` without the N×V logits.

The building block of the large-output family: a block of token rows is multiplied with the whole
classifier (``block_logits``), the per-row statistics and the logit gradient ``G`` of that block are
formed in place, and ``G`` is immediately contracted with W (dh) and h (dW), so at most one block of
``rows × V`` floats lives at a time. ``rows_per_block`` sizes the block from a memory budget.
"""
from __future__ import annotations

import torch

__all__ = ["DEFAULT_BLOCK_BYTES", "rows_per_block", "block_logits", "softcap_derivative_", "accumulate_grads"]

# one float32 logit block of at most this many bytes (plus its softcap derivative when softcapping)
DEFAULT_BLOCK_BYTES = 128 * 2 ** 20


def rows_per_block(num_rows: int, vocab: int, chunk_size: int | None = None,
                   budget_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    if chunk_size is not None:
        return max(1, min(int(chunk_size), max(num_rows, 1)))
    return max(1, min(max(num_rows, 1), budget_bytes // (4 * max(vocab, 1))))


def block_logits(h_blk: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                 acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of a block of rows in the accumulation dtype, and tanh(z/c) when softcapping (else None).

    The product runs in the inputs' dtype (bf16 products use the CPU's bf16 units); the result is
    promoted to ``acc`` before any exponential.
    """
    z = h_blk @ weight.t()
    if bias is not None:
        z = z + bias
    z = z.to(acc)
    if softcap is None:
        return z, None
    t = torch.tanh(z.div_(softcap))
    return t * softcap, t


def softcap_derivative_(g: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Chain rule through z = c·tanh(r/c): dz/dr = 1 − tanh², in place on the block gradient."""
    if t is not None:
        g.mul_(1 - t * t)
    return g


def accumulate_grads(g: torch.Tensor, h_blk: torch.Tensor, weight: torch.Tensor, d_weight: torch.Tensor | None,
                     d_bias: torch.Tensor | None, want_dh: bool = True) -> torch.Tensor | None:
    """dh of the block (returned if ``want_dh``), dW += Gᵀh and db += Σ_rows G (in place)."""
    g_in = g.to(weight.dtype)
    dh = g_in @ weight if want_dh else None
    if d_weight is not None:
        d_weight.addmm_(g_in.t().to(d_weight.dtype), h_blk.to(d_weight.dtype))
    if d_bias is not None:
        d_bias.add_(g.sum(0).to(d_bias.dtype))
    return dh
