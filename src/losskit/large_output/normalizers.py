"""Softmax normalisers: the single-pass online logsumexp and the two-pass softmax."""
from __future__ import annotations

import math

import torch

from ..checks import check_finite, check_real, check_tensor
from ..examples import logits_example
from ..reduce import compute_dtype
from ..registry import Example, register

__all__ = ["online_logsumexp", "two_pass_softmax", "merge_lse_states"]


def merge_lse_states(m_a: torch.Tensor, d_a: torch.Tensor, m_b: torch.Tensor, d_b: torch.Tensor):
    """The associative merge of two partial normaliser states (m, d), Σ e^x = d·e^m:
    m = max(m_a, m_b), d = d_a·e^{m_a − m} + d_b·e^{m_b − m}."""
    m = torch.maximum(m_a, m_b)
    return m, d_a * torch.exp(m_a - m) + d_b * torch.exp(m_b - m)


def _logits_only_example(size="small", seed=0, variant="normal") -> Example:
    ex = logits_example(size, seed, variant)
    ex.inputs = {"logits": ex.inputs["logits"]}
    ex.batch = ("logits",)
    ex.term_shape = ex.mask_shape = ex.kept = None
    # rank 0 has no dim to normalise; a NaN anywhere is refused (1-D logits are valid here)
    ex.bad = [("logits", {"logits": torch.tensor(1.0)})] + [
        (a, {"logits": i["logits"]}) for a, i in ex.bad if a == "logits" and i["logits"].dim() >= 2]
    return ex


@register("online_logsumexp", family="large_output", kind="util", input="logits",
          source="Online normalizer calculation for softmax", oracle="torch", tier=1, example=_logits_only_example,
          test_hyper={"chunk_size": 2}, hyper_errors={"chunk_size": 0})
def online_logsumexp(logits, *, dim=-1, chunk_size=None):
    """log Σ_j e^{x_j} along ``dim`` in one streaming pass over chunks (Milakov & Gimelshein 2018).

    The running state (m, d) with Σ e^x = d·e^m is updated per chunk: m' = max(m, max chunk),
    d' = d·e^{m − m'} + Σ_chunk e^{x − m'}; the states of two halves merge the same way
    (:func:`merge_lse_states`), which is what lets vocabulary-chunked losses combine partial sums.
    The shift m is detached (the result does not depend on it), so the gradient is exactly softmax(x).
    Computed in float32 for half inputs; the result has the input dtype.

    Defaults: dim=-1, chunk_size=None (one chunk). Source: "Online normalizer calculation for softmax".
    """
    check_tensor("logits", logits, min_ndim=1, dtype="float")
    check_finite("logits", logits)
    n = logits.shape[dim]
    if chunk_size is None:
        chunk_size = max(n, 1)
    check_real("chunk_size", chunk_size, low=1, integer=True)
    x = logits.to(compute_dtype(logits))
    m = d = None
    for chunk in torch.split(x, int(chunk_size), dim=dim):
        m_c = chunk.detach().amax(dim)
        d_c = torch.exp(chunk - m_c.unsqueeze(dim)).sum(dim)
        m, d = (m_c, d_c) if m is None else merge_lse_states(m, d, m_c, d_c)
    if m is None:  # empty along dim: log 0
        return torch.full(x.sum(dim).shape, -math.inf, dtype=logits.dtype)
    return (m + torch.log(d)).to(logits.dtype)


@register("two_pass_softmax", family="large_output", kind="util", input="logits",
          source="The Two-Pass Softmax Algorithm", oracle="torch", tier=3, example=_logits_only_example)
def two_pass_softmax(logits, *, dim=-1):
    """Softmax by the two-pass algorithm (Dukhan & Ablavatski 2020): no separate max pass.

    Each e^{x_i} is kept as m_i·2^{n_i} with n_i = round(x_i·log₂e) and m_i = e^{x_i − n_i·ln 2} ∈
    [2^{−1/2}, 2^{1/2}]. Pass 1 accumulates Σ m_i·2^{n_i} as (M, N) with N = max n_i (the exponent
    rescaling of the paper's running update, done here in vectorised form); pass 2 writes
    y_i = (m_i/M)·2^{n_i − N}. Overflow-safe for any finite input. The integer exponents are
    piecewise constant, so the gradient is that of softmax. In PyTorch both passes are tensor ops, so
    this is a reference for the algorithm, not a faster softmax (the paper's gain needs fused SIMD code).

    Defaults: dim=-1. Source: "The Two-Pass Softmax Algorithm". Tier 3: the paper's (M, N) running
    update is replaced by its closed form, which produces the same (M, N).
    """
    check_tensor("logits", logits, min_ndim=1, dtype="float")
    check_finite("logits", logits)
    x = logits.to(compute_dtype(logits))
    n = torch.round(x.detach() * (1 / math.log(2)))
    m = torch.exp(x - n * math.log(2))
    big_n = n.amax(dim, keepdim=True)
    big_m = torch.ldexp(m, n - big_n).sum(dim, keepdim=True)
    return torch.ldexp(m / big_m, n - big_n).to(logits.dtype)
