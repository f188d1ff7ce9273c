"""The pair machinery shared by the pair/tuple losses and the miners.

* **Similarity.** Every pair loss works with a similarity ``s`` (larger = closer):
  ``"cosine"`` (x̂·ŷ), ``"dot"`` (x·y), ``"neg_euclidean"`` (−‖x−y‖) and ``"neg_sq_euclidean"``
  (−‖x−y‖²). ``normalize=True`` L2-normalises the embeddings first for the Euclidean ones (as
  pytorch-metric-learning's ``LpDistance`` does by default); "cosine" always normalises, "dot" never.
  Margins and thresholds of a loss are given *in the metric's own units* (a distance for the
  Euclidean ones, a similarity otherwise), as in pml; :meth:`PairBatch.threshold` turns a margin into
  the similarity it stands for (−m for a distance, m for a similarity). Distances are computed
  exactly (no ‖x‖²+‖y‖²−2x·y cancellation), so near-duplicate embeddings keep finite gradients.
* **Masks.** ``pos[i, j] = (y_i = y'_j)``, ``neg[i, j] = (y_i ≠ y'_j)``; the self pair (i, i) is
  neither when the references are the batch (no reference set, or ``ref_is_batch=True``).
* **Reference set.** ``ref_embeddings``/``ref_labels`` (M, D)/(M,) replace the batch as the other
  member of every pair (cross-batch memory, a gathered batch, a support set); then no diagonal is
  excluded unless ``ref_is_batch=True`` says that reference i *is* sample i.
* **indices_tuple** from a miner, pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)`` (a triplet
  gives the pairs (a, p) and (a, n)), restricts which pairs count: a pair counts when its label
  relation holds *and* it is listed. A tuple can only restrict, never relabel a pair.
* **mask** (N,) bool, True = keep: a masked sample is dropped as an anchor (its term is excluded by
  the reduction) and as a pair member (its column is removed when the references are the batch).
* **Per-anchor helpers**: masked log-sum-exp (optionally with the "+1" of log(1 + Σ e^x)), masked
  sum/mean/count along the reference axis. Rows with nothing to reduce give an exact 0 with zero
  gradient, never NaN.

Everything is computed in :func:`~losskit.reduce.compute_dtype` (float32 for half inputs).
Losses evaluate their per-anchor terms on row blocks through :mod:`losskit.schedules.pairs`, which
calls :meth:`PairBatch.similarity` and :meth:`PairBatch.masks` for one block of anchors at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checks import (check_broadcastable, check_choice, check_feature_dim, check_finite, check_same_batch, check_tensor,
                      checks_enabled)
from ..errors import LossInputError
from ..reduce import compute_dtype

__all__ = ["SIMILARITIES", "PairBatch", "pair_batch", "similarity_matrix", "rowwise_similarity",
           "prepare_embeddings", "euclidean_distance", "masked_logsumexp", "masked_sum"]

SIMILARITIES = ("cosine", "dot", "neg_euclidean", "neg_sq_euclidean")
_DISTANCES = ("neg_euclidean", "neg_sq_euclidean")


def prepare_embeddings(x: torch.Tensor, similarity: str, normalize: bool) -> torch.Tensor:
    """``x`` in the computation dtype, L2-normalised where the similarity asks for it."""
    x = x.to(compute_dtype(x))
    if similarity == "cosine" or (normalize and similarity in _DISTANCES):
        x = F.normalize(x, dim=-1)
    return x


class _EuclideanDistance(torch.autograd.Function):
    """‖q_i − r_j‖ (n, M), exact in the forward, O(n·M) memory in the backward.

    The forward uses cdist's difference form (the ‖q‖² + ‖r‖² − 2q·r form cancels catastrophically
    for near-duplicates). The backward is two matrix products, ∂/∂q = diag(W·1)·q − W·r and
    ∂/∂r = diag(Wᵀ·1)·r − Wᵀ·q with W = G/d (0 where d = 0, the subgradient), instead of
    cdist's own backward, which on CPU allocates an (n, M, D) buffer.
    """

    @staticmethod
    def forward(ctx, q, r):
        d = torch.cdist(q, r, compute_mode="donot_use_mm_for_euclid_dist")
        ctx.save_for_backward(q, r, d)
        return d

    @staticmethod
    def backward(ctx, grad):
        q, r, d = ctx.saved_tensors
        w = torch.where(d > 0, grad / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        gq = gr = None
        if ctx.needs_input_grad[0]:
            gq = w.sum(1, keepdim=True) * q - w @ r
        if ctx.needs_input_grad[1]:
            gr = w.sum(0)[:, None] * r - w.t() @ q
        return gq, gr


def euclidean_distance(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """(n, M) exact Euclidean distances with an O(n·M)-memory backward (see :class:`_EuclideanDistance`)."""
    return _EuclideanDistance.apply(q, r)


def similarity_matrix(q: torch.Tensor, r: torch.Tensor, similarity: str) -> torch.Tensor:
    """(n, M) similarities between prepared rows ``q`` (n, D) and ``r`` (M, D)."""
    if similarity in ("cosine", "dot"):
        return q @ r.t()
    d = euclidean_distance(q, r)
    return -d if similarity == "neg_euclidean" else -d.square()


def rowwise_similarity(x: torch.Tensor, y: torch.Tensor, similarity: str) -> torch.Tensor:
    """(T,) similarities of matched rows x[t], y[t] (prepared)."""
    if similarity in ("cosine", "dot"):
        return (x * y).sum(-1)
    d = torch.linalg.vector_norm(x - y, dim=-1)
    return -d if similarity == "neg_euclidean" else -d.square()


def masked_logsumexp(x: torch.Tensor, keep: torch.Tensor, add_one: bool = False) -> torch.Tensor:
    """log Σ_{keep} e^x along the last dim (log(1 + Σ) with ``add_one``); 0 for rows with nothing kept.

    Rows with nothing kept are filled with zeros before the logsumexp, so their (discarded) result and
    its gradient stay finite.
    """
    neg_inf = float("-inf")
    any_kept = keep.any(-1, keepdim=True)
    safe = torch.where(keep, x, x.new_full((), neg_inf))
    if add_one:
        safe = torch.cat([safe, x.new_zeros(safe.shape[:-1] + (1,))], dim=-1)
        return torch.logsumexp(safe, dim=-1)  # the appended 0 keeps every row finite
    safe = torch.where(any_kept, safe, x.new_zeros(()))
    out = torch.logsumexp(safe, dim=-1)
    return torch.where(any_kept.squeeze(-1), out, out.new_zeros(()))


def masked_sum(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Σ_{keep} x along the last dim (``where``, not a product: x may be anything where not kept)."""
    return torch.where(keep, x, x.new_zeros(())).sum(-1)


@dataclass
class PairBatch:
    """Validated pair inputs: prepared queries/references, labels, exclusions and restrictions.

    ``q`` (N, D) and ``r`` (M, D) are prepared (computation dtype, normalised as the similarity says);
    ``r is q`` when there is no reference set. ``keep_q``/``keep_r`` are the sample masks of the
    anchors and of the references (None = all kept). ``pos_pairs``/``neg_pairs`` are the (anchor,
    reference) index pairs allowed by ``indices_tuple`` (None = all).
    """

    q: torch.Tensor
    r: torch.Tensor
    labels: torch.Tensor
    ref_labels: torch.Tensor
    similarity: str
    self_pairs: bool                      # the references are the batch: (i, i) is not a pair
    keep_q: torch.Tensor | None
    keep_r: torch.Tensor | None
    pos_pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    neg_pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return self.q.shape[0]

    @property
    def m(self) -> int:
        return self.r.shape[0]

    @property
    def is_distance(self) -> bool:
        return self.similarity in _DISTANCES

    def threshold(self, margin: float) -> float:
        """The similarity a margin in the metric's units stands for: −m for a distance, m otherwise."""
        return -float(margin) if self.is_distance else float(margin)

    def similarity_rows(self, q_rows: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return similarity_matrix(q_rows, r, self.similarity)

    def _restrict(self, pairs, rows: slice, base: torch.Tensor) -> torch.Tensor:
        if pairs is None:
            return base
        a, o = pairs
        sel = (a >= rows.start) & (a < rows.stop)
        listed = torch.zeros_like(base)
        listed[a[sel] - rows.start, o[sel]] = True
        return base & listed

    def masks(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Bool (rows, M) masks of the positive and negative pairs of anchors ``rows``."""
        y = self.labels[rows]
        same = y[:, None] == self.ref_labels[None, :]
        pos, neg = same.clone(), ~same
        if self.self_pairs:
            idx = torch.arange(rows.start, rows.start + y.shape[0], device=y.device)
            pos[torch.arange(y.shape[0], device=y.device), idx] = False
        if self.keep_r is not None:
            pos &= self.keep_r[None, :]
            neg &= self.keep_r[None, :]
        return self._restrict(self.pos_pairs, rows, pos), self._restrict(self.neg_pairs, rows, neg)

    def triplet_valid(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Which listed triplets are real: label relations hold, no self pair, members kept."""
        ok = (self.labels[a] == self.ref_labels[p]) & (self.labels[a] != self.ref_labels[n])
        if self.self_pairs:
            ok &= a != p
        if self.keep_r is not None:
            ok &= self.keep_r[p] & self.keep_r[n]
        return ok


def _check_indices(indices_tuple, n: int, m: int) -> None:
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        raise LossInputError("indices_tuple", "a tuple (a, p, n) of triplets or (a1, p, a2, n) of pairs",
                             f"{type(indices_tuple).__name__} of length "
                             f"{len(indices_tuple) if hasattr(indices_tuple, '__len__') else '?'}")
    for t in indices_tuple:
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
            raise LossInputError("indices_tuple", "1-D integer index tensors", repr(type(t)))
    if len(indices_tuple) == 3:
        sizes = {t.shape[0] for t in indices_tuple}
        if len(sizes) > 1:
            raise LossInputError("indices_tuple", "a, p, n of equal length", str([t.shape[0] for t in indices_tuple]))
        bounds = (n, m, m)
    else:
        a1, p, a2, ng = indices_tuple
        if a1.shape != p.shape or a2.shape != ng.shape:
            raise LossInputError("indices_tuple", "len(a1) == len(p) and len(a2) == len(n)",
                                 str([t.shape[0] for t in indices_tuple]))
        bounds = (n, m, n, m)
    if checks_enabled():
        for t, hi in zip(indices_tuple, bounds):
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= hi):
                raise LossInputError("indices_tuple", f"indices in [0, {hi})", f"[{int(t.min())}, {int(t.max())}]")


def pair_batch(embeddings, labels, *, similarity: str = "cosine", normalize: bool = True, ref_embeddings=None,
               ref_labels=None, ref_is_batch: bool = False, indices_tuple=None, mask=None,
               allowed_similarities=SIMILARITIES) -> PairBatch:
    """Validate the pair inputs (every error names its argument) and build a :class:`PairBatch`."""
    check_tensor("embeddings", embeddings, ndim=2, dtype="float")
    check_tensor("labels", labels, ndim=1, dtype="int")
    check_same_batch(["embeddings", "labels"], [embeddings, labels])
    check_choice("similarity", similarity, allowed_similarities)
    if (ref_embeddings is None) != (ref_labels is None):
        raise LossInputError("ref_labels" if ref_labels is None else "ref_embeddings",
                             "ref_embeddings and ref_labels given together", "only one of them")
    check_finite("embeddings", embeddings)
    q = prepare_embeddings(embeddings, similarity, normalize)
    if ref_embeddings is None:
        r, ref_labels, self_pairs = q, labels, True
    else:
        check_tensor("ref_embeddings", ref_embeddings, ndim=2, dtype="float")
        check_tensor("ref_labels", ref_labels, ndim=1, dtype="int")
        check_same_batch(["ref_embeddings", "ref_labels"], [ref_embeddings, ref_labels])
        check_feature_dim("ref_embeddings", ref_embeddings, "embeddings", embeddings)
        if ref_embeddings.dtype != embeddings.dtype:
            raise LossInputError("ref_embeddings", f"dtype {embeddings.dtype} (as embeddings)", str(ref_embeddings.dtype))
        if ref_embeddings.device != embeddings.device:
            raise LossInputError("ref_embeddings", f"a tensor on {embeddings.device}", str(ref_embeddings.device))
        if ref_is_batch and ref_embeddings.shape[0] != embeddings.shape[0]:
            raise LossInputError("ref_embeddings", f"{embeddings.shape[0]} rows with ref_is_batch=True",
                                 f"{ref_embeddings.shape[0]}")
        check_finite("ref_embeddings", ref_embeddings)
        r, self_pairs = prepare_embeddings(ref_embeddings, similarity, normalize), bool(ref_is_batch)
    keep_q = keep_r = None
    if mask is not None:
        check_tensor("mask", mask, dtype="bool")
        check_broadcastable("mask", mask, labels.shape, like="the samples")
        keep_q = mask.expand(labels.shape)
        keep_r = keep_q if self_pairs else None
    batch = PairBatch(q, r, labels, ref_labels, similarity, self_pairs, keep_q, keep_r)
    if indices_tuple is not None:
        _check_indices(indices_tuple, q.shape[0], r.shape[0])
        idx = tuple(t.to(labels.device, torch.long) for t in indices_tuple)
        if len(idx) == 3:
            a, p, n = idx
            batch.triplets, batch.pos_pairs, batch.neg_pairs = idx, (a, p), (a, n)
        else:
            batch.pos_pairs, batch.neg_pairs = (idx[0], idx[1]), (idx[2], idx[3])
    return batch
