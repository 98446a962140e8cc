"""The L2RW paper's noisy-label baselines against hand computations on tiny batches: the oracle
weights, bootstrapping targets, the S-Model transition layer and its initialisations."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2rw.methods import METHODS
from l2rw.methods.loop import Batch
from l2rw.methods.noisy_labels import (
    TRANSITION,
    SModelRule,
    bootstrap_loss,
    bootstrap_targets,
    clean_fractions,
    noisy_log_probs,
    smoothed_identity,
    transition_from_confusion,
)


def test_clean_fractions_per_observed_class():
    # Observed labels 0 0 0 1 1 2 2 2 2; true labels make class 0 2/3 clean, class 1 1/2,
    # class 2 4/4, class 3 never observed (1 by convention).
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_true = torch.tensor([0, 0, 2, 1, 0, 2, 2, 2, 2])
    got = clean_fractions(y, y_true, 4)
    assert torch.allclose(got, torch.tensor([2 / 3, 1 / 2, 1.0, 1.0], dtype=torch.float64))


class _Ctx:
    """The parts of a RunContext a step-rule builder reads."""

    def __init__(self, cfg, train, num_classes=3, model=None):
        self.cfg, self.model = cfg, model
        self.data = type("Data", (), {"train": train, "num_classes": num_classes})()


def _cfg(**method):
    from omegaconf import OmegaConf

    return OmegaConf.create({"method": method, "stop": {"name": "final"}, "seed": 0})


def _split(y, y_true):
    return type("Split", (), {"y": torch.tensor(y), "y_true": torch.tensor(y_true)})()


def test_weighted_oracle_weights_are_the_clean_fractions_normalised():
    train = _split([0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 1, 1, 2, 2])  # class 0: 1/2 clean
    rule = METHODS.get("weighted")(_Ctx(_cfg(name="weighted"), train))
    model = nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    batch = Batch(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), torch.zeros(4).long(), None, 0)
    _, weights = rule(model, opt, batch)
    expected = torch.tensor([0.5, 1.0, 1.0, 0.5]) / 3.0
    assert torch.allclose(weights, expected)


def test_bootstrap_targets_by_hand():
    logits = torch.tensor([[math.log(1.0), math.log(3.0)], [math.log(4.0), math.log(1.0)]])
    y = torch.tensor([0, 0])
    soft = bootstrap_targets(logits, y, 0.8, "soft")
    # q = [0.25, 0.75] and [0.8, 0.2].
    assert torch.allclose(soft, torch.tensor([[0.8 + 0.05, 0.15], [0.8 + 0.16, 0.04]]))
    hard = bootstrap_targets(logits, y, 0.8, "hard")
    assert torch.allclose(hard, torch.tensor([[0.8, 0.2], [1.0, 0.0]]))


def test_bootstrap_loss_is_cross_entropy_at_beta_one_and_soft_gradient_flows_through_q():
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(bootstrap_loss(logits, y, 1.0, "soft"), ce)
    assert torch.allclose(bootstrap_loss(logits, y, 1.0, "hard"), ce)
    # Soft: -sum_k (b t_k + (1 - b) q_k) log q_k, differentiated through q as well.
    beta = 0.95
    log_q = logits.log_softmax(1)
    by_hand = -((beta * F.one_hot(y, 4) + (1 - beta) * log_q.exp()) * log_q).sum(1)
    got = bootstrap_loss(logits, y, beta, "soft")
    assert torch.allclose(got, by_hand)
    (g_got,) = torch.autograd.grad(got.sum(), logits, retain_graph=True)
    (g_hand,) = torch.autograd.grad(by_hand.sum(), logits, retain_graph=True)
    assert torch.allclose(g_got, g_hand)
    detached = -((beta * F.one_hot(y, 4) + (1 - beta) * log_q.exp().detach()) * log_q).sum(1)
    (g_detached,) = torch.autograd.grad(detached.sum(), logits)
    assert not torch.allclose(g_got, g_detached)


def test_smoothed_identity_rows():
    theta = smoothed_identity(4, 0.1)
    assert torch.allclose(theta.sum(1), torch.ones(4))
    assert torch.allclose(theta.diagonal(), torch.full((4,), 0.9))
    assert torch.allclose(theta[0, 1:], torch.full((3,), 0.1 / 3))


def test_transition_from_confusion_by_hand():
    # Rows: observed label; columns: prediction. Predicted 0: observed 0 six times, 1 twice;
    # predicted 1: observed 1 four times; predicted 2: never.
    confusion = torch.tensor([[6, 0, 0], [2, 4, 0], [0, 0, 0]])
    theta = transition_from_confusion(confusion, smoothing=0.0)
    assert torch.allclose(theta[0], torch.tensor([0.75, 0.25, 0.0]))
    assert torch.allclose(theta[1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(theta[2], torch.full((3,), 1 / 3))
    mixed = transition_from_confusion(confusion, smoothing=0.3)
    assert torch.allclose(mixed[0], 0.7 * torch.tensor([0.75, 0.25, 0.0]) + 0.1)
    assert torch.allclose(mixed.sum(1), torch.ones(3))


def test_s_model_layer_and_step():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    theta0 = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    ctx = _Ctx(_cfg(name="s_model"), None, 2, model)
    rule = SModelRule(ctx, theta0)
    w = getattr(model, TRANSITION)
    assert torch.allclose(w.softmax(1), theta0)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    logits = model(x)
    # p(observed j | x) = sum_i p(i | x) theta[i, j].
    by_hand = (logits.softmax(1) @ theta0).log()
    assert torch.allclose(noisy_log_probs(model, logits), by_hand, atol=1e-6)
    # The step trains the layer too, on -log p(observed label | x), mean over the batch.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = w.detach().clone()
    expected = F.nll_loss(by_hand, y)
    losses, weights = rule(model, opt, Batch(x, y, y, None, 0))
    assert torch.allclose((weights * losses).sum(), expected, atol=1e-6)
    assert not torch.allclose(w.detach(), before)
    # Evaluation reads the classifier's own logits.
    assert model(x).shape == (4, 2)


def test_s_model_conf_reads_a_baseline_record_given_by_path(tmp_path):
    confusion = [[8, 2], [1, 9]]
    record = {
        "status": "completed",
        "method": "baseline",
        "output_dir": str(tmp_path),
        "metrics": {"val_confusion": confusion, "val_confusion_es": [[1, 0], [0, 1]]},
    }
    (tmp_path / "result.json").write_text(json.dumps(record))
    cfg = _cfg(name="s_model_conf", init="confusion", smoothing=0.01, confusion_from=str(tmp_path))
    model = nn.Linear(3, 2)
    METHODS.get("s_model_conf")(_Ctx(cfg, None, 2, model))
    expected = transition_from_confusion(torch.tensor(confusion), 0.01)
    assert torch.allclose(getattr(model, TRANSITION).softmax(1), expected, atol=1e-6)


def test_s_model_conf_refuses_a_record_that_is_not_a_completed_baseline(tmp_path):
    from l2rw.errors import UserError

    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "method": "l2rw"}))
    cfg = _cfg(name="s_model_conf", init="confusion", smoothing=0.01, confusion_from=str(tmp_path))
    with pytest.raises(UserError, match="completed baseline"):
        METHODS.get("s_model_conf")(_Ctx(cfg, None, 2, nn.Linear(3, 2)))
