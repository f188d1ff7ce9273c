"""What every classification-style metric head shares.

A head owns class centres W (C, D) (``sub_centers`` K > 1: (C·K, D)); its math is a function
``f(embeddings, labels, centers, *, hyper)`` returning per-sample terms, so the function and module
faces stay one implementation. The common pieces:

* :func:`cosine_logits`: cos θ_ic = x̂_i·ŵ_c in the computation dtype (float32 for half inputs);
* :func:`margin_softmax_terms`: CE of s·cos with the target entry replaced by s·ψ(cos θ_y), the
  form of NormFace, CosFace, ArcFace, SphereFace, ElasticFace and AdaFace alike;
* :class:`HeadModule`: a ``LossModule`` owning the centres as a parameter, ``forward(embeddings,
  labels, centers=None)``;
* :func:`head_example`: example inputs (embeddings, labels, centres) for the conformance suite.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..checks import check_class_target, check_feature_dim, check_finite, check_real, check_same_batch, check_tensor
from ..errors import LossInputError
from ..examples import embedding_example
from ..module import LossModule, hyperparameters
from ..reduce import compute_dtype
from ..registry import Example

__all__ = ["check_head_inputs", "cosine_logits", "margin_softmax_terms", "HeadModule", "head_example"]


def check_head_inputs(embeddings, labels, centers, *, sub_centers: int = 1) -> int:
    """Validate (N, D) embeddings, (N,) labels and (C·K, D) centres; returns the number of classes C."""
    check_tensor("embeddings", embeddings, ndim=2, dtype="float")
    check_tensor("labels", labels, ndim=1, dtype="int")
    check_tensor("centers", centers, ndim=2, dtype="float")
    check_same_batch(["embeddings", "labels"], [embeddings, labels])
    check_feature_dim("centers", centers, "embeddings", embeddings)
    check_real("sub_centers", sub_centers, low=1, integer=True)
    if centers.shape[0] % int(sub_centers):
        raise LossInputError("centers", f"C·K rows with K = sub_centers = {sub_centers}", f"{centers.shape[0]} rows")
    num_classes = centers.shape[0] // int(sub_centers)
    check_class_target("labels", labels, num_classes, None)
    check_finite("embeddings", embeddings)
    check_finite("centers", centers)
    return num_classes


def cosine_logits(embeddings: torch.Tensor, centers: torch.Tensor, *, sub_centers: int = 1) -> torch.Tensor:
    """cos θ (N, C): normalised embeddings against normalised centres, in the computation dtype.

    With ``sub_centers`` K > 1 the centres are (C·K, D), grouped class-major, and each class takes
    the largest cosine over its K sub-centres (sub-center ArcFace)."""
    acc = compute_dtype(embeddings)
    cos = F.normalize(embeddings.to(acc), dim=1) @ F.normalize(centers.to(acc), dim=1).t()
    if sub_centers > 1:
        cos = cos.view(cos.shape[0], -1, int(sub_centers)).amax(-1)
    return cos


def margin_softmax_terms(cos: torch.Tensor, labels: torch.Tensor, scale: float | torch.Tensor,
                         target_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         other_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Per-sample CE of the logits s·cos θ_ic, with the target entry replaced by s·ψ(cos θ_y)
    (``target_fn`` = ψ) and, optionally, the non-target entries by s·φ(cos θ_ic) (``other_fn``).
    ``scale`` is a number or a per-sample column (N, 1) (SphereFace's s·‖x‖)."""
    y = labels[:, None]
    logits = cos if other_fn is None else other_fn(cos)
    if target_fn is not None:
        logits = logits.scatter(1, y, target_fn(cos.gather(1, y)))
    return F.cross_entropy(logits * scale, labels, reduction="none")


class HeadModule(LossModule):
    """A head's module face: owns ``centers`` (C·K, D), initialised N(0, 0.01) like insightface/pml.

    ``HeadModule(num_classes, embedding_dim, **hyper)``; ``forward(embeddings, labels, centers=None)``.
    Add ``module.parameters()`` to the optimiser: the centres are learned.
    """

    def __init__(self, num_classes: int = 2, embedding_dim: int = 2, **hyper):
        super().__init__(**hyper)
        check_real("num_classes", num_classes, low=1, integer=True)
        check_real("embedding_dim", embedding_dim, low=1, integer=True)
        k = int(hyper.get("sub_centers", hyperparameters(type(self).function).get("sub_centers", 1)))
        self.centers = torch.nn.Parameter(torch.randn(int(num_classes) * k, int(embedding_dim)) * 0.01)

    def forward(self, embeddings, labels, centers=None, **call_kwargs):
        return type(self).function(embeddings, labels, self.centers if centers is None else centers,
                                   **{**self.hyperparameters(), **call_kwargs})

    def cosine_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ (N, C) of the embeddings against this head's centres (max over sub-centres): the
        head's logits without margin or scale, for inference, retrieval against class centres, or to
        build custom margin logits (the margins themselves are reusable callables, e.g.
        ``margin_heads.arcface_margin``, which ``partial_fc`` also accepts)."""
        k = int(self.hyperparameters().get("sub_centers",
                                           hyperparameters(type(self).function).get("sub_centers", 1)))
        return cosine_logits(embeddings, self.centers, sub_centers=k)


def head_example(size="small", seed: int = 0, variant: str = "normal", *, classes: int = 5,
                 sub_centers: int = 1) -> Example:
    """(N, D) embeddings, labels in [0, classes) and (classes·K, D) centres, with bad inputs."""
    ex = embedding_example(size, seed, variant, classes=classes)
    d = ex.inputs["embeddings"].shape[1]
    g = torch.Generator().manual_seed(seed + 11)
    centers = torch.randn(classes * sub_centers, d, generator=g)
    ex.inputs["centers"] = centers
    ex.bad = [(arg, {**inputs, "centers": centers}) for arg, inputs in ex.bad]
    over = ex.inputs["labels"].clone()
    over[0] = classes
    ex.bad.append(("labels", {**ex.inputs, "labels": over}))
    ex.bad.append(("centers", {**ex.inputs, "centers": centers[:, :-1]}))
    ex.grad = ("embeddings", "centers")
    return ex
