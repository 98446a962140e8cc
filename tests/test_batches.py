"""Batch streams are pure functions of (seed, step); augmentation crops and flips correctly."""

import torch

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


def test_crop_flip_without_padding_is_identity_or_mirror():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=0, gen=gen)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.rand(64, 1, 5, 5)
    out = random_crop_flip(x, padding=2, gen=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
