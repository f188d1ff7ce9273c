"""Miners: pure functions that pick pairs or triplets for the pair losses.

Each takes ``(embeddings, labels, *, <hyper>, similarity=..., ref_embeddings=None, ref_labels=None,
ref_is_batch=False, mask=None)`` and returns an index tuple, pairs ``(a1, p, a2, n)`` or triplets
``(a, p, n)`` (int64, anchors index ``embeddings``, the others the references), that every pair loss
accepts as ``indices_tuple``. Mining runs under ``torch.no_grad()`` on detached embeddings: **no
gradient flows through a miner**; the loss it feeds differentiates the selected pairs only.
Similarities, masks and the reference set follow :mod:`losskit.metric.pairs` (margins and ε are in
the metric's units, as in pytorch-metric-learning).
"""
from __future__ import annotations

import functools

import torch

from ..checks import check_real
from ..examples import embedding_example
from ..registry import Example, register
from .pairs import pair_batch, similarity_matrix

__all__ = ["multi_similarity_miner", "batch_hard_miner", "semi_hard_miner"]

MS = "Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning"


def miner_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """Embeddings and labels; miners have no terms (``term_shape=None``) and no gradient (``grad=()``)."""
    ex = embedding_example(size, seed, variant)
    emb, lab = ex.inputs["embeddings"], ex.inputs["labels"]
    bad = ex.bad + [("ref_embeddings", {**ex.inputs, "ref_embeddings": emb[:, :-1], "ref_labels": lab}),
                    ("ref_labels", {**ex.inputs, "ref_embeddings": emb})]
    return Example(ex.inputs, grad=(), batch=ex.batch, term_shape=None, mask_shape=None, bad=bad)


_register = functools.partial(register, family="metric", kind="miner", input="emb", example=miner_example,
                              gradcheck=False)  # a miner returns indices: there is no gradient to check


def _prepare(embeddings, labels, similarity, normalize, ref_embeddings, ref_labels, ref_is_batch, mask):
    """Detached pair batch, the (N, M) similarities and the pair masks (masked anchors have no pair)."""
    b = pair_batch(embeddings.detach(), labels, similarity=similarity, normalize=normalize,
                   ref_embeddings=None if ref_embeddings is None else ref_embeddings.detach(), ref_labels=ref_labels,
                   ref_is_batch=ref_is_batch, mask=mask)
    s = similarity_matrix(b.q, b.r, b.similarity)
    pos, neg = b.masks(slice(0, b.n))
    if b.keep_q is not None:
        pos &= b.keep_q[:, None]
        neg &= b.keep_q[:, None]
    return b, s, pos, neg


@_register("multi_similarity_miner", source=MS, oracle="pml", tier=1, hyper_errors={"epsilon": -0.1})
@torch.no_grad()
def multi_similarity_miner(embeddings, labels, *, epsilon=0.1, similarity="cosine", normalize=True,
                           ref_embeddings=None, ref_labels=None, ref_is_batch=False, mask=None):
    """MS pair mining: keep negative k of anchor i if S_ik + ε > min_{j∈P_i} S_ij, positive j if S_ij − ε < max_{k∈N_i} S_ik.

    Returns pairs (a1, p, a2, n). With a distance d the comparisons flip (d_ik − ε < max_P d,
    d_ij + ε > min_N d), as pml. An anchor without negatives keeps no positive and vice versa.
    No gradient flows through the miner.

    Defaults: ε=0.1, similarity="cosine" (the paper; pml MultiSimilarityMiner).
    Source: "Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning".
    """
    check_real("epsilon", epsilon, low=0.0)
    _, s, pos, neg = _prepare(embeddings, labels, similarity, normalize, ref_embeddings, ref_labels, ref_is_batch,
                              mask)
    inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
    max_neg = torch.where(neg, s, -inf).amax(1, keepdim=True)
    min_pos = torch.where(pos, s, inf).amin(1, keepdim=True)
    a1, p = (pos & (s - epsilon < max_neg)).nonzero(as_tuple=True)
    a2, n = (neg & (s + epsilon > min_pos)).nonzero(as_tuple=True)
    return a1, p, a2, n


@_register("batch_hard_miner", source="anchor", oracle="pml", tier=1, hyper_errors={"similarity": "manhattan"})
@torch.no_grad()
def batch_hard_miner(embeddings, labels, *, similarity="neg_euclidean", normalize=True, ref_embeddings=None,
                     ref_labels=None, ref_is_batch=False, mask=None):
    """Batch-hard mining: per anchor i, p = argmin_{j∈P_i} s_ij (farthest positive), n = argmax_{k∈N_i} s_ik (nearest negative).

    Returns triplets (a, p, n), one per anchor that has a positive and a negative. Ties go to the
    lowest index. No gradient flows through the miner.

    Defaults: similarity="neg_euclidean" on L2-normalised embeddings (pml BatchHardMiner with
    LpDistance). Source: anchor (pytorch-metric-learning BatchHardMiner; Hermans, Beyer, Leibe,
    "In Defense of the Triplet Loss for Person Re-Identification").
    """
    b, s, pos, neg = _prepare(embeddings, labels, similarity, normalize, ref_embeddings, ref_labels, ref_is_batch,
                              mask)
    inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
    p = torch.where(pos, s, inf).argmin(1)
    n = torch.where(neg, s, -inf).argmax(1)
    a = (pos.any(1) & neg.any(1)).nonzero(as_tuple=True)[0]
    return a, p[a], n[a]


@_register("semi_hard_miner", source="anchor", oracle="pml", tier=2, hyper_errors={"margin": -0.1})
@torch.no_grad()
def semi_hard_miner(embeddings, labels, *, margin=0.2, similarity="neg_euclidean", normalize=True,
                    ref_embeddings=None, ref_labels=None, ref_is_batch=False, mask=None):
    """Semi-hard triplets: all (a, p, n) with 0 < s_ap − s_an ≤ m (i.e. d_ap < d_an ≤ d_ap + m).

    The negative is farther than the positive but inside the margin (FaceNet's semi-hard set, pml's
    TripletMarginMiner(type_of_triplets="semihard"), which keeps every such triplet, not one per
    anchor). Evaluated over anchor blocks so at most ~16M (p, n) flags exist at once. No gradient
    flows through the miner.

    Defaults: margin m=0.2, similarity="neg_euclidean" on L2-normalised embeddings (pml
    TripletMarginMiner). Source: anchor (pytorch-metric-learning TripletMarginMiner; Schroff,
    Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering").
    """
    check_real("margin", margin, low=0.0)
    b, s, pos, neg = _prepare(embeddings, labels, similarity, normalize, ref_embeddings, ref_labels, ref_is_batch,
                              mask)
    step = max(1, (1 << 24) // max(b.m * b.m, 1))
    out = []
    for start in range(0, b.n, step):
        sl = slice(start, min(start + step, b.n))
        gap = s[sl, :, None] - s[sl, None, :]                     # s_ap − s_an, [i, p, n]
        keep = pos[sl, :, None] & neg[sl, None, :] & (gap > 0) & (gap <= margin)
        a, p, n = keep.nonzero(as_tuple=True)
        out.append((a + start, p, n))
    if not out:
        empty = torch.empty(0, dtype=torch.long, device=labels.device)
        return empty, empty.clone(), empty.clone()
    return tuple(torch.cat(parts) for parts in zip(*out))
