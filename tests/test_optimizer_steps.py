"""Exact meta-gradients through the elementwise optimizers (Adam, AdamW, RMSprop, Adagrad, SGD).

Each functional copy of an optimizer's step must equal torch.optim's own `step()` on the same
state; its `descent` E must be minus the diagonal of the step's Jacobian in G (autograd on the
functional copy); and the persistent-weight engine's fast weight gradient must equal the
reference engine's second-order one and finite differences through the real optimizer.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from nets import bn_net, central_differences, meta_loss_after_step
from torch import nn

from l2rw.meta import l2rw_step, l2rw_weights, meta_reweight_grad
from l2rw.meta.l2rw import ENGINES as L2RW_ENGINES
from l2rw.meta.optimizer_steps import optimizer_steps
from l2rw.meta.passes import train_mode
from l2rw.models import build_model


def _layernorm_dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 24),
        nn.LayerNorm(24),
        nn.GELU(),
        nn.Dropout(0.2),
        nn.Linear(24, 3),
    ).double()


MODELS = {"bn_cnn": bn_net, "layernorm_dropout": _layernorm_dropout_net}

# name: (optimizer class, param groups (the parameters split evenly among them), prior steps,
# whether a scheduler halves the rate after each prior step).
OPTIMIZERS = {
    "adam_first_step": (torch.optim.Adam, [dict(lr=1e-2)], 0, False),
    "adam": (torch.optim.Adam, [dict(lr=1e-2)], 3, False),
    "adam_l2_amsgrad": (torch.optim.Adam, [dict(lr=1e-2, weight_decay=0.05, amsgrad=True)], 3, 0),
    "adam_maximize": (torch.optim.Adam, [dict(lr=1e-3, maximize=True)], 2, False),
    "adamw_first_step": (torch.optim.AdamW, [dict(lr=1e-2, weight_decay=0.1)], 0, False),
    "adamw_scheduled": (torch.optim.AdamW, [dict(lr=1e-2, weight_decay=0.1)], 3, True),
    "adamw_groups": (
        torch.optim.AdamW,
        [
            dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.0),
            dict(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.2, eps=1e-6),
        ],
        2,
        False,
    ),
    "rmsprop_first_step": (torch.optim.RMSprop, [dict(lr=1e-3)], 0, False),
    "rmsprop_centered_momentum": (
        torch.optim.RMSprop,
        [dict(lr=1e-3, centered=True, momentum=0.9, weight_decay=0.01)],
        3,
        False,
    ),
    "adagrad_first_step": (
        torch.optim.Adagrad,
        [dict(lr=0.05, initial_accumulator_value=0.1)],
        0,
        0,
    ),
    "adagrad": (torch.optim.Adagrad, [dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3)], 3, False),
    "sgd_nesterov_groups": (
        torch.optim.SGD,
        [dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.02, momentum=0.5, dampening=0.5)],
        2,
        False,
    ),
}

CLOSE = dict(rtol=1e-9, atol=1e-12)


def _batches(n=8, m=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64)
    xm = torch.randn(m, 1, 8, 8, generator=g, dtype=torch.float64)
    ym = torch.randint(0, 3, (m,), generator=g)
    return x, y, w, xm, ym


def _setup(model_name: str, opt_name: str):
    """Model, optimizer after its prior steps (and the scheduler's rate), a batch."""
    return setup_model(MODELS[model_name](), opt_name)


def setup_model(model: nn.Module, opt_name: str):
    """`_setup` for a given model (float64)."""
    model = model.train()
    cls, groups, prior, scheduled = OPTIMIZERS[opt_name]
    params = list(model.parameters())
    half = len(params) // len(groups)
    chunks = [params[:half], params[half:]] if len(groups) == 2 else [params]
    opt = cls([dict(params=c, **g) for c, g in zip(chunks, groups, strict=True)])
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5) if scheduled else None
    torch.manual_seed(5)
    for step in range(prior):
        xp, yp, *_ = _batches(seed=10 + step)
        opt.zero_grad()
        F.cross_entropy(model(xp), yp).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return model, opt, *_batches()


def _random_gradients(model: nn.Module, zero: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        name: torch.zeros_like(p) if zero else torch.randn(p.shape, generator=g, dtype=p.dtype)
        for name, p in model.named_parameters()
    }


def _functional_step(model, opt, grads, differentiable=False):
    params = dict(model.named_parameters())
    out = {}
    for rule in optimizer_steps(model, opt):
        at = list(range(len(rule.names)))
        ps = [params[n].detach() for n in rule.names]
        moved = rule.lookahead(ps, [grads[n] for n in rule.names], at)
        out.update(zip(rule.names, moved, strict=True))
    return out


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_functional_step_equals_the_optimizers_own_step(opt_name):
    model, opt, *_ = _setup("bn_cnn", opt_name)
    grads = _random_gradients(model)
    functional = _functional_step(model, opt, grads)
    stepped, stepped_opt = copy.deepcopy((model, opt))
    for name, p in stepped.named_parameters():
        p.grad = grads[name].clone()
    stepped_opt.step()
    for name, p in stepped.named_parameters():
        torch.testing.assert_close(functional[name], p.detach(), **CLOSE, msg=name)


@pytest.mark.parametrize("zero", [False, True], ids=["G", "G=0"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_descent_is_minus_the_steps_diagonal_jacobian(opt_name, zero):
    """E = -d theta_hat / d G element by element, at a random G and at G = 0 (L2RW's point)."""
    model, opt, *_ = _setup("bn_cnn", opt_name)
    params = dict(model.named_parameters())
    grads = _random_gradients(model, zero)
    for rule in optimizer_steps(model, opt):
        at = list(range(len(rule.names)))
        ps = [params[n].detach() for n in rule.names]
        gs = [grads[n].clone().requires_grad_() for n in rule.names]
        moved = rule.lookahead(ps, gs, at)
        diagonal = torch.autograd.grad(sum(t.sum() for t in moved), gs)
        same, descent = rule.lookahead_with_descent(ps, [g.detach() for g in gs], at)
        for a, b in zip(same, moved, strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
        for name, d, e in zip(
            rule.names,
            diagonal,
            [descent] * len(at) if isinstance(descent, float) else descent,
            strict=True,
        ):
            torch.testing.assert_close(
                -d, torch.as_tensor(e, dtype=d.dtype).expand_as(d), **CLOSE, msg=name
            )


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_equals_reference(model_name, opt_name):
    model, opt, x, y, w, xm, ym = _setup(model_name, opt_name)
    torch.manual_seed(7)
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    torch.manual_seed(7)
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    assert fast.abs().max() > 1e-8
    torch.testing.assert_close(fast, ref, **CLOSE)


@pytest.mark.parametrize(
    "opt_name", ["adam", "adam_l2_amsgrad", "adamw_groups", "rmsprop_centered_momentum", "adagrad"]
)
def test_equals_finite_differences_through_the_real_optimizer(opt_name):
    model, opt, x, y, w, xm, ym = _setup("bn_cnn", opt_name)
    fd = central_differences(lambda v: meta_loss_after_step(model, opt, x, y, v, xm, ym), w, 1e-6)
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    torch.testing.assert_close(fast, fd, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("opt_name", ["adam_l2_amsgrad", "rmsprop_centered_momentum", "adagrad"])
def test_model_and_optimizer_state_untouched(opt_name, engine):
    model, opt, x, y, w, xm, ym = _setup("bn_cnn", opt_name)
    state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    meta_reweight_grad(model, opt, x, y, w, xm, ym, engine=engine)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    after = opt.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]
    assert after["state"].keys() == opt_state["state"].keys()
    for key, entry in opt_state["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(after["state"][key][name]), torch.as_tensor(value))


def test_float32_fast_equals_reference_within_1e_5():
    """In float32 after a few AdamW steps. (On Adam's very first step E is lr * eps / den^2, a
    difference of two terms of size 1 / |g| that float32 cannot resolve; float64 checks it.)"""
    model = _layernorm_dropout_net().float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(3):
        xp, yp, *_ = _batches(seed=10 + step)
        opt.zero_grad()
        F.cross_entropy(model(xp.float()), yp).backward()
        opt.step()
    x, y, w, xm, ym = _batches()
    x, w, xm = x.float(), w.float(), xm.float()
    torch.manual_seed(7)
    fast = meta_reweight_grad(model, opt, x, y, w, xm, ym)
    torch.manual_seed(7)
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    scale = float(ref.abs().max())
    torch.testing.assert_close(fast / scale, ref / scale, rtol=0, atol=1e-5)


def _l2rw_scores(engine, model, opt, x, y, xm, ym):
    """The engine's raw scores -d L_val / d eps (before Eq. 9). Dropout off: the two L2RW engines
    draw the meta passes' masks in a different order."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    torch.manual_seed(7)
    with train_mode(model):
        return L2RW_ENGINES[engine](model, opt, x, y, xm, ym, _ce, 0.0)


def _ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_l2rw_lookahead_through_the_optimizer_fast_equals_reference(model_name, opt_name):
    model, opt, x, y, _, xm, ym = _setup(model_name, opt_name)
    fast = _l2rw_scores("fast", model, opt, x, y, xm, ym)
    ref = _l2rw_scores("reference", model, opt, x, y, xm, ym)
    assert fast.abs().max() > 1e-8
    torch.testing.assert_close(fast, ref, **CLOSE)


@pytest.mark.parametrize(
    "opt_name", ["adam", "adamw_groups", "rmsprop_centered_momentum", "adagrad"]
)
def test_l2rw_lookahead_equals_finite_differences_through_the_real_optimizer(opt_name):
    """scores_i = -d L_val(theta_hat(eps)) / d eps_i at eps = 0, theta_hat the real optimizer's
    step on sum_i eps_i l_i (a state already built, so the step is smooth at G = 0)."""
    model, opt, x, y, _, xm, ym = _setup("bn_cnn", opt_name)
    # sum_i eps_i l_i is the mean of the weights eps * B.
    at_zero = torch.zeros(len(x), dtype=torch.float64)
    fd = central_differences(
        lambda eps: meta_loss_after_step(model, opt, x, y, eps * len(x), xm, ym), at_zero, 1e-6
    )
    fast = _l2rw_scores("fast", model, opt, x, y, xm, ym)
    torch.testing.assert_close(fast, -fd, rtol=1e-5, atol=1e-9)


def test_l2rw_lookahead_at_a_moving_point_differs_from_plain_sgd():
    """With momentum state the look-ahead is not theta even at G = 0: the scores differ from
    the plain-SGD look-ahead's (scaled by lr) rather than being a multiple of them."""
    model, opt, x, y, _, xm, ym = _setup("bn_cnn", "adamw_scheduled")
    through = _l2rw_scores("fast", model, opt, x, y, xm, ym)
    plain = _l2rw_scores("fast", model, None, x, y, xm, ym)
    ratio = through / plain
    assert float(ratio.max() - ratio.min()) > 1e-3 * float(ratio.abs().max())


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_l2rw_step_through_the_optimizer_uses_its_lookahead_and_leaves_state_to_the_step(engine):
    model, opt, x, y, _, xm, ym = _setup("layernorm_dropout", "adam_l2_amsgrad")
    model[4].p = 0.0  # no dropout: the step shares its dual forward with the real update
    opt_state = copy.deepcopy(opt.state_dict())
    expected = l2rw_weights(model, x, y, xm, ym, engine=engine, optimizer=opt)
    after = opt.state_dict()
    for key, entry in opt_state["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(after["state"][key][name]), torch.as_tensor(value))
    manual, manual_opt = copy.deepcopy((model, opt))
    weights, _ = l2rw_step(model, opt, x, y, xm, ym, engine=engine, lookahead="optimizer")
    torch.testing.assert_close(weights, expected, **CLOSE)
    manual_opt.zero_grad()
    (expected * _ce(manual(x), y)).sum().backward()
    manual_opt.step()
    for (name, a), b in zip(model.state_dict().items(), manual.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, **CLOSE, msg=name)
    with pytest.raises(ValueError, match="lookahead"):
        l2rw_step(model, opt, x, y, xm, ym, lookahead="adam")


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        "vit", 3, image_size=8, in_channels=1, patch_size=4, dim=8, depth=2, heads=2, pool="mean"
    ).double()


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_vit_with_adamw_through_both_engines(engine):
    """Attention in the JVP pass (the fused kernels have no forward-mode rule) and in the
    reference's second-order backward."""
    model = _vit().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    for step in range(2):
        xp, yp, *_ = _batches(seed=10 + step)
        opt.zero_grad()
        F.cross_entropy(model(xp), yp).backward()
        opt.step()
    x, y, w, xm, ym = _batches()
    g = {
        e: meta_reweight_grad(model, opt, x, y, w, xm, ym, engine=e) for e in ("fast", "reference")
    }
    torch.testing.assert_close(g["fast"], g["reference"], **CLOSE)
    scores = {e: _l2rw_scores(e, model, opt, x, y, xm, ym) for e in ("fast", "reference")}
    torch.testing.assert_close(scores["fast"], scores["reference"], **CLOSE)
    weights, _ = l2rw_step(
        model, opt, x.float().double(), y, xm, ym, engine=engine, lookahead="optimizer"
    )
    assert weights.sum() > 0
