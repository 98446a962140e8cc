"""CRAIG: lazy greedy facility location against the plain greedy and brute force, and the
selection over classes against one greedy over the whole block-diagonal similarity."""

import math
from itertools import combinations

import pytest
import torch
from torch import nn

from l2rw.selection.craig import (
    class_similarity,
    craig_features,
    craig_select,
    facility_location_greedy,
    squared_distances,
)
from l2rw.selection.features import rbc_features


def coverage(sim: torch.Tensor, picks: list[int]) -> float:
    """F(S) = sum_i max_{j in S} sim(i, j)."""
    return float(sim[:, picks].max(1).values.sum()) if picks else 0.0


def plain_greedy(sim: torch.Tensor, k: int) -> list[int]:
    """Every gain at every step; argmax takes the first (lowest) index of a tie."""
    cover = sim.new_zeros(sim.shape[0])
    picks: list[int] = []
    for _ in range(k):
        gains = (sim - cover[:, None]).clamp_min(0).sum(0, dtype=torch.float64)
        gains[picks] = -math.inf
        picks.append(int(gains.argmax()))
        cover = torch.maximum(cover, sim[:, picks[-1]])
    return picks


def random_similarity(seed: int, n: int, m: int, ties: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if ties:  # small integers: many exactly equal gains, exact float sums
        return torch.randint(0, 3, (n, m), generator=gen).float()
    return torch.rand(n, m, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_lazy_greedy_picks_what_the_plain_greedy_picks(seed, ties):
    sim = random_similarity(seed, 30, 25, ties)
    assert facility_location_greedy(sim, 25).tolist() == plain_greedy(sim, 25)


def test_lazy_greedy_breaks_ties_by_lowest_index():
    sim = torch.ones(4, 4)
    assert facility_location_greedy(sim, 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_greedy_against_brute_force(seed, k):
    sim = random_similarity(seed, 8, 8, ties=False)
    best = max(coverage(sim, list(s)) for s in combinations(range(8), k))
    got = coverage(sim, facility_location_greedy(sim, k).tolist())
    assert got >= (1 - 1 / math.e) * best - 1e-12
    if k == 1:  # one greedy step is the optimum
        assert got == best


def test_greedy_rejects_bad_input():
    sim = torch.rand(5, 5)
    assert facility_location_greedy(sim, 0).tolist() == []
    with pytest.raises(ValueError, match="k=6"):
        facility_location_greedy(sim, 6)
    with pytest.raises(ValueError, match="nonnegative"):
        facility_location_greedy(sim - 1, 2)


def test_squared_distances_in_chunks():
    f = torch.randn(11, 4, dtype=torch.float64)
    torch.testing.assert_close(squared_distances(f, chunk=3), torch.cdist(f, f).square())


def block_similarity(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The authors' N x N similarity: max_c d - d within each class c, 0 across classes."""
    d = torch.cdist(features, features).square()
    sim = torch.zeros_like(d)
    for c in labels.unique():
        block = (labels == c).nonzero().squeeze(1)
        sub = d[block][:, block]
        sim[block[:, None], block] = sub.max() - sub
    return sim


def test_craig_is_one_greedy_over_the_block_diagonal_similarity():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    # Uneven classes (one of a single example, whose similarity is all zero).
    labels = torch.tensor([0] * 20 + [2] * 12 + [5] * 7 + [7])
    labels = labels[torch.randperm(40, generator=gen)]
    for k in (1, 3, 10, 40):
        picked = craig_select(features, labels, k).tolist()
        assert picked == plain_greedy(block_similarity(features, labels), k)
        counts = torch.bincount(labels[picked], minlength=8)
        assert counts.sum() == k == len(set(picked))
        # Within a class, the picks are that class's own greedy sequence.
        for c in labels.unique().tolist():
            members = (labels == c).nonzero().squeeze(1)
            own = facility_location_greedy(class_similarity(features[members]), len(members))
            assert [j for j in picked if labels[j] == c] == members[own[: counts[c]]].tolist()


def test_craig_features_are_gradients_at_the_predicted_labels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    features, labels = craig_features(model, x)
    assert torch.equal(labels, model(x).argmax(1))
    torch.testing.assert_close(features, rbc_features(model, x, labels))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_craig_on_the_gpu_picks_what_it_picks_on_the_cpu():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(300, 20, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (300,), generator=gen)
    cpu = craig_select(features, labels, 25)
    gpu = craig_select(features.cuda(), labels.cuda(), 25)
    assert gpu.device.type == "cuda"
    assert gpu.tolist() == cpu.tolist()
