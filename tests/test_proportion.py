"""PROPORTION's three weightings: the minority's share of the weight over whole epochs."""

import pytest
import torch

from l2rw.data.batches import EpochStream
from l2rw.methods.reweighting import proportion_weights

N, B = 5000, 100


def binary_labels(majority_fraction: float) -> torch.Tensor:
    n_major = round(N * majority_fraction)
    return torch.cat([torch.zeros(N - n_major), torch.ones(n_major)]).long()


def epoch_shares(labels: torch.Tensor, form: str) -> tuple[float, float]:
    """Mean over one epoch's batches of (minority weight, total weight) per batch."""
    counts = torch.bincount(labels, minlength=2)
    stream = EpochStream(len(labels), B, seed=0, stream=1)
    minority, total = [], []
    for step in range(stream.per_epoch):
        y = labels[stream(step)]
        w = proportion_weights(y, counts, form).double()
        minority.append(float(w[y == 0].sum()))
        total.append(float(w.sum()))
    return sum(minority) / len(minority), sum(total) / len(total)


@pytest.mark.parametrize("fraction", [0.9, 0.95, 0.98, 0.99, 0.995])
def test_expected_form_gives_the_minority_half_the_weight_at_every_ratio(fraction):
    # Each example appears once per epoch, so the epoch mean is the exact expectation.
    minority, total = epoch_shares(binary_labels(fraction), "expected")
    assert minority == pytest.approx(0.5, abs=1e-6)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_expected_form_with_several_classes_gives_each_class_one_kth():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([3000, 1500, 400, 100])])
    counts = torch.bincount(labels)
    w = proportion_weights(labels, counts, "expected").double() * (len(labels) / B)
    shares = torch.stack([w[labels == c].sum() for c in range(4)]) * B / len(labels)
    torch.testing.assert_close(shares, torch.full((4,), 0.25, dtype=torch.float64))


def test_batch_form_sums_to_one_per_batch_and_starves_the_minority_at_200_to_1():
    labels = binary_labels(0.995)
    counts = torch.bincount(labels)
    y = labels[EpochStream(N, B, 0, 1)(0)]
    assert float(proportion_weights(y, counts, "batch").sum()) == pytest.approx(1.0, abs=1e-6)
    minority, total = epoch_shares(labels, "batch")
    assert total == pytest.approx(1.0, abs=1e-6)
    assert 0.15 < minority < 0.35  # about 0.24: batches with no minority example are uniform
    assert epoch_shares(binary_labels(0.9), "batch")[0] > 0.45


def test_authors_form_is_p_for_the_minority_and_one_minus_p_for_the_majority():
    labels = binary_labels(0.99)
    w = proportion_weights(torch.tensor([0, 1, 1]), torch.bincount(labels), "authors")
    torch.testing.assert_close(w, torch.tensor([0.99, 0.01, 0.01]))


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="expected, batch or authors"):
        proportion_weights(torch.tensor([0]), torch.tensor([1, 1]), "nope")
