"""The fast L2RW engine equals independent computations and leaves the model untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F
from nets import DEVICES, bn_net, lenet
from torch import nn

from l2rw.meta import l2rw_step, l2rw_weights, normalize_weights


def _lenet():
    return lenet(2)


def _bnnet():
    return bn_net()


def _batches(shape, k, n=24, m=10):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    xv = torch.randn(m, *shape, generator=g, dtype=torch.float64)
    yv = torch.randint(0, k, (m,), generator=g)
    return x, y, xv, yv


CASES = [(_lenet, (1, 28, 28), 2), (_bnnet, (1, 8, 8), 3)]


def _on(device, model, *tensors):
    return model.to(device), *(t.to(device) for t in tensors)


def _snapshot(model):
    return copy.deepcopy(model.state_dict())


def _per_example_dot_products(model, x, y, xv, yv):
    """Independent computation: a gradient per example (loop), dotted with the validation
    gradient. BatchNorm couples examples, so each per-example gradient is taken through the
    whole batch's forward: d l_i / d theta with the batch statistics of all n examples."""
    params = list(model.parameters())
    model.train()
    g_val = torch.autograd.grad(F.cross_entropy(model(xv), yv), params)
    losses = F.cross_entropy(model(x), y, reduction="none")
    dots = []
    for i in range(len(x)):
        g_i = torch.autograd.grad(losses[i], params, retain_graph=True)
        dots.append(sum((a * b).sum() for a, b in zip(g_i, g_val, strict=True)))
    return torch.stack(dots)


@pytest.mark.parametrize("device", DEVICES)  # forward-mode AD and cuDNN differ on a GPU
@pytest.mark.parametrize("make,shape,k", CASES, ids=["lenet", "bn_cnn"])
def test_fast_equals_reference_and_model_untouched(make, shape, k, device):
    model, x, y, xv, yv = _on(device, make(), *_batches(shape, k))
    model.eval()
    before = _snapshot(model)
    fast = l2rw_weights(model, x, y, xv, yv)
    ref = l2rw_weights(model, x, y, xv, yv, engine="reference")
    assert float(fast.sum()) == pytest.approx(1.0)
    assert (fast > 0).sum() > 0
    torch.testing.assert_close(fast, ref, rtol=1e-7, atol=1e-12)
    # Untouched: parameters and running statistics, gradients, and the eval mode.
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make,shape,k", CASES, ids=["lenet", "bn_cnn"])
def test_weights_equal_rectified_per_example_gradient_dot_products(make, shape, k, device):
    model, x, y, xv, yv = _on(device, make(), *_batches(shape, k))
    expected = normalize_weights(_per_example_dot_products(model, x, y, xv, yv))
    torch.testing.assert_close(l2rw_weights(model, x, y, xv, yv), expected, rtol=1e-7, atol=1e-12)


def test_validation_weight_decay_matches_between_engines():
    model = _bnnet()
    x, y, xv, yv = _batches((1, 8, 8), 3)
    fast = l2rw_weights(model, x, y, xv, yv, val_weight_decay=0.05)
    ref = l2rw_weights(model, x, y, xv, yv, engine="reference", val_weight_decay=0.05)
    torch.testing.assert_close(fast, ref, rtol=1e-7, atol=1e-12)
    assert not torch.allclose(fast, l2rw_weights(model, x, y, xv, yv))


def test_all_zero_weights_when_no_example_helps():
    assert torch.equal(normalize_weights(torch.tensor([-1.0, -2.0, 0.0])), torch.zeros(3))
    torch.testing.assert_close(
        normalize_weights(torch.tensor([-1.0, 1.0, 3.0])), torch.tensor([0.0, 0.25, 0.75])
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make,shape,k", CASES, ids=["lenet", "bn_cnn"])
@pytest.mark.parametrize(
    "engine,share_forward", [("fast", True), ("fast", False), ("reference", True)]
)
def test_step_equals_weights_then_weighted_sgd(make, shape, k, engine, share_forward, device):
    """l2rw_step (its forward shared with the weights' dual forward, or its own) == weights at
    theta, then one SGD step on sum w_i l_i: parameters and BatchNorm statistics alike."""
    model, x, y, xv, yv = _on(device, make(), *_batches(shape, k))
    expected_w = l2rw_weights(model, x, y, xv, yv)
    manual = copy.deepcopy(model)
    manual.train()
    opt_m = torch.optim.SGD(manual.parameters(), lr=0.1, momentum=0.9)
    (expected_w * F.cross_entropy(manual(x), y, reduction="none")).sum().backward()
    opt_m.step()

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights, losses = l2rw_step(
        model, opt, x, y, xv, yv, engine=engine, share_forward=share_forward
    )
    torch.testing.assert_close(weights, expected_w, rtol=1e-7, atol=1e-12)
    assert losses.shape == (len(x),)
    for (name, a), b in zip(model.state_dict().items(), manual.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12, msg=name)


def test_dropout_meta_pass_draws_its_own_masks():
    """With dropout, the step's weights come from its own meta passes (the same masks as a
    standalone l2rw_weights call from the same RNG state), and the real update draws new ones."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3)
    ).double()
    x, y, xv, yv = _batches((1, 4, 4), 3)
    without_dropout = copy.deepcopy(model)
    without_dropout[3].p = 0.0
    torch.manual_seed(1)
    standalone = l2rw_weights(model, x, y, xv, yv)
    assert not torch.allclose(standalone, l2rw_weights(without_dropout, x, y, xv, yv))
    torch.manual_seed(1)
    weights, _ = l2rw_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, xv, yv)
    torch.testing.assert_close(weights, standalone, rtol=0, atol=0)
