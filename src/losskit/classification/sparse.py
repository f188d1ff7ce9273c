"""Sparse probability mappings and their losses: sparsemax, 1.5-entmax, α-entmax (Fenchel–Young losses)
and the top-k sparse-softmax cross-entropy.

One template serves every Fenchel–Young (FY) loss. A *mapping* is a regularised argmax over the simplex,
p*(z) = argmax_{p ∈ Δ} ⟨p, z⟩ + H_α(p), with H_α the Tsallis α-entropy
H_α(p) = (1 − Σ_j p_j^α) / (α(α − 1)) (α = 2: sparsemax, α = 1.5: 1.5-entmax, α → 1: softmax). A mapping
knows four things: ``project`` (p*), ``vjp`` (the Jacobian-vector product of p*, for the transform's
backward), ``entropy`` (H_α at p*, forward only) and ``target_entropy`` (H_α at a soft target q,
differentiable). From it:

* the transform is ``_Project`` (custom autograd.Function: forward p*, backward the closed-form vjp),
* the loss is L(z; q) = Ω*(z) − ⟨q, z⟩ − H_α(q), where Ω*(z) = ⟨p*, z⟩ + H_α(p*) is the convex conjugate
  of −H_α, computed by ``_Conjugate`` (custom autograd.Function: forward Ω*, backward p* by Danskin's
  theorem). Hence L = H_α(p*) − H_α(q) + ⟨p* − q, z⟩ ≥ 0 and ∇_z L = p* − q exactly. For a one-hot q,
  H_α(q) = 0 and L is entmax's ``Ω(p*) + ⟨p* − e_y, z⟩`` (its "Ω" is our H_α).

Numerics shared by all mappings: every computation is along the last dim, in float32 for half inputs;
logits are shifted by their (detached) row maximum, which changes neither p* nor L; entries more than
1/(α − 1) below the maximum can never be in the support (τ ≥ max − 1 on the scaled logits), so the
sort/bisection works on logits clamped just below that, which keeps cumulative sums well conditioned
and lets −inf (masked) entries through without NaN. A row whose entries are all −inf maps to the
uniform distribution with a zero gradient (−inf entries never get a gradient).
"""
from __future__ import annotations


import torch
from torch.autograd import Function

from ..checks import check_real, check_tensor, checks_enabled, describe
from ..errors import LossInputError
from ..examples import SIZES
from ..inputs import ClassInputs, class_inputs, flatten_classes
from ..reduce import combine_masks, compute_dtype, reduce_loss
from ..registry import Example, register
from ._common import FAMILY, hard_example

__all__ = ["sparsemax", "entmax15", "entmax_bisect", "sparsemax_loss", "entmax15_loss", "entmax_bisect_loss",
           "sparse_softmax_topk"]

SPARSEMAX = "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label Classification"
ENTMAX = "anchor (entmax)"
SPARSE_SOFTMAX = "Sparse-softmax: A Simpler and Faster Alternative Softmax Transformation"


# --------------------------------------------------------------------------------------------------
# mappings (all along the last dim, in the computation dtype)
# --------------------------------------------------------------------------------------------------

def _shift(z: torch.Tensor) -> torch.Tensor:
    """z − max_j z_j along the last dim; rows that are entirely −inf become 0 (uniform output)."""
    m = z.amax(-1, keepdim=True)
    return torch.where(torch.isneginf(m), torch.zeros_like(z), z - m)


def _safe_pow(p: torch.Tensor, e: float) -> torch.Tensor:
    """p**e on p > 0 and 0 elsewhere, with finite derivatives (for double backward) at p = 0."""
    pos = p > 0
    return torch.where(pos, torch.where(pos, p, torch.ones_like(p)) ** e, torch.zeros_like(p))


def _weighted_vjp(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The Jacobian-vector product of a Tsallis map: w ⊙ (g − Σ w g / Σ w), w = p^{2−α} on the support."""
    wg = w * g
    return wg - w * (wg.sum(-1, keepdim=True) / w.sum(-1, keepdim=True))


class _Tsallis:
    """p* = argmax_{p ∈ Δ} ⟨p, z⟩ + H_α(p), H_α(p) = (1 − Σ p^α) / (α(α − 1))."""

    alpha: float = 2.0

    def project(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return _weighted_vjp(g, _safe_pow(p, 2.0 - self.alpha))

    def entropy(self, p: torch.Tensor) -> torch.Tensor:
        """H_α(p) = Σ p·(1 − p^{α−1}) / (α(α − 1)), as −p·expm1((α−1)·log p): no cancellation as α → 1."""
        a = self.alpha
        pos = p > 0
        logp = torch.log(torch.where(pos, p, torch.ones_like(p)))
        return (-p * torch.expm1((a - 1) * logp)).sum(-1) / (a * (a - 1))

    def target_entropy(self, q: torch.Tensor) -> torch.Tensor:
        """H_α(q) for a soft target, written with pow so that its gradient is exact on all of Δ."""
        a = self.alpha
        return (q - q ** a).sum(-1) / (a * (a - 1))


class _SparsemaxMap(_Tsallis):
    """Euclidean projection onto the simplex (Martins & Astudillo 2016, Alg. 1): p = [z − τ]_+."""

    alpha = 2.0

    def project(self, z):
        zs = _shift(z).clamp_min(-2.0)  # τ ≥ max − 1: entries below max − 1 are never in the support
        srt = zs.sort(-1, descending=True).values
        ks = torch.arange(1, zs.shape[-1] + 1, device=zs.device, dtype=zs.dtype)
        cs = srt.cumsum(-1) - 1
        k = (ks * srt > cs).sum(-1, keepdim=True)  # k(z) = max{k : 1 + k z_(k) > Σ_{j≤k} z_(j)} (≥ 1)
        tau = cs.gather(-1, k - 1) / k.to(zs.dtype)
        return (zs - tau).clamp_min(0)

    def vjp(self, p, g):
        return _weighted_vjp(g, (p > 0).to(g.dtype))

    def entropy(self, p):
        return (p * (1 - p)).sum(-1) / 2


class _Entmax15Map(_Tsallis):
    """1.5-entmax, exact by sorting (Peters, Niculae & Martins 2019, Alg. 2): p = [z/2 − τ]_+²."""

    alpha = 1.5

    def project(self, z):
        x = (_shift(z) / 2).clamp_min(-2.0)  # τ ≥ max(z/2) − 1
        srt = x.sort(-1, descending=True).values
        ks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
        mean = srt.cumsum(-1) / ks
        mean_sq = (srt * srt).cumsum(-1) / ks
        ss = ks * (mean_sq - mean * mean)          # Σ_{j≤k} (x_(j) − mean_k)², on values in [−2, 0]
        tau = mean - torch.sqrt(((1 - ss) / ks).clamp_min(0))
        k = (tau <= srt).sum(-1, keepdim=True)     # support size (as entmax; τ_k ≤ x_(k) exactly for k ≤ k*)
        tau_star = tau.gather(-1, k - 1)
        return (x - tau_star).clamp_min(0) ** 2

    def vjp(self, p, g):
        return _weighted_vjp(g, _safe_pow(p, 0.5))

    def entropy(self, p):
        return (p * (1 - _safe_pow(p, 0.5))).sum(-1) / 0.75


class _BisectMap(_Tsallis):
    """α-entmax for any α > 1 by bisection on τ: p = [(α − 1) z − τ]_+^{1/(α−1)}, Σ p = 1.

    On shifted logits (max 0), τ ∈ [−1, −(1/C)^{α−1}]; ``n_iter`` halvings of that interval (as entmax:
    the final p is taken at the last midpoint and renormalised to sum to 1).
    """

    def __init__(self, alpha: float, n_iter: int):
        self.alpha = float(alpha)
        self.n_iter = int(n_iter)

    def project(self, z):
        a = self.alpha
        x = ((a - 1) * _shift(z)).clamp_min(-2.0)  # τ ≥ −1
        d = x.shape[-1]
        lo = torch.full_like(x[..., :1], -1.0)
        width = 1.0 - (1.0 / d) ** (a - 1)
        for _ in range(self.n_iter):  # n_iter ≥ 1 (validated)
            width /= 2
            mid = lo + width
            p = (x - mid).clamp_min(0) ** (1.0 / (a - 1))
            lo = torch.where(p.sum(-1, keepdim=True) >= 1, mid, lo)
        return p / p.sum(-1, keepdim=True)


_SPARSEMAX = _SparsemaxMap()
_ENTMAX15 = _Entmax15Map()


class _Project(Function):
    """p = mapping.project(z) along the last dim; backward: the mapping's closed-form vjp.

    The output is saved, and the vjp is written with differentiable ops, so double backward works.
    """

    @staticmethod
    def forward(ctx, z, mapping):
        p = mapping.project(z)
        ctx.mapping = mapping
        ctx.save_for_backward(p, torch.isneginf(z).all(-1, keepdim=True))
        return p

    @staticmethod
    def backward(ctx, g):
        p, dead = ctx.saved_tensors  # all −inf rows: uniform output, zero gradient
        grad = ctx.mapping.vjp(p, g)
        return torch.where(dead, torch.zeros_like(grad), grad), None


class _Conjugate(Function):
    """Ω*(z) = max_{p ∈ Δ} ⟨p, z⟩ + H_α(p) = ⟨p*, z⟩ + H_α(p*) per row; ∇Ω*(z) = p* (Danskin).

    Entries with p*_j = 0 do not enter ⟨p*, z⟩ (so −inf logits give no 0·∞). The backward recomputes p*
    through ``_Project`` when a graph is being built, so second derivatives are correct too.
    """

    @staticmethod
    def forward(ctx, z, mapping):
        p = mapping.project(z)
        ctx.mapping = mapping
        ctx.save_for_backward(z, p)
        return (p * torch.where(p > 0, z, torch.zeros_like(z))).sum(-1) + mapping.entropy(p)

    @staticmethod
    def backward(ctx, g):
        z, p = ctx.saved_tensors
        if torch.is_grad_enabled():
            p = _Project.apply(z, ctx.mapping)
        return g.unsqueeze(-1) * p, None


# --------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------

def _check_transform(logits, dim) -> int:
    check_tensor("logits", logits, min_ndim=1, dtype="float")
    nd = logits.dim()
    if isinstance(dim, bool) or not isinstance(dim, int) or not -nd <= dim < nd:
        raise LossInputError("dim", f"an int in [{-nd}, {nd}) for logits of shape {tuple(logits.shape)}",
                             describe(dim))
    if logits.shape[dim] == 0:
        raise LossInputError("logits", f"at least one entry along dim {dim}", describe(logits))
    if checks_enabled() and logits.numel() and bool((torch.isnan(logits) | torch.isposinf(logits)).any()):
        raise LossInputError("logits", "real values or -inf (masked entries)", f"NaN or +inf in {describe(logits)}")
    return dim


def _transform(mapping, logits, dim):
    dim = _check_transform(logits, dim)
    z = logits.to(compute_dtype(logits)).movedim(dim, -1)
    return _Project.apply(z, mapping).movedim(-1, dim).to(logits.dtype)


def transform_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """(N, C) logits for a transform, one entry −inf (a masked logit); ``extreme``: magnitudes of 1e4."""
    n, c = SIZES[size] if not isinstance(size, int) else (size, 10)
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 2.0
    if variant == "extreme":
        logits = logits.sign() * 1e4 + logits
    logits[0, 0] = float("-inf")
    nan = logits.clone()
    nan[1, 1] = float("nan")
    bad = [("logits", {"logits": torch.tensor(1.0)}), ("logits", {"logits": nan})]
    return Example({"logits": logits}, grad=("logits",), batch=("logits",), term_shape=None, mask_shape=None,
                   bad=bad)


@register("sparsemax", family=FAMILY, kind="transform", input="logits", source=SPARSEMAX, oracle="entmax", tier=1,
          example=transform_example)
def sparsemax(logits, *, dim=-1):
    """sparsemax(z) = argmin_{p ∈ Δ} ‖p − z‖² = [z − τ(z)]_+, τ from the sorted z (Martins & Astudillo, eq. 2, Alg. 1).

    The Euclidean projection onto the simplex along ``dim``: sparse (exact zeros), piecewise linear. The
    backward is the closed form J v = s ⊙ (v − mean_{j∈S} v_j), s the support indicator. −inf entries
    (masked logits) get 0 and a zero gradient; an all −inf slice gives the uniform distribution (zero
    gradient; entmax crashes there, #19). The
    threshold is computed in float32 for half inputs (float64 stays float64); the result has the input
    dtype. Differs from ``entmax.sparsemax`` only in handling −inf, NaN checks and keyword-only ``dim``.

    Defaults: dim=-1. Source: "From Softmax to Sparsemax: A Sparse Model of Attention and Multi-Label
    Classification" (anchor: entmax.sparsemax).
    """
    return _transform(_SPARSEMAX, logits, dim)


@register("entmax15", family=FAMILY, kind="transform", input="logits", source=ENTMAX, oracle="entmax", tier=1,
          example=transform_example)
def entmax15(logits, *, dim=-1):
    """1.5-entmax(z) = argmax_{p ∈ Δ} ⟨p, z⟩ + H_1.5(p) = [z/2 − τ]_+², H_1.5 the Tsallis entropy (α = 1.5).

    Exact, by sorting (Peters, Niculae & Martins 2019, "Sparse Sequence-to-Sequence Models", Alg. 2),
    along ``dim``. Backward: J v = g ⊙ (v − Σ g v / Σ g) with g = √p. −inf entries get 0 and a zero
    gradient; an all −inf slice gives the uniform distribution. Computed in float32 for half inputs,
    on logits shifted by their maximum and clamped below the support bound, so the cumulative moments
    of the sort are well conditioned even for logits of magnitude 1e4.

    Defaults: dim=-1. Source: anchor (entmax): Peters, Niculae & Martins 2019, "Sparse Sequence-to-Sequence
    Models"; Blondel et al., "Learning with Fenchel-Young Losses".
    """
    return _transform(_ENTMAX15, logits, dim)


def entmax_bisect(logits, *, alpha=1.5, dim=-1, n_iter=50):
    """α-entmax(z) = argmax_{p ∈ Δ} ⟨p, z⟩ + H_α(p) = [(α−1) z − τ]_+^{1/(α−1)}, τ by ``n_iter`` bisection steps.

    Not a registered entry (the catalogue registers its loss): the projection behind
    :func:`entmax_bisect_loss`, with the same backward (J v = g ⊙ (v − Σ g v / Σ g), g = p^{2−α}).
    ``alpha`` is a number > 1 (no gradient with respect to α).

    Defaults: alpha=1.5, dim=-1, n_iter=50. Source: anchor (entmax.entmax_bisect).
    """
    _check_alpha_n_iter(alpha, n_iter)
    return _transform(_BisectMap(float(alpha), n_iter), logits, dim)


# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------

def _masked_class_inputs(logits, target, ignore_index, mask, allow_soft):
    """``class_inputs`` that also accepts −inf logits (masked classes).

    Returns (x, bad): x.logits keeps the −inf entries (gradient 0 there); ``bad`` (M,) marks rows whose
    target sits on a −inf logit (infinite loss). With checks on, a kept such row raises; rows excluded by
    ``ignore_index`` or ``mask`` may be anything (all −inf padding rows included).
    """
    check_tensor("logits", logits, min_ndim=2, dtype="float")
    neg = torch.isneginf(logits)
    if checks_enabled() and not bool(neg.any()):  # the common case, when a sync is allowed anyway
        x = class_inputs(logits, target, ignore_index=ignore_index, allow_soft=allow_soft)
        return x, torch.zeros(x.logits.shape[0], dtype=torch.bool, device=logits.device)
    x = class_inputs(logits.masked_fill(neg, 0.0), target, ignore_index=ignore_index, allow_soft=allow_soft)
    neg = flatten_classes(neg)
    x.logits = x.logits.masked_fill(neg, float("-inf"))
    if x.soft_target is None:
        bad = neg.gather(1, x.target[:, None]).squeeze(1)
    else:
        bad = (neg & (x.soft_target > 0)).any(-1)
    if checks_enabled() and bad.numel():
        kept = bad if x.keep is None else bad & x.keep
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            try:
                kept = kept & torch.broadcast_to(mask, x.shape).reshape(-1)
            except RuntimeError:
                pass  # a malformed mask is reported by reduce_loss
        n_bad = int(kept.sum())
        if n_bad:
            raise LossInputError("target", "targets on finite logits (a target on a -inf, masked, logit has an "
                                 "infinite loss)", f"{n_bad} target(s) on -inf logits")
    return x, bad


def _reduce(x: ClassInputs, terms, reduction, weight, mask):
    return reduce_loss(x.terms(terms), reduction, weight=weight, mask=combine_masks(mask, x.keep_mask()),
                       out_dtype=x.dtype)


def fenchel_young_terms(mapping: _Tsallis, x: ClassInputs, bad: torch.Tensor) -> torch.Tensor:
    """Per-row FY loss L(z; q) = Ω*(z) − ⟨q, z⟩ − H_α(q) = H_α(p*) − H_α(q) + ⟨p* − q, z⟩ (+inf on ``bad`` rows)."""
    z = x.logits
    # shift by the detached row max (L is shift invariant and so is its gradient p* − q); bad rows (target
    # on −inf, all −inf padding) are replaced by zeros so that nothing upstream of the final where() is NaN
    m = z.detach().amax(-1, keepdim=True)
    z = z - torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    z = torch.where(bad[:, None], torch.zeros_like(z), z)
    conj = _Conjugate.apply(z, mapping)
    if x.soft_target is None:
        terms = conj - z.gather(1, x.target[:, None]).squeeze(1)
    else:
        q = x.soft_target
        finite_z = torch.where(torch.isneginf(z), torch.zeros_like(z), z)
        terms = conj - (q * finite_z).sum(-1) - mapping.target_entropy(q)
    return torch.where(bad, torch.full_like(terms, float("inf")), terms)


def _fy_loss(mapping, logits, target, ignore_index, reduction, weight, mask):
    x, bad = _masked_class_inputs(logits, target, ignore_index, mask, allow_soft=True)
    return _reduce(x, fenchel_young_terms(mapping, x, bad), reduction, weight, mask)


def _check_alpha_n_iter(alpha, n_iter):
    if isinstance(alpha, torch.Tensor) and alpha.numel() != 1:
        raise LossInputError("alpha", "a number > 1", describe(alpha))
    check_real("alpha", alpha, low=1.0, low_inclusive=False)
    check_real("n_iter", n_iter, low=1, integer=True)


@register("sparsemax_loss", family=FAMILY, kind="loss", input="logits", source=SPARSEMAX, oracle="entmax", tier=1,
          example=hard_example)
def sparsemax_loss(logits, target, *, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Sparsemax loss ℓ = ½‖q‖² − ½‖p*‖² + ⟨p* − q, z⟩, p* = sparsemax(z) (Martins & Astudillo, eq. 20).

    The Fenchel–Young loss of Ω(p) = ½‖p‖²: convex, ≥ 0, zero iff sparsemax(z) = q, with gradient
    p* − q; for a one-hot q it is −z_y + ½Σ_{j∈S}(z_j² − τ²) + ½, entmax's ``sparsemax_loss``. Soft targets
    q on the simplex give the general form (gradient with respect to q too). Logits (N, C) or
    (N, C, d1, ...), class dim 1. Computed in float32 for half inputs. Unlike entmax, "mean" is over
    kept terms for any ignore_index (entmax only masks when ignore_index ≥ 0) and an all-ignored batch
    gives a graph-connected 0, not 0/0. −inf logits (masked classes) are allowed and contribute nothing
    (entmax returns NaN); a target on a −inf logit raises (with checks off, its term is +inf).

    Defaults: ignore_index=-100. Source: "From Softmax to Sparsemax: A Sparse Model of Attention and
    Multi-Label Classification" (anchor: entmax.SparsemaxLoss; Blondel et al., "Learning with
    Fenchel-Young Losses").
    """
    return _fy_loss(_SPARSEMAX, logits, target, ignore_index, reduction, weight, mask)



@register("entmax15_loss", family=FAMILY, kind="loss", input="logits", source=ENTMAX, oracle="entmax", tier=1,
          example=hard_example)
def entmax15_loss(logits, target, *, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """1.5-entmax loss ℓ = H(p*) − H(q) + ⟨p* − q, z⟩, H(p) = (1 − Σ p^{3/2})/0.75, p* = entmax15(z).

    The Fenchel–Young loss of the Tsallis 1.5-entropy: convex, ≥ 0, zero iff entmax15(z) = q, gradient
    p* − q. For one-hot q it equals ``entmax.entmax15_loss`` (H(q) = 0). The projection is exact (sort
    based, float32 for half inputs). Logits (N, C) or (N, C, d1, ...), class dim 1; targets are class
    indices (any ignore_index, negative ones included) or soft targets on the simplex. −inf logits are
    allowed as for :func:`sparsemax_loss`.

    Defaults: ignore_index=-100. Source: anchor (entmax): Peters, Niculae & Martins 2019, "Sparse
    Sequence-to-Sequence Models"; Blondel et al., "Learning with Fenchel-Young Losses".
    """
    return _fy_loss(_ENTMAX15, logits, target, ignore_index, reduction, weight, mask)



@register("entmax_bisect_loss", family=FAMILY, kind="loss", input="logits", source=ENTMAX, oracle="entmax", tier=2,
          example=hard_example, hyper_errors={"alpha": 1.0})
def entmax_bisect_loss(logits, target, *, alpha=1.5, n_iter=50, ignore_index=-100, reduction="mean", weight=None,
                       mask=None):
    """α-entmax loss ℓ = H_α(p*) − H_α(q) + ⟨p* − q, z⟩, H_α(p) = (1 − Σ p^α)/(α(α−1)), p* = α-entmax(z).

    The Fenchel–Young loss of the Tsallis α-entropy for any α > 1 (α = 2: sparsemax loss, α = 1.5:
    1.5-entmax loss, α → 1: cross-entropy minus H(q)). p* by bisection on the threshold τ: ``n_iter``
    fixed halvings of an interval of width < 1 (no data-dependent stop, so no host sync; 50 halvings
    reach float64 resolution, 24 suffice for float32), then renormalised, exactly as entmax. H_α is
    evaluated as Σ −p·expm1((α−1) log p)/(α(α−1)), which stays accurate as α → 1. ``alpha`` is a
    number, not learned. The gradient p* − q is exact for the bisected p*. Targets, ignore_index and
    −inf logits as for :func:`sparsemax_loss`.

    Defaults: alpha=1.5, n_iter=50 (entmax's), ignore_index=-100. Source: anchor (entmax): Peters,
    Niculae & Martins 2019, "Sparse Sequence-to-Sequence Models"; Blondel et al., "Learning with
    Fenchel-Young Losses".
    """
    _check_alpha_n_iter(alpha, n_iter)
    return _fy_loss(_BisectMap(float(alpha), n_iter), logits, target, ignore_index, reduction, weight, mask)



def _topk_k(example):
    return max(2, example.inputs["logits"].shape[1] - 2)


@register("sparse_softmax_topk", family=FAMILY, kind="loss", input="logits", source=SPARSE_SOFTMAX,
          oracle="formula", tier=2, example=hard_example, hyper_errors={"k": 0}, test_hyper={"k": _topk_k})
def sparse_softmax_topk(logits, target, *, k=10, ignore_index=-100, reduction="mean", weight=None, mask=None):
    """Sparse-softmax loss ℓ = log Σ_{j∈Ω} exp z_j − z_y, Ω = {y} ∪ the k − 1 largest logits other than z_y.

    Softmax restricted to the k largest logits, with the target forced into the kept set during
    training (an assumption: the paper's Ω_k is the top-k; when y is among them Ω = Ω_k, otherwise y
    replaces the k-th logit, so |Ω| = k always and ℓ is continuous in z). Only the kept logits get a
    gradient. k is clamped to C: k ≥ C is exactly cross-entropy; k = 1 gives ℓ ≡ 0. Computed as
    log(1 + Σ exp(z_j − z_y)) in float32 for half inputs. −inf logits are allowed (a target on one raises).

    Defaults: k=10 (the paper gives no universal k and targets problems with more than ~100 classes; 10
    keeps the few confusable classes and is cross-entropy for C ≤ 10), ignore_index=-100. Source:
    "Sparse-softmax: A Simpler and Faster Alternative Softmax Transformation".
    """
    check_real("k", k, low=1, integer=True)
    x, bad = _masked_class_inputs(logits, target, ignore_index, mask, allow_soft=False)
    z = torch.where(bad[:, None], torch.zeros_like(x.logits), x.logits)
    c = x.num_classes
    z_y = z.gather(1, x.target[:, None])
    m = min(int(k), c) - 1
    if m > 0:
        others = z.scatter(1, x.target[:, None], float("-inf"))
        top = others.topk(m, dim=1).values
        diff = torch.cat([torch.zeros_like(z_y), top - z_y], dim=1)
        terms = torch.logsumexp(diff, dim=1)
    else:
        terms = (z_y * 0).squeeze(1)
    terms = torch.where(bad, torch.full_like(terms, float("inf")), terms)
    return _reduce(x, terms, reduction, weight, mask)
