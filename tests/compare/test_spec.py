import pytest

import losskit
from losskit.compare.spec import LossSpec, parse_loss, parse_losses


def test_plain_ids_and_alias():
    specs = parse_losses("cross_entropy, gce ,focal")
    assert [s.id for s in specs] == ["cross_entropy", "gce", "focal"]
    assert all(s.hyper == {} for s in specs)
    assert parse_loss("ce").id == "cross_entropy"  # aliases resolve to the registry id


def test_hyperparameters_are_literals_or_strings():
    specs = parse_losses("cross_entropy,gce[q=0.5],apl[active=nfl;passive=mae;alpha=10]")
    assert specs[1] == LossSpec("gce", {"q": 0.5})
    assert specs[2].hyper == {"active": "nfl", "passive": "mae", "alpha": 10}
    assert specs[2].label == "apl[active=nfl;alpha=10;passive=mae]"


def test_nested_values_and_comma_inside_brackets():
    (spec,) = parse_losses("poly_n[epsilons=(1.0, -0.5)]")
    assert spec.hyper == {"epsilons": (1.0, -0.5)}
    (spec,) = parse_losses("focal[gamma=1,alpha=None]")
    assert spec.hyper == {"gamma": 1, "alpha": None}
    (spec,) = parse_losses("focal[alpha=[0.5, 1.0, 2.0]]")
    assert spec.hyper == {"alpha": [0.5, 1.0, 2.0]}


def test_list_and_pair_forms():
    specs = parse_losses(["gce[q=0.3]", ("focal", {"gamma": 1.0}), LossSpec("ce")])
    assert [s.label for s in specs] == ["gce[q=0.3]", "focal[gamma=1.0]", "cross_entropy"]


def test_unknown_id_suggests_the_closest():
    with pytest.raises(losskit.LossInputError, match="cross_entropy") as info:
        parse_losses("cross_entrpy,gce")
    assert "did you mean" in str(info.value)
    assert info.value.argument == "losses"


def test_unknown_hyperparameter_suggests_the_closest():
    with pytest.raises(losskit.LossInputError, match=r"did you mean 'gamma'"):
        parse_losses("focal[gama=2]")


@pytest.mark.parametrize("text", ["gce[q=0.5", "gce[q]", "", "gce,gce", "ce,cross_entropy", "gce[q=1;q=2]"])
def test_malformed_or_duplicate(text):
    with pytest.raises(losskit.LossInputError):
        parse_losses(text)
