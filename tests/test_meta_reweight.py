"""The persistent-weight meta re-weighting step (Wu et al. 2023, Eq. 2-4): the fast engine equals
the second-order reference, a per-example loop and finite differences through the real optimizer,
and leaves model and optimizer untouched; the step is a clamped weight update then weighted SGD."""

import copy

import pytest
import torch
import torch.nn.functional as F
from nets import bn_net, central_differences, lenet, meta_loss_after_step, real_lookahead
from torch import nn

from l2rw.errors import ConfigError
from l2rw.meta import meta_reweight_grad, meta_reweight_step


def _lenet():
    return lenet(10)


def _bnnet():
    return bn_net()


MODELS = {"lenet": (_lenet, (1, 28, 28), 10), "bn_cnn": (_bnnet, (1, 8, 8), 3)}

# name: (param groups (the parameters are split evenly among them), prior steps, c per group).
# c is the derivative of SGD's update direction w.r.t. the gradient, worked out by hand.
OPTIMIZERS = {
    "sgd": ([dict(lr=0.1)], 0, [1.0]),
    "momentum_first_step": ([dict(lr=0.1, momentum=0.9)], 0, [1.0]),
    "momentum": ([dict(lr=0.1, momentum=0.9)], 2, [1.0]),
    "dampening_first_step": ([dict(lr=0.1, momentum=0.9, dampening=0.3)], 0, [1.0]),
    "dampening": ([dict(lr=0.1, momentum=0.9, dampening=0.3)], 2, [0.7]),
    "nesterov_first_step": ([dict(lr=0.1, momentum=0.9, nesterov=True)], 0, [1.9]),
    "nesterov_weight_decay": (
        [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)],
        2,
        [1.9],
    ),
    "weight_decay": ([dict(lr=0.1, weight_decay=0.05)], 1, [1.0]),
    "groups": (
        [dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.02, momentum=0.5, dampening=0.5)],
        2,
        [1.9, 0.5],
    ),
    "maximize": ([dict(lr=0.05, maximize=True)], 1, [-1.0]),
}


def _batches(shape, k, n=8, m=5, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64)
    xm = torch.randn(m, *shape, generator=g, dtype=torch.float64)
    ym = torch.randint(0, k, (m,), generator=g)
    return tuple(t.to(device) for t in (x, y, w, xm, ym))


def _setup(model_name, opt_name, device="cpu"):
    """Model, optimizer after its prior steps (momentum buffers exist then), a batch."""
    make, shape, k = MODELS[model_name]
    model = make().to(device).train()
    groups, prior, _ = OPTIMIZERS[opt_name]
    params = list(model.parameters())
    half = len(params) // len(groups)
    chunks = [params[:half], params[half:]] if len(groups) == 2 else [params]
    opt = torch.optim.SGD([dict(params=c, **g) for c, g in zip(chunks, groups, strict=True)])
    for step in range(prior):
        xp, yp, *_ = _batches(shape, k, seed=10 + step, device=device)
        opt.zero_grad()
        F.cross_entropy(model(xp), yp).backward()
        opt.step()
    return model, opt, *_batches(shape, k, device=device)


def _ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def _loop_grad(model, opt, x, y, w, xm, ym, cs):
    """-(lr c / B) <grad L_meta(theta_hat), grad l_i(theta)>, per-example gradients in a loop,
    each through the whole batch's forward (BatchNorm couples the examples)."""
    model_hat = real_lookahead(model, opt, x, y, w)
    v = torch.autograd.grad(F.cross_entropy(model_hat(xm), ym), list(model_hat.parameters()))
    scale = {
        id(p): g["lr"] * c for g, c in zip(opt.param_groups, cs, strict=True) for p in g["params"]
    }
    probe = copy.deepcopy(model).train()
    losses = _ce(probe(x), y)
    params = list(probe.parameters())
    scales = [scale[id(p)] for p in model.parameters()]
    g = []
    for i in range(len(x)):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True)
        g.append(-sum(s * (a * b).sum() for s, a, b in zip(scales, v, grads, strict=True)))
    return torch.stack(g) / len(x)


CLOSE = dict(rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_equals_reference_and_per_example_loop(model_name, opt_name):
    model, opt, x, y, w, xm, ym = _setup(model_name, opt_name)
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    assert fast.shape == (len(x),)
    assert fast.abs().max() > 1e-6
    torch.testing.assert_close(fast, ref, **CLOSE)
    loop = _loop_grad(model, opt, x, y, w, xm, ym, OPTIMIZERS[opt_name][2])
    torch.testing.assert_close(fast, loop, **CLOSE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_equals_reference_on_gpu(model_name):
    """The same check on the GPU (forward-mode AD and cuDNN kernels differ there)."""
    model, opt, x, y, w, xm, ym = _setup(model_name, "groups", device="cuda")
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    torch.testing.assert_close(fast, ref, **CLOSE)
    loop = _loop_grad(model, opt, x, y, w, xm, ym, OPTIMIZERS["groups"][2])
    torch.testing.assert_close(fast, loop, **CLOSE)


@pytest.mark.parametrize("opt_name", ["sgd", "dampening", "nesterov_weight_decay", "groups"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_equals_finite_differences_through_the_real_optimizer(model_name, opt_name):
    model, opt, x, y, w, xm, ym = _setup(model_name, opt_name)
    fd = central_differences(lambda v: meta_loss_after_step(model, opt, x, y, v, xm, ym), w, 1e-4)
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    torch.testing.assert_close(fast, fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_grad_leaves_model_and_optimizer_untouched(model_name, engine):
    model, opt, x, y, w, xm, ym = _setup(model_name, "nesterov_weight_decay")
    model.eval()
    w_before = w.clone()
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    opt_state = copy.deepcopy(opt.state_dict())
    meta_reweight_grad(model, opt, x, y, w, xm, ym, engine=engine)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert not model.training
    after = opt.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]
    for key, entry in opt_state["state"].items():
        assert torch.equal(after["state"][key]["momentum_buffer"], entry["momentum_buffer"])
    assert torch.equal(w, w_before)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_step_is_clamped_weight_update_then_weighted_sgd(model_name, engine):
    model, opt, x, y, w, xm, ym = _setup(model_name, "nesterov_weight_decay")
    g = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    meta_lr = 0.5 / float(g.abs().median())  # large enough that some weights hit each bound
    expected_w = (w - meta_lr * g).clamp(0, 1)
    assert 0 < int((expected_w == 0).sum() + (expected_w == 1).sum()) < len(w)
    manual, opt_m = copy.deepcopy((model, opt))
    opt_m.zero_grad()
    expected_losses = _ce(manual(x), y)  # one forward in train mode: running stats move once
    (expected_w * expected_losses).mean().backward()
    opt_m.step()

    w_before = w.clone()
    w_new, losses = meta_reweight_step(model, opt, x, y, w, xm, ym, meta_lr, engine=engine)
    assert torch.equal(w, w_before)
    torch.testing.assert_close(w_new, expected_w, **CLOSE)
    torch.testing.assert_close(losses, expected_losses.detach(), **CLOSE)
    assert not w_new.requires_grad and not losses.requires_grad
    for (name, a), b in zip(model.state_dict().items(), manual.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **CLOSE, msg=name)
    for a, b in zip(opt.state.values(), opt_m.state.values(), strict=True):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], **CLOSE)


def test_clamp_bounds():
    model, opt, x, y, w, xm, ym = _setup("bn_cnn", "momentum")
    for low, high in [(0.0, 1.0), (1e-7, 1.0), (0.2, 0.8)]:
        w_new, _ = meta_reweight_step(model, opt, x, y, w, xm, ym, meta_lr=1e4, clamp=(low, high))
        assert bool(((w_new >= low) & (w_new <= high)).all())
        assert bool((w_new == low).any()) and bool((w_new == high).any())


def _dropout_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3)
    ).double()


def test_dropout_engines_draw_the_same_masks():
    """Both engines: one set of masks on the batch (look-ahead, g and real update), the meta
    batch its own; the same RNG state gives the same g and the same step."""
    x, y, w, xm, ym = _batches((1, 4, 4), 3)
    model = _dropout_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    without_dropout, opt_without = copy.deepcopy((model, opt))
    without_dropout[3].p = 0.0
    no_masks = meta_reweight_grad(without_dropout, opt_without, x, y, w, xm, ym)
    g = {}
    for engine in ["fast", "reference"]:
        torch.manual_seed(1)
        g[engine] = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine=engine)
    torch.testing.assert_close(g["fast"], g["reference"], **CLOSE)
    assert not torch.allclose(g["fast"], no_masks)
    stepped = {}
    for engine in ["fast", "reference"]:
        net, net_opt = copy.deepcopy((model, opt))
        torch.manual_seed(1)
        w_new, _ = meta_reweight_step(net, net_opt, x, y, w, xm, ym, 1.0, engine=engine)
        stepped[engine] = (w_new, net.state_dict(), torch.rand(3))  # RNG left alike
    fast, ref = stepped["fast"], stepped["reference"]
    torch.testing.assert_close(fast[0], ref[0], **CLOSE)
    torch.testing.assert_close(fast[1], ref[1], **CLOSE)
    assert torch.equal(fast[2], ref[2])


def test_rejects_other_optimizers_and_engines():
    model, opt, x, y, w, xm, ym = _setup("bn_cnn", "sgd")
    with pytest.raises(ConfigError, match="LBFGS.*SGD.*Adam and AdamW.*RMSprop.*Adagrad"):
        meta_reweight_grad(model, torch.optim.LBFGS(model.parameters()), x, y, w, xm, ym)

    class CustomAdam(torch.optim.Adam):
        """A subclass may change step(): its look-ahead cannot be assumed to be Adam's."""

    with pytest.raises(ConfigError, match="CustomAdam"):
        meta_reweight_grad(model, CustomAdam(model.parameters()), x, y, w, xm, ym)
    with pytest.raises(ValueError, match="none of the model"):
        meta_reweight_grad(model, torch.optim.SGD(nn.Linear(2, 2).parameters()), x, y, w, xm, ym)
    with pytest.raises(ValueError, match="engine"):
        meta_reweight_step(model, opt, x, y, w, xm, ym, 1.0, engine="higher")
    with pytest.raises(ValueError, match="shape"):
        meta_reweight_grad(model, opt, x, y, w[:-1], xm, ym)
