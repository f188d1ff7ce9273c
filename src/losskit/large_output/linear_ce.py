"""Fused linear cross-entropy: CE of h·Wᵀ (+ b) that never materialises the N×V logits."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import (check_class_target, check_choice, check_finite, check_real, check_same_device, check_shape,
                      check_tensor)
from ..errors import LossInputError
from ..module import LossModule
from ..reduce import REDUCTIONS, check_term_weight, compute_dtype, reduce_loss
from ..examples import hidden_weight_example
from ..registry import attach_module, register
from ..schedules.vocab import accumulate_grads, block_logits, rows_per_block, softcap_derivative_

__all__ = ["linear_cross_entropy", "LinearCrossEntropyLoss", "prepare_rows", "classifier_rows"]

SOURCE = "Cut Your Losses in Large-Vocabulary Language Models"


@dataclass(frozen=True)
class _Options:
    ignore_index: int
    label_smoothing: float
    softcap: float | None
    z_loss: float
    chunk_size: int | None


def _block_terms_and_grad(z, t, y, opts: _Options, scale: torch.Tensor | None):
    """Per-row loss terms and lse of a vocabulary-major logit block zᵀ (V, rows), consuming ``z``; with
    ``scale`` (rows,) also the logit gradient scale_n·∂ℓ_n/∂r (r the pre-softcap logits), built in z's
    storage (V, rows).

    ℓ = lse − (1−ε)·z_y − (ε/V)·Σ_v z_v + λ·lse²;  ∂ℓ/∂z = p·(1 + 2λ·lse) − (1−ε)·e_y − ε/V.
    Five passes over the block (max, shift, exp, column sum, scale) and one exponential per logit:
    the softmax is the normalised exponential already used for the logsumexp.
    """
    v = z.shape[0]
    z_y = z.gather(0, y[None, :]).squeeze(0)
    mean_z = z.mean(0) if opts.label_smoothing else None
    m = z.amax(0, keepdim=True)
    e = z.sub_(m).exp_()
    col_sum = e.sum(0)
    lse = m.squeeze(0) + col_sum.log()
    terms = lse - (1 - opts.label_smoothing) * z_y
    if opts.label_smoothing:
        terms = terms - opts.label_smoothing * mean_z
    if opts.z_loss:
        terms = terms + opts.z_loss * lse * lse
    if scale is None:
        return terms, lse, None
    factor = scale / col_sum
    if opts.z_loss:
        factor = factor * (1 + 2 * opts.z_loss * lse)
    g = e.mul_(factor[None, :])
    g.scatter_add_(0, y[None, :], (-(1 - opts.label_smoothing) * scale)[None, :])
    if opts.label_smoothing:
        g.sub_((opts.label_smoothing / v) * scale[None, :])
    softcap_derivative_(g, t)
    return terms, lse, g


def _stream(h, weight, bias, y, opts, scale, want=(False, False, False)):
    """Run all row blocks; returns (terms, lse, dh, dW, db), each gradient only if ``want`` says so
    (a tuple of three flags for h, W, b)."""
    m, acc = h.shape[0], compute_dtype(h)
    want_grads = any(want)
    terms = torch.empty(m, dtype=acc, device=h.device)
    lse = torch.empty(m, dtype=acc, device=h.device)
    dh = torch.empty_like(h) if want[0] else None
    dw = torch.zeros_like(weight) if want[1] else None
    db = torch.zeros_like(bias) if want[2] and bias is not None else None
    step = rows_per_block(m, weight.shape[0], opts.chunk_size)
    for start in range(0, m, step):
        sl = slice(start, min(start + step, m))
        z, t = block_logits(h[sl], weight, bias, opts.softcap, acc)
        blk_terms, blk_lse, g = _block_terms_and_grad(z, t, y[sl], opts, scale[sl] if want_grads else None)
        terms[sl], lse[sl] = blk_terms, blk_lse
        if want_grads:
            dh_blk = accumulate_grads(g, h[sl], weight, dw, db, want_dh=dh is not None)
            if dh is not None:
                dh[sl] = dh_blk
        del z, t, g
    return terms, lse, dh, dw, db


class _FusedScalar(torch.autograd.Function):
    """Σ_n c_n·ℓ_n with the gradients formed during the forward (three matrix products in all); the
    backward scales the stored dh, dW, db by the incoming scalar in place and hands them to autograd,
    so no second V×D buffer ever exists. A second backward through the same graph (retain_graph,
    gradcheck) recomputes the gradients from the saved inputs instead."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, coef, opts):
        want = tuple(t is not None and t.requires_grad for t in (h, weight, bias))
        with torch.no_grad():
            terms, lse, dh, dw, db = _stream(h, weight, bias, y, opts, coef, want)
        ctx.grads = (dh, dw, db)
        ctx.save_for_backward(h, weight, bias, y, coef)
        ctx.opts = opts
        ctx.mark_non_differentiable(lse)
        return (terms * coef).sum(), lse

    @staticmethod
    def backward(ctx, grad_out, _grad_lse):
        if ctx.grads is not None:
            dh, dw, db = ctx.grads
            ctx.grads = None  # hand the buffers over: autograd takes them without a copy
        else:
            h, weight, bias, y, coef = ctx.saved_tensors
            with torch.no_grad():
                _, _, dh, dw, db = _stream(h, weight, bias, y, ctx.opts, coef, tuple(ctx.needs_input_grad[:3]))
        if not (grad_out.numel() == 1 and float(grad_out) == 1.0):
            for g in (dh, dw, db):
                if g is not None:
                    g.mul_(grad_out.to(g.dtype))
        return dh, dw, db, None, None, None


class _Recompute(torch.autograd.Function):
    """Per-row terms ℓ_n; the backward recomputes each logit block (a fourth matrix product) and scales
    its gradient by the incoming per-row gradient, so any downstream use of the terms is exact."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, opts):
        with torch.no_grad():
            terms, lse, _, _, _ = _stream(h, weight, bias, y, opts, None)
        ctx.save_for_backward(h, weight, bias, y)
        ctx.opts = opts
        ctx.mark_non_differentiable(lse)
        return terms, lse

    @staticmethod
    def backward(ctx, grad_terms, _grad_lse):
        h, weight, bias, y = ctx.saved_tensors
        with torch.no_grad():
            _, _, dh, dw, db = _stream(h, weight, bias, y, ctx.opts, grad_terms.to(compute_dtype(h)),
                                       tuple(ctx.needs_input_grad[:3]))
        return dh, dw, db, None, None


def prepare_rows(hidden, target, shift: bool, ignore_index: int):
    """Flatten (B, T, D) hidden states and (B, T) targets to rows; with ``shift`` position t predicts
    target t + 1 (causal LM). Returns (h (N, D), y (N,), term shape)."""
    if shift:
        if hidden.dim() != 3:
            raise LossInputError("shift", "hidden states of shape (B, T, D) to shift", f"{hidden.dim()} dimensions")
        hidden, target = hidden[:, :-1], target[:, 1:]
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        if target.dim() and hidden.dim() and target.shape[0] != hidden.shape[0]:
            raise LossInputError("target", f"batch size {hidden.shape[0]} (as hidden)", f"{target.shape[0]}")
        raise LossInputError("target", f"shape {tuple(hidden.shape[:-1])} (hidden without its last dim)",
                             f"shape {tuple(target.shape)}")
    shape = target.shape
    return hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1), shape


def classifier_rows(hidden, weight, target, *, bias=None, softcap=None, shift=False, ignore_index=-100,
                    chunk_size=None):
    """Validate the inputs of a loss of h·Wᵀ (+ b) and flatten them to rows.

    Returns (h (N, D), y (N,), the terms' shape, keep (N,) = target != ignore_index)."""
    _check_classifier(hidden, weight, bias)
    check_tensor("target", target)
    if softcap is not None:
        check_real("softcap", softcap, low=0.0, low_inclusive=False)
    if chunk_size is not None:
        check_real("chunk_size", chunk_size, low=1, integer=True)
    h, y, shape = prepare_rows(hidden, target, shift, ignore_index)
    check_class_target("target", y, weight.shape[0], ignore_index)
    check_finite("hidden", h)
    return h, y, shape, y != ignore_index


def _check_classifier(hidden, weight, bias):
    check_tensor("hidden", hidden, ndim=(2, 3), dtype="float")
    check_tensor("weight", weight, ndim=2, dtype="float")
    check_same_device(["hidden", "weight", "bias"], [hidden, weight, bias])
    if weight.shape[1] != hidden.shape[-1]:
        raise LossInputError("weight", f"shape (V, {hidden.shape[-1]}) (D of hidden)", f"shape {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise LossInputError("weight", f"dtype {hidden.dtype} (as hidden)", f"{weight.dtype}")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtype="float")
        check_shape("bias", bias, (weight.shape[0],), like="one value per class")
        if bias.dtype != hidden.dtype:
            raise LossInputError("bias", f"dtype {hidden.dtype} (as hidden)", f"{bias.dtype}")


@register("linear_cross_entropy", family="large_output", kind="loss", input="hidden+W", source=SOURCE,
          oracle="torch (naive), cce", tier=1, example=hidden_weight_example, schedules=("fused", "recompute"),
          hyper_errors={"label_smoothing": 1.5, "z_loss": -1.0, "softcap": 0.0, "mode": "lazy"},
          term_weight_name="weight_per_token")
def linear_cross_entropy(hidden, weight, target, *, bias=None, ignore_index=-100, label_smoothing=0.0,
                         softcap=None, z_loss=0.0, reduction="mean", chunk_size=None, shift=False, mode="auto",
                         return_lse=False, weight_per_token=None, mask=None):
    """Cross-entropy of the logits z = h·Wᵀ + b computed block by block, never holding the N×V matrix.

    ℓ_n = lse(z_n) − (1 − ε)·z_{n,y} − (ε/V)·Σ_v z_{n,v} + λ·lse(z_n)², with z = c·tanh(z/c) when
    ``softcap`` c is set (Gemma-2), ε = ``label_smoothing`` (torch's definition) and λ = ``z_loss``
    (PaLM's auxiliary λ·log²Z). Exact: no gradient filtering.

    Schedules (``mode``): "fused" forms dh, dW and db block by block during the forward and only scales
    them in the backward: three matrix products, the compute floor; it needs a scalar loss (reduction
    "mean" or "sum") and allows one backward. "recompute" saves h and recomputes each logit block in
    the backward (a fourth matrix product, ≥ 1.33x the floor) for reduction="none" or any downstream
    use of the terms. "auto" (default) picks "fused" for a scalar reduction when a gradient is needed,
    since the loss of a language model is almost always reduced right away.

    ``hidden`` (N, D) or (B, T, D) with ``target`` of the leading shape; ``shift=True`` makes position t
    predict target t + 1. Rows whose target is ``ignore_index``, masked, or of zero weight are
    dropped before any product. bf16/fp16 inputs multiply in their dtype, every exponential and sum
    runs in float32, and dW accumulates across blocks in the weight's dtype. ``chunk_size`` is the
    number of rows per block (default: blocks of at most 256 MiB of float32 logits).
    ``return_lse`` also returns the per-row logsumexp (no gradient; 0 for dropped rows).

    Defaults: bias=None, ignore_index=-100, label_smoothing=0, softcap=None, z_loss=0, mode="auto".
    Source: "Cut Your Losses in Large-Vocabulary Language Models" (Wijmans et al., 2024); the fused
    gradient-in-forward schedule follows Liger-Kernel's FusedLinearCrossEntropy.
    """
    check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    check_real("z_loss", z_loss, low=0.0)
    check_choice("mode", mode, ("auto", "fused", "recompute"))
    check_choice("reduction", reduction, REDUCTIONS)
    h, y, shape, keep = classifier_rows(hidden, weight, target, bias=bias, softcap=softcap, shift=shift,
                                        ignore_index=ignore_index, chunk_size=chunk_size)
    w = None
    if weight_per_token is not None:
        check_term_weight(weight_per_token, shape, "weight_per_token")
        w = torch.broadcast_to(weight_per_token, shape).reshape(-1).to(compute_dtype(h))
        keep = keep & (w != 0)
    if mask is not None:
        check_tensor("mask", mask, dtype="bool")
        try:
            keep = keep & torch.broadcast_to(mask, shape).reshape(-1)
        except RuntimeError:
            raise LossInputError("mask", f"a bool tensor broadcastable to {tuple(shape)}",
                                 f"shape {tuple(mask.shape)}") from None
    rows = keep.nonzero().squeeze(1)
    all_rows = rows.numel() == keep.numel()
    h_k = h if all_rows else h.index_select(0, rows)
    y_k = y if all_rows else y.index_select(0, rows)
    opts = _Options(ignore_index, float(label_smoothing), None if softcap is None else float(softcap),
                    float(z_loss), chunk_size)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    fused = mode == "fused" or (mode == "auto" and reduction != "none" and needs_grad)
    if fused and reduction == "none":
        raise LossInputError("mode", "'recompute' or 'auto' with reduction='none' (the fused schedule needs a "
                             "scalar loss)", "'fused'")
    acc = compute_dtype(h)
    if fused:
        w_k = torch.ones(rows.numel(), dtype=acc, device=h.device) if w is None else w.index_select(0, rows)
        den = w_k.sum() if reduction == "mean" else torch.ones((), dtype=acc, device=h.device)
        coef = w_k / torch.where(den == 0, torch.ones_like(den), den)
        loss, lse_k = _FusedScalar.apply(h_k, weight, bias, y_k, coef, opts)
        loss = loss.to(hidden.dtype)
    else:
        terms_k, lse_k = _Recompute.apply(h_k, weight, bias, y_k, opts)
        terms = terms_k.new_zeros(keep.numel()).index_copy(0, rows, terms_k)
        loss = reduce_loss(terms.reshape(shape), reduction, weight=None if w is None else w.reshape(shape),
                           mask=keep.reshape(shape), out_dtype=hidden.dtype)
    if not return_lse:
        return loss
    lse = lse_k.detach().new_zeros(keep.numel()).index_copy(0, rows, lse_k.detach()).reshape(shape)
    return loss, lse


class LinearCrossEntropyLoss(LossModule):
    """:func:`linear_cross_entropy` as a module over an existing classifier.

    ``LinearCrossEntropyLoss(lm_head)`` takes an ``nn.Linear`` (its weight and bias are used, not
    copied: tied embeddings and optimisers keep working) or a weight tensor; ``forward(hidden, target)``.
    Without a classifier, ``forward(hidden, weight, target)`` like the function.
    """

    function = staticmethod(linear_cross_entropy)

    def __init__(self, classifier: torch.nn.Linear | torch.Tensor | None = None, **hyper):
        super().__init__(**hyper)
        self.classifier = classifier if isinstance(classifier, torch.nn.Module) else None
        if isinstance(classifier, torch.Tensor):
            self.classifier_weight = classifier if isinstance(classifier, torch.nn.Parameter) else \
                torch.nn.Parameter(classifier, requires_grad=classifier.requires_grad)
        else:
            self.classifier_weight = None

    def forward(self, hidden, *args, **call_kwargs):
        kw = {**self.hyperparameters(), **call_kwargs}
        if self.classifier is None and self.classifier_weight is None:
            return linear_cross_entropy(hidden, *args, **kw)
        target = args[0] if args else kw.pop("target")
        if self.classifier is not None:
            kw.setdefault("bias", self.classifier.bias)
            return linear_cross_entropy(hidden, self.classifier.weight, target, **kw)
        return linear_cross_entropy(hidden, self.classifier_weight, target, **kw)


attach_module("linear_cross_entropy", LinearCrossEntropyLoss)
