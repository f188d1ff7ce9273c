"""The shared contract itself: reduction, weights, masks, errors, the registry and module faces."""
from __future__ import annotations

import pickle

import pytest
import torch

import losskit
from losskit import LossInputError
from losskit.reduce import reduce_terms


def test_reduce_terms_semantics():
    t = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0])
    m = torch.tensor([True, True, False, True])
    assert reduce_terms(t, "sum").item() == 10
    assert reduce_terms(t, "mean").item() == 2.5
    assert reduce_terms(t, "mean", weight=w).item() == pytest.approx((1 + 6 + 4) / 4)
    assert reduce_terms(t, "mean", weight=w, mask=m).item() == pytest.approx((1 + 4) / 2)
    torch.testing.assert_close(reduce_terms(t, "none", weight=w, mask=m), torch.tensor([1.0, 0.0, 0.0, 4.0]))


def test_masked_nan_terms_do_not_leak():
    t = torch.tensor([1.0, float("nan")], requires_grad=True)
    out = reduce_terms(t, "mean", mask=torch.tensor([True, False]))
    out.backward()
    assert out.item() == 1.0 and torch.equal(t.grad, torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_is_a_connected_zero(reduction):
    x = torch.zeros(0, 5, requires_grad=True)
    out = losskit.functional.cross_entropy(x, torch.zeros(0, dtype=torch.long), reduction=reduction)
    out.backward()
    assert out.item() == 0.0 and x.grad.shape == (0, 5)


def test_weight_and_mask_errors_name_the_argument():
    t = torch.ones(4)
    with pytest.raises(LossInputError, match="weight"):
        reduce_terms(t, weight=-torch.ones(4))
    with pytest.raises(LossInputError, match="weight"):
        reduce_terms(t, weight=torch.ones(4, 1))  # would broadcast the terms to (4, 4): refused
    with pytest.raises(LossInputError, match="mask"):
        reduce_terms(t, mask=torch.ones(4))
    with pytest.raises(LossInputError, match="reduction"):
        reduce_terms(t, "avg")


def test_error_message_names_argument_expected_and_got():
    with pytest.raises(LossInputError) as info:
        losskit.functional.cross_entropy(torch.randn(3, 4), torch.tensor([0, 1, 7]))
    err = info.value
    assert err.argument == "target" and "[0, 4)" in str(err) and "7" in str(err)
    assert isinstance(err, ValueError)
    assert pickle.loads(pickle.dumps(err)).argument == "target"


def test_class_index_and_batch_errors():
    x = torch.randn(3, 4)
    with pytest.raises(LossInputError, match="batch size 3"):
        losskit.functional.focal(x, torch.tensor([0, 1]))
    with pytest.raises(LossInputError, match="target"):
        losskit.functional.focal(x, torch.tensor([0.0, 1.0, 2.0]))  # float targets: no soft targets for focal
    with pytest.raises(LossInputError, match="logits"):
        losskit.functional.focal(torch.tensor([[0.0, float("inf")]] * 3), torch.tensor([0, 1, 0]))


def test_set_checks_skips_data_dependent_checks_only():
    x = torch.randn(3, 4)
    bad = torch.tensor([[float("nan")] * 4] * 3)
    with losskit.checks(False):
        assert torch.isnan(losskit.functional.cross_entropy(bad, torch.tensor([0, 1, 2])))
        with pytest.raises(LossInputError):  # structural checks stay on
            losskit.functional.cross_entropy(x, torch.tensor([0, 1]))
    with pytest.raises(LossInputError):
        losskit.functional.cross_entropy(bad, torch.tensor([0, 1, 2]))


def test_get_unknown_id_suggests():
    with pytest.raises(LossInputError) as info:
        losskit.get("cross_entropi")
    assert "cross_entropy" in str(info.value)
    assert losskit.get("ce") is losskit.get("cross_entropy")  # alias


def test_module_rejects_unknown_hyperparameter_and_keeps_tensor_hyper_as_buffer():
    with pytest.raises(LossInputError, match="gama"):
        losskit.nn.FocalLoss(gama=2.0)
    m = losskit.nn.CrossEntropyLoss(class_weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert "class_weight" in m.state_dict()
    x, t = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(m(x, t), torch.nn.functional.cross_entropy(
        x, t, weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1))
    assert m.hyperparameters()["label_smoothing"] == 0.1


def test_heads_expose_their_cosine_logits():
    import torch.nn.functional as F

    head = losskit.nn.SubCenterArcFace(num_classes=4, embedding_dim=3, sub_centers=2)
    x = torch.randn(5, 3)
    cos = head.cosine_logits(x)
    ref = (F.normalize(x, dim=1) @ F.normalize(head.centers, dim=1).T).view(5, 4, 2).amax(-1)
    torch.testing.assert_close(cos, ref)
    plain = losskit.nn.CosFace(num_classes=4, embedding_dim=3)
    torch.testing.assert_close(plain.cosine_logits(x), F.normalize(x, dim=1) @ F.normalize(plain.centers, dim=1).T)
