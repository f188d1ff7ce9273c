"""The chunked pair schedule equals the dense one: same per-anchor terms, same loss, same gradients
(float64, rtol=1e-10, atol=1e-12: only the summation order of identical terms differs), for every
pair loss that declares it, several chunk sizes, with a reference set, a mask and mined pairs; and
the chunked forward keeps no (N, M) tensor for backward."""
from __future__ import annotations

import pytest
import torch

import losskit
import losskit.functional as LF

PAIR_IDS = ["contrastive_pair", "triplet_margin", "multi_similarity", "circle", "lifted_structure"]
CHUNKS = [1, 3, 5, 13, 100]
N, M, D = 13, 9, 5
RTOL, ATOL = 1e-10, 1e-12
HYPER = {"triplet_margin": [{}, {"swap": True, "smooth": True, "margin": 0.3}],
         "contrastive_pair": [{}, {"per_anchor": "sum", "pos_margin": 0.2, "neg_margin": 0.7}],
         "multi_similarity": [{}, {"base": 0.5, "beta": 10.0}],
         "circle": [{}, {"m": 0.4, "gamma": 80.0}],
         "lifted_structure": [{}, {"similarity": "cosine", "pos_margin": 0.8, "neg_margin": 0.2}]}


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(N) % 3)[torch.randperm(N, generator=g)]
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    r = torch.randn(M, D, generator=g, dtype=torch.float64)
    ry = torch.randint(0, 4, (M,), generator=g)
    return x, y, r, ry


def run(fn, x, y, r=None, ry=None, **kw):
    x = x.clone().requires_grad_(True)
    leaves = [x]
    if r is not None:
        r = r.clone().requires_grad_(True)
        leaves.append(r)
    terms = fn(x, y, ref_embeddings=r, ref_labels=ry, reduction="none", **kw)
    loss = fn(x, y, ref_embeddings=r, ref_labels=ry, reduction="mean", **kw)
    grads = torch.autograd.grad(loss + 0.5 * terms.square().sum(), leaves)
    return terms.detach(), loss.detach(), grads


def assert_same(a, b):
    for u, v in zip(a[:2], b[:2]):
        torch.testing.assert_close(u, v, rtol=RTOL, atol=ATOL)
    for u, v in zip(a[2], b[2]):
        torch.testing.assert_close(u, v, rtol=RTOL, atol=ATOL)
    assert any(g.abs().sum() > 0 for g in a[2]), "degenerate case: zero gradient"


def cases():
    for id in PAIR_IDS:
        for i, hyper in enumerate(HYPER[id]):
            yield pytest.param(id, hyper, id=f"{id}-{i}")


def test_every_pair_loss_declares_the_chunked_schedule():
    for id in PAIR_IDS:
        assert losskit.get(id).schedules == ("dense", "chunked")


@pytest.mark.parametrize("id,hyper", list(cases()))
@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_equals_dense(id, hyper, chunk):
    fn = getattr(LF, id)
    x, y, _, _ = inputs(1)
    assert_same(run(fn, x, y, chunk_size=chunk, **hyper), run(fn, x, y, **hyper))


@pytest.mark.parametrize("id,hyper", list(cases()))
@pytest.mark.parametrize("chunk", [2, 4])
def test_chunked_equals_dense_with_reference_set(id, hyper, chunk):
    fn = getattr(LF, id)
    x, y, r, ry = inputs(2)
    assert_same(run(fn, x, y, r, ry, chunk_size=chunk, **hyper), run(fn, x, y, r, ry, **hyper))


@pytest.mark.parametrize("id,hyper", list(cases()))
@pytest.mark.parametrize("chunk", [2, 6])
def test_chunked_equals_dense_with_mask(id, hyper, chunk):
    fn = getattr(LF, id)
    x, y, _, _ = inputs(3)
    mask = torch.ones(N, dtype=torch.bool)
    mask[[0, 5, 6]] = False
    assert_same(run(fn, x, y, chunk_size=chunk, mask=mask, **hyper), run(fn, x, y, mask=mask, **hyper))


@pytest.mark.parametrize("id", PAIR_IDS)
@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_equals_dense_with_mined_pairs(id, chunk):
    fn = getattr(LF, id)
    x, y, _, _ = inputs(4)
    idx = LF.multi_similarity_miner(x, y, epsilon=0.3)
    assert len(idx[0]) and len(idx[2])
    assert_same(run(fn, x, y, chunk_size=chunk, indices_tuple=idx), run(fn, x, y, indices_tuple=idx))


def saved_sizes(fn, x, y, **kw):
    """numel of every tensor autograd saves outside a checkpoint during the forward."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    x = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(x, y, **kw)
    loss.backward()
    return sizes


@pytest.mark.parametrize("id", PAIR_IDS)
def test_chunked_forward_keeps_no_pair_matrix(id):
    """Dense: autograd keeps (N, N) (or (N, N, N)) tensors. Chunked: nothing larger than a block
    (chunk·N) or the embeddings is kept; the blocks are recomputed in backward."""
    n, chunk = 48, 6
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 4
    fn = getattr(LF, id)
    assert max(saved_sizes(fn, x, y)) >= n * n
    assert max(saved_sizes(fn, x, y, chunk_size=chunk)) <= max(chunk * n, n * D)
