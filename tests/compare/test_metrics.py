import numpy as np
import pytest
import torch

from losskit.compare.metrics import evaluate, expected_calibration_error


def test_ece_hand_example():
    # 15 bins of width 1/15; confidences .95 (bin 14), .92 (bin 13), .70 and .69 (bin 10), .62 (bin 9)
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.30, 0.70], [0.62, 0.38], [0.31, 0.69]])
    labels = np.array([0, 1, 1, 1, 1])
    # correct: yes, no, yes, no, yes
    expected = (1 / 5) * abs(1 - 0.95) + (1 / 5) * abs(0 - 0.92) + (2 / 5) * abs(1 - (0.70 + 0.69) / 2) \
        + (1 / 5) * abs(0 - 0.62)
    assert expected == pytest.approx(0.44)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.44, abs=1e-12)


def test_ece_bins_matter():
    # with one bin the two halves cancel: conf .75 everywhere, accuracy .75
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)
    # 15 bins: |1 − .9|·½ + |.5 − .6|·½ = 0.1
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1)


def test_evaluate_uses_sklearn_metrics():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    m = evaluate(logits, torch.tensor([0, 1, 2, 2]))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert 0 <= m["ece"] <= 1
