"""Example-input factories for registry entries, one per input kind.

Each returns an :class:`~losskit.registry.Example`: valid inputs of a requested size, which inputs
are differentiable and indexed by the batch, the shapes of terms and mask, and bad inputs with the
argument each must be rejected for. ``variant="extreme"`` gives inputs at the edge of the valid
range (logits of magnitude 1e4, near-duplicate embeddings). Families bind the options with
``functools.partial`` when they register.
"""
from __future__ import annotations

import torch

from .registry import Example

__all__ = ["SIZES", "logits_example", "binary_example", "embedding_example", "sequence_logp_example",
           "hidden_weight_example"]

# (batch, classes) per size; "tiny" is for float64 gradcheck
SIZES = {"tiny": (4, 3), "small": (12, 5), "medium": (256, 10), "large": (4096, 1000)}


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, 10
    return SIZES[size]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _common_bad(inputs: dict, first: str) -> list[tuple[str, dict]]:
    """Bad inputs every float-input loss must reject: a NaN in its first input."""
    x = inputs[first].clone()
    x.view(-1)[0] = float("nan")
    return [(first, {**inputs, first: x})]


def logits_example(size="small", seed: int = 0, variant: str = "normal", *, classes: int | None = None,
                   soft: bool = False, ignore_index: int | None = None, spatial: tuple[int, ...] = (),
                   min_classes: int = 2) -> Example:
    """(N, C[, *spatial]) logits and class-index targets (or probabilities with ``soft=True``).

    With ``ignore_index`` set, one target equals it, so every call exercises the ignore path.
    """
    n, c = _size(size)
    c = max(classes or c, min_classes)
    g = _gen(seed)
    logits = torch.randn(n, c, *spatial, generator=g) * 2.0
    if variant == "extreme":
        logits = logits.sign() * 1e4 + logits  # magnitudes of 1e4, distinct values
    target = torch.randint(0, c, (n, *spatial), generator=g)
    if ignore_index is not None and n > 2:
        target.view(-1)[1] = ignore_index
    if soft:
        target = torch.softmax(torch.randn(n, c, *spatial, generator=g), dim=1)
    inputs = {"logits": logits, "target": target}
    bad = [
        ("logits", {**inputs, "logits": logits.reshape(-1)}),              # rank 1
        ("target", {**inputs, "target": target[:-1]}),                     # batch mismatch
    ] + _common_bad(inputs, "logits")
    if not soft:
        over = target.clone()
        over.view(-1)[0] = c                                               # class index out of range
        bad.append(("target", {**inputs, "target": over}))
    shape = (n, *spatial)
    kept = None if (ignore_index is None or soft) else target != ignore_index
    return Example(inputs, grad=("logits",), batch=("logits", "target"), term_shape=shape, mask_shape=shape,
                   bad=bad, kept=kept)


def binary_example(size="small", seed: int = 0, variant: str = "normal", *, labels: int | None = None,
                   signed: bool = False) -> Example:
    """Binary (N,) or multi-label (N, L) logits with targets in {0, 1} (or {-1, +1} with ``signed``)."""
    n, _ = _size(size)
    g = _gen(seed)
    shape = (n,) if labels is None else (n, labels)
    logits = torch.randn(*shape, generator=g) * 2.0
    if variant == "extreme":
        logits = logits.sign() * 1e4 + logits
    target = (torch.rand(*shape, generator=g) < 0.4).float()
    target.view(-1)[0], target.view(-1)[1] = 0.0, 1.0
    if signed:
        target = target * 2 - 1
    inputs = {"logits": logits, "target": target}
    bad = [("target", {**inputs, "target": target[:-1]})] + _common_bad(inputs, "logits")
    return Example(inputs, grad=("logits",), batch=("logits", "target"), term_shape=shape, mask_shape=shape,
                   bad=bad)


def embedding_example(size="small", seed: int = 0, variant: str = "normal", *, dim: int = 8,
                      classes: int = 3) -> Example:
    """(N, D) embeddings with integer class labels (each class present at least twice)."""
    n, _ = _size(size)
    g = _gen(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=g)]
    emb = torch.randn(n, dim, generator=g)
    if variant == "extreme":
        emb = emb[:1].expand(n, dim) + 1e-4 * torch.randn(n, dim, generator=g)  # near-duplicates
    inputs = {"embeddings": emb, "labels": labels}
    bad = [("embeddings", {**inputs, "embeddings": emb.reshape(-1)}),
           ("labels", {**inputs, "labels": labels[:-1]})] + _common_bad(inputs, "embeddings")
    return Example(inputs, grad=("embeddings",), batch=("embeddings", "labels"), term_shape=(n,),
                   mask_shape=(n,), bad=bad)


def sequence_logp_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """(N,) summed log-probabilities of correct sequences (strictly negative)."""
    n, _ = _size(size)
    g = _gen(seed)
    logp = -torch.rand(n, generator=g) * 5 - 0.05
    if variant == "extreme":
        logp = torch.cat([torch.full((n // 2,), -1e4), torch.full((n - n // 2,), -1e-6)])
    inputs = {"logp": logp}
    bad = [("logp", {"logp": logp.reshape(1, -1, 1)})] + _common_bad(inputs, "logp")
    return Example(inputs, grad=("logp",), batch=("logp",), term_shape=(n,), mask_shape=(n,), bad=bad)


# (tokens, hidden size, vocabulary) per size
HIDDEN_SIZES = {"tiny": (4, 3, 5), "small": (12, 8, 16), "medium": (256, 32, 512), "large": (4096, 1024, 32768)}


def hidden_weight_example(size="small", seed: int = 0, variant: str = "normal") -> Example:
    """Hidden states (N, D), a classifier weight (V, D) and targets (N,), one of them ignore_index."""
    n, d, v = HIDDEN_SIZES[size] if isinstance(size, str) else (size, 64, 1024)
    g = _gen(seed)
    hidden = torch.randn(n, d, generator=g)
    weight = torch.randn(v, d, generator=g) / d ** 0.5
    if variant == "extreme":
        hidden = hidden * (1e4 / d ** 0.5)  # logits of magnitude ~1e4
    target = torch.randint(0, v, (n,), generator=g)
    if n > 2:
        target[1] = -100
    inputs = {"hidden": hidden, "weight": weight, "target": target}
    over = target.clone()
    over[0] = v
    bad = [("target", {**inputs, "target": over}),
           ("weight", {**inputs, "weight": torch.randn(v, d + 1, generator=g)}),       # D mismatch
           ("weight", {**inputs, "weight": weight.double()}),                         # dtype mismatch
           ("target", {**inputs, "target": target[:-1]})] + _common_bad(inputs, "hidden")
    return Example(inputs, grad=("hidden", "weight"), batch=("hidden", "target"), term_shape=(n,), mask_shape=(n,),
                   bad=bad, kept=target != -100)
