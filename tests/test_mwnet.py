"""Meta-Weight-Net (Shu et al. 2019): the fast phi-gradient (meta re-weighting's exact weight
gradient pulled back through V) equals a second-order reference and finite differences, the
meta pass leaves model, optimizer and V untouched, a step is Adam on phi then weighted SGD, and
the runner trains with it, resumes it, and lets a selector choose its meta set."""

import copy

import pytest
import torch
import torch.nn.functional as F
from launches import capture_info, phase_launches
from nets import bn_net, lenet
from test_selection_pipeline import toy

import l2rw.methods.phase_store as phase_store
from l2rw.methods.mwnet import WeightNet, mwnet_grad, mwnet_step
from l2rw.train import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = {"lenet": (lambda: lenet(10), (1, 28, 28), 10), "bn_cnn": (bn_net, (1, 8, 8), 3)}


def _ce(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def _setup(model_name, dtype=torch.float64, prior=2):
    """Model, an SGD optimizer with momentum and two groups at different rates after `prior`
    steps (its look-ahead must still be plain SGD), a weight net, a batch and a meta batch."""
    make, shape, k = MODELS[model_name]
    model = make().to(dtype).train()
    params = list(model.parameters())
    half = len(params) // 2
    opt = torch.optim.SGD(
        [
            dict(params=params[:half], lr=0.1, momentum=0.9, weight_decay=1e-3),
            dict(params=params[half:], lr=0.03, momentum=0.9),
        ]
    )
    g = torch.Generator().manual_seed(1)
    for _ in range(prior):
        opt.zero_grad()
        xp = torch.randn(8, *shape, generator=g, dtype=dtype)
        F.cross_entropy(model(xp), torch.randint(0, k, (8,), generator=g)).backward()
        opt.step()
    torch.manual_seed(3)
    net = WeightNet(16).to(dtype)
    x = torch.randn(8, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, k, (8,), generator=g)
    xm = torch.randn(5, *shape, generator=g, dtype=dtype)
    ym = torch.randint(0, k, (5,), generator=g)
    return model, opt, net, x, y, xm, ym


def _meta_loss(model, opt, net, x, y, xm, ym):
    """L_meta after MW-Net's look-ahead, computed independently: a fresh plain SGD optimizer at
    each group's rate steps a copy of the model on mean(V(l) * l), V's input detached."""
    model_hat = copy.deepcopy(model).train()
    params = dict(model_hat.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        dict(params=[params[names[id(p)]] for p in g["params"]], lr=g["lr"])
        for g in opt.param_groups
    ]
    sgd = torch.optim.SGD(groups)
    losses = _ce(model_hat(x), y)
    with torch.no_grad():
        w = net(losses.detach())
    (w * losses).mean().backward()
    sgd.step()
    with torch.no_grad():
        return F.cross_entropy(model_hat(xm), ym)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_equals_second_order_reference(model_name):
    model, opt, net, x, y, xm, ym = _setup(model_name)
    fast = mwnet_grad(model, opt, net, x, y, xm, ym, engine="fast")
    ref = mwnet_grad(model, opt, net, x, y, xm, ym, engine="reference")
    assert any(float(r.abs().max()) > 1e-8 for r in ref)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_equals_reference_in_float32(model_name):
    model, opt, net, x, y, xm, ym = _setup(model_name, dtype=torch.float32)
    fast = mwnet_grad(model, opt, net, x, y, xm, ym, engine="fast")
    ref = mwnet_grad(model, opt, net, x, y, xm, ym, engine="reference")
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_equals_finite_differences(model_name):
    model, opt, net, x, y, xm, ym = _setup(model_name)
    grads = mwnet_grad(model, opt, net, x, y, xm, ym)
    gen = torch.Generator().manual_seed(7)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in net.parameters()]
    eps = 1e-6

    def at(t):
        moved = copy.deepcopy(net)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), direction, strict=True):
                p.add_(t * d)
        return _meta_loss(model, opt, moved, x, y, xm, ym)

    numeric = (at(eps) - at(-eps)) / (2 * eps)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True))
    assert abs(float(analytic)) > 1e-6
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_meta_pass_leaves_model_optimizer_and_net_untouched(engine):
    model, opt, net, x, y, xm, ym = _setup("bn_cnn")
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = copy.deepcopy((model.state_dict(), opt.state_dict(), net.state_dict()))
    grads_before = [p.grad.clone() for p in model.parameters()]
    model.eval()
    mwnet_grad(model, opt, net, x, y, xm, ym, engine=engine)
    assert not model.training
    after = (model.state_dict(), opt.state_dict(), net.state_dict())
    for old, new in zip(before[0].values(), after[0].values(), strict=True):
        assert torch.equal(old, new)
    assert before[1]["param_groups"] == after[1]["param_groups"]
    buffers = [
        (a["momentum_buffer"], b["momentum_buffer"])
        for a, b in zip(before[1]["state"].values(), after[1]["state"].values(), strict=True)
    ]
    assert buffers and all(torch.equal(a, b) for a, b in buffers)
    for old, new in zip(before[2].values(), after[2].values(), strict=True):
        assert torch.equal(old, new)
    assert all(p.grad is None for p in net.parameters())
    for g, p in zip(grads_before, model.parameters(), strict=True):
        assert torch.equal(g, p.grad)


def test_step_is_adam_on_phi_then_sgd_on_the_new_weights():
    model, opt, net, x, y, xm, ym = _setup("bn_cnn")
    net_opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    ref_model, ref_opt, ref_net = copy.deepcopy((model, opt, net))
    ref_net_opt = torch.optim.Adam(ref_net.parameters(), lr=1e-3, weight_decay=1e-4)

    w, losses = mwnet_step(model, opt, net, net_opt, x, y, xm, ym)

    grads = mwnet_grad(ref_model, ref_opt, ref_net, x, y, xm, ym, engine="reference")
    for p, g in zip(ref_net.parameters(), grads, strict=True):
        p.grad = g
    ref_net_opt.step()
    ref_losses = _ce(ref_model(x), y)
    with torch.no_grad():
        ref_w = ref_net(ref_losses.detach())
    ref_opt.zero_grad()
    (ref_w * ref_losses).mean().backward()
    ref_opt.step()
    torch.testing.assert_close(w, ref_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(losses, ref_losses.detach())
    assert float(w.min()) > 0 and float(w.max()) < 1
    for a, b in zip(net.parameters(), ref_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # Running statistics are updated once, by the real step (as a plain forward does).
    assert torch.equal(model.bn.running_mean, ref_model.bn.running_mean)


class Interrupted(Exception):
    pass


def test_runner_trains_and_resumes_mwnet_with_its_net_and_adam_state(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    overrides = ("method=mwnet", "dataset.clean_size=20", "device=cpu")
    straight = run(tiny_cfg(*overrides), tmp_path / "straight")
    assert straight.status == "completed", straight.error
    real_save = phase_store.save_checkpoint
    saved = {}

    def die_after_first(folder, name, state, *identity):
        real_save(folder, name, state, *identity)
        saved["rule"] = state["rule"]
        raise Interrupted

    monkeypatch.setattr(phase_store, "save_checkpoint", die_after_first)
    with pytest.raises(Interrupted):
        run(tiny_cfg(*overrides), tmp_path / "resumed")
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)
    # V and its Adam moments (4 steps taken) are in the checkpoint.
    adam = saved["rule"]["optimizer"]["state"]
    assert adam and all(float(s["step"]) == 4 for s in adam.values())
    capture_info(caplog)
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    assert phase_launches(caplog.text) == [("train", 4, 8, 12)]
    assert resumed.metrics == straight.metrics
    log = (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert log == (tmp_path / "straight" / "metrics.jsonl").read_text()


def test_a_selector_chooses_the_meta_set_of_mwnet(tiny_cfg, tmp_path):
    cfg = toy(tiny_cfg, tmp_path, "method=mwnet", "selector=rbc")
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    sel = record.selection
    assert [r["round"] for r in sel["rounds"]] == [0, 1]
    assert len(sel["meta_indices"]) == 6 and set(sel["warmup_indices"]) < set(sel["meta_indices"])
    assert record.metrics["test_acc"] == sel["rounds"][1]["test_acc_es"]
