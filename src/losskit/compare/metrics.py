"""Test-set metrics of one trained model.

Classification tasks: accuracy, macro-F1, balanced accuracy (scikit-learn) and ECE.
Retrieval tasks (embeddings of classes the model never saw, cosine similarity): Recall@1, MAP@R
(Musgrave et al. 2020, "A Metric Learning Reality Check") and the NMI of k-means clusters.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["METRICS", "RETRIEVAL_METRICS", "metrics_for", "expected_calibration_error", "evaluate",
           "evaluate_retrieval", "recall_at_1", "map_at_r", "kmeans_nmi", "cosine_similarity_matrix"]

# name -> (label, higher is better)
METRICS = {
    "accuracy": ("accuracy", True),
    "macro_f1": ("macro-F1", True),
    "balanced_accuracy": ("balanced acc.", True),
    "ece": ("ECE", False),
}

RETRIEVAL_METRICS = {
    "recall_at_1": ("Recall@1", True),
    "map_at_r": ("MAP@R", True),
    "nmi": ("NMI", True),
}


def metrics_for(kind: str) -> dict[str, tuple[str, bool]]:
    """The metric table of a task kind ("classification" or "retrieval"); the first metric ranks."""
    return RETRIEVAL_METRICS if kind == "retrieval" else METRICS


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


# -- retrieval ------------------------------------------------------------------------------------
def _np(a, dtype=np.float64) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def cosine_similarity_matrix(embeddings) -> np.ndarray:
    """(n, n) cosine similarities of the rows (a zero row has similarity 0 to everything)."""
    x = _np(embeddings)
    if x.ndim == 1:
        x = x[:, None]
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm == 0, 1.0, norm)
    return x @ x.T


def _ranked(embeddings, labels):
    """Labels of the other samples for every query, most similar first (leave-one-out), and the labels.
    Ties are broken by index (stable sort), so results are deterministic."""
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    sim = cosine_similarity_matrix(embeddings)
    if sim.shape[0] != labels.shape[0]:
        raise ValueError(f"embeddings must have one row per label; got {sim.shape[0]} rows and {len(labels)} labels")
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]  # the query itself (−inf) is last
    return labels[order] == labels[:, None], labels


def _has_positive(labels: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return counts[inv] - 1


def recall_at_1(embeddings, labels) -> float:
    """Fraction of samples whose nearest other sample (cosine) has the same label (= precision@1).
    Samples that are alone in their class are left out (as in pytorch-metric-learning)."""
    hits, labels = _ranked(embeddings, labels)
    keep = _has_positive(labels) > 0
    return float(hits[keep, 0].mean()) if keep.any() else 0.0


def map_at_r(embeddings, labels) -> float:
    """MAP@R: for each query, R = number of other samples of its class and
    AP@R = (1/R) Σ_{i ≤ R} P(i)·[rank i is correct], P(i) the precision among the top i; averaged over
    the queries with R ≥ 1 (Musgrave, Belongie, Lim 2020)."""
    hits, labels = _ranked(embeddings, labels)
    R = _has_positive(labels)
    aps = []
    for q in np.flatnonzero(R > 0):
        h = hits[q, :R[q]].astype(np.float64)
        prec = np.cumsum(h) / np.arange(1, R[q] + 1)
        aps.append(float((prec * h).sum() / R[q]))
    return float(np.mean(aps)) if aps else 0.0


def kmeans_nmi(embeddings, labels, n_clusters: int | None = None, seed: int = 0) -> float:
    """NMI between the labels and k-means clusters (k = number of labels) of the L2-normalised
    embeddings (so the clustering follows cosine similarity); scikit-learn KMeans, fixed seed."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).reshape(-1)
    x = _np(embeddings)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm == 0, 1.0, norm)
    k = len(np.unique(labels)) if n_clusters is None else int(n_clusters)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return float(normalized_mutual_info_score(labels, clusters))


def evaluate_retrieval(embeddings, labels) -> dict[str, float]:
    """The metrics of ``RETRIEVAL_METRICS`` for (n, D) embeddings against their labels."""
    return {"recall_at_1": recall_at_1(embeddings, labels), "map_at_r": map_at_r(embeddings, labels),
            "nmi": kmeans_nmi(embeddings, labels)}
