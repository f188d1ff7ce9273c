"""Test-set metrics of one trained model: accuracy, macro-F1, balanced accuracy (scikit-learn) and ECE."""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["METRICS", "expected_calibration_error", "evaluate"]

# name -> (label, higher is better)
METRICS = {
    "accuracy": ("accuracy", True),
    "macro_f1": ("macro-F1", True),
    "balanced_accuracy": ("balanced acc.", True),
    "ece": ("ECE", False),
}


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    """ECE = Σ_b (|B_b|/n)·|acc(B_b) − conf(B_b)| over ``n_bins`` equal-width bins of the max probability.

    Bin b holds the samples with confidence in ((b−1)/n_bins, b/n_bins] (the first bin also holds 0),
    as in Guo et al., "On Calibration of Modern Neural Networks". Empty bins contribute nothing.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (n, C) with n = len(labels); got {probs.shape} and {labels.shape}")
    if len(labels) == 0:
        return 0.0
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def evaluate(logits, labels) -> dict[str, float]:
    """The metrics of ``METRICS`` for (n, C) logits (tensor or array) against integer labels."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if hasattr(logits, "detach"):
        import torch

        probs = torch.softmax(logits.detach().double(), dim=-1).cpu().numpy()
    else:
        z = np.asarray(logits, dtype=np.float64)
        z = np.exp(z - z.max(1, keepdims=True))
        probs = z / z.sum(1, keepdims=True)
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    pred = probs.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true" and the like
        return {
            "accuracy": float(accuracy_score(labels, pred)),
            "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
            "ece": expected_calibration_error(probs, labels),
        }
