import numpy as np
import pytest

import losskit
from losskit.compare import Task, load_task
from losskit.compare.tasks import apply_label_noise, digits, digits_longtail, digits_noisy


@pytest.fixture(scope="module")
def clean():
    return digits()


def test_split_is_fixed_stratified_and_standardised(clean):
    again = load_task("digits")
    assert clean.fingerprint == again.fingerprint  # no hidden randomness: every loss and seed sees this split
    assert len(clean.y_train) + len(clean.y_test) == 1797
    train_frac = np.bincount(clean.y_train) / np.bincount(np.concatenate([clean.y_train, clean.y_test]))
    assert np.allclose(train_frac, 0.7, atol=0.02)  # stratified
    assert np.allclose(clean.X_train.mean(0), 0, atol=1e-5)
    assert np.all((np.abs(clean.X_train.std(0) - 1) < 1e-4) | (clean.X_train.std(0) == 0))
    assert load_task("digits", data_seed=1).fingerprint != clean.fingerprint


@pytest.mark.parametrize("rate", [0.2, 0.4])
@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_noise_on_train_only_at_the_requested_rate(clean, rate, kind):
    t = digits_noisy(noise=rate, noise_type=kind)
    n = len(t.y_train)
    wrong = t.y_train != t.y_train_clean
    assert abs(wrong.mean() - rate) <= 1 / n  # exactly round(rate·n) labels flipped
    np.testing.assert_array_equal(t.y_train_clean, clean.y_train)
    np.testing.assert_array_equal(t.X_train, clean.X_train)
    np.testing.assert_array_equal(t.y_test, clean.y_test)  # test labels clean
    np.testing.assert_array_equal(t.X_test, clean.X_test)
    if kind == "pairflip":
        np.testing.assert_array_equal(t.y_train[wrong], (t.y_train_clean[wrong] + 1) % 10)
    else:  # every other class receives flips
        assert set((t.y_train[wrong] - t.y_train_clean[wrong]) % 10) == set(range(1, 10))
    assert t.options["noise"] == rate and t.options["noise_type"] == kind
    # the noise belongs to the task: building it again gives the same labels
    np.testing.assert_array_equal(digits_noisy(noise=rate, noise_type=kind).y_train, t.y_train)


def test_noise_zero_is_clean(clean):
    t = digits_noisy(noise=0.0)
    np.testing.assert_array_equal(t.y_train, clean.y_train)


@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_longtail_profile_and_balanced_test(ratio):
    t = digits_longtail(imbalance=ratio)
    counts = np.bincount(t.y_train, minlength=10)
    assert np.all(np.diff(counts) <= 0)  # class 0 the head, class 9 the tail
    assert abs(counts.min() / counts.max() - ratio) <= 1 / counts.max()
    expected = counts.max() * ratio ** (np.arange(10) / 9)
    assert np.all(np.abs(counts - expected) <= 0.5 + 1e-9)
    test_counts = np.bincount(t.y_test, minlength=10)
    assert len(set(test_counts)) == 1 and test_counts[0] >= 50


def test_bad_options():
    with pytest.raises(losskit.LossInputError, match="noise"):
        load_task("digits-noisy", noise=1.5)
    with pytest.raises(losskit.LossInputError, match="--imbalance"):
        load_task("digits-noisy", imbalance=0.1)
    with pytest.raises(losskit.LossInputError, match="digits-noisy"):
        load_task("digits-noisey")
    with pytest.raises(losskit.LossInputError):
        apply_label_noise(np.zeros(5, dtype=int), 0.1, "columnflip", 10, np.random.default_rng(0))


def test_from_arrays_maps_labels_and_standardises():
    rng = np.random.default_rng(0)
    X = rng.normal(3, 5, size=(40, 4))
    y = np.array(["cat", "dog", "eel", "dog"] * 10)
    t = Task.from_arrays(X[:30], y[:30], X[30:], y[30:], name="mine")
    assert t.num_classes == 3 and t.class_names == ["cat", "dog", "eel"]
    assert set(t.y_train) == {0, 1, 2}
    assert np.allclose(t.X_train.mean(0), 0, atol=1e-5)
    other = Task.from_arrays(X[:30], y[:30], X[30:] + 1, y[30:], name="mine")
    assert other.fingerprint != t.fingerprint  # different data, different store key


def test_from_csv_and_npz(tmp_path):
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    path = tmp_path / "iris.csv"
    lines = ["a,b,species,c,d"] + [f"{r[0]},{r[1]},{['se', 've', 'vi'][k]},{r[2]},{r[3]}" for r, k in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")
    t = load_task(f"file:{path}", target_column="species")
    assert t.name == "file:iris" and t.num_classes == 3 and t.in_features == 4
    assert len(t.y_train) + len(t.y_test) == 150
    with pytest.raises(losskit.LossInputError, match="did you mean 'species'"):
        load_task(f"file:{path}", target_column="specie")
    np.savez(tmp_path / "d.npz", X_train=X[:100], y_train=y[:100], X_test=X[100:], y_test=y[100:])
    t2 = load_task(str(tmp_path / "d.npz"))
    assert len(t2.y_test) == 50
