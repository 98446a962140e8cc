"""Label noise types: exact counts, exact mappings, the right distributions, clear errors."""

import numpy as np
import pytest
import torch
from scipy import stats

from l2rw.data.noise import NOISES, apply_noise, transition_matrix
from l2rw.errors import ConfigError, DataError

K = 10


def balanced(n: int, k: int = K) -> np.ndarray:
    return np.arange(n) % k


def noisy(name: str, labels: np.ndarray, rate: float, seed: int = 0, **options) -> np.ndarray:
    return apply_noise(name, labels, K, rate, np.random.default_rng(seed), **options)


def test_registered_noises():
    assert NOISES.names() == [
        "adversarial",
        "background",
        "none",
        "real",
        "source",
        "uniform",
        "uniform_flip",
    ]


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_rate_outside_unit_interval(rate):
    with pytest.raises(ConfigError, match=r"noise\.rate"):
        noisy("uniform_flip", balanced(100), rate)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("none", {}),
        ("uniform_flip", {}),
        ("uniform", {}),
        ("background", {}),
        ("adversarial", {"mapping": "derangement"}),
    ],
)
def test_copy_dtype_and_determinism(name, options):
    labels = balanced(1000).astype(np.int32)
    before = labels.copy()
    out = noisy(name, labels, 0.4, seed=5, **options)
    assert out.dtype == np.int64 and out is not labels
    assert np.array_equal(labels, before)
    assert np.array_equal(out, noisy(name, labels, 0.4, seed=5, **options))
    if name != "none":
        assert not np.array_equal(out, noisy(name, labels, 0.4, seed=6, **options))


@pytest.mark.parametrize(("n", "rate"), [(1000, 0.4), (999, 0.25), (7, 0.5), (50, 0.0), (50, 1.0)])
def test_uniform_flip_exact_count_never_keeps_label(n, rate):
    labels = balanced(n)
    out = noisy("uniform_flip", labels, rate)
    assert int((out != labels).sum()) == round(rate * n)
    assert out.min() >= 0 and out.max() < K


def test_uniform_flip_targets_uniform_over_other_classes():
    labels = balanced(40_000)
    out = noisy("uniform_flip", labels, 0.5, seed=1)
    flipped = out != labels
    pairs = np.zeros((K, K))
    np.add.at(pairs, (labels[flipped], out[flipped]), 1)
    assert np.all(np.diag(pairs) == 0)
    # Each true class's flips spread evenly over its K-1 other classes.
    off_diagonal = pairs[~np.eye(K, dtype=bool)]
    expected = np.repeat(pairs.sum(1) / (K - 1), K - 1)
    assert stats.chisquare(off_diagonal, expected, ddof=0).pvalue > 1e-3


def test_uniform_matches_mwn_transition_matrix():
    n, rate = 60_000, 0.4
    labels = balanced(n)
    out = noisy("uniform", labels, rate, seed=2)
    realized = np.mean(out != labels)
    assert abs(realized - rate * (K - 1) / K) < 0.01  # ~5 standard deviations
    c = rate / K * np.ones((K, K)) + (1 - rate) * np.eye(K)
    assert_rows_follow(labels, out, c)


def assert_rows_follow(labels: np.ndarray, out: np.ndarray, c: np.ndarray) -> None:
    """Each true class's noisy labels are a multinomial draw from its row of `c`: a chi-square
    test per row (every cell, the diagonal and each off-diagonal rate), at 1e-4 a row."""
    for i in range(len(c)):
        counts = np.bincount(out[labels == i], minlength=len(c))
        pvalue = stats.chisquare(counts, counts.sum() * c[i], ddof=0).pvalue
        assert pvalue > 1e-4, (i, counts.tolist(), pvalue)


def test_background_all_flips_go_to_one_class():
    n, rate, b = 1000, 0.3, 3
    no_b = np.where(balanced(n) == b, 4, balanced(n))
    out = noisy("background", no_b, rate, background_class=b)
    changed = out != no_b
    assert changed.sum() == round(rate * n) and np.all(out[changed] == b)
    assert np.array_equal(
        noisy("background", np.full(n, b), rate, background_class=b), np.full(n, b)
    )

    # Mixed: selected examples already in b keep their label, so fewer than n * rate change.
    labels = balanced(n)
    out = noisy("background", labels, rate, background_class=b)
    changed = out != labels
    assert np.all(out[changed] == b)
    assert round(rate * n) - np.sum(labels == b) <= changed.sum() < round(rate * n)
    assert np.sum(out == b) == np.sum(labels == b) + changed.sum()


def test_background_class_drawn_from_rng():
    labels = balanced(1000)
    drawn = set()
    for seed in range(8):
        out = noisy("background", labels, 0.3, seed=seed)
        targets = np.unique(out[out != labels])
        assert len(targets) == 1
        drawn.add(int(targets[0]))
    assert len(drawn) > 1
    with pytest.raises(ConfigError, match="background_class=10"):
        noisy("background", labels, 0.3, background_class=10)


def test_adversarial_next():
    labels = balanced(1000)
    out = noisy("adversarial", labels, 0.4)
    changed = out != labels
    assert changed.sum() == 400
    assert np.array_equal(out[changed], (labels[changed] + 1) % K)


def test_adversarial_derangement():
    labels = balanced(1000)
    for seed in range(5):
        out = noisy("adversarial", labels, 0.4, seed=seed, mapping="derangement")
        changed = out != labels
        assert changed.sum() == 400
        mapping = {int(a): int(b) for a, b in zip(labels[changed], out[changed], strict=True)}
        # A function (one target per class), injective, without fixed points.
        assert len(set(zip(labels[changed], out[changed], strict=True))) == len(mapping)
        assert len(set(mapping.values())) == len(mapping)
        assert all(a != b for a, b in mapping.items())
    with pytest.raises(ConfigError, match="mapping=next"):
        noisy("adversarial", labels, 0.4, mapping="reverse")


@pytest.fixture
def full_labels() -> np.ndarray:
    return np.random.default_rng(9).integers(0, K, size=50)


@pytest.fixture
def subset() -> np.ndarray:
    return np.array([3, 0, 49, 17, 17, 8])


def real(labels: np.ndarray, index: np.ndarray | None, **options) -> np.ndarray:
    return apply_noise("real", labels, K, 0.0, np.random.default_rng(0), index, **options)


def test_real_npy(tmp_path, full_labels, subset):
    np.save(tmp_path / "labels.npy", full_labels)
    out = real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "labels.npy")
    assert out.dtype == np.int64 and np.array_equal(out, full_labels[subset])
    whole = real(np.zeros(50, dtype=int), None, path=str(tmp_path / "labels.npy"))
    assert np.array_equal(whole, full_labels)


def test_real_csv_and_txt(tmp_path, full_labels, subset):
    (tmp_path / "labels.txt").write_text("\n".join(map(str, full_labels)) + "\n")
    out = real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "labels.txt")
    assert np.array_equal(out, full_labels[subset])
    rows = [f"{i},{c},{(c + 1) % K}" for i, c in enumerate(full_labels)]
    (tmp_path / "labels.csv").write_text("\n".join(["id,clean,noisy", *rows]) + "\n")
    out = real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "labels.csv", key="noisy")
    assert np.array_equal(out, (full_labels[subset] + 1) % K)
    with pytest.raises(DataError, match=r"several label sets \(clean, id, noisy\).*key=\.\.\."):
        real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "labels.csv", key="worse")


def test_real_csv_with_an_index_puts_each_label_at_its_position(tmp_path, full_labels, subset):
    order = np.random.default_rng(1).permutation(len(full_labels))
    rows = [f"{i},{full_labels[i]}" for i in order]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "pairs.csv")
    assert np.array_equal(out, full_labels[subset])
    named = [f"{(full_labels[i] + 1) % K},{i}" for i in order]
    (tmp_path / "named.csv").write_text("\n".join(["noisy,index", *named]) + "\n")
    out = real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "named.csv")
    assert np.array_equal(out, (full_labels[subset] + 1) % K)
    rows[3] = rows[4]  # one position twice, another missing
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"exactly once \(repeated: \[\d+\]; missing: \[\d+\]"):
        real(np.zeros(len(subset), dtype=int), subset, path=tmp_path / "bad.csv")


def test_real_pt_like_cifar_n(tmp_path, full_labels, subset):
    # CIFAR-N's CIFAR-10_human.pt: a dict of numpy arrays saved with torch.save.
    label_sets = {
        "clean_label": full_labels,
        "worse_label": (full_labels + 1) % K,
        "aggre_label": full_labels.astype(np.int32),
        "random_label1": (full_labels + 2) % K,
    }
    torch.save(label_sets, tmp_path / "human.pt")
    zeros = np.zeros(len(subset), dtype=int)
    out = real(zeros, subset, path=tmp_path / "human.pt", key="worse_label")
    assert np.array_equal(out, (full_labels[subset] + 1) % K)
    out = real(zeros, subset, path=tmp_path / "human.pt", key="aggre_label")
    assert out.dtype == np.int64 and np.array_equal(out, full_labels[subset])
    with pytest.raises(DataError, match="worse_label"):
        real(zeros, subset, path=tmp_path / "human.pt")


def test_real_cifar_n_clean_labels_must_match_the_dataset(tmp_path, full_labels, subset):
    torch.save(
        {"clean_label": full_labels, "noisy_label": (full_labels + 1) % K}, tmp_path / "n.pt"
    )
    zeros = np.zeros(len(subset), dtype=int)
    options = {"path": tmp_path / "n.pt", "key": "noisy_label", "clean_key": "clean_label"}
    out = real(full_labels[subset], subset, **options)
    assert np.array_equal(out, (full_labels[subset] + 1) % K)
    # The true labels of another dataset (or order): refused, naming where to get the right file.
    with pytest.raises(DataError, match=r"disagree .* at \d+ of 6 .*cifar-10-100n"):
        real(zeros + 1, subset, **options)
    with pytest.raises(DataError, match="clean_key=.*got clean"):
        real(full_labels[subset], subset, **{**options, "clean_key": "clean"})
    torch.save({"clean_label": full_labels[:40], "noisy_label": full_labels}, tmp_path / "m.pt")
    with pytest.raises(DataError, match="50 noisy but 40 clean"):
        real(full_labels[subset], subset, **{**options, "path": tmp_path / "m.pt"})


def test_real_malformed_files_are_refused_with_the_fix(tmp_path, full_labels):
    zeros = np.zeros(50, dtype=int)
    np.save(tmp_path / "one.npy", full_labels)
    with pytest.raises(DataError, match="one label set, so there is no 'worse_label'"):
        real(zeros, None, path=tmp_path / "one.npy", key="worse_label")
    torch.save({"noisy_label": np.array(["a"] * 50)}, tmp_path / "s.pt")
    with pytest.raises(DataError, match="cannot read|not integers"):
        real(zeros, None, path=tmp_path / "s.pt", key="noisy_label")
    with pytest.raises(DataError, match="does not exist.*UCSC-REAL/cifar-10-100n"):
        real(zeros, None, path=tmp_path / "CIFAR-100_human.pt", key="noisy_label")


def test_real_pt_saved_under_numpy1_names(tmp_path, full_labels):
    # Files from numpy 1 name `numpy.core.multiarray`; the legacy torch format is a plain pickle.
    torch.save(
        {"worse_label": full_labels}, tmp_path / "a.pt", _use_new_zipfile_serialization=False
    )
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(data.replace(b"numpy._core.", b"numpy.core."))
    out = real(np.zeros(50, dtype=int), None, path=tmp_path / "a.pt", key="worse_label")
    assert np.array_equal(out, full_labels)


def test_real_errors(tmp_path, full_labels):
    zeros = np.zeros(50, dtype=int)
    with pytest.raises(ConfigError, match="path="):
        real(zeros, None)
    with pytest.raises(DataError, match="does not exist"):
        real(zeros, None, path=tmp_path / "absent.npy")
    np.save(tmp_path / "short.npy", full_labels[:40])
    with pytest.raises(DataError, match="40 labels"):
        real(zeros, None, path=tmp_path / "short.npy")
    with pytest.raises(DataError, match="40 labels"):
        real(np.zeros(2, dtype=int), np.array([0, 45]), path=tmp_path / "short.npy")
    np.save(tmp_path / "big.npy", full_labels + K)
    with pytest.raises(DataError, match="outside"):
        real(zeros, None, path=tmp_path / "big.npy")
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(DataError, match="cannot read"):
        real(zeros, None, path=tmp_path / "bad.npy")


def test_transition_matrix():
    true = np.array([0, 0, 0, 0, 1, 1])
    noisy_labels = np.array([0, 0, 0, 2, 1, 1])
    expected = np.array([[0.75, 0, 0.25], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(transition_matrix(true, noisy_labels, 3), expected)
