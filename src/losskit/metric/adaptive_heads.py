"""Heads whose margin adapts to the sample (AdaFace) or that drop the softmax for one-vs-all (SphereFace2)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_broadcastable, check_real, check_same_device, check_shape, check_tensor
from ..errors import LossInputError
from ..module import hyperparameters
from ..reduce import compute_dtype, reduce_loss
from ..registry import attach_module, register
from .heads_core import HeadModule, check_head_inputs, cosine_logits, head_example, margin_softmax_terms

__all__ = ["adaface", "AdaFace", "sphereface2", "SphereFace2", "cos_plus_angle", "sphereface2_bias",
           "ADAFACE_INITIAL_STATS", "sample_mask"]

ADAFACE = "AdaFace: Quality Adaptive Margin for Face Recognition"
SPHEREFACE2 = "SphereFace2: Binary Classification is All You Need for Deep Face Recognition"
FAMILY = "metric"
HEAD_KW = {"num_classes": 5, "embedding_dim": 8}

# the official code's initial EMA of the feature norms (mk-minchul/AdaFace head.py: batch_mean 20, batch_std 100)
ADAFACE_INITIAL_STATS = (20.0, 100.0)
_ADAFACE_EPS = 1e-3            # official: (‖x‖ − μ)/(σ + 1e-3)
_NORM_RANGE = (1e-3, 100.0)    # official: safe_norms = clip(‖x‖, 0.001, 100)


def sample_mask(mask, n: int) -> torch.Tensor | None:
    """Validate a per-sample mask (bool, broadcastable to (N,)) and return it broadcast to (N,)."""
    if mask is None:
        return None
    check_tensor("mask", mask, dtype="bool")
    check_broadcastable("mask", mask, (n,), like="the samples")
    return torch.broadcast_to(mask, (n,))


def cos_plus_angle(cos: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """cos(clip(θ + g, 0, π)) for θ = arccos(cos), without arccos.

    cos θ·cos g − sin θ·sin g on [0, π]; θ + g < 0 gives 1 and θ + g > π gives −1 (the clip of the
    official AdaFace code, whose gradient there is truly 0). No clamp of cos θ itself: the gradient
    survives up to |cos θ| = 1 (sin θ = sqrt(max(1 − cos², 1e-12)) only guards the exact endpoint).
    """
    cg, sg = torch.cos(g), torch.sin(g)
    sin = torch.sqrt((1 - cos * cos).clamp_min(1e-12))
    val = cos * cg - sin * sg
    val = torch.where((g < 0) & (cos > cg), torch.ones_like(val), val)
    return torch.where((g > 0) & (cos < -cg), -torch.ones_like(val), val)


def _log1p_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 + eˣ) exactly for every x (F.softplus returns x itself above 20, off by up to 2e-9)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def _adaface_stats(state, norms: torch.Tensor, keep, momentum: float) -> torch.Tensor:
    """Update the EMA [μ, σ] of the kept samples' norms in place (no gradient); return it.

    Without ``state`` a fresh [20, 100] in the norms' dtype (the computation dtype) is used."""
    if state is None:
        state = torch.tensor(ADAFACE_INITIAL_STATS, dtype=norms.dtype, device=norms.device)
    else:
        check_tensor("state", state, ndim=1, dtype="float")
        check_shape("state", state, (2,), like="[mean, std] of the feature norms")
        check_same_device(["embeddings", "state"], [norms, state])
    with torch.no_grad():
        sel = norms if keep is None else norms[keep]
        if sel.numel() >= 1:
            sel = sel.to(state.dtype)
            state[0] = (1 - momentum) * state[0] + momentum * sel.mean()
            if sel.numel() >= 2:  # the unbiased std of one norm is undefined: keep σ
                state[1] = (1 - momentum) * state[1] + momentum * sel.std()
    return state


@register("adaface", family=FAMILY, kind="head", input="emb", source=ADAFACE,
          oracle="formula (m=0 normalised softmax; ẑ=0 CosFace; ẑ=−1 ArcFace)", tier=1, example=head_example,
          module_kwargs=HEAD_KW, hyper_errors={"margin": -0.1, "h": 0.0, "momentum": 1.5, "scale": 0.0},
          # the margin is a stop-gradient function of ‖x‖ (official code: safe_norms.detach()), so the
          # gradient is by design not the derivative of the value in ‖x‖
          gradcheck=False)
def adaface(embeddings, labels, centers, *, scale=64.0, margin=0.4, h=0.333, momentum=0.01, reduction="mean",
            weight=None, mask=None, state=None):
    """AdaFace: ℓ_i = CE over s·cos θ_ij with the target logit s·(cos(clip(θ_y + g_angle, 0, π)) − g_add).

    Feature-norm quality ẑ_i = clip((‖x_i‖ − μ)/(σ/h), −1, 1) with g_angle = −m·ẑ_i and g_add = m·ẑ_i + m
    (the AdaFace margin function). ẑ = −1 (low norm, poor image) is ArcFace with margin m, ẑ = 0 is CosFace with
    margin m, ẑ = +1 is cos(θ − m) − 2m; m = 0 is the normalised softmax with scale s. μ, σ are an EMA
    of the batch mean and unbiased std of the norms (momentum α): μ ← (1−α)μ + α·mean, σ likewise,
    updated with the current batch *before* use, as the official code does. Norms are clipped to
    [0.001, 100] and detached (no gradient flows through the margin); masked samples are left out of
    the statistics. ``state`` is a float tensor [μ, σ] updated in place (no gradient); without it a
    fresh [20, 100] is used, so a call without state equals the first step of a fresh :class:`AdaFace`.

    Numerics and assumptions: the official code writes (‖x‖ − μ)/(σ + 1e-3)·h (kept); it clamps every
    cosine to [−1+1e-3, 1−1e-3] before arccos and clips θ + g to [1e-3, π−1e-3]; here cos(θ + g)
    is computed as cos θ cos g − sin θ sin g with the clip at [0, π] (differences ≤ 5e-7 in the
    logit, and no gradient is zeroed near |cos| = 1). A batch with one kept sample updates μ only.

    Defaults: scale s=64, margin m=0.4, h=0.333, momentum α=0.01 (paper and official scripts,
    t_alpha=0.01), initial state [20, 100] (official code). Source: "AdaFace: Quality Adaptive Margin
    for Face Recognition" (Kim, Jain, Liu, CVPR 2022), official code mk-minchul/AdaFace head.py.
    """
    check_real("scale", scale, low=0.0, low_inclusive=False)
    check_real("margin", margin, low=0.0)
    check_real("h", h, low=0.0, low_inclusive=False)
    check_real("momentum", momentum, low=0.0, high=1.0, low_inclusive=False)
    check_head_inputs(embeddings, labels, centers)
    keep = sample_mask(mask, embeddings.shape[0])
    acc = compute_dtype(embeddings)
    norms = embeddings.detach().to(acc).norm(dim=1).clamp(*_NORM_RANGE)
    stats = _adaface_stats(state, norms, keep, float(momentum)).to(acc)
    mu, sigma = stats[0], stats[1]
    z = ((norms - mu) / (sigma + _ADAFACE_EPS) * h).clamp(-1.0, 1.0)
    g_angle = (-margin * z)[:, None]
    g_add = (margin * z + margin)[:, None]
    cos = cosine_logits(embeddings, centers)
    terms = margin_softmax_terms(cos, labels, float(scale),
                                 target_fn=lambda cos_y: cos_plus_angle(cos_y, g_angle) - g_add)
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=embeddings.dtype)


class AdaFace(HeadModule):
    """:func:`adaface` owning its class centres and the EMA of the feature norms.

    ``AdaFace(num_classes, embedding_dim, scale=64, margin=0.4, h=0.333, momentum=0.01)``;
    ``forward(embeddings, labels, centers=None, weight=None, mask=None)``. The buffer ``norm_stats``
    = [μ, σ] starts at [20, 100] (official code) and is updated at every forward, in training and in
    eval mode alike (the loss is only called in training); it travels with ``state_dict()`` and pickling.

    Distributed training: each rank updates its own ``norm_stats`` from its local batch, so ranks hold
    slightly different EMAs (each an average over ~1/α steps of local batches: same expectation, a
    variance larger by the world size). If the head sits inside ``DistributedDataParallel`` with the
    default ``broadcast_buffers=True``, rank 0's buffer overwrites the others at every forward, so
    rank 0's local EMA is used everywhere. An all-reduce of the batch statistics (Σ‖x‖, Σ‖x‖², count,
    then mean and unbiased std) before the update would make every rank's EMA equal to the one a single
    process would compute on the global batch, at the cost of one 3-element all-reduce per step; it
    changes only which μ, σ normalise the norms, not the loss form, and with α = 0.01 the difference is
    small. This class does the local form.
    """

    function = staticmethod(adaface)

    def __init__(self, num_classes: int = 2, embedding_dim: int = 2, **hyper):
        super().__init__(num_classes, embedding_dim, **hyper)
        self.register_buffer("norm_stats", torch.tensor(ADAFACE_INITIAL_STATS))

    def forward(self, embeddings, labels, centers=None, **call_kwargs):
        return adaface(embeddings, labels, self.centers if centers is None else centers, state=self.norm_stats,
                       **{**self.hyperparameters(), **call_kwargs})


attach_module("adaface", AdaFace)


def sphereface2_bias(num_classes: int, lam: float = 0.7, scale: float = 40.0, margin: float = 0.4,
                     t: float = 3.0) -> float:
    """opensphere's initial bias of SphereFace2-C: the b with ∂ℓ/∂b = 0 when every cos θ is 0.

    With u = e^{a_i + b}, v = e^{a_y − a_i}, a_y = r(g(0) − m), a_i = r(g(0) + m), z = λ/((1−λ)(C−1)),
    ∂ℓ/∂b = 0 ⇔ v·u² + (1 − z)·u − z = 0, whose positive root gives b = log(2z) − a_i − log(1 − z + √D).
    """
    if num_classes < 2:
        raise LossInputError("centers", "at least 2 classes for SphereFace2's one-vs-all bias", f"{num_classes}")
    z = lam / ((1.0 - lam) * (num_classes - 1.0))
    g0 = 2.0 * 0.5 ** t - 1.0
    ay, ai = scale * (g0 - margin), scale * (g0 + margin)
    d = (1.0 - z) ** 2 + 4.0 * z * math.exp(ay - ai)
    return math.log(2.0 * z) - ai - math.log(1.0 - z + math.sqrt(d))


@register("sphereface2", family=FAMILY, kind="head", input="emb", source=SPHEREFACE2,
          oracle="formula (t=1, m=0: weighted logistic one-vs-all)", tier=1, example=head_example,
          module_kwargs=HEAD_KW, hyper_errors={"lam": 1.0, "scale": 0.0, "t": 0.0, "margin": -0.1})
def sphereface2(embeddings, labels, centers, *, lam=0.7, scale=40.0, margin=0.4, t=3.0, bias=None,
                detach_adjustment=False, reduction="mean", weight=None, mask=None):
    """SphereFace2-C: ℓ_i = (λ/r)·log(1 + e^{−(r(g(cos θ_y) − m) + b)}) + ((1−λ)/r)·Σ_{j≠y} log(1 + e^{r(g(cos θ_j) + m) + b}).

    One binary (one-vs-all) logistic loss per class, no softmax over classes (SphereFace2 eq. 5 with the
    additive cosine margin, "-C", and the similarity adjustment g(z) = 2((z+1)/2)^t − 1). λ balances
    the one positive against the C−1 negatives, r = ``scale`` is the scale, m the margin, b a learnable
    scalar bias. t = 1 removes the adjustment; m = 0 removes the margin. ``bias=None`` uses opensphere's
    initial b (:func:`sphereface2_bias`: the b whose gradient vanishes when all cosines are 0);
    :class:`SphereFace2` learns b as a parameter. ``detach_adjustment=True`` reproduces opensphere's
    gradient: the value is the same but g(cos) − cos is detached, so the gradient is that of r·cos
    (the "characteristic gradient detachment" of SphereFace-R, not the derivative of this formula).

    Assumptions: only the -C margin form (the paper's -A and -M variants are not exposed); opensphere
    multiplies the whole loss by a loss weight lw = 50 (a plain factor, left to the caller: pass
    ``weight`` or scale the result); (z+1)/2 is clamped at 0 against cosines of −1 − ε from rounding.

    Defaults: lam λ=0.7, scale r=40, margin m=0.4, t=3, bias=None (opensphere's init),
    detach_adjustment=False. Source: "SphereFace2: Binary Classification is All You Need for Deep Face
    Recognition" (Wen et al., ICLR 2022), official code ydwen/opensphere model/head/sphereface2.py.
    """
    check_real("lam", lam, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_real("scale", scale, low=0.0, low_inclusive=False)
    check_real("margin", margin, low=0.0)
    check_real("t", t, low=0.0, low_inclusive=False)
    if isinstance(bias, torch.Tensor) and bias.numel() != 1:
        raise LossInputError("bias", "a scalar (a number or a one-element tensor)", f"shape {tuple(bias.shape)}")
    if bias is not None:
        check_real("bias", bias)
    c = check_head_inputs(embeddings, labels, centers)
    acc = compute_dtype(embeddings)
    if bias is None:
        bias = sphereface2_bias(c, float(lam), float(scale), float(margin), float(t))
    if isinstance(bias, torch.Tensor):
        b = bias.to(device=embeddings.device, dtype=acc).reshape(())
    else:  # the same 0-dim tensor arithmetic as a learned bias, so function and module agree bit for bit
        b = torch.tensor(float(bias), dtype=acc, device=embeddings.device)
    cos = cosine_logits(embeddings, centers)
    g = 2 * ((cos + 1) / 2).clamp_min(0) ** t - 1
    if detach_adjustment:
        g = cos + (g - cos).detach()
    target = F.one_hot(labels, c).bool()
    pos = _log1p_exp(-(scale * (g - margin) + b))
    neg = _log1p_exp(scale * (g + margin) + b)
    terms = torch.where(target, lam * pos, (1 - lam) * neg).sum(1) / scale
    return reduce_loss(terms, reduction, weight=weight, mask=mask, out_dtype=embeddings.dtype)


class SphereFace2(HeadModule):
    """:func:`sphereface2` owning its class centres and the learnable scalar bias ``bias``.

    ``SphereFace2(num_classes, embedding_dim, lam=0.7, scale=40, margin=0.4, t=3, bias=None)``: ``bias``
    initialises the parameter (None: :func:`sphereface2_bias` for ``num_classes``). Add
    ``module.parameters()`` (centres and bias) to the optimiser. No state beyond parameters; under
    class-sharded training each class term is independent (no softmax normaliser), so the loss is a plain
    sum over shards.
    """

    function = staticmethod(sphereface2)

    def __init__(self, num_classes: int = 2, embedding_dim: int = 2, **hyper):
        init = hyper.pop("bias", None)
        super().__init__(num_classes, embedding_dim, **hyper)
        if init is None:
            h = {**hyperparameters(sphereface2), **hyper}
            init = sphereface2_bias(int(num_classes), float(h["lam"]), float(h["scale"]), float(h["margin"]),
                                    float(h["t"]))
        self.bias = torch.nn.Parameter(torch.tensor(float(init)))

    def forward(self, embeddings, labels, centers=None, **call_kwargs):
        return sphereface2(embeddings, labels, self.centers if centers is None else centers,
                           **{**self.hyperparameters(), "bias": self.bias, **call_kwargs})


attach_module("sphereface2", SphereFace2)
