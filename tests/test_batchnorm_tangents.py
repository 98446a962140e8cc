"""The fused BatchNorm tangent against torch's generic forward-mode derivative of F.batch_norm."""

import pytest
import torch
import torch.nn.functional as F
from nets import DEVICES, bn_net, dual_jvp
from torch import nn

from l2rw.meta.batchnorm_tangents import batch_statistics_norm, fused_batchnorm_tangents
from l2rw.meta.passes import batch_statistics

EPS = 1e-5
SHAPES = [(8, 3, 5, 5), (16, 4), (6, 3, 7)]
# Which of (x, weight, bias) carry a tangent.
TANGENTS = [(1, 1, 1), (1, 0, 0), (0, 1, 1), (1, 1, 0), (0, 0, 1)]


def _torch_batch_norm(x, weight, bias):
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=EPS)


def _inputs(shape, affine, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(shape, generator=gen, dtype=torch.float64) + 1
    c = shape[1]
    weight = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5 if affine else None
    bias = torch.randn(c, generator=gen, dtype=torch.float64) if affine else None
    return tuple(None if t is None else t.to(device) for t in (x, weight, bias))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", TANGENTS)
def test_tangent_and_output_equal_torchs_forward_mode(shape, which, device):
    primals = _inputs(shape, affine=True, device=device)
    tangents = [torch.randn_like(p) if on else None for p, on in zip(primals, which, strict=True)]
    want_out, want_tangent = dual_jvp(_torch_batch_norm, primals, tangents)
    out, tangent = dual_jvp(lambda *a: batch_statistics_norm(*a, EPS), primals, tangents)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)  # cuDNN on a GPU
    torch.testing.assert_close(tangent, want_tangent, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_without_affine_parameters(shape):
    x, _, _ = _inputs(shape, affine=False)
    dx = torch.randn_like(x)
    _, want = dual_jvp(_torch_batch_norm, (x, None, None), (dx, None, None))
    _, got = dual_jvp(lambda *a: batch_statistics_norm(*a, EPS), (x, None, None), (dx, None, None))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_equals_torchs(shape, device):
    primals = [p.requires_grad_() for p in _inputs(shape, affine=True, device=device)]
    upstream = torch.randn(shape, dtype=torch.float64, device=device)
    want = torch.autograd.grad((_torch_batch_norm(*primals) * upstream).sum(), primals)
    got = torch.autograd.grad((batch_statistics_norm(*primals, EPS) * upstream).sum(), primals)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _forward_and_grads(net, x, fused):
    net.zero_grad(set_to_none=True)
    if fused:
        with fused_batchnorm_tangents(net):
            assert "forward" in vars(net.bn)
            out = net(x)
    else:
        out = net(x)
    out.square().sum().backward()
    return out.detach(), [p.grad for p in net.parameters()]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_a_tracking_layer_gives_torchs_output_gradients_and_running_statistics(momentum):
    """Routed in train mode, a layer that tracks running statistics updates them once per
    forward, exactly as without the context (momentum None: the cumulative average)."""
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    nets = [bn_net().train(), bn_net().train()]
    for net in nets:
        net.bn.momentum = momentum
    for _ in range(2):
        want, want_grads = _forward_and_grads(nets[0], x, fused=False)
        got, got_grads = _forward_and_grads(nets[1], x, fused=True)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    for name, buffer in nets[0].bn.named_buffers():
        torch.testing.assert_close(dict(nets[1].bn.named_buffers())[name], buffer)
    assert nets[1].bn.num_batches_tracked.item() == 2
    assert "forward" not in vars(nets[1].bn)


def test_inside_batch_statistics_nothing_is_updated_and_an_error_restores_the_layers():
    net = bn_net().train()
    before = {n: b.clone() for n, b in net.named_buffers()}
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    with batch_statistics(net):
        want = net(x)
        with fused_batchnorm_tangents(net):
            got = net(x)
        with pytest.raises(RuntimeError), fused_batchnorm_tangents(net):
            raise RuntimeError
    assert "forward" not in vars(net.bn)
    torch.testing.assert_close(got, want)
    for n, b in net.named_buffers():
        assert torch.equal(b, before[n])


def test_eval_mode_layers_are_left_alone():
    for bn in (nn.BatchNorm1d(3).eval(), nn.BatchNorm1d(3, track_running_stats=False).eval()):
        with fused_batchnorm_tangents(bn):
            assert "forward" not in vars(bn)
