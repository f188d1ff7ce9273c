"""DCO, EMO, EISL, OPL and EnsLoss against naive transcriptions of their papers' equations (float64, loops),
with the special cases named in the catalogue.

- DCO: −log(1 − (1 − p)^N) and F_N(p) in 50-digit arithmetic (mpmath) over logp ∈ [−1e4, 0]; N = 1 is the
  NLL; the gradient is CE's gradient times F_N(p).
- EMO: per-token ½(CE + sg(CE/DEMD)·DEMD) with DEMD = Σ_v Q_v (1 − cos(e_v, e_y)); an orthonormal embedding
  gives DEMD = 1 − p_y (checked through the closed-form gradient).
- EISL: the n-gram matrix G_n[i, j] = (1/n) Σ_k log P_{i+k}(y_{j+k}) built by loops, pooled over output
  positions; n = T is CE; n = 1 with max pooling is ≤ CE with equality for aligned sequences.
- OPL: pairwise loops over cosine similarities; orthogonal classes with identical features give 0.
- EnsLoss: the authors' generator transcribed with Python lists on the same normal draws; the gradient is
  y·g(z)/N; g is non-decreasing with g(0) < 0 for many seeds; a seed fixes g.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from losskit.classification.features import ensloss_derivative

from ._helpers import value_and_grad

D = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# DCO
# --------------------------------------------------------------------------------------------------------------

mpmath = pytest.importorskip("mpmath")
LOGP = [0.0, -1e-300, -1e-30, -1e-12, -1e-6, -0.01, -0.3, -0.69, -0.7, -1.0, -3.0, -10.0, -25.0, -40.0, -80.0,
        -700.0, -800.0, -1e4]


def dco_exact(lp, n):
    """(−log(1 − (1 − p)^N), F_N(p)) with 50 significant digits."""
    with mpmath.workdps(50):
        x = mpmath.mpf(lp)
        p = mpmath.exp(x)
        # log(1 − p) without cancellation at either end (both forms are exact identities)
        log_q = mpmath.ninf if lp == 0 else (mpmath.log(-mpmath.expm1(x)) if lp > -1 else mpmath.log1p(-p))
        a = n * log_q                                              # log (1 − p)^N
        cover = -mpmath.expm1(a)                                   # 1 − (1 − p)^N
        loss = -mpmath.log(cover) if a > -1 else -mpmath.log1p(-mpmath.exp(a))
        f = n * p * mpmath.exp((n - 1) * log_q) / cover if n != 1 else mpmath.mpf(1)
        return float(loss), float(f)


@pytest.mark.parametrize("n", [1, 2, 4, 7.5, 64, 1e6])
def test_dco_matches_the_formula_in_high_precision(n):
    lp = torch.tensor(LOGP, dtype=D, requires_grad=True)
    val, grad = value_and_grad(lambda: LF.dco(lp, n=n, reduction="none"), lp)
    ref = [dco_exact(x, n) for x in LOGP]
    want = torch.tensor([r[0] for r in ref], dtype=D)
    f_n = torch.tensor([r[1] for r in ref], dtype=D)
    torch.testing.assert_close(val, want, rtol=1e-12, atol=1e-300)
    # dℓ/dlogp = (d CE/dlogp)·F_N(p), with CE = −logp
    torch.testing.assert_close(grad, -1.0 * f_n, rtol=1e-9, atol=1e-300)


def test_dco_n1_is_the_nll_and_f_is_one():
    lp = torch.tensor(LOGP, dtype=D, requires_grad=True)
    val, grad = value_and_grad(lambda: LF.dco(lp, n=1, reduction="none"), lp)
    torch.testing.assert_close(val, -lp.detach(), rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(grad, torch.full_like(grad, -1.0), rtol=1e-12, atol=0)
    # the reduced loss is the mean NLL, and a batch of random log-probs in float32 too
    x = -torch.rand(50, generator=gen(0)) * 8
    torch.testing.assert_close(LF.dco(x, n=1), (-x).mean(), rtol=1e-6, atol=1e-7)


def test_dco_gradient_is_ce_gradient_times_f_n_on_random_batches():
    g = gen(1)
    lp = (-torch.rand(40, generator=g, dtype=D) * 6 - 1e-3).requires_grad_(True)
    for n in (3, 16):
        _, grad = value_and_grad(lambda: LF.dco(lp, n=n, reduction="sum"), lp)
        _, ce_grad = value_and_grad(lambda: (-lp).sum(), lp)
        p = lp.detach().exp()
        f_n = n * p * (1 - p) ** (n - 1) / (1 - (1 - p) ** n)
        torch.testing.assert_close(grad, ce_grad * f_n, rtol=1e-10, atol=1e-14)
        # confidence limiting: the factor decreases in p and vanishes at p -> 1
        order = torch.argsort(p)
        assert (f_n[order].diff() <= 1e-12).all() and f_n.max() <= 1 + 1e-12


# --------------------------------------------------------------------------------------------------------------
# EMO
# --------------------------------------------------------------------------------------------------------------

def emo_naive(logits, target, emb, ignore=-100):
    """Per-token ½·(CE + sg(CE/(DEMD + 1e-10))·DEMD), one token at a time."""
    v = logits.shape[-1]
    flat, t = logits.reshape(-1, v), target.reshape(-1)
    rows = [emb[k] / torch.sqrt((emb[k] ** 2).sum()) for k in range(v)]
    out = []
    for i in range(flat.shape[0]):
        if t[i] == ignore:
            out.append(flat[i, 0] * 0.0)
            continue
        y = int(t[i])
        q = torch.exp(flat[i]) / torch.exp(flat[i]).sum()
        ce = -torch.log(q[y])
        demd = sum(q[k] * (1.0 - (rows[k] * rows[y]).sum()) for k in range(v))
        out.append(0.5 * (ce + (ce / (demd + 1e-10)).detach() * demd))
    return torch.stack(out).reshape(target.shape)


def test_emo_matches_per_token_transcription():
    g = gen(2)
    logits = (torch.randn(3, 5, 7, generator=g, dtype=D) * 2).requires_grad_(True)
    target = torch.randint(0, 7, (3, 5), generator=g)
    target[0, -1] = target[2, 1] = -100
    emb = torch.randn(7, 4, generator=g, dtype=D) * torch.rand(7, 1, generator=g, dtype=D).add(0.5)
    val, grad = value_and_grad(lambda: LF.emo(logits, target, embedding=emb, reduction="none"), logits)
    ref, ref_grad = value_and_grad(lambda: emo_naive(logits, target, emb), logits)
    torch.testing.assert_close(val, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert (grad[0, -1] == 0).all() and (val[0, -1] == 0)
    # "mean" averages over the kept tokens; the value of every token equals its CE
    kept = target != -100
    torch.testing.assert_close(LF.emo(logits, target, embedding=emb), val[kept].mean(), rtol=1e-12, atol=0)
    ce = F.cross_entropy(logits.detach().reshape(-1, 7), target.reshape(-1), reduction="none").reshape(3, 5)
    torch.testing.assert_close(val, ce, rtol=1e-8, atol=1e-12)
    # (N, V) logits give the same terms as the (B, T, V) layout
    flat = LF.emo(logits.detach().reshape(-1, 7), target.reshape(-1), embedding=emb, reduction="none")
    torch.testing.assert_close(flat, val.reshape(-1), rtol=1e-12, atol=0)


def test_emo_orthonormal_embedding_gives_demd_one_minus_p_y():
    g = gen(3)
    n, v = 6, 5
    logits = (torch.randn(n, v, generator=g, dtype=D) * 2).requires_grad_(True)
    target = torch.randint(0, v, (n,), generator=g)
    basis, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=D))
    emb = basis[:v] * torch.linspace(0.5, 3.0, v, dtype=D)[:, None]  # orthogonal rows, any lengths
    out = LF.emo(logits, target, embedding=emb, reduction="sum", return_components=True)
    out.loss.backward()
    p = torch.softmax(logits.detach(), -1)
    p_y = p.gather(1, target[:, None])
    ce = -torch.log(p_y)
    onehot = F.one_hot(target, v).double()
    # DEMD = 1 − p_y: ∇DEMD = −p_y (e_y − p), so ∇ℓ = ½(p − e_y)(1 + CE·p_y/(1 − p_y))
    want = 0.5 * (p - onehot) * (1 + ce * p_y / (1 - p_y + 1e-10))
    torch.testing.assert_close(logits.grad, want, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(out.components["ce"], 0.5 * ce.sum(), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------------------
# EISL
# --------------------------------------------------------------------------------------------------------------

def eisl_naive(lp, target, omask, ngram, ce_factor, ngram_factor, pool="softmax", tau=1.0, floor=-20.0,
               weights=None, ignore=-100):
    """Per-sequence EISL from its definition: loops over sequences, n-gram sizes, target and output n-grams."""
    b, t_out, _ = lp.shape
    t_tgt = target.shape[1]
    weights = weights or [1.0 / len(ngram)] * len(ngram)
    out = []
    for s in range(b):
        tk = [bool(target[s, j] != ignore) for j in range(t_tgt)]
        ok = [bool(omask[s, i]) for i in range(t_out)]

        def m(i, j):
            x = lp[s, i, int(target[s, j])]
            return torch.clamp(x, min=floor) if floor is not None else x

        pos = [t for t in range(t_tgt) if tk[t] and ok[t]]
        ce = sum(-lp[s, t, int(target[s, t])] for t in pos) / max(len(pos), 1) if pos else lp[s, 0, 0] * 0
        total = lp[s, 0, 0] * 0
        for n, w in zip(ngram, weights):
            outs = [i for i in range(t_out - n + 1) if all(ok[i:i + n])]
            tgts = [j for j in range(t_tgt - n + 1) if all(tk[j:j + n])]
            if not outs or not tgts:
                continue
            pooled = []
            for j in tgts:
                gs = torch.stack([sum(m(i + k, j + k) for k in range(n)) / n for i in outs])
                if pool == "max":
                    pooled.append(gs.max())
                else:
                    pooled.append((torch.softmax(gs / tau, 0) * gs).sum())
            total = total + w * (-torch.stack(pooled).mean())
        out.append(ce_factor * ce + ngram_factor * total)
    return torch.stack(out)


def eisl_inputs(b=4, t=5, v=6, seed=4, pad=True):
    g = gen(seed)
    lp = torch.log_softmax(torch.randn(b, t, v, generator=g, dtype=D) * 2, -1).requires_grad_(True)
    target = torch.randint(0, v, (b, t), generator=g)
    omask = torch.ones(b, t, dtype=torch.bool)
    if pad:
        target[0, -1] = -100
        target[2, -2:] = -100
        omask[1, -1] = False
        omask[3, -2:] = False
    return lp, target, omask


@pytest.mark.parametrize("pool", ["softmax", "max"])
@pytest.mark.parametrize("ngram,ce_factor,ngram_factor,tau,floor", [
    ((1, 2), 0.5, 0.5, 1.0, -20.0), ((1, 2, 3), 0.3, 1.0, 0.5, None), ((2,), 0.0, 1.0, 2.0, -3.0)])
def test_eisl_matches_naive_transcription(pool, ngram, ce_factor, ngram_factor, tau, floor):
    lp, target, omask = eisl_inputs()
    kw = dict(ngram=ngram, ce_factor=ce_factor, ngram_factor=ngram_factor, pool=pool, tau=tau, min_log_prob=floor)
    val, grad = value_and_grad(lambda: LF.eisl(lp, target, omask, reduction="none", **kw), lp)
    ref, ref_grad = value_and_grad(
        lambda: eisl_naive(lp, target, omask, ngram, ce_factor, ngram_factor, pool, tau, floor), lp)
    torch.testing.assert_close(val, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_eisl_different_output_and_target_lengths():
    g = gen(5)
    lp = torch.log_softmax(torch.randn(3, 7, 5, generator=g, dtype=D), -1).requires_grad_(True)
    target = torch.randint(0, 5, (3, 4), generator=g)
    omask = torch.ones(3, 7, dtype=torch.bool)
    kw = dict(ngram=(1, 3), ce_factor=0.0, ngram_factor=1.0)
    val, grad = value_and_grad(lambda: LF.eisl(lp, target, omask, reduction="none", **kw), lp)
    ref, ref_grad = value_and_grad(lambda: eisl_naive(lp, target, omask, (1, 3), 0.0, 1.0), lp)
    torch.testing.assert_close(val, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", ["softmax", "max"])
def test_eisl_full_length_ngram_is_cross_entropy(pool):
    """n = T_out = T_tgt: one output n-gram per target n-gram, G = (1/T) Σ_t log P_t(y_t) = −CE."""
    lp, target, _ = eisl_inputs(pad=False)
    t = target.shape[1]
    val = LF.eisl(lp, target, ngram=(t,), ce_factor=0.0, ngram_factor=1.0, pool=pool, min_log_prob=None,
                  reduction="none")
    ce = -lp.detach().gather(2, target[..., None]).squeeze(-1).mean(1)
    torch.testing.assert_close(val, ce, rtol=1e-12, atol=1e-12)


def test_eisl_unigram_bounds_cross_entropy_with_equality_when_aligned():
    """n = 1: L_1 = −mean_j max_i log P_i(y_j) ≤ −mean_j log P_j(y_j) = CE, with equality iff every target
    token is most probable at its own position; softmax pooling tends to CE as the alignment sharpens."""
    b, t, v = 4, 5, 8
    g = gen(6)
    target = torch.stack([torch.randperm(v, generator=g)[:t] for _ in range(b)])   # distinct tokens
    logits = torch.randn(b, t, v, generator=g, dtype=D)
    kw = dict(ngram=(1,), ce_factor=0.0, ngram_factor=1.0, min_log_prob=None, reduction="none")
    lp = torch.log_softmax(logits, -1)
    ce = -lp.gather(2, target[..., None]).squeeze(-1).mean(1)
    assert (LF.eisl(lp, target, pool="max", **kw) <= ce + 1e-12).all()
    assert (LF.eisl(lp, target, pool="max", **kw) < ce - 1e-3).any()       # unaligned: strictly below
    aligned = logits.scatter_add(2, target[..., None], torch.full((b, t, 1), 12.0, dtype=D))
    lp = torch.log_softmax(aligned, -1)
    ce = -lp.gather(2, target[..., None]).squeeze(-1).mean(1)
    torch.testing.assert_close(LF.eisl(lp, target, pool="max", **kw), ce, rtol=1e-12, atol=1e-12)
    sharp = torch.log_softmax(logits.scatter_add(2, target[..., None], torch.full((b, t, 1), 40.0, dtype=D)), -1)
    ce = -sharp.gather(2, target[..., None]).squeeze(-1).mean(1)
    torch.testing.assert_close(LF.eisl(sharp, target, pool="softmax", **kw), ce, rtol=0, atol=1e-9)
    # and the combined loss with ce_factor = 1, ngram_factor = 0 is exactly the (length-normalised) CE
    torch.testing.assert_close(LF.eisl(sharp, target, ce_factor=1.0, ngram_factor=0.0, reduction="none"), ce,
                               rtol=1e-12, atol=0)


def test_eisl_edit_invariance_of_the_ngram_term():
    """Max-pooled bigram loss of a target against outputs that generate it shifted by one position (an
    inserted token) is the loss of the aligned output, while CE on the shifted output is much larger."""
    t, v = 6, 9
    target = torch.tensor([[1, 2, 3, 4, 5, 6]])
    clean = torch.full((1, t, v), -9.0, dtype=D).scatter(2, target[..., None], 9.0)
    shifted = torch.full((1, t, v), -9.0, dtype=D)
    shifted[0, 0, 7] = 9.0                                     # an inserted token ...
    shifted[0, 1:].scatter_(1, target[0, :-1, None], 9.0)     # ... then the target, one step late
    lp_clean, lp_shift = torch.log_softmax(clean, -1), torch.log_softmax(shifted, -1)
    kw = dict(ngram=(2,), ce_factor=0.0, ngram_factor=1.0, pool="max", min_log_prob=None, reduction="none")
    a, b = LF.eisl(lp_clean, target, **kw), LF.eisl(lp_shift, target, **kw)
    # 4 of the 5 target bigrams still match exactly; only the last one (cut off) does not
    assert b.item() < 0.25 * 18.0 and a.item() < 1e-6
    ce_kw = dict(ce_factor=1.0, ngram_factor=0.0, reduction="none")
    assert LF.eisl(lp_shift, target, **ce_kw).item() > 15.0


def test_eisl_gumbel_pooling_transcription_and_reproducibility():
    lp, target, omask = eisl_inputs(seed=7)
    kw = dict(ngram=(1, 2), ce_factor=0.5, ngram_factor=0.5, pool="gumbel", reduction="none")
    a = LF.eisl(lp, target, omask, generator=gen(11), **kw)
    torch.testing.assert_close(a, LF.eisl(lp, target, omask, generator=gen(11), **kw), rtol=0, atol=0)
    assert not torch.allclose(a, LF.eisl(lp, target, omask, generator=gen(12), **kw))
    # the same noise, drawn in the same order (one (B, T_out−n+1, T_tgt−n+1) uniform block per n), by hand
    g = gen(11)
    b, t, _ = lp.shape
    noise = {n: -torch.log(-torch.log(torch.rand(b, t - n + 1, t - n + 1, generator=g).double())) for n in (1, 2)}
    out = []
    for s in range(b):
        tk = [bool(target[s, j] != -100) for j in range(t)]
        ok = [bool(omask[s, i]) for i in range(t)]
        pos = [j for j in range(t) if tk[j] and ok[j]]
        ce = sum(-lp[s, j, int(target[s, j])] for j in pos) / len(pos)
        total = 0.0
        for n in (1, 2):
            outs = [i for i in range(t - n + 1) if all(ok[i:i + n])]
            tgts = [j for j in range(t - n + 1) if all(tk[j:j + n])]
            pooled = []
            for j in tgts:
                gs = torch.stack([sum(lp[s, i + k, int(target[s, j + k])].clamp(min=-20.0) for k in range(n)) / n
                                  for i in outs])
                w = torch.softmax(gs + noise[n][s, outs, j], 0)
                pooled.append((w * gs).sum())
            total = total + 0.5 * -torch.stack(pooled).mean()
        out.append(0.5 * ce + 0.5 * total)
    torch.testing.assert_close(a, torch.stack(out).detach(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# OPL
# --------------------------------------------------------------------------------------------------------------

def opl_naive(feats, labels, gamma=0.5, keep=None):
    n = feats.shape[0]
    idx = [i for i in range(n) if keep is None or bool(keep[i])]
    unit = {i: feats[i] / torch.sqrt((feats[i] ** 2).sum()) for i in idx}
    same, diff = [], []
    for i in idx:
        for j in idx:
            if i == j:
                continue
            c = (unit[i] * unit[j]).sum()
            (same if labels[i] == labels[j] else diff).append(c)
    s = torch.stack(same).mean() if same else feats.sum() * 0
    d = torch.stack(diff).mean() if diff else feats.sum() * 0
    return (1 - s) + gamma * torch.abs(d)


@pytest.mark.parametrize("gamma", [0.5, 0.0, 2.0])
def test_opl_matches_pairwise_transcription(gamma):
    g = gen(8)
    x = torch.randn(9, 5, generator=g, dtype=D).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    val, grad = value_and_grad(lambda: LF.opl(x, y, gamma=gamma), x)
    ref, ref_grad = value_and_grad(lambda: opl_naive(x, y, gamma), x)
    torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    keep = torch.tensor([True, False, True, True, True, False, True, True, True])
    val, grad = value_and_grad(lambda: LF.opl(x, y, gamma=gamma, mask=keep), x)
    ref, ref_grad = value_and_grad(lambda: opl_naive(x, y, gamma, keep), x)
    torch.testing.assert_close(val, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert (grad[~keep] == 0).all()


def test_opl_is_zero_for_orthogonal_classes_with_identical_features():
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen(9), dtype=D))
    y = torch.tensor([0, 1, 2, 0, 2, 1, 0])
    scale = torch.linspace(0.5, 4.0, 7, dtype=D)[:, None]      # lengths do not matter after normalisation
    x = (basis[y] * scale).requires_grad_(True)
    out = LF.opl(x, y, return_components=True)
    torch.testing.assert_close(out.loss, torch.zeros((), dtype=D), rtol=0, atol=1e-14)
    torch.testing.assert_close(out.components["intra"], torch.zeros((), dtype=D), rtol=0, atol=1e-14)
    assert out.components["inter"].abs() < 1e-14
    # a perturbation increases it
    assert LF.opl(x.detach() + 0.1 * torch.randn(7, 6, generator=gen(10), dtype=D), y) > 1e-3


def test_opl_empty_pair_sets_are_zero_means_not_nan():
    x = torch.randn(4, 3, generator=gen(11), dtype=D).requires_grad_(True)
    one_class = torch.zeros(4, dtype=torch.long)
    all_diff = torch.arange(4)
    a, ga = value_and_grad(lambda: LF.opl(x, one_class), x)          # no different-class pair: d = 0
    b, gb = value_and_grad(lambda: LF.opl(x, all_diff), x)           # no same-class pair: s = 0
    torch.testing.assert_close(a, opl_naive(x, one_class).detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b, opl_naive(x, all_diff).detach(), rtol=1e-12, atol=1e-12)
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
    single = torch.tensor([True, False, False, False])
    c, gc = value_and_grad(lambda: LF.opl(x, one_class, mask=single), x)
    assert c.item() == 1.0 and (gc == 0).all()                        # no pair at all: 1 − 0 + γ·0


# --------------------------------------------------------------------------------------------------------------
# EnsLoss
# --------------------------------------------------------------------------------------------------------------

def ens_naive(z, seed, lam=0.0, bound=1.0):
    """The authors' generator with Python lists: K + 1 draws (the last margin is the anchor z = 0)."""
    zs = [float(v) for v in z] + [0.0]
    eps = torch.randn(len(zs), generator=gen(seed)).tolist()
    if lam == 0:
        mags = [math.exp(e) for e in eps]
    else:
        mags = [max(1 + lam * e, 0.0) ** (1 / lam) for e in eps]
    vals = sorted(max(-m, -bound) for m in mags)
    order = sorted(range(len(zs)), key=lambda i: (zs[i], i))
    g = [0.0] * len(zs)
    for rank, i in enumerate(order):
        g[i] = vals[rank]
    g = [(gi / zi if zi > 1 else gi) - 1e-6 for gi, zi in zip(g, zs)]
    return torch.tensor(g[:-1], dtype=D), g[-1]


@pytest.mark.parametrize("lam,bound", [(0.0, 1.0), (0.5, 2.0), (2.0, 0.3)])
def test_ensloss_gradient_is_y_g_over_n_for_the_drawn_g(lam, bound):
    g = gen(12)
    f = (torch.randn(15, generator=g, dtype=D) * 2).requires_grad_(True)
    f.data[3] = 0.0                                              # a margin tied with the anchor
    y01 = (torch.rand(15, generator=g) < 0.5).double()
    y = 2 * y01 - 1
    val, grad = value_and_grad(lambda: LF.ensloss(f, y01, lam=lam, bound=bound, generator=gen(5)), f)
    g_ref, g0 = ens_naive(y * f.detach(), 5, lam, bound)
    torch.testing.assert_close(grad, y * g_ref / 15, rtol=1e-6, atol=1e-9)
    # the value is the logistic loss (monitoring only); ±1 labels give the same as 0/1 labels
    torch.testing.assert_close(val, F.softplus(-y * f.detach()).mean(), rtol=1e-12, atol=0)
    val2, grad2 = value_and_grad(lambda: LF.ensloss(f, y, lam=lam, bound=bound, generator=gen(5)), f)
    torch.testing.assert_close(grad2, grad, rtol=0, atol=0)
    gd, gd0 = ensloss_derivative(y * f.detach(), lam=lam, bound=bound, generator=gen(5))
    torch.testing.assert_close(gd, g_ref, rtol=1e-6, atol=1e-9)
    assert abs(gd0.item() - g0) < 1e-6


def test_ensloss_draws_calibrated_nondecreasing_derivatives():
    z = torch.randn(40, generator=gen(13), dtype=D) * 3
    order = torch.argsort(z)
    for seed in range(200):
        g, g0 = ensloss_derivative(z, generator=gen(seed))
        assert g0 < 0, seed
        assert (g[order].diff() >= 0).all(), seed                   # non-decreasing in z
        assert (g[z < 0] <= g0).all() and (g[z > 0] >= g0).all()    # consistent with the anchor at 0
        assert (g < 0).all() and (g >= -1.0 - 1e-6).all()
    a, _ = ensloss_derivative(z, generator=gen(3))
    b, _ = ensloss_derivative(z, generator=gen(3))
    c, _ = ensloss_derivative(z, generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ensloss_mask_removes_samples_from_the_draw():
    g = gen(14)
    f = torch.randn(10, generator=g, dtype=D).requires_grad_(True)
    y = (torch.rand(10, generator=g) < 0.5).double()
    keep = torch.ones(10, dtype=torch.bool)
    keep[[2, 7]] = False
    _, grad = value_and_grad(lambda: LF.ensloss(f, y, mask=keep, reduction="sum", generator=gen(1)), f)
    g_ref, _ = ens_naive(((2 * y - 1) * f.detach())[keep], 1)
    assert (grad[~keep] == 0).all()
    torch.testing.assert_close(grad[keep], (2 * y - 1)[keep] * g_ref, rtol=1e-6, atol=1e-9)
