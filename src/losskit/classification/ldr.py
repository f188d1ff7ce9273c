"""Label-distributionally-robust losses (Zhu, Ying, Yang, ICML 2023): LDR-KL and adaptive ALDR-KL."""
from __future__ import annotations

import math

import torch

from ..checks import check_choice, check_real, check_shape, check_tensor
from ..errors import LossInputError
from ..inputs import class_inputs
from ..module import LossModule
from ..reduce import combine_masks, reduce_loss
from ..registry import Example, attach_module, register
from ._common import FAMILY, hard_example

__all__ = ["ldr_kl", "aldr_kl", "ALDRKLLoss"]

SOURCE = "Label Distributionally Robust Losses for Multi-class Classification"


def _normalize(f: torch.Tensor, normalize) -> torch.Tensor:
    if normalize is None:
        return f
    if normalize == "softplus":
        f = torch.nn.functional.softplus(f)
    elif normalize != "l1":
        raise AssertionError(normalize)
    return f / f.abs().mean(-1, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)


def _margins(x, margin, normalize):
    f = _normalize(x.logits, normalize)
    f_y = f.gather(-1, x.target[:, None])
    delta = f - f_y + margin
    return delta.scatter(-1, x.target[:, None], 0.0), f  # δ_y = 0


def _ldr_terms(delta: torch.Tensor, lam) -> torch.Tensor:
    """λ·(logsumexp(δ/λ) − log K) per row; ``lam`` a scalar or a column (N, 1)."""
    k = delta.shape[-1]
    lam_row = lam.squeeze(-1) if isinstance(lam, torch.Tensor) else lam
    return lam_row * (torch.logsumexp(delta / lam, dim=-1) - math.log(k))


@register("ldr_kl", family=FAMILY, kind="loss", input="logits", source=SOURCE,
          oracle="formula (lambda->0 hinge, c=0 CE-log K)", tier=1, example=hard_example,
          hyper_errors={"lam": 0.0, "normalize": "l2"})
def ldr_kl(logits, target, *, lam=1.0, margin=1.0, normalize=None, ignore_index=-100, reduction="mean",
           weight=None, mask=None):
    """LDR-KL loss ℓ = λ·log((1/K)·Σ_k exp(δ_k/λ)), δ_k = c·[k≠y] + f_k − f_y (Zhu et al. 2023, eq. 5).

    It is max_{p∈Δ_K} Σ_k p_k·δ_k − λ·KL(p‖uniform): λ → 0 gives the Crammer–Singer hinge
    max_k δ_k, λ → ∞ the mean margin, and c = 0, λ = 1 gives cross-entropy − log K. ``normalize``
    optionally rescales the scores first: "l1" f/mean_k|f_k|, "softplus" softplus(f)/mean_k softplus(f)
    (the paper's experiments normalise the scores; which exact map is a choice (?), so the default keeps
    raw logits and the limits above exact).

    Defaults: lam=1.0, margin c=1.0, normalize=None, ignore_index=-100. Source: "Label Distributionally
    Robust Losses for Multi-class Classification: Consistency, Robustness and Adaptivity".
    """
    check_real("lam", lam, low=0.0, low_inclusive=False)
    check_real("margin", margin, low=0.0)
    check_choice("normalize", normalize, (None, "l1", "softplus"))
    x = class_inputs(logits, target, ignore_index=ignore_index)
    delta, _ = _margins(x, margin, normalize)
    return reduce_loss(x.terms(_ldr_terms(delta, lam)), reduction, weight=weight,
                       mask=combine_masks(mask, x.keep_mask()), out_dtype=x.dtype)


def aldr_kl_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    ex = hard_example(size, seed, variant)
    n = ex.inputs["logits"].shape[0]
    ex.inputs["sample_index"] = torch.arange(n) * 2 + 1  # indices into a dataset of 2N + 1 samples
    ex.batch = ex.batch + ("sample_index",)
    return ex


@register("aldr_kl", family=FAMILY, kind="loss", input="logits", source=SOURCE, oracle="formula", tier=2,
          example=aldr_kl_example, hyper_errors={"alpha": 1.0, "lam0": -1.0},
          module_kwargs={"num_samples": 4096}, gradcheck=False)
def aldr_kl(logits, target, *, lam0=1.0, margin=1.0, alpha=2.0, normalize=None, ignore_index=-100,
            reduction="mean", weight=None, mask=None, sample_index=None, state=None):
    """Adaptive LDR-KL: a per-sample λ_i, updated in closed form each time sample i is seen (Zhu et al. 2023).

    With p_i = softmax(f_i/λ_i^{old}) (λ^{old} = λ₀ the first time):
        λ_i = sg(λ₀ − λ₀·KL(p_i‖uniform)/(α·log K)),
        ℓ_i = λ_i·log((1/K)·Σ_k exp(δ_ik/λ_i)) − (α·log K/(2λ₀))·(λ_i − λ₀)²,
    δ as in :func:`ldr_kl`. Confident samples get a small λ_i (hinge-like), uncertain ones, often the
    mislabelled ones, a λ_i near λ₀. Since KL ≤ log K, λ_i ≥ λ₀(1 − 1/α), so α > 1 keeps λ_i > 0
    (the authors' code comment asks for α > 1; its default of 1 allows λ_i = 0, hence our default 2).

    ``state`` is a 1-D tensor of λ for the whole dataset and ``sample_index`` (N,) the rows of this
    batch; the function reads and updates it in place (no gradient). :class:`ALDRKLLoss` keeps it as a
    buffer. Without state every λ^{old} is λ₀. Defaults: lam0=1, margin=1, alpha=2, normalize=None.
    Source: "Label Distributionally Robust Losses for Multi-class Classification".
    """
    check_real("lam0", lam0, low=0.0, low_inclusive=False)
    check_real("margin", margin, low=0.0)
    check_real("alpha", alpha, low=1.0, low_inclusive=False)
    check_choice("normalize", normalize, (None, "l1", "softplus"))
    x = class_inputs(logits, target, ignore_index=ignore_index)
    n, k = x.logits.shape
    if state is not None:
        check_tensor("state", state, ndim=1, dtype="float")
        if sample_index is None:
            raise LossInputError("sample_index", "indices (N,) of the batch's samples in the state", "None")
        check_tensor("sample_index", sample_index, ndim=1, dtype="int")
        check_shape("sample_index", sample_index, (n,), like="one index per sample")
        if sample_index.numel() and (int(sample_index.min()) < 0 or int(sample_index.max()) >= state.numel()):
            raise LossInputError("sample_index", f"indices in [0, {state.numel()})",
                                 f"[{int(sample_index.min())}, {int(sample_index.max())}]")
        lam_old = state[sample_index].to(x.logits.dtype)
    else:
        lam_old = x.logits.new_full((n,), float(lam0))
    delta, f = _margins(x, margin, normalize)
    with torch.no_grad():
        logp = torch.log_softmax(f / lam_old[:, None], -1)
        kl = (logp.exp() * logp).sum(-1) + math.log(k)
        lam = lam0 - lam0 * kl / (alpha * math.log(k)) if k > 1 else lam_old
        lam = lam.clamp_min(lam0 * (1 - 1 / alpha))
        if state is not None:
            keep = x.keep if x.keep is not None else torch.ones_like(lam, dtype=torch.bool)
            if mask is not None:
                keep = keep & torch.broadcast_to(mask, x.shape).reshape(-1)
            state[sample_index[keep]] = lam[keep].to(state.dtype)
    terms = _ldr_terms(delta, lam[:, None])
    terms = terms - (alpha * math.log(max(k, 2)) / (2 * lam0)) * (lam - lam0) ** 2
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)


class ALDRKLLoss(LossModule):
    """:func:`aldr_kl` with its per-sample λ kept in a buffer ``lam`` of size ``num_samples``.

    ``forward(logits, target, sample_index, weight=None, mask=None)``. The buffer travels with
    ``state_dict()`` and pickling. Under data parallelism each rank updates the rows it sees; rows are
    disjoint with a distributed sampler, so the buffers can be merged by taking, per row, the value of
    the rank that owns it (or simply kept per rank: each rank only ever reads its own rows).
    """

    function = staticmethod(aldr_kl)

    def __init__(self, num_samples: int = 1, **hyper):
        super().__init__(**hyper)
        check_real("num_samples", num_samples, low=1, integer=True)
        lam0 = float(hyper.get("lam0", 1.0))
        self.register_buffer("lam", torch.full((int(num_samples),), lam0))

    def forward(self, logits, target, sample_index=None, **call_kwargs):
        return aldr_kl(logits, target, sample_index=sample_index, state=self.lam,
                       **{**self.hyperparameters(), **call_kwargs})


attach_module("aldr_kl", ALDRKLLoss)
