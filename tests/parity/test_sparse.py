"""sparsemax, 1.5-entmax, α-entmax (transforms and Fenchel–Young losses) against the anchor library
``entmax``, and sparse_softmax_topk against torch's cross-entropy and a naive loop transcription.

Everything runs in float64. Tolerances:
* exact (sort-based) maps and losses vs entmax: rtol 1e-10, atol 1e-12 on values and gradients;
* bisection (α-entmax, 50 halvings in both libraries) vs entmax: rtol 1e-9, atol 1e-10;
* bisection vs an exact map (α = 2 vs sparsemax, α = 1.5 vs entmax15): atol 1e-10 (interval 2^-50);
* α → 1+: |α-entmax − softmax| ≤ 2(α − 1) and |loss − CE| ≤ 10(α − 1) (the gap is O(α − 1)).
"""
from __future__ import annotations

import itertools
import math

import entmax
import pytest
import torch
import torch.nn.functional as F

import losskit
import losskit.functional as LF
from losskit import LossInputError
from losskit.classification.sparse import entmax_bisect

from ._helpers import assert_same, logits64, targets

EXACT = dict(rtol=1e-10, atol=1e-12)
BISECT = dict(rtol=1e-9, atol=1e-10)
NEG = float("-inf")


def _grad_check(ours, theirs, x, tol, seed=0):
    """Same value, and same vector-Jacobian product for a random upstream gradient."""
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, **tol)
    v = torch.randn(a.shape, generator=torch.Generator().manual_seed(seed), dtype=a.dtype)
    ga, = torch.autograd.grad((a * v).sum(), x)
    gb, = torch.autograd.grad((b * v).sum(), x)
    torch.testing.assert_close(ga, gb, **tol)


# ---------------------------------------------------------------------------------------------------
# transforms vs entmax: shapes × every dim × seeds × scales
# ---------------------------------------------------------------------------------------------------

SHAPES = [(5, 7), (3, 4, 6), (2, 3, 1, 5)]
TRANSFORM_GRID = [(shape, dim, seed, scale) for shape in SHAPES for dim in range(-len(shape), len(shape))
                  for seed in (0, 1) for scale in (0.5, 4.0)]


def _x(shape, seed, scale):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_exact_transforms_match_entmax(name):
    ours, theirs = getattr(LF, name), getattr(entmax, name)
    for shape, dim, seed, scale in TRANSFORM_GRID:
        x = _x(shape, seed, scale)
        _grad_check(lambda t: ours(t, dim=dim), lambda t: theirs(t, dim=dim), x, EXACT, seed)


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, 3.0])
def test_entmax_bisect_transform_matches_entmax(alpha):
    for shape, dim, seed, scale in TRANSFORM_GRID[::2]:
        x = _x(shape, seed, scale)
        _grad_check(lambda t: entmax_bisect(t, alpha=alpha, dim=dim),
                    lambda t: entmax.entmax_bisect(t, alpha=alpha, dim=dim, n_iter=50), x, BISECT, seed)


# ---------------------------------------------------------------------------------------------------
# losses vs entmax: sizes × seeds × reductions × ignore_index (× α)
# ---------------------------------------------------------------------------------------------------

ENTMAX_REDUCTION = {"mean": "elementwise_mean", "sum": "sum", "none": "none"}
LOSS_GRID = list(itertools.product([(2, 2), (9, 5), (6, 17)], (0, 1), ("mean", "sum", "none"), (-100, 1)))


def _loss_pair(name, alpha=None):
    if name == "sparsemax_loss":
        return LF.sparsemax_loss, {}, entmax.SparsemaxLoss, {}
    if name == "entmax15_loss":
        return LF.entmax15_loss, {}, entmax.Entmax15Loss, {}
    return LF.entmax_bisect_loss, {"alpha": alpha}, entmax.EntmaxBisectLoss, {"alpha": alpha, "n_iter": 50}


@pytest.mark.parametrize("name,alpha", [("sparsemax_loss", None), ("entmax15_loss", None),
                                        ("entmax_bisect_loss", 1.25), ("entmax_bisect_loss", 1.5),
                                        ("entmax_bisect_loss", 2.0), ("entmax_bisect_loss", 2.5)])
def test_losses_match_entmax(name, alpha):
    """Values and gradients, with entmax's reduction names; ignore_index=1 (≥ 0, which entmax masks)
    puts every 4th target on the ignored value; -100 ignores nothing."""
    ours, hyper, Theirs, their_hyper = _loss_pair(name, alpha)
    tol = EXACT if alpha is None else BISECT
    for (n, c), seed, reduction, ignore in LOSS_GRID:
        x = logits64(n, c, seed=seed)
        y = targets(n, c, seed=seed, ignore=None if ignore < 0 else ignore)
        y[1] = 0  # never an all-ignored batch (entmax divides 0 by 0 there)
        theirs = Theirs(**their_hyper, ignore_index=ignore, reduction=ENTMAX_REDUCTION[reduction])
        assert_same(lambda: ours(x, y, **hyper, ignore_index=ignore, reduction=reduction), lambda: theirs(x, y),
                    x, **tol)


@pytest.mark.parametrize("name", ["sparsemax_loss", "entmax15_loss", "entmax_bisect_loss"])
def test_spatial_logits_match_entmax_on_the_flattened_problem(name):
    x = logits64(3, 4, 2, 5, seed=3)
    y = targets(3, 4, 2, 5, seed=3)
    ours, hyper, Theirs, their_hyper = _loss_pair(name, 1.5)
    theirs = Theirs(**their_hyper, reduction="none")
    assert_same(lambda: ours(x, y, **hyper, reduction="none").reshape(-1),
                lambda: theirs(x.movedim(1, -1).reshape(-1, 4), y.reshape(-1)), x, **BISECT)


@pytest.mark.parametrize("name", ["sparsemax_loss", "entmax15_loss", "entmax_bisect_loss"])
@pytest.mark.parametrize("ignore", [-1, -7])
def test_negative_ignore_index_works(name, ignore):
    """entmax #21 crashes on ignore_index=-1: here "mean"/"sum" equal entmax on the kept rows only, and an
    all-ignored batch is a graph-connected 0 with zero gradients (entmax: 0/0)."""
    ours, hyper, Theirs, their_hyper = _loss_pair(name, 1.5)
    x = logits64(10, 6, seed=4)
    y = targets(10, 6, seed=4, ignore=ignore)
    keep = y != ignore
    for reduction in ("mean", "sum"):
        theirs = Theirs(**their_hyper, reduction=ENTMAX_REDUCTION[reduction])
        a = ours(x, y, **hyper, ignore_index=ignore, reduction=reduction)
        torch.testing.assert_close(a, theirs(x[keep], y[keep]), **BISECT)
    out = ours(x, torch.full_like(y, ignore), **hyper, ignore_index=ignore)
    out.backward()
    assert out.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------------
# formula checks (independent of entmax)
# ---------------------------------------------------------------------------------------------------

def sparsemax_alg1(z):
    """Martins & Astudillo 2016, Algorithm 1, on one row of Python floats: (p, τ, support)."""
    zs = sorted(z, reverse=True)
    k_z, running = 0, 0.0
    for k in range(1, len(zs) + 1):
        running += zs[k - 1]
        if 1 + k * zs[k - 1] > running:
            k_z = k
    tau = (sum(zs[:k_z]) - 1) / k_z
    p = [max(v - tau, 0.0) for v in z]
    return p, tau, [j for j, v in enumerate(z) if v > tau]


def test_sparsemax_is_the_euclidean_projection_of_alg1():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 9, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1.0, 5.0]).repeat(14)[:40, None]
    z[0] = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, -3.0, 2.0, 2.0, 2.0], dtype=torch.float64)  # ties
    p = LF.sparsemax(z)
    naive = torch.tensor([sparsemax_alg1(row.tolist())[0] for row in z], dtype=torch.float64)
    torch.testing.assert_close(p, naive, rtol=0, atol=1e-12)
    # the projection: on the simplex and no simplex point is closer to z
    assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(40, dtype=torch.float64))
    v = torch.distributions.Dirichlet(torch.full((9,), 0.3, dtype=torch.float64)).sample((200,))
    assert ((z[:, None] - p[:, None]).norm(dim=-1) <= (z[:, None] - v[None]).norm(dim=-1) + 1e-12).all()


def test_sparsemax_loss_closed_form():
    """One-hot targets: L = −z_y + ½ Σ_{j∈S}(z_j² − τ²) + ½ (Martins & Astudillo 2016, eq. 21)."""
    x = logits64(30, 7, seed=5, scale=2.0)
    y = targets(30, 7, seed=5)

    def naive():
        out = []
        for row, t in zip(x, y.tolist()):
            _, _, s = sparsemax_alg1(row.tolist())
            tau = (row[s].sum() - 1) / len(s)  # τ(z) as a function of z, for the gradient
            out.append(-row[t] + 0.5 * sum(row[j] ** 2 - tau ** 2 for j in s) + 0.5)
        return torch.stack(out)

    assert_same(lambda: LF.sparsemax_loss(x, y, reduction="none"), naive, x)
    torch.testing.assert_close(x.grad, (LF.sparsemax(x) - F.one_hot(y, 7)).detach(), **EXACT)  # ∇L = p* − e_y


def test_sparsemax_loss_is_zero_iff_sparsemax_is_the_one_hot_target():
    x = logits64(200, 6, seed=6, scale=1.5)
    y = targets(200, 6, seed=6)
    loss = LF.sparsemax_loss(x, y, reduction="none")
    one_hot = (LF.sparsemax(x) == F.one_hot(y, 6)).all(-1)
    assert 0 < int(one_hot.sum()) < 200, "the grid must contain both cases"
    assert (loss[one_hot] == 0).all()
    assert (loss[~one_hot] > 1e-12).all()
    x2 = x.detach().clone()
    x2[torch.arange(200), y] = x2.max(-1).values + 1.5  # margin > 1: sparsemax is exactly e_y
    assert (LF.sparsemax_loss(x2, y, reduction="none") == 0).all()


@pytest.mark.parametrize("name,alpha", [("sparsemax_loss", 2.0), ("entmax15_loss", 1.5),
                                        ("entmax_bisect_loss", 1.3), ("entmax_bisect_loss", 2.7)])
def test_soft_targets_follow_the_fenchel_young_formula(name, alpha):
    """L = H_α(p*) − H_α(q) + ⟨p* − q, z⟩ with p* from entmax, ∇_z L = p* − q, L(z; p*(z)) = 0 and a one-hot
    float target gives the hard-target loss."""
    ours = getattr(LF, name)
    hyper = {"alpha": alpha} if name == "entmax_bisect_loss" else {}
    x = logits64(8, 5, seed=7)
    q = torch.distributions.Dirichlet(torch.full((5,), 0.5, dtype=torch.float64)).sample((8,))
    q[0] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0], dtype=torch.float64)

    def tsallis(p):
        return (1 - (p ** alpha).sum(-1)) / (alpha * (alpha - 1))

    def naive():
        p = entmax.entmax_bisect(x, alpha=alpha, n_iter=60).detach()
        return tsallis(p) - tsallis(q) + ((p - q) * x).sum(-1)

    assert_same(lambda: ours(x, q, **hyper, reduction="none"), naive, x, **BISECT)
    p = entmax.entmax_bisect(x, alpha=alpha, n_iter=60).detach()
    torch.testing.assert_close(x.grad, p - q, **BISECT)
    torch.testing.assert_close(ours(x, p, **hyper, reduction="none"), torch.zeros(8, dtype=torch.float64),
                               rtol=0, atol=1e-10)
    y = targets(8, 5, seed=7)
    torch.testing.assert_close(ours(x, F.one_hot(y, 5).double(), **hyper, reduction="none"),
                               ours(x, y, **hyper, reduction="none"), **EXACT)


def test_fenchel_young_gradients_in_logits_and_soft_target_and_second_order():
    x = logits64(3, 4, seed=8, scale=1.0)
    q = torch.distributions.Dirichlet(torch.ones(4, dtype=torch.float64)).sample((3,)).requires_grad_(True)
    y = targets(3, 4, seed=8)
    assert torch.autograd.gradcheck(lambda a, b: LF.entmax15_loss(a, b, reduction="none"), (x, q))
    assert torch.autograd.gradcheck(lambda a, b: LF.entmax_bisect_loss(a, b, alpha=1.7, reduction="none"), (x, q),
                                    atol=1e-6)
    for fn in (LF.sparsemax_loss, LF.entmax15_loss):
        assert torch.autograd.gradgradcheck(lambda a: fn(a, y, reduction="none"), (x,))
    for fn in (LF.sparsemax, LF.entmax15):
        assert torch.autograd.gradgradcheck(lambda a: fn(a, dim=0), (x,))


def test_entmax_bisect_limits():
    """α = 2 is sparsemax, α = 1.5 is 1.5-entmax (exact sort-based maps), α → 1+ tends to softmax/CE."""
    x = logits64(12, 6, seed=9)
    y = targets(12, 6, seed=9)
    torch.testing.assert_close(entmax_bisect(x, alpha=2.0), LF.sparsemax(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(entmax_bisect(x, alpha=1.5), LF.entmax15(x), rtol=0, atol=1e-10)
    assert_same(lambda: LF.entmax_bisect_loss(x, y, alpha=2.0, reduction="none"),
                lambda: LF.sparsemax_loss(x, y, reduction="none"), x, rtol=0, atol=1e-10)
    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        p_err = (entmax_bisect(x, alpha=1 + eps) - torch.softmax(x, -1)).abs().max().item()
        l_err = (LF.entmax_bisect_loss(x, y, alpha=1 + eps, reduction="none")
                 - F.cross_entropy(x, y, reduction="none")).abs().max().item()
        assert p_err <= 2 * eps and l_err <= 10 * eps, (eps, p_err, l_err)
        errors.append(l_err)
    assert errors[0] > errors[1] > errors[2]


# ---------------------------------------------------------------------------------------------------
# −inf (masked) logits
# ---------------------------------------------------------------------------------------------------

def _masked_logits():
    x = logits64(7, 6, seed=10).detach()
    x[:, 2] = NEG
    x[3, [0, 4]] = NEG
    x[5] = NEG  # an all −inf row
    return x.requires_grad_(True)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15", "bisect"])
def test_transforms_with_neg_inf(name):
    """No NaN; equal to entmax on every row where entmax is finite (entmax crashes on the all −inf row,
    #19); −inf entries get probability 0 and gradient 0; the all −inf row is uniform."""
    x = _masked_logits()
    if name == "bisect":
        ours, theirs = (lambda t: entmax_bisect(t, alpha=1.3)), (lambda t: entmax.entmax_bisect(t, alpha=1.3))
        tol = BISECT
    else:
        ours, theirs, tol = getattr(LF, name), getattr(entmax, name), EXACT
    p = ours(x)
    rows = [0, 1, 2, 3, 4, 6]
    ref = theirs(x[rows])
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(p[rows], ref, **tol)
    torch.testing.assert_close(p[5], torch.full((6,), 1 / 6, dtype=torch.float64))
    masked = torch.isneginf(x)
    masked[5] = False
    assert (p[masked] == 0).all()
    v = torch.randn(7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (p * v).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[:, 2] == 0).all() and (x.grad[3, [0, 4]] == 0).all()
    g_ref, = torch.autograd.grad((theirs(x[rows]) * v[rows]).sum(), x)
    torch.testing.assert_close(x.grad[rows], g_ref[rows], **tol)


@pytest.mark.parametrize("name", ["sparsemax_loss", "entmax15_loss", "entmax_bisect_loss", "sparse_softmax_topk"])
def test_losses_with_neg_inf(name):
    """Masked classes contribute nothing: the loss equals the loss on the problem without those columns
    (entmax's own loss is NaN there, #9); an all −inf row is fine when ignored; a kept target on a −inf
    logit raises LossInputError('target'), and with checks off gives +inf with finite gradients."""
    fn = getattr(LF, name)
    hyper = {"k": 3} if name == "sparse_softmax_topk" else {}
    x = logits64(6, 7, seed=11).detach()
    x[:, [1, 5]] = NEG
    x.requires_grad_(True)
    y = targets(6, 7, seed=11)
    y[y == 1], y[y == 5] = 0, 6
    cols = [0, 2, 3, 4, 6]
    y_small = torch.tensor([cols.index(t) for t in y.tolist()])
    assert_same(lambda: fn(x, y, **hyper, reduction="none"),
                lambda: fn(x[:, cols], y_small, **hyper, reduction="none"), x)
    assert (x.grad[:, [1, 5]] == 0).all()
    if name != "sparse_softmax_topk":
        _, _, Theirs, their_hyper = _loss_pair(name, 1.5)
        theirs = Theirs(**their_hyper, reduction="none")
        assert torch.isnan(theirs(x.detach(), y)).all()  # entmax #9: 0·(−inf) in ⟨p* − e_y, z⟩
        torch.testing.assert_close(fn(x, y, reduction="none"), theirs(x[:, cols], y_small), **BISECT)
    # an all −inf, ignored row (padding)
    x2 = x.detach().clone()
    x2[0] = NEG
    x2.requires_grad_(True)
    y2 = y.clone()
    y2[0] = -100
    out = fn(x2, y2, **hyper)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x2.grad).all()
    # a target on a masked class
    y3 = y.clone()
    y3[2] = 1
    with pytest.raises(LossInputError) as info:
        fn(x, y3, **hyper)
    assert info.value.argument == "target"
    keep = torch.ones(6, dtype=torch.bool)
    keep[2] = False  # excluded by mask instead of ignore_index: no error, the same as dropping the row
    torch.testing.assert_close(fn(x, y3, **hyper, mask=keep), fn(x[keep], y3[keep], **hyper), **EXACT)
    x3 = x.detach().clone().requires_grad_(True)
    with losskit.checks(False):
        terms = fn(x3, y3, **hyper, reduction="none")
    assert math.isinf(terms[2].item()) and torch.isfinite(terms[[0, 1, 3, 4, 5]]).all()
    terms[[0, 1, 3, 4, 5]].sum().backward()
    assert torch.isfinite(x3.grad).all()


def test_half_precision_thresholds_are_computed_in_float32():
    g = torch.Generator().manual_seed(12)
    x = (torch.randn(64, 50, generator=g) * 30).half()
    x[:, 0] = NEG
    for fn in (LF.sparsemax, LF.entmax15):
        p = fn(x)
        assert p.dtype == torch.float16
        torch.testing.assert_close(p.float(), fn(x.float()), rtol=0, atol=1e-3)
        torch.testing.assert_close(p.float().sum(-1), torch.ones(64), rtol=0, atol=2e-3)


# ---------------------------------------------------------------------------------------------------
# sparse_softmax_topk
# ---------------------------------------------------------------------------------------------------

def topk_naive(x, y, k):
    """Ω_k = the k largest logits; if y is not among them, y replaces the k-th; loss = log Σ_Ω e^z − z_y."""
    out = []
    for row, t in zip(x, y.tolist()):
        order = sorted(range(len(row)), key=lambda j: -row[j].item())
        omega = order[:k]
        if t not in omega:
            omega = omega[:k - 1] + [t]
        out.append(torch.log(sum(torch.exp(row[j]) for j in omega)) - row[t])
    return torch.stack(out)


@pytest.mark.parametrize("k", [2, 3, 7, 11])
@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_softmax_topk_matches_naive_transcription(k, seed):
    x = logits64(9, 11, seed=seed)
    y = targets(9, 11, seed=seed)
    assert_same(lambda: LF.sparse_softmax_topk(x, y, k=k, reduction="none"), lambda: topk_naive(x, y, k), x)
    assert ((x.grad != 0).sum(-1) == min(k, 11)).all(), "only the kept logits get a gradient"


@pytest.mark.parametrize("k", [6, 7, 100])
def test_sparse_softmax_topk_with_k_at_least_c_is_cross_entropy(k):
    x = logits64(8, 6, 3, seed=13)
    y = targets(8, 6, 3, seed=13, ignore=-100)
    for reduction in ("mean", "sum", "none"):
        assert_same(lambda: LF.sparse_softmax_topk(x, y, k=k, reduction=reduction),
                    lambda: F.cross_entropy(x, y, reduction=reduction), x)


def test_sparse_softmax_topk_k1_is_zero_and_continuous_when_the_target_enters_the_top_k():
    x = logits64(5, 8, seed=14)
    y = targets(5, 8, seed=14)
    out = LF.sparse_softmax_topk(x, y, k=1, reduction="none")
    out.sum().backward()
    assert (out == 0).all() and (x.grad == 0).all()
    z = x.detach()[0].clone()
    t = int(y[0])
    third = z[torch.arange(8) != t].sort(descending=True).values[2]
    vals = []
    for d in (-1e-9, 1e-9):  # z_y just below / above the 3rd largest other logit, k = 3
        z2 = z.clone()
        z2[t] = third + d
        vals.append(LF.sparse_softmax_topk(z2[None], y[:1], k=3))
    assert abs(vals[0].item() - vals[1].item()) < 1e-8


# ---------------------------------------------------------------------------------------------------
# hyperparameters, dims, module faces
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,argument", [
    (lambda x, y: LF.entmax_bisect_loss(x, y, alpha=1.0), "alpha"),
    (lambda x, y: LF.entmax_bisect_loss(x, y, alpha=0.5), "alpha"),
    (lambda x, y: LF.entmax_bisect_loss(x, y, alpha=torch.tensor([1.5, 2.0])), "alpha"),
    (lambda x, y: LF.entmax_bisect_loss(x, y, n_iter=0), "n_iter"),
    (lambda x, y: LF.sparse_softmax_topk(x, y, k=0), "k"),
    (lambda x, y: LF.sparse_softmax_topk(x, y, k=2.5), "k"),
    (lambda x, y: LF.sparsemax(x, dim=2), "dim"),
    (lambda x, y: LF.entmax15(x[:, :0]), "logits"),
    (lambda x, y: LF.sparsemax(x.detach().clone().fill_(float("inf"))), "logits"),
])
def test_bad_hyperparameters_raise(call, argument):
    x, y = logits64(4, 5), targets(4, 5)
    with pytest.raises(LossInputError) as info:
        call(x, y)
    assert info.value.argument == argument


def test_transform_modules_hold_dim():
    x = logits64(4, 5, 3, seed=15)
    torch.testing.assert_close(losskit.nn.Sparsemax(dim=1)(x), entmax.sparsemax(x, dim=1), **EXACT)
    torch.testing.assert_close(losskit.nn.Entmax15(dim=0)(x), entmax.entmax15(x, dim=0), **EXACT)
    y = targets(4, 5, seed=15)
    x2 = logits64(4, 5, seed=15)
    torch.testing.assert_close(losskit.nn.EntmaxBisectLoss(alpha=1.8)(x2, y),
                               entmax.EntmaxBisectLoss(alpha=1.8)(x2, y), **BISECT)
