"""Batch streams are pure functions of (seed, step); augmentation crops and flips correctly."""

import torch
from scipy import stats

from l2rw.data.batches import BalancedStream, EpochStream
from l2rw.data.transforms import random_crop_flip


def test_epoch_stream_visits_every_item_once_per_epoch_and_is_stateless():
    stream = EpochStream(n=50, batch_size=10, seed=0, stream=1)
    epoch = torch.cat([stream(step) for step in range(5)])
    assert sorted(epoch.tolist()) == list(range(50))
    fresh = EpochStream(n=50, batch_size=10, seed=0, stream=1)
    assert torch.equal(fresh(7), stream(7))
    assert not torch.equal(stream(0), stream(5))
    assert len(EpochStream(n=6, batch_size=10, seed=0, stream=1)(3)) == 6


def test_balanced_stream_draws_equal_counts_per_class():
    labels = torch.tensor([0] * 3 + [1] * 97)
    stream = BalancedStream(labels, batch_size=100, seed=0, stream=2)
    batch = stream(11)
    assert torch.bincount(labels[batch]).tolist() == [50, 50]
    assert torch.equal(batch, BalancedStream(labels, 100, 0, 2)(11))


def _outcomes(x, out, padding):
    """For each image, the index of the one (row offset, column offset, flip) whose window of
    the zero-padded image it equals: (r * (2p + 1) + c) * 2 + flip; -1 when none does."""
    n, _, h, w = x.shape
    side = 2 * padding + 1
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    windows = []
    for r in range(side):
        for c in range(side):
            window = padded[..., r : r + h, c : c + w]
            windows += [window, window.flip(-1)]
    match = (torch.stack(windows) == out).flatten(2).all(2)  # [outcomes, n]
    assert (match.sum(0) <= 1).all(), "random images: at most one window matches"
    return torch.where(match.any(0), match.float().argmax(0), torch.tensor(-1))


def test_crop_flip_without_padding_flips_about_half():
    x = torch.rand(400, 3, 4, 4)
    out = random_crop_flip(x, padding=0, gen=torch.Generator().manual_seed(0))
    outcome = _outcomes(x, out, padding=0)
    assert (outcome >= 0).all()  # each the image or its mirror
    flipped = int(outcome.sum())
    # Binomial(400, 1/2): a two-sided test at 1e-3 (the identity, or always flipping, fails).
    assert stats.binomtest(flipped, 400, 0.5).pvalue > 1e-3


def test_crop_is_a_uniform_shifted_window_of_the_zero_padded_image():
    n, padding = 2000, 2
    x = torch.rand(n, 1, 5, 5) + 0.1  # no zeros: a shifted window never equals another
    out = random_crop_flip(x, padding=padding, gen=torch.Generator().manual_seed(1))
    outcome = _outcomes(x, out, padding)
    assert (outcome >= 0).all()  # every output is a window of its padded image, maybe mirrored
    # Each of the 25 offsets x 2 flips equally likely, drawn per image (chi-square, 49 dof).
    counts = torch.bincount(outcome, minlength=50).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    again = random_crop_flip(x, padding=padding, gen=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = random_crop_flip(x, padding=padding, gen=torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)
