"""The L2RW Figure 2 baselines' step rules against hand computations: HARD MINING's kept examples
and weights (and the step it takes), RANDOM's rectified Gaussian weights (L2RW Eq. 16)."""

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from l2rw.methods import METHODS
from l2rw.methods.loop import Batch
from l2rw.seeding import WEIGHTS, generator

MAJORITY = 0


def context(train_y: torch.Tensor, **method) -> SimpleNamespace:
    """What the two rules read of a run: the training labels, the seed and method options."""
    cfg = OmegaConf.create({"seed": 7, "method": {"random_std": 1.0, **method}})
    return SimpleNamespace(cfg=cfg, data=SimpleNamespace(train=SimpleNamespace(y=train_y)))


def batch(y: list[int], step: int = 0) -> Batch:
    x = torch.randn(len(y), 5, generator=torch.Generator().manual_seed(step + 1))
    y = torch.tensor(y)
    return Batch(x, y, y.clone(), torch.arange(len(y)), step)


def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


# Training set: class 0 the majority. Batches with 3, 0 and 2 non-majority examples.
TRAIN_Y = torch.tensor([0] * 90 + [1] * 6 + [2] * 4)


@pytest.mark.parametrize(
    "labels",
    [[0, 1, 0, 0, 2, 0, 0, 1, 0, 0], [0] * 6, [1, 2, 0, 0]],
    ids=["three_minority", "no_minority", "as_many"],
)
def test_hard_mining_keeps_the_minority_and_as_many_hardest_majority(labels):
    rule = METHODS.get("hard_mining")(context(TRAIN_Y))
    model, opt = model_and_optimizer()
    by_hand = copy.deepcopy(model)
    b = batch(labels)

    # By hand: every non-majority example, then the max(#minority, 1) majority examples of
    # highest loss under the model before the step; each kept example weighs 1 / #kept.
    with torch.no_grad():
        loss = F.cross_entropy(by_hand(b.x), b.y, reduction="none")
    minority = [i for i, c in enumerate(labels) if c != MAJORITY]
    majority = sorted((i for i, c in enumerate(labels) if c == MAJORITY), key=lambda i: -loss[i])
    kept = set(minority) | set(majority[: max(len(minority), 1)])
    expected = torch.tensor([1.0 / len(kept) if i in kept else 0.0 for i in range(len(labels))])

    losses, weights = rule(model, opt, b)
    torch.testing.assert_close(weights, expected, rtol=0, atol=0)
    torch.testing.assert_close(losses, loss, rtol=0, atol=1e-7)
    # The step: SGD on the kept examples' mean loss, i.e. on sum_i w_i l_i.
    opt_hand = torch.optim.SGD(by_hand.parameters(), lr=0.5, momentum=0.9)
    (expected * F.cross_entropy(by_hand(b.x), b.y, reduction="none")).sum().backward()
    opt_hand.step()
    for a, h in zip(model.parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(a, h, rtol=1e-6, atol=1e-7)


def test_random_weights_are_a_rectified_gaussian_per_step_normalised():
    std = 0.3
    rule = METHODS.get("random")(context(TRAIN_Y, random_std=std))
    model, opt = model_and_optimizer()
    labels = [0, 1, 0, 2, 0, 0, 1, 0, 0, 0, 2, 0]
    seen = []
    for step in (0, 1, 5):
        # By hand (Eq. 16): z ~ N(0, std^2) from the run's (seed, WEIGHTS, step) stream, w the
        # positive part of z normalised to sum 1.
        z = std * torch.randn(len(labels), generator=generator(7, WEIGHTS, step))
        expected = z.clamp(min=0) / z.clamp(min=0).sum()
        _, weights = rule(model, opt, batch(labels, step))
        torch.testing.assert_close(weights, expected, rtol=1e-6, atol=0)
        assert (weights[z <= 0] == 0).all() and (weights[z > 0] > 0).all()
        seen.append(weights)
    assert not torch.equal(seen[0], seen[1])
    # A pure function of (seed, step): the same step draws the same weights again.
    _, again = rule(model, opt, batch(labels, 1))
    assert torch.equal(again, seen[1])
