"""Overlap losses against their oracles.

* dice, jaccard, tversky, lovasz_softmax: segmentation_models_pytorch (smp) ``DiceLoss``, ``JaccardLoss``,
  ``TverskyLoss``, ``LovaszLoss`` on the same inputs; values and gradients. Dice/Jaccard/Tversky in
  float64, rtol 1e-9, atol 1e-12 (plus one float32 case, rtol 1e-5, atol 1e-6). smp's Lovász computes
  its Jaccard weights in float32 and cannot take float64 inputs (torch.dot dtype mismatch), so the Lovász
  comparisons are float32 on both sides, rtol 1e-5, atol 1e-6. Grid: the three modes, smooth, from_logits,
  ignore_index, log_loss, class weights, soft labels, absent classes, 2-D and 3-D spatial shapes, seeds.
* self_adjusting_dice, jaccard_metric, anyloss (oracle "formula"), squared Dice and focal-Tversky:
  literal transcriptions of the papers' equations with explicit loops over classes / samples, rtol 1e-9,
  plus the special cases (JML with hard labels = soft Jaccard, DSC with α=0 = per-sample soft Dice,
  AnyLoss at confident predictions = the hard metric, Tversky(½, ½) = Dice, focal-Tversky γ=1 = Tversky).
"""
from __future__ import annotations

import itertools
import math

import pytest
import segmentation_models_pytorch.losses as smp
import torch
from segmentation_models_pytorch.losses.lovasz import _lovasz_softmax

import losskit.functional as LF

from ._helpers import assert_same

RTOL, ATOL = 1e-9, 1e-12
IGNORE = 255


def gen(seed):
    return torch.Generator().manual_seed(seed)


def logits(shape, seed, scale=2.0, dtype=torch.float64):
    return (torch.randn(*shape, generator=gen(seed), dtype=torch.float64) * scale).to(dtype).requires_grad_(True)


def class_target(shape, c, seed, ignore=False, classes=None):
    """Class indices in [0, classes or c); every 5th pixel = IGNORE if ``ignore``."""
    t = torch.randint(0, classes or c, shape, generator=gen(seed + 100))
    if ignore:
        t.view(-1)[::5] = IGNORE
    return t


def label_target(shape, seed, soft=False, ignore=False, empty_label=None):
    """Multi-label / binary targets in {0, 1} (or [0, 1] if ``soft``); IGNORE entries if ``ignore``."""
    g = gen(seed + 200)
    t = torch.rand(*shape, generator=g, dtype=torch.float64)
    if not soft:
        t = (t < 0.35).double()
    if empty_label is not None:
        t[:, empty_label] = 0.0
    if ignore:
        t.view(-1)[::7] = IGNORE
    return t


def prob(h, mode):
    return torch.softmax(h, 1) if mode == "multiclass" else torch.sigmoid(h)


def check(ours, theirs, x, rtol=RTOL, atol=ATOL):
    assert_same(ours, theirs, x, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# dice / jaccard / tversky against smp
# --------------------------------------------------------------------------------------------------

SMP_CLASS = {"dice": smp.DiceLoss, "jaccard": smp.JaccardLoss, "tversky": smp.TverskyLoss}
MC_SHAPES = [(2, 4, 5, 6), (3, 3, 7), (2, 5, 2, 3, 4)]


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("shape,seed", [(MC_SHAPES[0], 0), (MC_SHAPES[1], 1), (MC_SHAPES[2], 2)])
@pytest.mark.parametrize("smooth,from_logits,ignore", [(0.0, True, False), (1.0, True, True),
                                                       (0.5, False, True), (0.0, False, False)])
def test_multiclass_matches_smp(name, shape, seed, smooth, from_logits, ignore):
    c = shape[1]
    h = logits(shape, seed)
    # classes 0..c-2 only: the last class is absent and must give 0 (smp) while counting in the mean
    y = class_target((shape[0], *shape[2:]), c, seed, ignore=ignore, classes=c - 1)
    hyper = {"alpha": 0.3, "beta": 0.7} if name == "tversky" else {}
    ref = SMP_CLASS[name]("multiclass", smooth=smooth, from_logits=from_logits,
                          ignore_index=IGNORE if ignore else None, **hyper)
    x = (lambda: h) if from_logits else (lambda: torch.softmax(h, 1))
    fn = getattr(LF, name)
    check(lambda: fn(x(), y, smooth=smooth, from_logits=from_logits, ignore_index=IGNORE, **hyper),
          lambda: ref(x(), y), h)
    assert fn(h, y, smooth=smooth, ignore_index=IGNORE, reduction="none", **hyper)[-1] == 0


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("mode,shape", [("multilabel", (2, 3, 4, 5)), ("multilabel", (3, 4, 6)),
                                        ("binary", (2, 1, 4, 5)), ("binary", (3, 7))])
@pytest.mark.parametrize("soft,ignore,smooth", [(False, False, 0.0), (False, True, 1.0), (True, False, 0.3)])
def test_multilabel_and_binary_match_smp(name, mode, shape, soft, ignore, smooth):
    seed = len(shape) + int(soft) + 3 * int(ignore)
    h = logits(shape, seed)
    y = label_target(shape, seed, soft=soft, ignore=ignore, empty_label=1 if mode == "multilabel" else None)
    hyper = {"alpha": 0.7, "beta": 0.3} if name == "tversky" else {}
    ref = SMP_CLASS[name](mode, smooth=smooth, ignore_index=IGNORE if ignore else None, **hyper)
    fn = getattr(LF, name)
    check(lambda: fn(h, y, mode=mode, smooth=smooth, ignore_index=IGNORE, **hyper), lambda: ref(h, y), h)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky"])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_log_loss_and_class_weights_match_smp(name, mode):
    shape = (2, 4, 5, 5)
    h = logits(shape, 7)
    y = class_target((2, 5, 5), 4, 7) if mode == "multiclass" else label_target(shape, 7)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    ref = SMP_CLASS[name](mode, log_loss=True, class_weights=w.tolist())
    fn = getattr(LF, name)
    check(lambda: fn(h, y, mode=mode, log_loss=True, weight=w), lambda: ref(h, y), h)


@pytest.mark.parametrize("gamma", [0.75, 2.0])
def test_focal_tversky_binary_matches_smp(gamma):
    # smp raises the class mean to γ; with one class (binary mode) that is the per-class power
    h = logits((3, 1, 5, 5), 8)
    y = label_target((3, 1, 5, 5), 8)
    ref = smp.TverskyLoss("binary", alpha=0.3, beta=0.7, gamma=gamma)
    check(lambda: LF.tversky(h, y, mode="binary", alpha=0.3, beta=0.7, gamma=gamma), lambda: ref(h, y), h)


def test_mask_equals_smp_ignore():
    """A pixel mask is the same as marking the masked pixels ignore_index."""
    h = logits((3, 4, 5, 5), 9)
    y = class_target((3, 5, 5), 4, 9)
    m = torch.rand(3, 5, 5, generator=gen(9)) > 0.3
    y_ign = torch.where(m, y, torch.full_like(y, IGNORE))
    for name in ("dice", "jaccard", "tversky"):
        ref = SMP_CLASS[name]("multiclass", ignore_index=IGNORE)
        check(lambda: getattr(LF, name)(h, y, mask=m), lambda: ref(h, y_ign), h)
    hl = logits((3, 2, 5, 5), 10)
    yl = label_target((3, 2, 5, 5), 10)
    yl_ign = torch.where(m[:, None], yl, torch.full_like(yl, IGNORE))
    check(lambda: LF.dice(hl, yl, mode="multilabel", mask=m),
          lambda: smp.DiceLoss("multilabel", ignore_index=IGNORE)(hl, yl_ign), hl)


def test_float32_matches_smp():
    h = logits((2, 4, 8, 8), 11).detach().float().requires_grad_(True)
    y = class_target((2, 8, 8), 4, 11)
    check(lambda: LF.dice(h, y), lambda: smp.DiceLoss("multiclass")(h, y), h, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# squared Dice and (focal) Tversky against per-class transcriptions
# --------------------------------------------------------------------------------------------------

def per_class_stats(p, onehot, keep):
    """Explicit loops: for each class the kept pixels' p and y vectors."""
    out = []
    for c in range(p.shape[1]):
        pc = p[:, c][keep]
        yc = onehot[:, c][keep]
        out.append((pc, yc))
    return out


def flat_mc(h, y, ignore=None):
    c = h.shape[1]
    p = torch.softmax(h, 1).movedim(1, -1).reshape(-1, c)
    t = y.reshape(-1)
    keep = torch.ones_like(t, dtype=torch.bool) if ignore is None else t != ignore
    onehot = torch.nn.functional.one_hot(torch.where(keep, t, 0), c).double()
    return p, onehot, keep


def tversky_ref(h, y, alpha, beta, gamma=1.0, smooth=0.0, ignore=None):
    p, onehot, keep = flat_mc(h, y, ignore)
    out = []
    for pc, yc in per_class_stats(p, onehot, keep):
        tp, fp, fn = (pc * yc).sum(), (pc * (1 - yc)).sum(), ((1 - pc) * yc).sum()
        ti = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
        out.append((1 - ti) ** gamma if yc.sum() > 0 else 0 * ti)
    return torch.stack(out)


def dice_squared_ref(h, y, smooth=0.0):
    p, onehot, keep = flat_mc(h, y)
    out = []
    for pc, yc in per_class_stats(p, onehot, keep):
        d = (2 * (pc * yc).sum() + 2 * smooth) / ((pc ** 2).sum() + (yc ** 2).sum() + 2 * smooth)
        out.append(1 - d if yc.sum() > 0 else 0 * d)
    return torch.stack(out)


@pytest.mark.parametrize("gamma", [1.0, 0.75, 2.0])
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.5, 0.5), (1.0, 1.0)])
def test_focal_tversky_per_class(gamma, alpha, beta):
    h = logits((2, 5, 4, 4), 12)
    y = class_target((2, 4, 4), 5, 12, ignore=True, classes=4)
    check(lambda: LF.tversky(h, y, alpha=alpha, beta=beta, gamma=gamma, smooth=0.5, ignore_index=IGNORE,
                             reduction="none"),
          lambda: tversky_ref(h, y, alpha, beta, gamma, smooth=0.5, ignore=IGNORE), h)


def test_tversky_special_cases():
    h = logits((2, 4, 5, 5), 13)
    y = class_target((2, 5, 5), 4, 13)
    # Tversky(½, ½) = Dice; Tversky(1, 1) = Jaccard; focal-Tversky with γ = 1 = Tversky
    check(lambda: LF.tversky(h, y, alpha=0.5, beta=0.5, reduction="none"), lambda: LF.dice(h, y, reduction="none"), h)
    check(lambda: LF.tversky(h, y, alpha=1.0, beta=1.0, reduction="none"),
          lambda: LF.jaccard(h, y, reduction="none"), h)
    check(lambda: LF.tversky(h, y, alpha=0.2, beta=0.8, gamma=1.0, reduction="none"),
          lambda: tversky_ref(h, y, 0.2, 0.8), h)


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_squared_denominator(smooth):
    h = logits((2, 4, 5, 5), 14)
    y = class_target((2, 5, 5), 4, 14, classes=3)
    check(lambda: LF.dice(h, y, squared=True, smooth=smooth, reduction="none"),
          lambda: dice_squared_ref(h, y, smooth), h)


# --------------------------------------------------------------------------------------------------
# Jaccard metric losses (JML1, JML2) against the paper's equations
# --------------------------------------------------------------------------------------------------

def l1(v):
    return torch.linalg.vector_norm(v, ord=1)


def jml_ref(p, y, variant, smooth, keep=None):
    """p, y (N, C, *): per class, norms over the kept pixels; classes with no label mass give 0."""
    c = p.shape[1]
    pf, yf = p.movedim(1, -1).reshape(-1, c), y.movedim(1, -1).reshape(-1, c)
    if keep is not None:
        pf, yf = pf[keep.reshape(-1)], yf[keep.reshape(-1)]
    out = []
    for k in range(c):
        x, t = pf[:, k], yf[:, k]
        if variant == "jml1":
            score = (l1(x + t) - l1(x - t) + smooth) / (l1(x + t) + l1(x - t) + smooth)
        else:
            score = ((x * t).sum() + smooth) / ((x * t).sum() + l1(x - t) + smooth)
        out.append(1 - score if t.sum() > 0 else 0 * score)
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["jml1", "jml2"])
@pytest.mark.parametrize("smooth,seed", [(1.0, 0), (0.0, 1), (0.1, 2)])
def test_jaccard_metric_soft_labels(variant, smooth, seed):
    h = logits((2, 4, 5, 6), seed)
    soft = torch.softmax(torch.randn(2, 4, 5, 6, generator=gen(seed + 7), dtype=torch.float64) * 2, 1)
    m = torch.rand(2, 5, 6, generator=gen(seed)) > 0.2
    check(lambda: LF.jaccard_metric(h, soft, variant=variant, smooth=smooth, mask=m, reduction="none"),
          lambda: jml_ref(torch.softmax(h, 1), soft, variant, smooth, keep=m), h)
    # multilabel soft labels
    hl = logits((3, 2, 4), seed + 1)
    yl = torch.rand(3, 2, 4, generator=gen(seed), dtype=torch.float64)
    check(lambda: LF.jaccard_metric(hl, yl, mode="multilabel", variant=variant, smooth=smooth, reduction="none"),
          lambda: jml_ref(torch.sigmoid(hl), yl, variant, smooth), hl)


def test_jaccard_metric_hard_labels_equal_soft_jaccard():
    h = logits((2, 4, 5, 6), 3)
    y = class_target((2, 5, 6), 4, 3, ignore=True)
    # JML2 with smoothing s = Jaccard with s; JML1 with s = Jaccard with s/2 (smoothing on 2·TP)
    check(lambda: LF.jaccard_metric(h, y, variant="jml2", smooth=0.4, ignore_index=IGNORE),
          lambda: LF.jaccard(h, y, smooth=0.4, ignore_index=IGNORE), h)
    check(lambda: LF.jaccard_metric(h, y, variant="jml1", smooth=0.4, ignore_index=IGNORE),
          lambda: LF.jaccard(h, y, smooth=0.2, ignore_index=IGNORE), h)
    # and the plain soft Jaccard Σpy / (Σp + Σy − Σpy), written out
    p, onehot, keep = flat_mc(h, y, IGNORE)
    ref = torch.stack([1 - (pc * yc).sum() / (pc.sum() + yc.sum() - (pc * yc).sum())
                       for pc, yc in per_class_stats(p, onehot, keep)])
    for variant in ("jml1", "jml2"):
        torch.testing.assert_close(LF.jaccard_metric(h, y, variant=variant, smooth=0.0, ignore_index=IGNORE,
                                                     reduction="none"), ref, rtol=RTOL, atol=ATOL)


def test_jaccard_metric_is_zero_at_the_soft_label():
    """The metric property that soft Jaccard lacks: Δ(y, y) = 0 for a soft y (Σpy-based IoU is > 0)."""
    soft = torch.softmax(torch.randn(2, 3, 4, 4, generator=gen(5), dtype=torch.float64), 1)
    for variant in ("jml1", "jml2"):
        out = LF.jaccard_metric(soft, soft, variant=variant, smooth=0.0, from_logits=False)
        torch.testing.assert_close(out, torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-12)
    naive_iou = 1 - (soft * soft).sum() / (2 * soft.sum() - (soft * soft).sum())
    assert naive_iou > 0.1


# --------------------------------------------------------------------------------------------------
# Lovász against smp (float32: smp's Lovász does not run in float64)
# --------------------------------------------------------------------------------------------------

F32 = {"rtol": 1e-5, "atol": 1e-6}


@pytest.mark.parametrize("shape,seed,ignore", [((2, 4, 5, 6), 0, False), ((2, 4, 5, 6), 1, True),
                                               ((3, 5, 2, 3, 4), 2, True), ((1, 3, 6, 6), 3, False)])
def test_lovasz_softmax_matches_smp(shape, seed, ignore):
    c = shape[1]
    h = logits(shape, seed, dtype=torch.float32)
    y = class_target((shape[0], *shape[2:]), c, seed, ignore=ignore, classes=c - 1)  # one absent class
    ref = smp.LovaszLoss("multiclass", ignore_index=IGNORE if ignore else None)
    check(lambda: LF.lovasz_softmax(h, y, ignore_index=IGNORE), lambda: ref(h, y), h, **F32)
    # classes="all" against smp's functional core
    check(lambda: LF.lovasz_softmax(h, y, classes="all", ignore_index=IGNORE),
          lambda: _lovasz_softmax(torch.softmax(h, 1), y, classes="all", ignore=IGNORE if ignore else None), h, **F32)
    assert LF.lovasz_softmax(h, y, ignore_index=IGNORE, reduction="none")[-1] == 0


def test_lovasz_mask_equals_smp_ignore():
    h = logits((3, 4, 5, 5), 4, dtype=torch.float32)
    y = class_target((3, 5, 5), 4, 4)
    m = torch.rand(3, 5, 5, generator=gen(4)) > 0.3
    y_ign = torch.where(m, y, torch.full_like(y, IGNORE))
    check(lambda: LF.lovasz_softmax(h, y, mask=m),
          lambda: smp.LovaszLoss("multiclass", ignore_index=IGNORE)(h, y_ign), h, **F32)


@pytest.mark.parametrize("shape,seed,ignore", [((2, 1, 5, 6), 0, False), ((3, 7), 1, True), ((4, 10), 2, False)])
def test_lovasz_hinge_binary_matches_smp(shape, seed, ignore):
    h = logits(shape, seed, dtype=torch.float32)
    y = label_target(shape, seed, ignore=ignore).float()
    ref = smp.LovaszLoss("binary", ignore_index=IGNORE if ignore else None)
    check(lambda: LF.lovasz_softmax(h, y, mode="binary", ignore_index=IGNORE), lambda: ref(h, y), h, **F32)


def test_lovasz_hinge_multilabel_is_per_label_smp_binary():
    h = logits((2, 3, 4, 5), 5, dtype=torch.float32)
    y = label_target((2, 3, 4, 5), 5, ignore=True).float()
    ref = smp.LovaszLoss("binary", ignore_index=IGNORE)
    check(lambda: LF.lovasz_softmax(h, y, mode="multilabel", ignore_index=IGNORE, reduction="none"),
          lambda: torch.stack([ref(h[:, k], y[:, k]) for k in range(3)]), h, **F32)


def lovasz_ref(errors, fg):
    """Berman et al. Alg. 1 by explicit loops: sort the errors decreasingly; J_k is the Jaccard loss of the
    prefix set m_k = first k pixels taken as mistakes, 1 − |fg \\ m_k| / |fg ∪ m_k|;
    ℓ = Σ_k e_k (J_k − J_{k−1})."""
    order = sorted(range(len(errors)), key=lambda i: -float(errors[i].detach()))
    fg_set = {i for i in range(len(fg)) if fg[i] == 1}
    total, prev, prefix = 0 * errors.sum(), 0.0, set()
    for i in order:
        prefix.add(i)
        jk = 1 - len(fg_set - prefix) / len(fg_set | prefix)
        total = total + errors[i] * (jk - prev)
        prev = jk
    return total


def test_lovasz_float64_against_algorithm_1():
    h = logits((2, 3, 3, 4), 6)
    y = class_target((2, 3, 4), 3, 6, ignore=True)
    z = logits((2, 2, 3, 4), 7)
    yl = label_target((2, 2, 3, 4), 7)

    def ref_softmax():
        p = torch.softmax(h, 1).movedim(1, -1).reshape(-1, 3)
        t = y.reshape(-1)
        keep = t != IGNORE
        p, t = p[keep], t[keep]
        return torch.stack([lovasz_ref((p[:, c] - (t == c).double()).abs(), (t == c).long()) for c in range(3)])

    def ref_hinge():
        out = []
        for k in range(2):
            zk, yk = z[:, k].reshape(-1), yl[:, k].reshape(-1)
            out.append(lovasz_ref(torch.relu(1 - zk * (2 * yk - 1)), yk.long()))
        return torch.stack(out)

    check(lambda: LF.lovasz_softmax(h, y, ignore_index=IGNORE, classes="all", reduction="none"), ref_softmax, h)
    check(lambda: LF.lovasz_softmax(z, yl, mode="multilabel", reduction="none"), ref_hinge, z)


# --------------------------------------------------------------------------------------------------
# self-adjusting Dice (Li et al. 2020) against the per-sample equation
# --------------------------------------------------------------------------------------------------

def dsc_ref(p, y, alpha, gamma):
    """1 − (2(1−p)^α p y + γ)/((1−p)^α p + y + γ), one sample."""
    w = (1 - p) ** alpha * p
    return 1 - (2 * w * y + gamma) / (w + y + gamma)


@pytest.mark.parametrize("alpha,smooth", [(1.0, 1.0), (0.5, 1.0), (2.0, 0.1)])
def test_self_adjusting_dice_multiclass(alpha, smooth):
    h = logits((6, 4), 20)
    y = class_target((6,), 4, 20)
    y[2] = -100

    def ref():
        p = torch.softmax(h, 1)
        rows = []
        for i in range(6):
            if y[i] == -100:
                rows.append(0 * p[i, 0])
                continue
            rows.append(sum(dsc_ref(p[i, c], float(c == y[i]), alpha, smooth) for c in range(4)))
        return torch.stack(rows)

    check(lambda: LF.self_adjusting_dice(h, y, alpha=alpha, smooth=smooth, reduction="none"), ref, h)
    check(lambda: LF.self_adjusting_dice(h, y, alpha=alpha, smooth=smooth), lambda: ref().sum() / 5, h)


@pytest.mark.parametrize("mode,shape", [("binary", (9,)), ("multilabel", (5, 3))])
def test_self_adjusting_dice_binary(mode, shape):
    h = logits(shape, 21)
    y = label_target(shape, 21)

    def ref():
        p = torch.sigmoid(h)
        return torch.stack([dsc_ref(pi, yi, 1.0, 1.0) for pi, yi in zip(p.reshape(-1), y.reshape(-1))]).reshape(shape)

    check(lambda: LF.self_adjusting_dice(h, y, mode=mode, reduction="none"), ref, h)


def test_self_adjusting_dice_alpha_zero_is_per_sample_soft_dice():
    h = logits((7, 3), 22)
    y = class_target((7,), 3, 22)
    p = torch.softmax(h, 1)
    q = torch.nn.functional.one_hot(y, 3).double()
    # plain soft Dice of every sample and class, (2py + γ)/(p + y + γ), summed over classes
    ref = lambda: sum(1 - (2 * p[:, c] * q[:, c] + 1.0) / (p[:, c] + q[:, c] + 1.0) for c in range(3))  # noqa: E731
    check(lambda: LF.self_adjusting_dice(h, y, alpha=0.0, reduction="none"), ref, h)


# --------------------------------------------------------------------------------------------------
# AnyLoss (Han et al. 2024) against the paper's confusion-matrix definitions
# --------------------------------------------------------------------------------------------------

def confusion(z, y, L, keep=None):
    """Soft confusion entries by an explicit loop over samples, A = 1/(1 + exp(−L(p − ½)))."""
    tp = fn = fp = tn = 0 * z.sum()
    for i in range(z.shape[0]):
        if keep is not None and not keep[i]:
            continue
        p = 1 / (1 + torch.exp(-z[i]))
        a = 1 / (1 + torch.exp(-L * (p - 0.5)))
        tp = tp + y[i] * a
        fn = fn + y[i] * (1 - a)
        fp = fp + (1 - y[i]) * a
        tn = tn + (1 - y[i]) * (1 - a)
    return tp, fn, fp, tn


def metric_ref(metric, tp, fn, fp, tn, beta=1.0, s=1e-5):
    if metric == "accuracy":
        return (tp + tn) / (tp + tn + fp + fn + s)
    if metric in ("f1", "fbeta"):
        b2 = 1.0 if metric == "f1" else beta ** 2
        return (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp + s)
    if metric == "gmean":  # TPR·TNR (the squared G-mean of the authors' code)
        return tp * tn / ((tp + fn) * (tn + fp) + s)
    if metric == "balanced_accuracy":
        p, n = tp + fn, tn + fp
        return (n * tp + p * tn) / (2 * p * n + s)
    if metric == "mcc":
        return (tp * tn - fp * fn) / (torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) + s)
    raise AssertionError(metric)


METRICS = ["accuracy", "f1", "fbeta", "gmean", "balanced_accuracy", "mcc"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("L,seed", [(73.0, 0), (10.0, 1)])
def test_anyloss_matches_paper(metric, L, seed):
    z = logits((16,), seed, scale=0.3)  # p near ½ so that A is not saturated and the gradient is not ~0
    y = label_target((16,), seed)
    m = torch.rand(16, generator=gen(seed)) > 0.25
    check(lambda: LF.anyloss(z, y, metric=metric, L=L, beta=2.0),
          lambda: 1 - metric_ref(metric, *confusion(z, y, L), beta=2.0), z)
    check(lambda: LF.anyloss(z, y, metric=metric, L=L, beta=2.0, mask=m),
          lambda: 1 - metric_ref(metric, *confusion(z, y, L, keep=m), beta=2.0), z)


@pytest.mark.parametrize("metric", ["f1", "mcc", "balanced_accuracy"])
def test_anyloss_multilabel_is_per_label(metric):
    z = logits((12, 3), 3, scale=0.3)
    y = label_target((12, 3), 3)
    check(lambda: LF.anyloss(z, y, metric=metric, reduction="none"),
          lambda: torch.stack([1 - metric_ref(metric, *confusion(z[:, k], y[:, k], 73.0)) for k in range(3)]), z)


def hard_metric(metric, pred, y, beta=1.0):
    tp = float(((pred == 1) & (y == 1)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    tn = float(((pred == 0) & (y == 0)).sum())
    tpr, tnr = tp / (tp + fn), tn / (tn + fp)
    return {"accuracy": (tp + tn) / (tp + tn + fp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "fbeta": (1 + beta ** 2) * tp / ((1 + beta ** 2) * tp + beta ** 2 * fn + fp),
            "gmean": tpr * tnr,
            "balanced_accuracy": (tpr + tnr) / 2,
            "mcc": (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))}[metric]


@pytest.mark.parametrize("metric", METRICS)
def test_anyloss_confident_predictions_give_the_hard_metric(metric):
    g = gen(30)
    y = (torch.rand(40, generator=g) < 0.4).double()
    right = torch.rand(40, generator=g) < 0.75
    pred = torch.where(right, y, 1 - y)
    z = (pred * 2 - 1) * (4 + torch.rand(40, generator=g, dtype=torch.float64) * 3)  # |z| >= 4: p > 0.98
    hard = hard_metric(metric, pred, y, beta=2.0)
    assert 0.2 < hard < 0.95  # a non-trivial value
    out = LF.anyloss(z, y, metric=metric, beta=2.0, eps=1e-12)
    assert abs((1 - out.item()) - hard) < 1e-8
    # a small amplifier stays visibly soft
    soft = LF.anyloss(z, y, metric=metric, beta=2.0, L=2.0, eps=1e-12)
    assert abs((1 - soft.item()) - hard) > 1e-3


def test_anyloss_probabilities_equal_logits():
    z = logits((10,), 4, scale=0.5)
    y = label_target((10,), 4)
    check(lambda: LF.anyloss(torch.sigmoid(z), y, from_logits=False, metric="mcc"),
          lambda: LF.anyloss(z, y, metric="mcc"), z)


# --------------------------------------------------------------------------------------------------
# the smp grid is not vacuous: different hyperparameters give different values
# --------------------------------------------------------------------------------------------------

def test_hyperparameters_change_the_value():
    h = logits((2, 4, 5, 5), 40)
    y = class_target((2, 5, 5), 4, 40)
    values = [LF.dice(h, y), LF.dice(h, y, smooth=1.0), LF.dice(h, y, squared=True), LF.jaccard(h, y),
              LF.tversky(h, y, alpha=0.3, beta=0.7), LF.tversky(h, y, gamma=2.0), LF.lovasz_softmax(h, y)]
    for a, b in itertools.combinations(values, 2):
        assert abs(a.item() - b.item()) > 1e-6
