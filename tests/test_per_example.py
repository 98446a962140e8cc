"""The per-example engine (`engine="per_example"`): the same weights and steps as the reference
engines' second-order backward and the fast engine, through every optimizer; a parameter the
loss does not reach is skipped as after a backward; BatchNorm is refused with what to do."""

import copy

import pytest
import torch
import torch.nn.functional as F
from nets import bn_net
from test_optimizer_steps import OPTIMIZERS, setup_model
from torch import nn

from l2rw.errors import ConfigError
from l2rw.meta import l2rw_step, l2rw_weights, meta_reweight_grad, meta_reweight_step
from l2rw.meta.l2rw import cross_entropy_per_example
from l2rw.meta.per_example import per_example_gradients
from l2rw.models import build_model

CLOSE = dict(rtol=1e-9, atol=1e-12)


class LayerNormNet(nn.Module):
    """LayerNorm and GELU, and a head the loss never reaches (its parameters get no gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.LayerNorm(24), nn.GELU())
        self.fc = nn.Linear(24, 3)
        self.unused = nn.Linear(24, 3)

    def forward(self, x):
        return self.fc(self.body(x))


def _setup(opt_name: str, model: nn.Module | None = None):
    """Model (float64), optimizer after its prior steps (and the scheduler's rate), a batch."""
    torch.manual_seed(0)
    return setup_model((LayerNormNet() if model is None else model).double(), opt_name)


def test_per_example_gradients_are_each_examples_own():
    model, _, x, y, *_ = _setup("adam")
    losses, grads = per_example_gradients(model, x, y, cross_entropy_per_example)
    assert set(grads) == {n for n, _ in model.named_parameters() if not n.startswith("unused")}
    for i in (0, 5):
        model.zero_grad()
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        torch.testing.assert_close(losses[i], loss.detach(), **CLOSE)
        for name, p in model.named_parameters():
            if name in grads:
                torch.testing.assert_close(grads[name][i], p.grad, **CLOSE, msg=name)


@pytest.mark.parametrize("lookahead", ["sgd", "optimizer"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_l2rw_weights_equal_the_reference(opt_name, lookahead):
    model, opt, x, y, _, xm, ym = _setup(opt_name)
    stepped = opt if lookahead == "optimizer" else None
    ours = l2rw_weights(model, x, y, xm, ym, engine="per_example", optimizer=stepped)
    ref = l2rw_weights(model, x, y, xm, ym, engine="reference", optimizer=stepped)
    assert ours.sum() > 0.5
    torch.testing.assert_close(ours, ref, **CLOSE)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_meta_reweight_grad_equals_the_reference(opt_name):
    model, opt, x, y, w, xm, ym = _setup(opt_name)
    state = copy.deepcopy((model.state_dict(), opt.state_dict()))
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    ours = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="per_example")
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    assert ours.abs().max() > 1e-8
    torch.testing.assert_close(ours, ref, **CLOSE)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[0][name]), name
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert str(opt.state_dict()) == str(state[1])


@pytest.mark.parametrize("opt_name", ["adamw_groups", "sgd_nesterov_groups", "adagrad"])
def test_steps_equal_the_fast_engines_and_skip_what_the_loss_does_not_reach(opt_name):
    """After a step of each engine, the models and optimizer states agree; the unused head,
    which has no gradient, is not moved (AdamW's decay would move it were its gradient 0)."""
    stepped = {}
    for engine in ("fast", "per_example"):
        model, opt, x, y, w, xm, ym = _setup(opt_name)
        unused = model.unused.weight.detach().clone()
        weights, _ = l2rw_step(model, opt, x, y, xm, ym, engine=engine, lookahead="optimizer")
        w_new, losses = meta_reweight_step(model, opt, x, y, w, xm, ym, 1.0, engine=engine)
        assert torch.equal(model.unused.weight, unused)
        assert model.unused.weight.grad is None
        stepped[engine] = (model.state_dict(), weights, w_new, losses)
    fast, ours = stepped["fast"], stepped["per_example"]
    for name, value in fast[0].items():
        torch.testing.assert_close(ours[0][name], value, **CLOSE, msg=name)
    for a, b in zip(ours[1:], fast[1:], strict=True):
        torch.testing.assert_close(a, b, **CLOSE)


def test_vit_float32_within_1e_5_of_the_reference():
    """Attention, LayerNorm, the class token and position embedding under vmap, in float32."""
    torch.manual_seed(0)
    model = build_model("vit", 10, image_size=8, patch_size=4, dim=16, depth=2, heads=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    x, xm = torch.randn(12, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    y, ym = torch.randint(0, 10, (12,), generator=g), torch.randint(0, 10, (6,), generator=g)
    w = torch.rand(12, generator=g)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    ours = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="per_example")
    ref = meta_reweight_grad(model, opt, x, y, w, xm, ym, engine="reference")
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-5)
    ours = l2rw_weights(model, x, y, xm, ym, engine="per_example", optimizer=opt)
    ref = l2rw_weights(model, x, y, xm, ym, engine="reference", optimizer=opt)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_batchnorm_is_refused_with_what_to_do():
    model, opt, x, y, w, xm, ym = _setup("adam", bn_net())
    with pytest.raises(ConfigError, match="BatchNorm2d.*engine='fast'"):
        meta_reweight_step(model, opt, x, y, w, xm, ym, 1.0, engine="per_example")
    with pytest.raises(ConfigError, match="BatchNorm2d"):
        l2rw_weights(model, x, y, xm, ym, engine="per_example")


def test_dropout_masks_the_per_example_losses_reproducibly():
    """Under dropout the per-example losses are those of masked forwards, and the same seed
    gives the same gradients. (That each example draws its own masks, vmap's
    randomness="different", this test does not tell from one mask shared by all.)"""
    model, opt, x, y, _, xm, ym = _setup("adam")
    model.body.insert(3, nn.Dropout(0.5))
    clean = [F.cross_entropy(model.eval()(x[i : i + 1]), y[i : i + 1]) for i in range(len(x))]
    model.train()
    torch.manual_seed(3)
    losses, grads = per_example_gradients(model, x, y, cross_entropy_per_example)
    torch.manual_seed(3)
    again, grads_again = per_example_gradients(model, x, y, cross_entropy_per_example)
    assert torch.equal(losses, again)
    assert all(torch.equal(grads[n], grads_again[n]) for n in grads)
    assert not torch.allclose(losses, torch.stack(clean).detach())
