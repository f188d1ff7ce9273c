"""The generic conformance suite: every registry entry, automatically, no per-loss code.

What each test proves is in its name and docstring; tolerances are stated where they are used.
An entry opts out of a check only through a documented registry flag (``gradcheck=False`` for a
derivative-only surrogate, ``term_shape=None`` for a transform that has no reduction).
"""
from __future__ import annotations

import pickle

import pytest
import torch

import losskit
from losskit import LossInputError

ENTRIES = losskit.entries()
IDS = [e.id for e in ENTRIES]
# entries with reduction semantics: their example declares the shape of their terms
LOSSES = [e for e in ENTRIES if e.example("tiny", 0).term_shape is not None]
LOSS_IDS = [e.id for e in LOSSES]
LOW_PRECISION = {torch.float16: (1e-2, 1e-3), torch.bfloat16: (2e-2, 2e-3)}  # (rtol, atol) vs float32


def hyper_for(entry, example):
    hyper = {}
    for name, value in entry.test_hyper.items():
        hyper[name] = value(example) if callable(value) else value
    return hyper


def call(entry, example, inputs=None, **kwargs):
    inputs = example.clone() if inputs is None else inputs
    if entry.stochastic:
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return entry.function(**inputs, **hyper_for(entry, example), **kwargs)


def cast(example, dtype):
    inputs = example.clone(requires_grad=False)
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.to(dtype)
            if k in example.grad:
                v.requires_grad_(True)
        out[k] = v
    return out


def grads(example, inputs):
    return {k: inputs[k].grad for k in example.grad}


def tensors(out):
    """The tensors of a result: a tensor, or the fields of a tuple (statistics utilities)."""
    return list(out) if isinstance(out, tuple) else [out]


def total(out):
    return sum(t.float().sum() for t in tensors(out))


def backward(out):
    """Backpropagate through a result; a miner's index tuple carries no gradient (nothing to do)."""
    if any(t.requires_grad for t in tensors(out)):
        total(out).backward()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_value_and_gradient_are_finite(entry):
    ex = entry.example("small", 0)
    inputs = ex.clone()
    out = call(entry, ex, inputs)
    assert all(torch.isfinite(t).all() for t in tensors(out))
    backward(out)
    for name, g in grads(ex, inputs).items():
        assert g is not None, f"no gradient reached {name}"
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.gradcheck], ids=[e.id for e in ENTRIES if e.gradcheck])
def test_gradcheck_float64(entry):
    ex = entry.example("tiny", 1)
    inputs = cast(ex, torch.float64)
    diff = [inputs[k] for k in ex.grad]

    def fn(*xs):
        kw = dict(inputs)
        kw.update(dict(zip(ex.grad, xs)))
        out = call(entry, ex, kw)
        return tuple(out) if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(fn, diff, eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("entry", LOSSES, ids=LOSS_IDS)
def test_reduction_and_weight_semantics(entry):
    """sum = Σ terms, mean = Σ terms / #kept, and with per-term weights w: none = w·terms,
    sum = Σ w·terms, mean = Σ w·terms / Σ w over kept terms."""
    ex = entry.example("small", 2)
    terms = call(entry, ex, reduction="none")
    assert tuple(terms.shape) == tuple(ex.term_shape)
    kept = torch.ones(ex.term_shape, dtype=torch.bool) if ex.kept is None else ex.kept
    assert (terms[~kept] == 0).all(), "ignored terms must be 0 under reduction='none'"
    total = call(entry, ex, reduction="sum")
    mean = call(entry, ex, reduction="mean")
    torch.testing.assert_close(total, terms.sum(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, terms.sum() / kept.sum(), rtol=1e-5, atol=1e-6)
    w = torch.rand(ex.term_shape, generator=torch.Generator().manual_seed(3)) + 0.1
    wkw = entry.term_weight_name
    torch.testing.assert_close(call(entry, ex, reduction="none", **{wkw: w}), terms * w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(call(entry, ex, reduction="sum", **{wkw: w}), (terms * w).sum(), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(call(entry, ex, reduction="mean", **{wkw: w}), (terms * w).sum() / (w * kept).sum(),
                               rtol=1e-5, atol=1e-6)


def _drop_first(ex):
    inputs = ex.clone()
    return {k: (v[1:].detach().clone().requires_grad_(k in ex.grad) if k in ex.batch else v)
            for k, v in inputs.items()}


@pytest.mark.parametrize("entry", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mask_excludes_like_removal(entry, reduction):
    """Masking out sample 0 gives the same loss as removing sample 0 from every batched input."""
    ex = entry.example("small", 4)
    mask = torch.ones(ex.mask_shape, dtype=torch.bool)
    mask[0] = False
    masked = call(entry, ex, reduction=reduction, mask=mask)
    removed = call(entry, ex, _drop_first(ex), reduction=reduction)
    torch.testing.assert_close(masked, removed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", LOSSES, ids=LOSS_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_selection_is_a_connected_zero(entry, reduction):
    ex = entry.example("small", 5)
    inputs = ex.clone()
    out = call(entry, ex, inputs, reduction=reduction, mask=torch.zeros(ex.mask_shape, dtype=torch.bool))
    assert out.item() == 0.0
    assert out.requires_grad, "the zero must stay connected to the graph"
    out.backward()
    for name, g in grads(ex, inputs).items():
        assert g is None or (torch.isfinite(g).all() and (g == 0).all()), name


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_extreme_inputs_stay_finite(entry):
    """Logits of magnitude 1e4 (or near-duplicate embeddings, saturated log-probs)."""
    ex = entry.example("small", 6, variant="extreme")
    inputs = ex.clone()
    out = call(entry, ex, inputs)
    assert all(torch.isfinite(t).all() for t in tensors(out))
    backward(out)
    for name, g in grads(ex, inputs).items():
        assert torch.isfinite(g).all(), name


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_low_precision_matches_float32(entry, dtype):
    """Half inputs give a result of the input dtype, close to float32 on the same (rounded) inputs:
    accumulation happens in float32, only the final rounding differs."""
    ex = entry.example("small", 7)
    half_inputs = cast(ex, dtype)
    out = call(entry, ex, half_inputs)
    assert all(t.dtype == (dtype if t.is_floating_point() else torch.long) for t in tensors(out))
    ref_inputs = {k: (v.detach().float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                  for k, v in half_inputs.items()}
    ref = call(entry, ex, ref_inputs)
    rtol, atol = LOW_PRECISION[dtype]
    for a, b in zip(tensors(out), tensors(ref)):
        if a.is_floating_point():
            torch.testing.assert_close(a.float(), b, rtol=rtol, atol=atol)
        else:  # miner indices: mined in float32 from the same rounded inputs
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    backward(out)
    for k in ex.grad:
        assert half_inputs[k].grad.dtype == dtype and torch.isfinite(half_inputs[k].grad).all()


def make_module(entry, ex):
    return entry.module(**hyper_for(entry, ex), **entry.module_kwargs)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_module_agrees_with_function(entry):
    ex = entry.example("small", 8)
    module = make_module(entry, ex)
    assert isinstance(module, torch.nn.Module)
    kw = {"generator": torch.Generator().manual_seed(0)} if entry.stochastic else {}
    torch.testing.assert_close(module(**ex.clone(), **kw), call(entry, ex), rtol=0, atol=0)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_state_dict_and_pickle_round_trip(entry):
    ex = entry.example("small", 9)
    kw = lambda: {"generator": torch.Generator().manual_seed(0)} if entry.stochastic else {}  # noqa: E731
    module = make_module(entry, ex)
    module(**ex.clone(), **kw())  # let stateful modules update their state once
    fresh = make_module(entry, ex)
    fresh.load_state_dict(module.state_dict())
    clone = pickle.loads(pickle.dumps(module))
    expected = module(**ex.clone(), **kw())
    torch.testing.assert_close(fresh(**ex.clone(), **kw()), expected, rtol=0, atol=0)
    torch.testing.assert_close(clone(**ex.clone(), **kw()), expected, rtol=0, atol=0)


def _bad_cases():
    for e in ENTRIES:
        ex = e.example("small", 10)
        for i, (arg, inputs) in enumerate(ex.bad):
            yield pytest.param(e, arg, inputs, id=f"{e.id}-{arg}-{i}")
        for name, value in e.hyper_errors.items():
            yield pytest.param(e, name, {"__hyper__": (name, value)}, id=f"{e.id}-hyper-{name}")
        if e in LOSSES:
            yield pytest.param(e, "reduction", {"__call__": {"reduction": "avg"}}, id=f"{e.id}-reduction")
            bad_w = torch.ones(*[s + 1 for s in ex.term_shape]) if ex.term_shape else torch.ones(2)
            yield pytest.param(e, e.term_weight_name, {"__call__": {e.term_weight_name: bad_w}},
                               id=f"{e.id}-weight-shape")
            bad_m = torch.ones(ex.mask_shape)
            yield pytest.param(e, "mask", {"__call__": {"mask": bad_m}}, id=f"{e.id}-mask-dtype")


@pytest.mark.parametrize("entry,argument,inputs", list(_bad_cases()))
def test_bad_input_raises_loss_input_error_naming_the_argument(entry, argument, inputs):
    ex = entry.example("small", 10)
    with pytest.raises(LossInputError) as info:
        if "__hyper__" in inputs:
            name, value = inputs["__hyper__"]
            entry.function(**ex.clone(), **{**hyper_for(entry, ex), name: value})
        elif "__call__" in inputs:
            call(entry, ex, **inputs["__call__"])
        else:
            call(entry, ex, {k: v for k, v in inputs.items()})
    assert info.value.argument == argument
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.multi_term], ids=[e.id for e in ENTRIES if e.multi_term])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_components_add_up_to_the_total(entry, reduction):
    ex = entry.example("small", 11)
    out = call(entry, ex, reduction=reduction, return_components=True)
    assert isinstance(out, losskit.LossComponents) and out.components
    torch.testing.assert_close(out.loss, call(entry, ex, reduction=reduction))
    torch.testing.assert_close(sum(out.components.values()), out.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", LOSSES, ids=LOSS_IDS)
def test_checks_off_gives_the_same_value(entry):
    ex = entry.example("small", 12)
    with losskit.checks(False):
        fast = call(entry, ex)
    torch.testing.assert_close(fast, call(entry, ex), rtol=0, atol=0)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_entry_is_documented(entry):
    """Registered under its id with a docstring that gives the formula, the defaults and the source."""
    doc = entry.doc
    assert len(entry.formula) > 20
    assert "Default" in doc, "the docstring must state the defaults"
    assert entry.source and ("Source" in doc or "source" in doc)
    assert getattr(losskit.functional, entry.id) is entry.function
    assert getattr(losskit.nn, entry.module.__name__) is entry.module
    assert entry.tier in (1, 2, 3)
    assert entry.metadata()["id"] == entry.id
