"""Sequence-level objectives: pass@N coverage (DCO), the earth-mover LM loss (EMO) and the edit-invariant
n-gram sequence loss (EISL)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..checks import (check_choice, check_class_target, check_finite, check_real, check_same_device, check_tensor,
                      checks_enabled, describe)
from ..errors import LossInputError
from ..examples import SIZES, sequence_logp_example
from ..inputs import class_inputs
from ..reduce import combine_masks, compute_dtype, reduce_loss
from ..registry import Example, register
from ._common import FAMILY

__all__ = ["dco", "emo", "eisl", "lm_logits_example", "token_logp_example"]

DCO_SOURCE = ("Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence Improves Mathematical "
              "Reasoning")
EMO_SOURCE = "EMO: Earth Mover Distance Optimization for Auto-Regressive Language Modeling"
EISL_SOURCE = "Don't Take It Literally: An Edit-Invariant Sequence Loss for Text Generation"

_LN2 = math.log(2.0)


def _size(size) -> tuple[int, int]:
    return (size, 10) if isinstance(size, int) else SIZES[size]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# DCO
# --------------------------------------------------------------------------------------------------------------

def _dco_terms(lp: torch.Tensor, n: float) -> torch.Tensor:
    """−log(1 − (1 − p)^n) from log p ≤ 0, stable on the whole range, with finite exact gradients.

    Three regimes, each fed a safe dummy input where it is not selected (so no NaN leaks through
    ``where``'s backward):
      p > 1/2:  q = 1 − p = −expm1(log p) is exact, L = −log1p(−q^n); pow's backward n·q^(n−1) is
                exact at q = 0 (p = 1): gradient 0 for n > 1 and −1 for n = 1, as the true limit.
      mid:      a = n·log1p(−p), L = −log1mexp(a): −log1p(−e^a) for a < −ln 2, else −log(−expm1(a)).
      n·p < e^-30: p may underflow; L = −log n − log p + (n − 1)·p/2 + O((n·p)²).
    """
    # positive (invalid) inputs, rejected when checks are on, read as 0; not clamp_max, whose gradient is 0 at 0
    lp = torch.where(lp > 0, torch.zeros_like(lp), lp)
    log_n = math.log(n)
    hi = lp > -_LN2
    lo = lp < -30.0 - log_n
    mid = ~(hi | lo)
    one = lp.new_full((), -1.0)
    q = -torch.expm1(torch.where(hi, lp, one))
    l_hi = -torch.log1p(-torch.pow(q, n))
    a = n * torch.log1p(-torch.exp(torch.where(mid, lp, one)))   # log (1 − p)^n, in [−n·ln 2, 0)
    far = a < -_LN2                                               # −log(1 − e^a) = −log1mexp(a), both halves
    l_mid = torch.where(far, -torch.log1p(-torch.exp(torch.where(far, a, one))),
                        -torch.log(-torch.expm1(torch.where(far, one, a))))
    y = torch.where(lo, lp, lp.new_full((), -40.0 - log_n))
    l_lo = -log_n - y + (n - 1) * torch.exp(y) / 2
    return torch.where(hi, l_hi, torch.where(lo, l_lo, l_mid))


@register("dco", family=FAMILY, kind="loss", input="seq-logp", source=DCO_SOURCE, oracle="formula (N=1 equals NLL)",
          tier=1, example=sequence_logp_example, hyper_errors={"n": 0.5})
def dco(logp, *, n=4, reduction="mean", weight=None, mask=None):
    """Direct Coverage Optimization ℓ = −log(1 − (1 − p)^N), p = exp(logp) (Chen et al. 2025).

    ``logp`` (N,) is the summed log-probability log p(y|x) ≤ 0 of a correct sequence; 1 − (1 − p)^N is
    the probability that at least one of N independent samples is that sequence (pass@N coverage), so
    ℓ is its negative log. ∂ℓ/∂logp = −F_N(p) with F_N(p) = N·p·(1 − p)^{N−1} / (1 − (1 − p)^N): the
    cross-entropy gradient (−1) times a factor that is 1 at N = 1 (ℓ is then the NLL −logp) and
    goes to 0 as p → 1 for N > 1, which limits confidence. ``n`` may be any real N ≥ 1.

    Numerics: the stable form −log(−expm1(N·log1p(−exp(logp)))) on the middle range (as
    −log1p(−(1 − p)^N) where (1 − p)^N < 1/2, so small losses keep their relative precision),
    −log1p(−q^N) with q = −expm1(logp) for p > 1/2 (exact at p = 1: value 0, gradient 0 for N > 1 and
    −1 for N = 1, the true limits), and −log N − logp + (N − 1)·p/2 where N·p < e^-30 (p may
    underflow there). logp > 0 is rejected.

    Defaults: n=4 (assumption (?): the paper sweeps the training N and matches it to the test-time
    pass@N budget; there is no canonical default). Source: "Rethinking Fine-Tuning when Scaling
    Test-Time Compute: Limiting Confidence Improves Mathematical Reasoning". The paper's step-level
    variant for proof-tree search is not implemented.
    """
    check_real("n", n, low=1.0)
    check_tensor("logp", logp, ndim=1, dtype="float")
    check_finite("logp", logp)
    if checks_enabled() and logp.numel() and bool((logp > 0).any()):
        raise LossInputError("logp", "log-probabilities <= 0", f"{int((logp > 0).sum())} positive entries")
    dt = compute_dtype(logp)
    terms = _dco_terms(logp.to(dt), float(n))
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=logp.dtype)


# --------------------------------------------------------------------------------------------------------------
# EMO
# --------------------------------------------------------------------------------------------------------------

def _lm_inputs(logits, target, ignore_index):
    """(N, V) or (B, T, V) logits with class indices of shape logits.shape[:-1] (the vocabulary is last)."""
    check_tensor("logits", logits, ndim=(2, 3), dtype="float")
    check_tensor("target", target)
    check_same_device(["logits", "target"], [logits, target])
    natural = tuple(logits.shape[:-1])
    if tuple(target.shape) != natural:
        if target.dim() >= 1 and target.shape[0] != logits.shape[0]:
            raise LossInputError("target", f"batch size {logits.shape[0]} (as logits)",
                                 f"{target.shape[0]} in a tensor of shape {tuple(target.shape)}")
        raise LossInputError("target", f"class indices of shape {natural} (as logits without its last, "
                             "vocabulary dim)", describe(target))
    x = class_inputs(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=ignore_index)
    return x, natural


def _unit_rows(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def lm_logits_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """(B, T, V) language-model logits with next-token targets (B, T); one target is ignore_index."""
    n, v = _size(size)
    v = max(v, 3)
    b, t = max(n // 2, 2), (2 if size == "tiny" else 4)
    g = _gen(seed)
    logits = torch.randn(b, t, v, generator=g) * 2.0
    if variant == "extreme":
        logits = logits.sign() * 1e4 + logits
    target = torch.randint(0, v, (b, t), generator=g)
    target[1, -1] = -100
    inputs = {"logits": logits, "target": target}
    over = target.clone()
    over[0, 0] = v
    nan = logits.clone()
    nan[0, 0, 0] = float("nan")
    bad = [("logits", {**inputs, "logits": logits.reshape(-1)}),
           ("target", {**inputs, "target": target[:-1]}),
           ("logits", {**inputs, "logits": nan}),
           ("target", {**inputs, "target": over})]
    return Example(inputs, grad=("logits",), batch=("logits", "target"), term_shape=(b, t), mask_shape=(b, t),
                   bad=bad, kept=target != -100)


def _test_embedding(ex: Example) -> torch.Tensor:
    """A random frozen embedding with one row per vocabulary entry (for the generic tests)."""
    v = ex.inputs["logits"].shape[-1]
    return torch.randn(v, 6, generator=_gen(1234))


@register("emo", family=FAMILY, kind="loss", input="logits", source=EMO_SOURCE, oracle="formula", tier=2,
          example=lm_logits_example, multi_term=True, gradcheck=False,
          test_hyper={"embedding": _test_embedding}, hyper_errors={"embedding": torch.ones(3)})
def emo(logits, target, *, embedding=None, ignore_index=-100, reduction="mean", weight=None, mask=None,
        return_components=False):
    """EMO ℓ_t = ½·(CE_t + sg(CE_t / DEMD_t)·DEMD_t), DEMD_t = Σ_v Q_v·(1 − cos(e_v, e_y)) = 1 − ⟨Qᵀê, ê_y⟩.

    Q = softmax(logits) per token, y the target token, ê the L2-normalised rows of a frozen embedding
    E (V, d) (the authors take a frozen copy of the pretrained LM head). DEMD is the differentiable
    earth-mover upper bound between Q and the one-hot target under the cost c(v, y) = 1 − cos(ê_v, ê_y).
    The per-token weight sg(CE_t / DEMD_t) scales DEMD to CE's magnitude, so the *value* of ℓ_t equals
    CE_t while its gradient is ½·∇CE_t + ½·(CE_t / DEMD_t)·∇DEMD_t. Per-token weighting, the ½ and
    the ratio's +1e-10 follow the authors' code (DRSY/EMO ``emo_patch.py``, ``language_modeling/gpt2.py``);
    "mean" averages over the kept tokens, as that code does.

    Logits are (N, V) with targets (N,), or (B, T, V) with targets (B, T) (vocabulary last, as language
    models emit it, unlike the (N, C, d1, ...) layout of the other classification losses); terms
    have the target's shape, ignore_index tokens are 0 and excluded. E is detached (no gradient) and
    a zero row is treated as orthogonal to every token. Numerics: DEMD is computed as Σ_v Q_v·c(v, y)
    with c clamped at 0 and c(y, y) = 0 exactly, so it is never negative by rounding; |ratio·∇DEMD|
    stays ≤ 2·CE even where E has duplicate rows. Components: ``ce`` (½·CE) and ``emd``
    (½·sg(CE/DEMD)·DEMD). gradcheck is off: the stop-gradient weight makes the gradient differ from the
    derivative of the value by design (the parity tests check the gradient against a transcription).

    Defaults: embedding=None (required, a (V, d) tensor), ignore_index=-100. Source: "EMO: Earth Mover
    Distance Optimization for Auto-Regressive Language Modeling".
    """
    x, natural = _lm_inputs(logits, target, ignore_index)
    v = x.num_classes
    if embedding is None:
        raise LossInputError("embedding", f"a frozen ({v}, d) token-embedding tensor (the cost geometry)", "None")
    check_tensor("embedding", embedding, ndim=2, dtype="float")
    if embedding.shape[0] != v:
        raise LossInputError("embedding", f"{v} rows, one per vocabulary entry (as logits)", describe(embedding))
    check_same_device(["logits", "embedding"], [logits, embedding])
    check_finite("embedding", embedding)
    dt = x.logits.dtype
    e_hat = _unit_rows(embedding.detach().to(dt))
    logq = torch.log_softmax(x.logits, -1)
    t = x.target[:, None]
    ce = -logq.gather(-1, t).squeeze(-1)
    cost = (1.0 - e_hat[x.target] @ e_hat.T).clamp_min(0.0).scatter(-1, t, 0.0)
    demd = (logq.exp() * cost).sum(-1)
    emd = (ce / (demd + 1e-10)).detach() * demd
    terms = 0.5 * (ce + emd)
    keep = None if x.keep is None else x.keep.reshape(natural)
    return reduce_loss(terms.reshape(natural), reduction, weight=weight, mask=combine_masks(mask, keep),
                       out_dtype=x.dtype, components={"ce": (0.5 * ce).reshape(natural),
                                                      "emd": (0.5 * emd).reshape(natural)},
                       return_components=return_components)


# --------------------------------------------------------------------------------------------------------------
# EISL
# --------------------------------------------------------------------------------------------------------------

def token_logp_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """Token log-probabilities (B, T, V), targets (B, T) with padding and an output mask (B, T).

    Every third target sequence ends in one ignore_index token; every third output sequence (offset
    by one) has its last position masked out. ``variant="extreme"`` gives log-probabilities that are 0
    or about −2e4.
    """
    n, v = _size(size)
    v = max(v, 3)
    t = 3 if size == "tiny" else 6
    g = _gen(seed)
    logits = torch.randn(n, t, v, generator=g) * 2.0
    if variant == "extreme":
        logits = logits.sign() * 1e4 + logits
    log_probs = torch.log_softmax(logits, -1)
    target = torch.randint(0, v, (n, t), generator=g)
    target[::3, -1] = -100
    output_mask = torch.ones(n, t, dtype=torch.bool)
    output_mask[1::3, -1] = False
    inputs = {"log_probs": log_probs, "target": target, "output_mask": output_mask}
    over = target.clone()
    over[0, 0] = v
    nan = log_probs.clone()
    nan[0, 0, 0] = float("nan")
    bad = [("log_probs", {**inputs, "log_probs": log_probs[:, :, 0]}),
           ("target", {**inputs, "target": target[:-1]}),
           ("log_probs", {**inputs, "log_probs": nan}),
           ("log_probs", {**inputs, "log_probs": log_probs.exp()}),       # probabilities, not log-probs
           ("target", {**inputs, "target": over}),
           ("output_mask", {**inputs, "output_mask": output_mask[:, :-1]})]
    return Example(inputs, grad=("log_probs",), batch=("log_probs", "target", "output_mask"), term_shape=(n,),
                   mask_shape=(n,), bad=bad)


def _windows_all(keep: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L) bool -> (B, L − n + 1): True where all n positions of the window are kept."""
    return keep.unfold(1, n, 1).all(-1)


def _ngram_matrix(m: torch.Tensor, n: int) -> torch.Tensor:
    """G[b, i, j] = (1/n)·Σ_{k<n} M[b, i+k, j+k]: M convolved with an n×n identity kernel, divided by n."""
    ro, rt = m.shape[1] - n + 1, m.shape[2] - n + 1
    out = m[:, :ro, :rt]
    for k in range(1, n):
        out = out + m[:, k:k + ro, k:k + rt]
    return out / n


def _check_ngram(ngram, ngram_weights):
    if isinstance(ngram, int) and not isinstance(ngram, bool):
        ngram = (ngram,)
    if (not isinstance(ngram, Sequence) or not ngram
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ngram)):
        raise LossInputError("ngram", "a non-empty tuple of n-gram sizes >= 1", describe(ngram))
    if ngram_weights is None:
        return tuple(ngram), [1.0 / len(ngram)] * len(ngram)
    if not isinstance(ngram_weights, Sequence) or len(ngram_weights) != len(ngram):
        raise LossInputError("ngram_weights", f"{len(ngram)} weights, one per n-gram size", describe(ngram_weights))
    for w in ngram_weights:
        check_real("ngram_weights", w, low=0.0)
    return tuple(ngram), [float(w) for w in ngram_weights]


@register("eisl", family=FAMILY, kind="loss", input="tok-logp", source=EISL_SOURCE, oracle="formula", tier=2,
          example=token_logp_example, multi_term=True,
          hyper_errors={"ngram": (0,), "tau": 0.0, "pool": "mean", "ce_factor": -1.0})
def eisl(log_probs, target, output_mask=None, *, ngram=(1, 2), ngram_weights=None, ce_factor=0.5, ngram_factor=0.5,
         pool="softmax", tau=1.0, min_log_prob=-20.0, ignore_index=-100, reduction="mean", weight=None, mask=None,
         generator=None, return_components=False):
    """EISL ℓ_b = ce_factor·CE_b + ngram_factor·Σ_n λ_n·L_n(b), L_n = −mean_j pool_i G_n[i, j] (Liu et al. 2022).

    M[i, j] = log P_i(y_j) is the (T_out × T_tgt) matrix of the log-probability that output position i
    gives target token j (``log_probs`` (B, T_out, V), ``target`` (B, T_tgt)). G_n = conv2d(M, I_n)/n, the
    convolution with an n×n identity kernel, is the mean log-probability of target n-gram j
    (tokens j..j+n−1) generated at output positions i..i+n−1. Each target n-gram is matched against every
    output position by pooling over i, so a shifted, inserted or deleted span still matches
    (edit invariance); L_n averages over the target n-grams. CE_b is the aligned token cross-entropy
    −log P_t(y_t), averaged over the sequence's kept tokens (it needs T_out = T_tgt; with ce_factor=0
    the lengths may differ). Terms are per sequence (B,).

    ``pool``: "softmax" (default) Σ_i softmax_i(G/τ)·G, the authors' Gumbel-softmax pooling without the
    Gumbel noise (our assumption (?): a deterministic loss; the weights are not detached, as in their
    code); "gumbel" adds Gumbel(0, 1) noise before the softmax exactly as the authors' code
    (``F.gumbel_softmax(G, tau, dim=output positions)``), drawn from ``generator``; "max" takes max_i G.
    ``min_log_prob``: M is clamped below at this value (−20 in the authors' code: a target token the
    model gives p < 2e-9 everywhere stops pulling the n-gram term; this is a modelling choice, the CE
    term is not clamped); None disables it. Padding: target positions equal to ``ignore_index`` and
    output positions where ``output_mask`` (B, T_out) is False are excluded from every n-gram and from
    CE; an n-gram size with no complete target or output n-gram in a sequence contributes 0 to it
    (the authors drop sizes longer than the batch's output length). Sequences with no kept target or
    output position are excluded from "mean". ``ngram_weights`` λ default to 1/len(ngram), as in the
    authors' code. Special cases (tested): n = T_out = T_tgt gives L_n = CE_b exactly; n = 1 with
    "max" gives L_1 ≤ CE_b, with equality when each target token is most probable at its own position
    (aligned sequences). Components: ``ce`` and ``ngram``.

    Defaults: ngram=(1, 2), ce_factor=0.5, ngram_factor=0.5 (assumptions (?): the authors' fairseq
    criterion takes ``--ngram``, ``--ce-factor`` and ``--ngram-factor`` without defaults; these are the
    values of a third-party Hugging Face port of it), pool="softmax", tau=1.0, min_log_prob=-20.0,
    ignore_index=-100.
    Source: "Don't Take It Literally: An Edit-Invariant Sequence Loss for Text Generation"
    (code: guangyliu/EISL).
    """
    ngram, lam = _check_ngram(ngram, ngram_weights)
    check_real("ce_factor", ce_factor, low=0.0)
    check_real("ngram_factor", ngram_factor, low=0.0)
    check_real("tau", tau, low=0.0, low_inclusive=False)
    check_choice("pool", pool, ("softmax", "gumbel", "max"))
    if min_log_prob is not None:
        check_real("min_log_prob", min_log_prob, high=0.0)
    check_tensor("log_probs", log_probs, ndim=3, dtype="float")
    check_tensor("target", target, ndim=2, dtype="int")
    check_same_device(["log_probs", "target", "output_mask"], [log_probs, target, output_mask])
    b, t_out, v = log_probs.shape
    t_tgt = target.shape[1]
    if target.shape[0] != b:
        raise LossInputError("target", f"batch size {b} (as log_probs)", describe(target))
    if ce_factor and t_out != t_tgt:
        raise LossInputError("target", f"{t_out} positions (as log_probs: the CE term aligns output and target "
                             "positions; use ce_factor=0 for different lengths)", describe(target))
    if output_mask is not None:
        check_tensor("output_mask", output_mask, dtype="bool")
        if tuple(output_mask.shape) != (b, t_out):
            raise LossInputError("output_mask", f"a bool tensor of shape {(b, t_out)} (as log_probs without V)",
                                 describe(output_mask))
    check_finite("log_probs", log_probs)
    if checks_enabled() and log_probs.numel() and bool((log_probs > 1e-3).any()):
        raise LossInputError("log_probs", "log-probabilities (<= 0)", "positive entries (probabilities or logits?)")
    check_class_target("target", target, v, ignore_index)

    dt = compute_dtype(log_probs)
    lp = log_probs.to(dt)
    tkeep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    tgt = torch.where(tkeep, target, torch.zeros_like(target)).long()
    okeep = torch.ones(b, t_out, dtype=torch.bool, device=lp.device) if output_mask is None else output_mask

    zero = lp.new_zeros(())
    ce = lp.new_zeros(b)
    if ce_factor:
        k = tkeep & okeep
        nll = -lp.gather(2, tgt[..., None]).squeeze(-1)
        ce = torch.where(k, nll, zero).sum(1) / k.sum(1).clamp_min(1).to(dt)

    m = lp.gather(2, tgt[:, None, :].expand(b, t_out, t_tgt))  # M[b, i, j] = log P_{b,i}(y_j)
    if min_log_prob is not None:
        m = m.clamp_min(float(min_log_prob))
    ngram_term = lp.new_zeros(b)
    if ngram_factor:
        for size, w in zip(ngram, lam):
            if size > t_out or size > t_tgt or w == 0:
                continue
            g = _ngram_matrix(m, size)                          # (B, T_out − n + 1, T_tgt − n + 1)
            ov = _windows_all(okeep, size)[:, :, None]          # valid output n-grams i
            tv = _windows_all(tkeep, size)                      # valid target n-grams j
            any_o = ov.any(1, keepdim=True)                     # (B, 1, 1)
            if pool == "max":
                pooled = torch.where(ov, g, torch.full_like(g, -torch.inf)).amax(1)
            else:
                score = g
                if pool == "gumbel":
                    u = torch.rand(g.shape, generator=generator, dtype=torch.float32,
                                   device=generator.device if generator is not None else g.device)
                    u = u.to(device=g.device, dtype=dt).clamp(torch.finfo(dt).tiny, 1.0)
                    score = g - torch.log(-torch.log(u))
                score = torch.where(ov, score / tau, torch.full_like(g, -torch.inf))
                score = torch.where(any_o, score, zero)         # a column with no valid i: any finite value
                pooled = (torch.softmax(score, 1) * torch.where(ov, g, zero)).sum(1)
            valid = tv & any_o[:, 0]
            pooled = torch.where(valid, pooled, zero)
            l_n = -pooled.sum(1) / valid.sum(1).clamp_min(1).to(dt)
            ngram_term = ngram_term + w * l_n
    ce_part, ngram_part = ce_factor * ce, ngram_factor * ngram_term
    keep = tkeep.any(1) & okeep.any(1)
    return reduce_loss(ce_part + ngram_part, reduction, weight=weight, mask=combine_masks(mask, keep),
                       out_dtype=log_probs.dtype, components={"ce": ce_part, "ngram": ngram_part},
                       return_components=return_components)
