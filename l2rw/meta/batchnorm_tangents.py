"""BatchNorm in train mode with a forward-mode derivative in three kernels, for the engines' JVPs.

In train mode y = gamma * xh + beta with xh = (x - mu) * r, where mu and r = (var + eps)^-1/2
are the per-channel mean and inverse standard deviation over the batch (and spatial positions).
Differentiating mu and r as well, the tangent of y along (dx, dgamma, dbeta) is

    dy = J dx + dgamma * xh + dbeta,   J dx = gamma * r * (dx - mean(dx) - xh * mean(dx * xh)).

J, the Jacobian in x, is symmetric (per channel gamma * r * (I - 1 1^T / n - xh xh^T / n)), so
J dx is what BatchNorm's backward kernel returns for the upstream gradient dx, and
dgamma * xh + dbeta is BatchNorm's forward with weight dgamma and bias dbeta. The tangent is
therefore `native_batch_norm_backward`, `native_batch_norm` and one add: three kernels, where
torch's generic forward-mode rule for batch norm dispatches about twenty operations per layer.
In the engines' passes on ResNet-32 those were over a third of the dispatched operations
(`scripts/bench_meta_step.py --count-ops`); on a GPU at these batch sizes each is a kernel launch.

`fused_batchnorm_tangents(model)` routes the model's train-mode BatchNorm layers through
`batch_statistics_norm`. Its output and backward are torch's own kernels; only the tangent's
floating-point rounding differs from the generic rule. Layers that track running statistics
still update them once per forward, as torch's module does, in the same forward kernel.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from l2rw.meta.functional_tangents import save_for_both


class _BatchStatisticsNorm(torch.autograd.Function):
    """Train-mode batch normalisation (batch statistics; running statistics, when given, are
    updated in place): torch's forward and backward kernels, and the three-kernel tangent of the
    module docstring."""

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float,
        eps: float,
    ) -> Any:
        return torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight, *_, eps = inputs
        _, mean, invstd = output
        ctx.eps = eps
        save_for_both(ctx, (x, weight), (mean, invstd))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor | None, *_: Tensor | None) -> tuple:
        x, weight, mean, invstd = ctx.saved_tensors
        if grad_out is None:
            return (None,) * 7
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, weight, None, None, mean, invstd, True, ctx.eps, ctx.needs_input_grad[:3]
        )
        return gx, gw, gb, None, None, None, None

    @staticmethod
    def jvp(
        ctx: Any, dx: Tensor | None, dweight: Tensor | None, dbias: Tensor | None, *_: Any
    ) -> tuple:
        """Called when at least one of x, weight and bias carries a tangent."""
        x, weight, mean, invstd = ctx.saved_tensors
        dy = None
        if dx is not None:
            # The Jacobian in x is self-adjoint, so its product with dx is the backward kernel's.
            dy = torch.ops.aten.native_batch_norm_backward(
                dx, x, weight, None, None, mean, invstd, True, ctx.eps, [True, False, False]
            )[0]
        if dweight is not None or dbias is not None:
            dw = x.new_zeros(x.shape[1]) if dweight is None else dweight
            affine = torch.native_batch_norm(x, dw, dbias, None, None, True, 0.0, ctx.eps)[0]
            dy = affine if dy is None else dy.add_(affine)
        return dy, None, None


def batch_statistics_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    momentum: float = 0.0,
) -> Tensor:
    """F.batch_norm(x, running_mean, running_var, weight, bias, training=True,
    momentum=momentum, eps=eps), with the fused tangent."""
    return _BatchStatisticsNorm.apply(x, weight, bias, running_mean, running_var, momentum, eps)[0]


def _momentum_of_this_batch(module: _BatchNorm) -> float:
    """What `_BatchNorm.forward` does before normalising in train mode when it tracks running
    statistics: count the batch, and give the factor of the running averages' update."""
    if module.num_batches_tracked is None:
        return 0.0 if module.momentum is None else module.momentum
    module.num_batches_tracked.add_(1)
    if module.momentum is None:
        return 1.0 / float(module.num_batches_tracked)
    return module.momentum


def _forward(module: _BatchNorm, x: Tensor) -> Tensor:
    running = ()
    if module.track_running_stats:
        running = (module.running_mean, module.running_var, _momentum_of_this_batch(module))
    return batch_statistics_norm(x, module.weight, module.bias, module.eps, *running)


@contextmanager
def fused_batchnorm_tangents(model: nn.Module) -> Iterator[None]:
    """Inside, the model's BatchNorm layers in train mode normalise with
    `batch_statistics_norm`; those that track running statistics still update them once per
    forward, as `_BatchNorm.forward` would."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    for m in norms:
        m.forward = MethodType(_forward, m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward
