"""Class imbalance: exact per-class counts, remapping, clear errors, determinism."""

import math

import numpy as np
import pytest

from l2rw.data.imbalance import IMBALANCES, apply_imbalance, longtail_counts
from l2rw.errors import ConfigError


def balanced(per_class: int, k: int = 10) -> np.ndarray:
    return np.random.default_rng(0).permutation(np.arange(per_class * k) % k)


def imbalance(name: str, labels: np.ndarray, seed: int = 0, **options):
    return apply_imbalance(name, labels, 10, np.random.default_rng(seed), **options)


def test_registered_imbalances():
    assert IMBALANCES.names() == ["binary", "longtail", "none"]


def test_none_keeps_everything():
    labels = balanced(5)
    out = imbalance("none", labels)
    assert np.array_equal(out.index, np.arange(50)) and out.label_map is None
    assert out.num_classes == 10


@pytest.mark.parametrize(
    ("n_max", "k", "factor"), [(5000, 10, 100), (500, 100, 10), (4990, 10, 200), (37, 7, 3.5)]
)
def test_longtail_counts_formula(n_max, k, factor):
    expected = [math.floor(n_max * factor ** (-c / (k - 1))) for c in range(k)]
    assert longtail_counts(n_max, k, factor) == expected


def test_longtail_counts_edges():
    assert longtail_counts(100, 10, 1) == [100] * 10
    assert longtail_counts(100, 1, 10) == [100]
    counts = longtail_counts(1000, 10, 100)
    assert counts[0] == 1000 and counts[-1] == 10 and counts == sorted(counts, reverse=True)
    with pytest.raises(ConfigError, match="factor=0.5"):
        longtail_counts(100, 10, 0.5)


def test_longtail_selection():
    labels = balanced(100)
    out = imbalance("longtail", labels, factor=10)
    kept = np.bincount(labels[out.index], minlength=10)
    assert kept.tolist() == longtail_counts(100, 10, 10)
    assert np.all(np.diff(out.index) > 0)  # sorted, no repeats
    assert out.label_map is None and out.num_classes == 10
    assert np.array_equal(out.index, imbalance("longtail", labels, factor=10).index)
    assert not np.array_equal(out.index, imbalance("longtail", labels, seed=1, factor=10).index)


def test_longtail_default_n_max_is_smallest_class():
    labels = np.concatenate([balanced(100), np.zeros(30, dtype=int)])  # class 0 has 130
    out = imbalance("longtail", labels, factor=4)
    assert np.bincount(labels[out.index]).tolist() == longtail_counts(100, 10, 4)
    out = imbalance("longtail", labels, factor=4, n_max=110)
    assert np.bincount(labels[out.index])[0] == 110


def test_longtail_errors():
    labels = balanced(100)
    with pytest.raises(ConfigError, match="class 0 needs 150"):
        imbalance("longtail", labels, factor=2, n_max=150)
    with pytest.raises(ConfigError, match="tail class empty"):
        imbalance("longtail", labels, factor=500)
    with pytest.raises(ConfigError, match="factor"):
        imbalance("longtail", labels, factor=0.1)


def test_binary_four_vs_nine():
    labels = balanced(1000)
    out = imbalance("binary", labels, classes=[4, 9], total=1000, majority_fraction=0.98)
    kept = labels[out.index]
    assert np.sum(kept == 4) == 20 and np.sum(kept == 9) == 980 and len(kept) == 1000
    assert np.all(np.diff(out.index) > 0)
    assert out.label_map == {4: 0, 9: 1} and out.num_classes == 2
    remapped = np.vectorize(out.label_map.get)(kept)
    assert np.array_equal(remapped, (kept == 9).astype(int))
    again = imbalance("binary", labels, classes=[4, 9], total=1000, majority_fraction=0.98)
    assert np.array_equal(out.index, again.index)
    other = imbalance("binary", labels, seed=1, classes=[4, 9], total=1000, majority_fraction=0.98)
    assert not np.array_equal(out.index, other.index)


def test_binary_paper_setting_counts():
    labels = balanced(5000)
    out = imbalance("binary", labels, classes=[4, 9], total=5000, majority_fraction=0.995)
    assert np.bincount(labels[out.index], minlength=10)[[4, 9]].tolist() == [25, 4975]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"classes": [4, 9], "total": 1000, "majority_fraction": 1.0}, "0 minority"),
        ({"classes": [4, 9], "total": 1000, "majority_fraction": 0.0}, "0 majority"),
        ({"classes": [4, 9], "total": 100, "majority_fraction": 0.999}, "0 minority"),
        ({"classes": [4, 9], "total": 1000, "majority_fraction": 0.5}, "class 4 needs 500"),
        ({"classes": [4, 9], "total": 500, "majority_fraction": 0.9}, "class 9 needs 450"),
        ({"classes": [4, 4], "total": 100, "majority_fraction": 0.9}, "two different"),
        ({"classes": [4], "total": 100, "majority_fraction": 0.9}, "two different"),
        ({"classes": [4, 10], "total": 100, "majority_fraction": 0.9}, "two different"),
    ],
)
def test_binary_impossible_settings(options, message):
    with pytest.raises(ConfigError, match=message):
        imbalance("binary", balanced(300), **options)


def test_unknown_imbalance():
    with pytest.raises(ConfigError, match="longtail"):
        imbalance("step", balanced(5))
