"""The digits-retrieval task: class split, retrieval metrics (hand examples and pytorch-metric-learning),
the m-per-class sampler, and an end-to-end run with a pair loss and a head."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from losskit.cli import main
from losskit.compare import run
from losskit.compare.metrics import evaluate_retrieval, kmeans_nmi, map_at_r, recall_at_1
from losskit.compare.tasks import DEFAULT_LOSSES, load_task
from losskit.compare.train import M_PER_CLASS, m_per_class_batches, prepare_loss
from losskit.compare.spec import parse_loss
from losskit.errors import LossInputError


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1)


# -- metrics against hand-computed examples ---------------------------------------------------------
# five points on the unit circle at 0°, 12°, 20°, 45°, 60° (cosine order = angular order); labels
# 0, 0, 1, 0, 0. Point 2 is alone in class 1 and is left out as a query. Rankings of the others:
#   p0 (0°):  p1 ✓, p2 ✗, p3 ✓ | p4    R = 3: AP = (1/1 + 2/3) / 3 = 5/9,  NN ✓
#   p1 (12°): p2 ✗, p0 ✓, p3 ✓ | p4    R = 3: AP = (1/2 + 2/3) / 3 = 7/18, NN ✗
#   p3 (45°): p4 ✓, p2 ✗, p1 ✓ | p0    R = 3: AP = 5/9,                     NN ✓
#   p4 (60°): p3 ✓, p2 ✗, p1 ✓ | p0    R = 3: AP = 5/9,                     NN ✓
HAND_X = _circle([0, 12, 20, 45, 60])
HAND_Y = np.array([0, 0, 1, 0, 0])


def test_map_at_r_hand_example():
    assert map_at_r(HAND_X, HAND_Y) == pytest.approx((5 / 9 + 7 / 18 + 5 / 9 + 5 / 9) / 4)  # 37/72


def test_recall_at_1_hand_example():
    assert recall_at_1(HAND_X, HAND_Y) == pytest.approx(3 / 4)
    # the scale of an embedding does not matter (cosine), tensors work too
    assert recall_at_1(torch.tensor(HAND_X * [[1], [5], [0.1], [2], [3]]), torch.tensor(HAND_Y)) == pytest.approx(0.75)


def test_perfect_and_worst_retrieval():
    x = _circle([0, 5, 90, 95, 180, 185])
    y = np.array([0, 0, 1, 1, 2, 2])
    assert recall_at_1(x, y) == 1.0 and map_at_r(x, y) == 1.0
    assert kmeans_nmi(x, y) == pytest.approx(1.0)
    y_bad = np.array([0, 1, 1, 2, 2, 0])
    assert recall_at_1(x, y_bad) == 0.0 and map_at_r(x, y_bad) == 0.0


def test_nmi_hand_example():
    # three points near 0°, one at 180°: k-means with k = 2 clusters {p0, p1, p2} and {p3};
    # labels 0, 0, 1, 1. H(Y) = ln 2, H(C) = −(3/4 ln 3/4 + 1/4 ln 1/4), H(C|Y) = ½ ln 2,
    # NMI = I / ((H(Y) + H(C)) / 2) with I = H(C) − H(C|Y)  (sklearn's arithmetic normalisation)
    x = _circle([0, 5, 10, 180])
    y = np.array([0, 0, 1, 1])
    h_y, h_c = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (h_c - 0.5 * math.log(2)) / ((h_y + h_c) / 2)
    assert kmeans_nmi(x, y) == pytest.approx(expected)
    assert expected == pytest.approx(0.3437, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytorch_metric_learning(seed):
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(80, 6, generator=g)
    y = torch.randint(0, 5, (80,), generator=g)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              knn_func=CustomKNN(CosineSimilarity()))
    ref = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
    assert recall_at_1(x, y) == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert map_at_r(x, y) == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)


def test_hand_example_matches_pytorch_metric_learning():
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    x, y = torch.tensor(HAND_X, dtype=torch.float32), torch.tensor(HAND_Y)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              knn_func=CustomKNN(CosineSimilarity()))
    ref = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
    assert ref["mean_average_precision_at_r"] == pytest.approx(37 / 72, abs=1e-6)
    assert ref["precision_at_1"] == pytest.approx(0.75)


def test_evaluate_retrieval_keys():
    m = evaluate_retrieval(HAND_X, HAND_Y)
    assert set(m) == {"recall_at_1", "map_at_r", "nmi"}


# -- the task --------------------------------------------------------------------------------------
def test_class_split():
    from sklearn.datasets import load_digits

    t = load_task("digits-retrieval")
    assert t.kind == "retrieval" and t.num_classes == 6 and t.embedding_dim == 32 and t.out_features == 32
    assert set(np.unique(t.y_train)) == {0, 1, 2, 3, 4, 5}
    assert set(np.unique(t.y_test)) == {6, 7, 8, 9}
    _, y = load_digits(return_X_y=True)
    assert len(t.y_train) == int((y <= 5).sum()) and len(t.y_test) == int((y >= 6).sum())
    # standardised with the training statistics
    np.testing.assert_allclose(t.X_train.mean(0), 0, atol=1e-5)
    # the same data for every call (the seed of a cell does not touch it); data_seed only reorders
    assert t.fingerprint == load_task("digits-retrieval").fingerprint
    t1 = load_task("digits-retrieval", data_seed=1)
    assert sorted(map(tuple, t1.X_test.round(4))) == sorted(map(tuple, t.X_test.round(4)))
    assert t.default_losses == DEFAULT_LOSSES["digits-retrieval"]
    with pytest.raises(LossInputError):
        load_task("digits-retrieval", test_size=0.2)


def test_m_per_class_sampler():
    y = torch.from_numpy(load_task("digits-retrieval").y_train)
    batches = m_per_class_batches(y, 128, M_PER_CLASS, torch.Generator().manual_seed(0))
    allidx = torch.cat(batches)
    assert sorted(allidx.tolist()) == list(range(len(y)))  # every sample once per epoch
    for b in batches:
        counts = torch.bincount(y[b])
        assert counts[counts > 0].min() >= M_PER_CLASS
    again = m_per_class_batches(y, 128, M_PER_CLASS, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_prepare_rejects_classification_losses_and_sizes_heads():
    t = load_task("digits-retrieval")
    with pytest.raises(LossInputError, match="emb"):
        prepare_loss(parse_loss("cross_entropy"), t)
    p = prepare_loss(parse_loss("arcface"), t)
    assert p.module_kwargs == {"num_classes": 6, "embedding_dim": 32}
    assert p.effective["scale"] == 64.0 and p.effective["margin"] == 0.5
    head = p.build().module
    assert tuple(head.centers.shape) == (6, 32) and head.centers.requires_grad
    # the classification tasks still refuse metric losses
    with pytest.raises(LossInputError):
        prepare_loss(parse_loss("multi_similarity"), load_task("digits"))


# -- end to end ------------------------------------------------------------------------------------
def test_run_python_api_pair_loss_and_head():
    res = run("digits-retrieval", losses="multi_similarity,cosface", seeds=2, epochs=2, store="db.sqlite",
              out="rep", quiet=True)
    assert not res.failed and res.trained == 4
    rows = res.leaderboard()
    assert {r["loss"] for r in rows} == {"multi_similarity", "cosface"}
    r1 = [r["recall_at_1_mean"] for r in rows]
    assert r1 == sorted(r1, reverse=True)
    for r in rows:
        for m in ("recall_at_1", "map_at_r", "nmi"):
            assert 0 <= r[f"{m}_mean"] <= 1
        assert len(r["recall_at_1_per_seed"]) == 2
    cfg = json.loads(Path("rep/config.json").read_text())
    assert cfg["task_kind"] == "retrieval" and cfg["metrics"] == ["recall_at_1", "map_at_r", "nmi"]
    assert cfg["model"] == "embed-mlp(64-128-32)"
    # repeated: everything comes from the store
    again = run("digits-retrieval", losses="multi_similarity,cosface", seeds=2, epochs=2, store="db.sqlite",
                out="rep", quiet=True)
    assert again.trained == 0 and again.reused == 4
    # a different seed trains differently
    by_seed = {c.seed: c.metrics["map_at_r"] for c in res.cells if c.label == "multi_similarity"}
    assert by_seed[0] != by_seed[1]


def test_cli_retrieval(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "digits-retrieval", "--losses", "contrastive_pair,normalized_softmax", "--seeds", "1",
              "--epochs", "2", "--out", "r", "--store", "db.sqlite"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Recall@1" in out and "MAP@R" in out and "NMI" in out and "report: r" in out
    rows = list(csv.DictReader(open("r/leaderboard.csv")))
    assert sorted(r["loss"] for r in rows) == ["contrastive_pair", "normalized_softmax"]
    assert {"recall_at_1_mean", "map_at_r_std", "nmi_mean", "recall_at_1_per_seed"} <= set(rows[0])
    assert "Recall@1" in Path("r/leaderboard.md").read_text()
    assert Path("r/metric.png").read_bytes()[:4] == b"\x89PNG"
