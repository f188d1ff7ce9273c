"""Feature and margin regularisers: the orthogonal projection loss (OPL) on penultimate features and
EnsLoss, random calibrated loss-derivative ensembles for binary margins."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import (check_broadcastable, check_finite, check_real, check_same_device, check_tensor,
                      checks_enabled, describe)
from ..errors import LossInputError
from ..examples import binary_example, embedding_example
from ..reduce import compute_dtype, reduce_loss
from ..registry import Example, register
from ._common import FAMILY

__all__ = ["opl", "ensloss", "ensloss_derivative", "opl_example", "ensloss_example"]

OPL_SOURCE = "Orthogonal Projection Loss"
ENSLOSS_SOURCE = "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification"


def _sample_mask(mask, shape) -> torch.Tensor | None:
    """The caller's per-sample ``mask`` (bool, broadcastable to ``shape``), expanded to ``shape``."""
    if mask is None:
        return None
    check_tensor("mask", mask, dtype="bool")
    check_broadcastable("mask", mask, shape, like="the samples")
    return mask.expand(shape)


# --------------------------------------------------------------------------------------------------------------
# OPL
# --------------------------------------------------------------------------------------------------------------

def opl_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """:func:`losskit.examples.embedding_example` with the batch-level (scalar) term of OPL."""
    ex = embedding_example(size, seed, variant)
    ex.term_shape = ()
    return ex


@register("opl", family=FAMILY, kind="loss", input="emb", source=OPL_SOURCE, oracle="formula", tier=1,
          example=opl_example, multi_term=True, hyper_errors={"gamma": -1.0})
def opl(embeddings, labels, *, gamma=0.5, reduction="mean", weight=None, mask=None, return_components=False):
    """Orthogonal projection loss ℓ = (1 − s) + γ·|d| on L2-normalised features (Ranasinghe et al. 2021).

    With f̂_i = f_i/‖f_i‖ and S = F̂F̂ᵀ, s is the mean of S_ij over same-class pairs i ≠ j and d the
    mean over different-class pairs: OPL pulls same-class features together (s → 1) and makes
    different classes orthogonal (d → 0). It is one batch-level number: the term is a scalar () and
    ``weight`` must be a scalar too. ``mask`` (N,) removes samples (and so every pair they are in)
    before the means. Empty means are 0: a batch without a same-class pair has s = 0 (intra term 1,
    constant), one without a different-class pair has d = 0; an all-masked batch gives a
    graph-connected 0. |d| is taken on the mean, as in the paper's equation (the released code,
    kahnchana/opl ``loss.py``, drops the abs and uses d itself). Used as CE + λ·OPL (λ = 1 in most of the
    paper's experiments (?)); add the CE yourself. Components: ``intra`` (1 − s) and ``inter`` (γ·|d|).

    Defaults: gamma=0.5. Source: "Orthogonal Projection Loss".
    """
    check_real("gamma", gamma, low=0.0)
    check_tensor("embeddings", embeddings, ndim=2, dtype="float")
    check_tensor("labels", labels, ndim=1, dtype="int")
    check_same_device(["embeddings", "labels", "mask"], [embeddings, labels, mask])
    n = embeddings.shape[0]
    if labels.shape[0] != n:
        raise LossInputError("labels", f"batch size {n} (as embeddings)", describe(labels))
    check_finite("embeddings", embeddings)
    keep = _sample_mask(mask, (n,))
    dt = compute_dtype(embeddings)
    f = F.normalize(embeddings.to(dt), dim=1)
    sim = f @ f.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    pair = ~eye if keep is None else (~eye & keep[:, None] & keep[None, :])
    pos, neg = same & pair, ~same & pair
    zero = sim.new_zeros(())
    s = torch.where(pos, sim, zero).sum() / pos.sum().clamp_min(1).to(dt)
    d = torch.where(neg, sim, zero).sum() / neg.sum().clamp_min(1).to(dt)
    intra, inter = 1.0 - s, gamma * d.abs()
    kept = torch.tensor(n > 0, device=f.device) if keep is None else keep.any()
    return reduce_loss(intra + inter, reduction, weight=weight, mask=kept, out_dtype=embeddings.dtype,
                       components={"intra": intra, "inter": inter}, return_components=return_components)


# --------------------------------------------------------------------------------------------------------------
# EnsLoss
# --------------------------------------------------------------------------------------------------------------

def _box_cox_inverse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """(1 + λx)_+^{1/λ}, exp(x) at λ = 0."""
    if lam == 0:
        return torch.exp(x)
    return (1.0 + lam * x).clamp_min(0.0) ** (1.0 / lam)


def ensloss_derivative(margins: torch.Tensor, *, lam: float = 0.0, bound: float = 1.0, mask=None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one random calibrated loss-derivative g and evaluate it at the margins (no gradient).

    The construction of the authors' code (statmlben/ensLoss ``losses.py``): for the K kept margins
    plus an anchor at z = 0, draw K + 1 values −BoxCox⁻¹_λ(ε), ε ~ N(0, 1) (λ = 0: −exp(ε), a negated
    log-normal), sort them, floor them at −``bound`` and assign them in the order of the margins (the
    smallest margin gets the most negative value), so g is non-decreasing in z. Margins z > 1 get
    g(z)/z (a superlinear tail: g → 0 as z → ∞), and every value is shifted by −1e-6, so g < 0
    everywhere, in particular g(0) < 0: g is the derivative of a convex calibrated margin loss. Only
    the number of kept margins, their order and ``generator`` decide the draw (in float32, whatever the
    input dtype); ties are broken by position (stable sort).

    Returns ``(g, g0)``: g with the shape of ``margins`` (0 where ``mask`` is False) and g0 = g(0).
    """
    z = margins.detach().reshape(-1)
    keep = None if mask is None else mask.reshape(-1)
    zk = z if keep is None else z[keep]
    k = zk.numel()
    device = generator.device if generator is not None else z.device
    eps = torch.randn(k + 1, generator=generator, device=device, dtype=torch.float32).to(z.device, z.dtype)
    values = torch.sort(-_box_cox_inverse(eps, lam)).values.clamp_min(-bound)
    zz = torch.cat([zk, zk.new_zeros(1)])                       # the anchor z = 0 is last
    order = torch.sort(zz, stable=True).indices
    g = torch.empty_like(zz).scatter(0, order, values)
    g = torch.where(zz > 1.0, g / zz.clamp_min(1.0), g) - 1e-6
    out = g[:-1] if keep is None else z.new_zeros(z.shape).masked_scatter(keep, g[:-1])
    return out.reshape(margins.shape), g[-1]


def ensloss_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """Binary logits (N,) with targets in {0, 1}; also rejects a target outside {−1, 0, 1}."""
    ex = binary_example(size, seed, variant)
    soft = ex.inputs["target"].clone()
    soft[0] = 0.5
    ex.bad.append(("target", {**ex.inputs, "target": soft}))
    return ex


@register("ensloss", family=FAMILY, kind="loss", input="logits", source=ENSLOSS_SOURCE, oracle="formula", tier=2,
          example=ensloss_example, stochastic=True, gradcheck=False, hyper_errors={"lam": -1.0, "bound": 0.0})
def ensloss(logits, target, *, lam=0.0, bound=1.0, reduction="mean", weight=None, mask=None, generator=None):
    """EnsLoss: backpropagates mean_i g(z_i)·∂z_i for a random calibrated loss-derivative g, z = y·f.

    A derivative-only loss (Dai et al.). Labels y ∈ {−1, +1} (or {0, 1}, read as 0 → −1), scores f =
    ``logits`` of any shape, margins z = y·f. Each call draws a fresh g that is non-decreasing with
    g(0) < 0 (the convexity-and-calibration conditions on a margin loss's derivative), by
    :func:`ensloss_derivative`, so training is doubly stochastic SGD over an ensemble of calibrated
    losses. No loss function is ever formed: the terms are ℓ_i = sg(log(1 + e^{−z_i})) + sg(g(z_i))·(z_i −
    sg(z_i)), whose *value* is the logistic loss (for monitoring only) and whose gradient is exactly
    g(z_i)·∂z_i (∂ℓ_i/∂f_i = y_i·g(z_i); "mean" divides by the number of kept terms). gradcheck is off for
    that reason. Masked terms take no part in the draw (masking a sample equals removing it);
    ``generator`` (a torch.Generator) makes the draw reproducible.

    Defaults: lam=0.0 (Box-Cox λ of the generator: λ = 0 gives log-normal magnitudes), bound=1.0 (g ≥
    −bound), both from the authors' code (statmlben/ensLoss ``losses.py``, also the z > 1 tail g(z)/z and
    the −1e-6 shift); the paper's exact generator is uncertain (?). Source: "EnsLoss: Stochastic Calibrated
    Loss Ensembles for Preventing Overfitting in Classification".
    """
    check_real("lam", lam, low=0.0)
    check_real("bound", bound, low=0.0, low_inclusive=False)
    check_tensor("logits", logits, min_ndim=1, dtype="float")
    check_tensor("target", target)
    check_same_device(["logits", "target", "mask"], [logits, target, mask])
    if target.shape != logits.shape:
        if target.dim() >= 1 and target.shape[0] != logits.shape[0]:
            raise LossInputError("target", f"batch size {logits.shape[0]} (as logits)", describe(target))
        raise LossInputError("target", f"shape {tuple(logits.shape)} (as logits)", describe(target))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise LossInputError("generator", "a torch.Generator or None", describe(generator))
    check_finite("logits", logits)
    if checks_enabled() and target.numel() and not bool(((target == 1) | (target == 0) | (target == -1)).all()):
        raise LossInputError("target", "binary labels in {-1, +1} or {0, 1}", "other values")
    keep = _sample_mask(mask, logits.shape)
    dt = compute_dtype(logits)
    f = logits.to(dt)
    y = torch.where(target > 0, 1.0, -1.0).to(device=f.device, dtype=dt)
    z = y * f
    g, _ = ensloss_derivative(z, lam=float(lam), bound=float(bound), mask=keep, generator=generator)
    terms = F.softplus(-z).detach() + g * (z - z.detach())
    return reduce_loss(terms, reduction, weight=weight, mask=keep, out_dtype=logits.dtype)
