import math

import pytest
import torch

import losskit
from losskit import registry
from losskit.compare import TrainConfig, load_task, parse_losses, prepare_loss, run
from losskit.compare.train import train_cell
from losskit.examples import embedding_example, sequence_logp_example


@pytest.fixture(scope="module")
def task():
    return load_task("digits-longtail")


def _prep(text, task):
    return prepare_loss(parse_losses(text)[0], task)


def test_class_index_losses(task):
    p = _prep("gce[q=0.5]", task)
    assert p.target_form == "index" and p.effective["q"] == 0.5 and p.effective["ignore_index"] == -100


def test_prior_and_counts_come_from_the_training_labels(task):
    p = _prep("logit_adjusted_ce", task)
    counts = torch.tensor(task.class_counts(), dtype=torch.float32)
    torch.testing.assert_close(p.kwargs["prior"], counts / counts.sum())
    assert p.effective["prior"] == "auto:train_class_frequencies"
    q = _prep("balanced_softmax", task)
    torch.testing.assert_close(q.kwargs["class_counts"], counts)


def test_sample_index_state_gets_the_training_set_size(task):
    p = _prep("aldr_kl", task)
    assert p.wants_index and p.module_kwargs["num_samples"] == len(task.y_train)
    loss = p.build()
    assert loss.module.lam.numel() == len(task.y_train)


def test_multilabel_losses_get_one_hot_targets(task):
    p = _prep("sigmoid_focal", task)
    assert p.target_form == "onehot"
    logits = torch.zeros(3, 10, requires_grad=True)
    out = p.build()(logits, torch.tensor([0, 3, 9]), torch.arange(3))
    expected = losskit.functional.sigmoid_focal(logits, torch.nn.functional.one_hot(torch.tensor([0, 3, 9]), 10).float())
    torch.testing.assert_close(out, expected)


def _fake(monkeypatch, id, input_kind, example):
    def fn(*args, reduction="mean"):
        """fake"""
    fn.__name__ = id
    entry = registry.Entry(id=id, kind="loss", family="test", input_kind=input_kind, function=fn, source="test",
                           oracle="none", tier=3, example=example)
    monkeypatch.setitem(registry._ENTRIES, id, entry)


@pytest.mark.parametrize("kind, example", [("emb", embedding_example), ("seq-logp", sequence_logp_example)])
def test_untrainable_losses_fail_before_anything_runs(monkeypatch, kind, example):
    _fake(monkeypatch, "fake_loss", kind, example)
    with pytest.raises(losskit.LossInputError, match=rf"fake_loss.*input kind is '{kind}'"):
        run("digits", losses="cross_entropy,fake_loss", seeds=1, epochs=1, store="s.sqlite", out=None, quiet=True)
    import os

    assert not os.path.exists("s.sqlite")  # nothing ran, nothing was stored


def test_bad_hyperparameter_value_fails_up_front():
    with pytest.raises(losskit.LossInputError, match=r"losses\[gce\[q=5\]\].*q"):
        run("digits", losses="cross_entropy,gce[q=5]", seeds=1, epochs=1, store=None, out=None, quiet=True)


def test_seed_controls_training_and_is_reproducible():
    t = load_task("digits")
    p = _prep("cross_entropy", t)
    cfg = TrainConfig(epochs=2)
    a, b, c = (train_cell(t, p, s, cfg) for s in (0, 0, 1))
    assert a == b
    assert a != c
    assert 0.5 < a["accuracy"] <= 1 and math.isfinite(a["final_loss"])


def test_own_model_factory_and_arrays():
    import numpy as np

    from losskit.compare import Task

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    task = Task.from_arrays(X[:80], y[:80], X[80:], y[80:], name="toy")
    res = run(task, losses=["cross_entropy", "focal"], seeds=2, epochs=5, quiet=True, out=None, store="t.sqlite",
              model_factory=lambda d, c: torch.nn.Linear(d, c))
    assert len(res.cells) == 4 and res.model.startswith("<lambda>:")
    # another architecture is another cell
    res2 = run(task, losses=["cross_entropy"], seeds=1, epochs=5, quiet=True, out=None, store="t.sqlite",
               model_factory=lambda: torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)))
    assert res2.trained == 1
    res3 = run(task, losses=["cross_entropy"], seeds=1, epochs=5, quiet=True, out=None, store="t.sqlite",
               model_factory=lambda d, c: torch.nn.Linear(d, c))
    assert res3.reused == 1
