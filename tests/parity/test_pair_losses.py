"""Parity of the pair losses and miners with pytorch-metric-learning (pml), and of proto_triplet with
a loop transcription of its equation. float64 throughout.

Matched reductions (pml's default reducers average differently from losskit's mean over anchors):
* contrastive_pair / triplet_margin: ours ``per_anchor="sum", reduction="sum"`` == pml with
  ``reducer=SumReducer()`` (Σ over all pairs / triplets); contrastive also ``per_anchor="mean",
  reduction="mean"`` == pml ``PerAnchorReducer(MeanReducer())`` (every anchor has pairs there).
* multi_similarity / circle / lifted_structure: ours ``reduction="none"`` (N,) == pml's per-element
  losses from ``reducer=DoNothingReducer()``; gradients of their sums.
Miners: the returned index sets, compared as sets of tuples (and fed to both losses).
Tolerances: rtol=1e-9, atol=1e-11 on values and gradients (pml's cdist uses the matmul form for
batches > 25; ours the exact difference form; at these sizes both agree to ~1e-15).
"""
from __future__ import annotations

import pytest
import torch

import losskit.functional as LF
from losskit import LossInputError

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import distances, losses, miners, reducers  # noqa: E402

RTOL, ATOL = 1e-9, 1e-11
N, M, D, C = 16, 10, 6, 4


def data(seed=0, n=N, classes=C, d=D):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]
    x = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(True)
    return x, labels


def refs(seed=1, m=M, classes=C + 1, d=D):
    g = torch.Generator().manual_seed(seed + 50)
    return torch.randn(m, d, generator=g, dtype=torch.float64).requires_grad_(True), torch.randint(0, classes, (m,),
                                                                                                   generator=g)


def grads_of(out, leaves):
    gs = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return [torch.zeros_like(l) if g is None else g for g, l in zip(gs, leaves)]


def assert_parity(ours, theirs, leaves):
    """Same values and same gradients of their sums w.r.t. every leaf."""
    ours, theirs = ours.reshape(-1), theirs.reshape(-1)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    g_ours, g_theirs = grads_of(ours, leaves), grads_of(theirs, leaves)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert any(g.abs().sum() > 0 for g in g_ours), "degenerate case: no gradient at all"


def elements(loss_fn, *args, **kw):
    """pml per-element losses (reducer=DoNothingReducer) as an (N,) tensor."""
    return loss_fn(*args, **kw)["loss"]["losses"].reshape(-1)


DIST = {"neg_euclidean": distances.LpDistance, "cosine": distances.CosineSimilarity}


# ------------------------------------------------------------------------------------------ contrastive
@pytest.mark.parametrize("similarity,pos_margin,neg_margin",
                         [("neg_euclidean", 0.0, 1.0), ("neg_euclidean", 0.2, 0.8), ("cosine", 0.9, 0.2)])
@pytest.mark.parametrize("with_refs", [False, True])
def test_contrastive_sum_matches_pml_sum_reducer(similarity, pos_margin, neg_margin, with_refs):
    x, y = data(0)
    kw, leaves = {}, [x]
    if with_refs:
        r, ry = refs()
        kw, leaves = {"ref_emb": r, "ref_labels": ry}, [x, r]
    ref = losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin, distance=DIST[similarity](),
                                 reducer=reducers.SumReducer())
    ours = LF.contrastive_pair(x, y, pos_margin=pos_margin, neg_margin=neg_margin, similarity=similarity,
                               per_anchor="sum", reduction="sum",
                               ref_embeddings=kw.get("ref_emb"), ref_labels=kw.get("ref_labels"))
    assert_parity(ours, ref(x, y, **kw), leaves)


def test_contrastive_per_anchor_mean_matches_pml_per_anchor_reducer():
    x, y = data(1)
    ref = losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9, reducer=reducers.PerAnchorReducer(reducers.MeanReducer()))
    ours = LF.contrastive_pair(x, y, pos_margin=0.1, neg_margin=0.9, per_anchor="mean", reduction="mean")
    assert_parity(ours, ref(x, y), [x])


def test_contrastive_with_mined_pairs_matches_pml():
    x, y = data(2)
    idx = miners.MultiSimilarityMiner(epsilon=0.1, distance=distances.LpDistance())(x, y)
    assert len(idx[0]) and len(idx[2])
    ref = losses.ContrastiveLoss(reducer=reducers.SumReducer())
    ours = LF.contrastive_pair(x, y, indices_tuple=idx, per_anchor="sum", reduction="sum")
    assert_parity(ours, ref(x, y, indices_tuple=idx), [x])


# ------------------------------------------------------------------------------------------ triplet
@pytest.mark.parametrize("margin", [0.05, 0.3])
@pytest.mark.parametrize("swap,smooth", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("similarity", ["neg_euclidean", "cosine"])
def test_triplet_all_triplets_match_pml(margin, swap, smooth, similarity):
    x, y = data(3)
    ref = losses.TripletMarginLoss(margin=margin, swap=swap, smooth_loss=smooth, distance=DIST[similarity](),
                                   reducer=reducers.SumReducer())
    ours = LF.triplet_margin(x, y, margin=margin, swap=swap, smooth=smooth, similarity=similarity,
                             per_anchor="sum", reduction="sum")
    assert_parity(ours, ref(x, y), [x])


def test_triplet_with_reference_set_matches_pml():
    x, y = data(4)
    r, ry = refs(4)
    ref = losses.TripletMarginLoss(margin=0.2, reducer=reducers.SumReducer())
    ours = LF.triplet_margin(x, y, margin=0.2, ref_embeddings=r, ref_labels=ry, per_anchor="sum", reduction="sum")
    assert_parity(ours, ref(x, y, ref_emb=r, ref_labels=ry), [x, r])


@pytest.mark.parametrize("miner", ["batch_hard", "semi_hard", "ms_pairs"])
def test_triplet_with_mined_tuples_matches_pml(miner):
    x, y = data(5)
    m = {"batch_hard": miners.BatchHardMiner(), "semi_hard": miners.TripletMarginMiner(margin=0.5,
                                                                                     type_of_triplets="semihard"),
         "ms_pairs": miners.MultiSimilarityMiner(epsilon=0.3, distance=distances.LpDistance())}[miner]
    idx = m(x, y)
    assert len(idx[0]) > 0
    ref = losses.TripletMarginLoss(margin=0.1, reducer=reducers.SumReducer())
    ours = LF.triplet_margin(x, y, margin=0.1, indices_tuple=idx, per_anchor="sum", reduction="sum")
    assert_parity(ours, ref(x, y, indices_tuple=idx), [x])


def test_triplet_per_anchor_mean_by_hand():
    """per_anchor="mean": each anchor's term is the mean of its triplets' hinge (explicit loop)."""
    x, y = data(6, n=7, classes=3)
    xn = torch.nn.functional.normalize(x, dim=1)
    terms = LF.triplet_margin(x, y, margin=0.3, reduction="none")
    for a in range(7):
        vals = [torch.relu((xn[a] - xn[p]).norm() - (xn[a] - xn[n]).norm() + 0.3)
                for p in range(7) for n in range(7) if p != a and y[p] == y[a] and y[n] != y[a]]
        want = torch.stack(vals).mean() if vals else torch.zeros((), dtype=x.dtype)
        torch.testing.assert_close(terms[a], want, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------ multi-similarity
@pytest.mark.parametrize("alpha,beta,base", [(2.0, 50.0, 0.5), (2.0, 50.0, 1.0), (1.0, 10.0, 0.3)])
@pytest.mark.parametrize("with_refs", [False, True])
def test_multi_similarity_terms_match_pml(alpha, beta, base, with_refs):
    x, y = data(7)
    kw, leaves = {}, [x]
    if with_refs:
        r, ry = refs(7)
        kw, leaves = {"ref_emb": r, "ref_labels": ry}, [x, r]
    ref = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, reducer=reducers.DoNothingReducer())
    ours = LF.multi_similarity(x, y, alpha=alpha, beta=beta, base=base, reduction="none",
                               ref_embeddings=kw.get("ref_emb"), ref_labels=kw.get("ref_labels"))
    assert_parity(ours, elements(ref, x, y, **kw), leaves)


def test_multi_similarity_with_ms_miner_matches_pml():
    x, y = data(8)
    idx = miners.MultiSimilarityMiner(epsilon=0.1)(x, y)
    ours_idx = LF.multi_similarity_miner(x, y, epsilon=0.1)
    ref = losses.MultiSimilarityLoss(reducer=reducers.DoNothingReducer())
    ours = LF.multi_similarity(x, y, base=0.5, indices_tuple=ours_idx, reduction="none")
    assert_parity(ours, elements(ref, x, y, indices_tuple=idx), [x])


def test_multi_similarity_with_a_distance_matches_pml():
    x, y = data(9)
    ref = losses.MultiSimilarityLoss(alpha=2, beta=10, base=1.2, distance=distances.LpDistance(),
                                     reducer=reducers.DoNothingReducer())
    ours = LF.multi_similarity(x, y, alpha=2, beta=10, base=1.2, similarity="neg_euclidean", reduction="none")
    assert_parity(ours, elements(ref, x, y), [x])


# ------------------------------------------------------------------------------------------ circle
@pytest.mark.parametrize("m,gamma", [(0.25, 256.0), (0.4, 80.0)])
@pytest.mark.parametrize("with_refs", [False, True])
def test_circle_terms_and_gradients_match_pml(m, gamma, with_refs):
    x, y = data(10)
    kw, leaves = {}, [x]
    if with_refs:
        r, ry = refs(10)
        kw, leaves = {"ref_emb": r, "ref_labels": ry}, [x, r]
    ref = losses.CircleLoss(m=m, gamma=gamma, reducer=reducers.DoNothingReducer())
    ours = LF.circle(x, y, m=m, gamma=gamma, reduction="none", ref_embeddings=kw.get("ref_emb"),
                     ref_labels=kw.get("ref_labels"))
    assert_parity(ours, elements(ref, x, y, **kw), leaves)


def test_circle_anchor_without_negative_is_zero_and_excluded():
    x, y = data(11, n=6)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    sub = torch.tensor([True, True, True, False, False, False])
    terms = LF.circle(x, y, reduction="none", mask=sub)  # only class 0 kept: no negatives anywhere
    assert (terms == 0).all()
    out = LF.circle(x, y, mask=sub)
    assert out.item() == 0.0 and out.requires_grad


# ------------------------------------------------------------------------------------------ lifted structure
@pytest.mark.parametrize("similarity,pos_margin,neg_margin",
                         [("neg_euclidean", 0.0, 1.0), ("neg_euclidean", 0.1, 0.6), ("cosine", 0.8, 0.3)])
@pytest.mark.parametrize("with_refs", [False, True])
def test_lifted_structure_terms_match_pml(similarity, pos_margin, neg_margin, with_refs):
    x, y = data(12)
    kw, leaves = {}, [x]
    if with_refs:
        r, ry = refs(12)
        kw, leaves = {"ref_emb": r, "ref_labels": ry}, [x, r]
    ref = losses.GeneralizedLiftedStructureLoss(pos_margin=pos_margin, neg_margin=neg_margin,
                                                distance=DIST[similarity](), reducer=reducers.DoNothingReducer())
    ours = LF.lifted_structure(x, y, pos_margin=pos_margin, neg_margin=neg_margin, similarity=similarity,
                               reduction="none", ref_embeddings=kw.get("ref_emb"), ref_labels=kw.get("ref_labels"))
    assert_parity(ours, elements(ref, x, y, **kw), leaves)


# ------------------------------------------------------------------------------------------ miners
def as_set(idx):
    return set(zip(*[t.tolist() for t in idx]))


def as_pair_sets(idx):
    return as_set(idx[:2]), as_set(idx[2:])


@pytest.mark.parametrize("epsilon", [0.1, 0.3])
@pytest.mark.parametrize("with_refs", [False, True])
def test_multi_similarity_miner_matches_pml(epsilon, with_refs):
    x, y = data(13)
    kw = {}
    if with_refs:
        r, ry = refs(13)
        kw = {"ref_emb": r, "ref_labels": ry}
    theirs = miners.MultiSimilarityMiner(epsilon=epsilon)(x, y, **kw)
    ours = LF.multi_similarity_miner(x, y, epsilon=epsilon, ref_embeddings=kw.get("ref_emb"),
                                     ref_labels=kw.get("ref_labels"))
    assert all(t.dtype == torch.long for t in ours) and not any(t.requires_grad for t in ours)
    assert as_pair_sets(ours) == as_pair_sets(theirs)
    everything = LF.multi_similarity_miner(x, y, epsilon=10.0, ref_embeddings=kw.get("ref_emb"),
                                           ref_labels=kw.get("ref_labels"))  # ε large: every pair
    assert 0 < len(ours[0]) + len(ours[2]) < len(everything[0]) + len(everything[2])


@pytest.mark.parametrize("similarity", ["neg_euclidean", "cosine"])
@pytest.mark.parametrize("with_refs", [False, True])
def test_batch_hard_miner_matches_pml(similarity, with_refs):
    x, y = data(14)
    kw = {}
    if with_refs:
        r, ry = refs(14)
        kw = {"ref_emb": r, "ref_labels": ry}
    theirs = miners.BatchHardMiner(distance=DIST[similarity]())(x, y, **kw)
    ours = LF.batch_hard_miner(x, y, similarity=similarity, ref_embeddings=kw.get("ref_emb"),
                               ref_labels=kw.get("ref_labels"))
    assert len(ours) == 3 and len(ours[0]) > 0
    assert as_set(ours) == as_set(theirs)


@pytest.mark.parametrize("margin", [0.2, 0.5])
@pytest.mark.parametrize("similarity", ["neg_euclidean", "cosine"])
@pytest.mark.parametrize("with_refs", [False, True])
def test_semi_hard_miner_matches_pml_triplet_margin_miner(margin, similarity, with_refs):
    x, y = data(15)
    kw = {}
    if with_refs:
        r, ry = refs(15)
        kw = {"ref_emb": r, "ref_labels": ry}
    theirs = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=DIST[similarity]())(
        x, y, **kw)
    ours = LF.semi_hard_miner(x, y, margin=margin, similarity=similarity, ref_embeddings=kw.get("ref_emb"),
                              ref_labels=kw.get("ref_labels"))
    assert len(ours[0]) > 0
    assert as_set(ours) == as_set(theirs)


def test_miner_mask_drops_sample_as_anchor_and_member():
    x, y = data(16)
    keep = torch.ones(N, dtype=torch.bool)
    keep[3] = False
    for idx in (LF.batch_hard_miner(x, y, mask=keep), LF.semi_hard_miner(x, y, mask=keep)):
        assert all(3 not in t.tolist() for t in idx)
    a1, p, a2, n = LF.multi_similarity_miner(x, y, mask=keep)
    assert 3 not in torch.cat([a1, p, a2, n]).tolist()


# ------------------------------------------------------------------------------------------ proto-triplet
def proto_triplet_loop(q, qy, s, sy, margin):
    """ℓ_q = max(0, ‖q − c_{y_q}‖² − min_{k≠y_q} ‖q − c_k‖² + m), c_k = mean support of class k (loops)."""
    protos = {}
    for k in sorted(set(sy.tolist())):
        rows = [s[j] for j in range(len(sy)) if int(sy[j]) == k]
        protos[k] = sum(rows) / len(rows)
    out = []
    for i in range(len(qy)):
        d = {k: ((q[i] - c) ** 2).sum() for k, c in protos.items()}
        others = [v for k, v in d.items() if k != int(qy[i])]
        if int(qy[i]) not in d or not others:
            out.append(torch.zeros((), dtype=q.dtype))
            continue
        out.append(torch.clamp(d[int(qy[i])] - min(others) + margin, min=0.0))
    return torch.stack(out)


@pytest.mark.parametrize("margin", [0.5, 1.0, 5.0])
def test_proto_triplet_episode_matches_loop(margin):
    g = torch.Generator().manual_seed(20)
    n_way, k_shot, n_query = 4, 3, 5
    support = torch.randn(n_way * k_shot, D, generator=g, dtype=torch.float64).requires_grad_(True)
    sy = torch.arange(n_way).repeat_interleave(k_shot)
    query = torch.randn(n_way * n_query, D, generator=g, dtype=torch.float64).requires_grad_(True)
    qy = torch.arange(n_way).repeat_interleave(n_query)
    ours = LF.proto_triplet(query, qy, margin=margin, ref_embeddings=support, ref_labels=sy, reduction="none")
    assert_parity(ours, proto_triplet_loop(query, qy, support, sy, margin), [query, support])


def test_proto_triplet_batch_as_its_own_support_and_special_cases():
    x, y = data(21, n=9, classes=3)
    ours = LF.proto_triplet(x, y, margin=1.0, reduction="none")
    assert_parity(ours, proto_triplet_loop(x, y, x, y, 1.0), [x])
    # margin -> -inf-like: no violation, zero loss; one class only: no negative prototype, excluded
    assert LF.proto_triplet(x, y, margin=-1e6).item() == 0.0
    one = LF.proto_triplet(x, torch.zeros_like(y))
    assert one.item() == 0.0 and one.requires_grad
    # a query of a class absent from the support is excluded
    s, sy = x[:6], torch.tensor([0, 0, 1, 1, 2, 2])
    qy = torch.tensor([0, 1, 2, 5, 0, 1, 2, 5, 0])
    terms = LF.proto_triplet(x, qy, ref_embeddings=s, ref_labels=sy, reduction="none")
    assert (terms[qy == 5] == 0).all()
    torch.testing.assert_close(LF.proto_triplet(x, qy, ref_embeddings=s, ref_labels=sy),
                               terms.sum() / (qy != 5).sum(), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------ core behaviour
def test_reduction_none_gives_per_anchor_terms_and_no_pair_anchors_are_excluded():
    """pml #23: reduction="none" is one term per anchor; an anchor with no positive gets 0 and does not
    count in the mean."""
    x, y = data(22, n=7)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3])  # anchor 6 has no positive
    for fn in (LF.contrastive_pair, LF.triplet_margin, LF.circle):
        terms = fn(x, y, reduction="none")
        kept = 7 if fn is LF.contrastive_pair else 6  # contrastive: anchor 6 still has negatives
        assert terms.shape == (7,) and (kept == 7 or terms[6] == 0)
        torch.testing.assert_close(fn(x, y), terms.sum() / kept, rtol=RTOL, atol=ATOL)


def test_ref_is_batch_excludes_the_diagonal():
    x, y = data(23)
    plain = LF.multi_similarity(x, y, reduction="none")
    with_ref = LF.multi_similarity(x, y, ref_embeddings=x, ref_labels=y, ref_is_batch=True, reduction="none")
    torch.testing.assert_close(plain, with_ref, rtol=RTOL, atol=ATOL)
    self_pos = LF.multi_similarity(x, y, ref_embeddings=x, ref_labels=y, reduction="none")
    assert not torch.allclose(plain, self_pos)  # (i, i) counts as a positive pair without ref_is_batch


def test_indices_tuple_can_restrict_but_not_relabel():
    x, y = data(24)
    same = (y[:, None] == y[None, :]) & ~torch.eye(N, dtype=torch.bool)
    a, p = same.nonzero(as_tuple=True)
    # claim every listed pair is both positive and negative: only the label-consistent role counts
    restricted = LF.contrastive_pair(x, y, indices_tuple=(a, p, a, p), reduction="none", per_anchor="sum")
    pos_only = LF.contrastive_pair(x, y, indices_tuple=(a, p, a[:0], p[:0]), reduction="none", per_anchor="sum")
    torch.testing.assert_close(restricted, pos_only, rtol=RTOL, atol=ATOL)
    with pytest.raises(LossInputError) as info:
        LF.contrastive_pair(x, y, indices_tuple=(a, p))
    assert info.value.argument == "indices_tuple"


# ------------------------------------------------------------------------------------------ mean field
def mean_field_loop(x, y, centers, variant, pos_margin, neg_margin, alpha, beta, base):
    out = []
    for i in range(len(y)):
        cos = [torch.dot(x[i], centers[c]) / (x[i].norm() * centers[c].norm()) for c in range(len(centers))]
        yi = int(y[i])
        if variant == "contrastive":
            v = torch.clamp(pos_margin - cos[yi], min=0.0)
            for c in range(len(centers)):
                if c != yi:
                    v = v + torch.clamp(cos[c] - neg_margin, min=0.0)
        else:
            v = torch.log(1 + torch.exp(-alpha * (cos[yi] - base))) / alpha
            neg = sum(torch.exp(beta * (cos[c] - base)) for c in range(len(centers)) if c != yi)
            v = v + torch.log(1 + neg) / beta
        out.append(v)
    return torch.stack(out)


@pytest.mark.parametrize("variant,hyper", [("contrastive", dict(pos_margin=1.0, neg_margin=0.0)),
                                           ("contrastive", dict(pos_margin=0.8, neg_margin=-0.2)),
                                           ("multi_similarity", dict(alpha=2.0, beta=50.0, base=1.0)),
                                           ("multi_similarity", dict(alpha=1.0, beta=10.0, base=0.3))])
def test_mean_field_matches_loop(variant, hyper):
    x, y = data(30, n=10, classes=5)
    g = torch.Generator().manual_seed(31)
    centers = torch.randn(5, D, generator=g, dtype=torch.float64).requires_grad_(True)
    full = dict(pos_margin=1.0, neg_margin=0.0, alpha=2.0, beta=50.0, base=1.0) | hyper
    ours = LF.mean_field(x, y, centers, variant=variant, reduction="none", **hyper)
    assert_parity(ours, mean_field_loop(x, y, centers, variant, **full), [x, centers])


def test_mean_field_equals_the_pair_loss_when_fields_are_one_sample_per_class():
    """Special case: if each class is represented by exactly one other sample, the mean-field MS loss of
    a sample equals the pair MS loss against that reference set (λ, α, β equal)."""
    x, y = data(32, n=6, classes=3)
    g = torch.Generator().manual_seed(33)
    centers = torch.randn(3, D, generator=g, dtype=torch.float64)
    mf = LF.mean_field(x, y, centers, variant="multi_similarity", base=0.5, reduction="none")
    pair = LF.multi_similarity(x, y, base=0.5, ref_embeddings=centers, ref_labels=torch.arange(3), reduction="none")
    torch.testing.assert_close(mf, pair, rtol=RTOL, atol=ATOL)
    mfc = LF.mean_field(x, y, centers, pos_margin=0.9, neg_margin=0.1, reduction="none")
    pc = LF.contrastive_pair(x, y, pos_margin=0.9, neg_margin=0.1, similarity="cosine", per_anchor="sum",
                             ref_embeddings=centers, ref_labels=torch.arange(3), reduction="none")
    torch.testing.assert_close(mfc, pc, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------ UNPG
def quartiles_loop(values):
    """Q1, Q3 by linear interpolation between order statistics (numpy's default), by hand."""
    v = sorted(values)

    def q(p):
        pos = p * (len(v) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return q(0.25), q(0.75)


def unpg_loop(x, y, centers, scale, m, wisk, keep):
    xn = [x[i] / x[i].norm() for i in range(len(y))]
    wn = [centers[c] / centers[c].norm() for c in range(len(centers))]
    pairs = [torch.dot(xn[j], xn[k]) for j in range(len(y)) for k in range(j + 1, len(y))
             if int(y[j]) != int(y[k]) and keep[j] and keep[k]]
    if pairs:
        q1, q3 = quartiles_loop([p.item() for p in pairs])
        pairs = [p for p in pairs if q1 - wisk * (q3 - q1) <= p.item() <= q3 + wisk * (q3 - q1)]
    out = []
    for i in range(len(y)):
        row = [torch.dot(xn[i], wn[c]) - (m if c == int(y[i]) else 0.0) for c in range(len(centers))] + pairs
        logits = scale * torch.stack(row)
        out.append(-torch.log_softmax(logits, 0)[int(y[i])])
    return torch.stack(out)


@pytest.mark.parametrize("scale,m,wisk", [(64.0, 0.35, 1.0), (30.0, 0.2, 1.5), (10.0, 0.0, 0.0)])
@pytest.mark.parametrize("masked", [False, True])
def test_unpg_matches_concatenated_logits_loop(scale, m, wisk, masked):
    x, y = data(40, n=10, classes=5)
    g = torch.Generator().manual_seed(41)
    centers = torch.randn(5, D, generator=g, dtype=torch.float64).requires_grad_(True)
    keep = torch.ones(10, dtype=torch.bool)
    if masked:
        keep[[1, 4]] = False
    ours = LF.unpg(x, y, centers, scale=scale, margin_value=m, wisk=wisk, mask=keep, reduction="none")
    ref = unpg_loop(x, y, centers, scale, m, wisk, keep.tolist()) * keep
    assert_parity(ours, ref, [x, centers])


def test_unpg_special_cases():
    x, y = data(42, n=8, classes=4)
    centers = torch.randn(4, D, generator=torch.Generator().manual_seed(43), dtype=torch.float64)
    # one class in the batch: no negative pair, UNPG is the plain CosFace head
    same = torch.zeros_like(y)
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(centers, dim=1).t()
    logits = 64.0 * (cos - 0.35 * torch.nn.functional.one_hot(same, 4).double())
    torch.testing.assert_close(LF.unpg(x, same, centers, reduction="none"),
                               torch.nn.functional.cross_entropy(logits, same, reduction="none"), rtol=RTOL, atol=ATOL)
    # the batch's pairs only add to the denominator: UNPG >= the plain head, sample by sample
    logits = 64.0 * (cos - 0.35 * torch.nn.functional.one_hot(y, 4).double())
    plain = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert (LF.unpg(x, y, centers, reduction="none") >= plain - 1e-12).all()
