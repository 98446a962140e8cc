"""Linear layers, LayerNorm and attention with fused forward-mode derivatives, for the engines'
JVPs.

torch's generic forward-mode rules make a transformer's dual forward slow in two ways. Their
tangents are compositions of small operations: LayerNorm's about fifteen, and attention, whose
fused kernels have no forward-mode rule, runs on its math path through `_safe_softmax`, whose
tangent is a decomposition of about ten operations over the T x T scores. And when the dual
forward runs with a graph (the fast L2RW step shares it with the real update), autograd records
every tangent operation that touches a parameter, and keeps what they save until the backward.
Here each of the three is a `torch.autograd.Function` whose forward and backward are torch's own
kernels (attention: the textbook backward) and whose `jvp`, which autograd runs without a
graph, is:

- linear, y = x W^T + b: dy = (dx W^T + db) + x dW^T, torch's own rule and rounding;
- LayerNorm, y = gamma * xh + beta with xh = (x - mu) * r over the normalised dimensions:
  dy = gamma * (J dx) + (dgamma * xh + dbeta), J dx = r * (dx - mean(dx) - xh * mean(dx * xh)).
  J is symmetric, so J dx is LayerNorm's backward kernel without weight applied to dx, and the
  bracket is LayerNorm's forward kernel with weight dgamma and bias dbeta;
- attention, S = scale * Q K^T, P = softmax(S) row-wise, O = P V:
  dS = scale * (dQ K^T + Q dK^T), dP = P * (dS - rowsum(P * dS)), dO = dP V + P dV, and with
  E = P * dS, dP V = E V - rowsum(E) * O: four matrix products and three elementwise passes,
  without forming dP. Its backward: dS = scale * P * (dO V^T - rowsum(dO * O)).

`fused_functional_tangents()` makes `torch.nn.functional`'s `linear`, `layer_norm` and
`scaled_dot_product_attention` these for its duration (`nn.Linear`, `nn.LayerNorm` and
`nn.MultiheadAttention`, hence `nn.TransformerEncoderLayer`, call them there). Calls outside
their common case keep torch's own functions: a 1-D weight, masked, causal, dropout or
grouped-query attention. A model that imported one of these functions by name before, or calls
`torch._C._nn` directly, keeps torch's too, which is correct, only slower. The replacement is
process-wide while it lasts: meta passes are not meant to run concurrently with other forwards
in other threads.

Rounding: the linear layer's forward, backward and tangent compute torch's bits, so a model
whose fused layers are only linear ones (LeNet, the MLPs; BatchNorm's tangent has its own
module) trains bit for bit as with torch's rules (tests). Attention's forward is the explicit
softmax(S) V, which it needs P of, and rounds differently from torch's fused kernels; with
LayerNorm's tangent, a transformer's fast L2RW trajectory moves at the rounding level against
torch's generic rules. The effect on speed and memory: `results/bench_optimizer_meta_step_cpu.md`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor

_torch_linear = F.linear
_torch_attention = F.scaled_dot_product_attention


def save_for_both(ctx: Any, inputs: tuple, statistics: tuple = ()) -> None:
    """Save the primals of a Function's `inputs` (None stays None) and the `statistics` its
    forward also returned for both its backward and its jvp; the statistics get no gradient.
    Primals only: a saved dual keeps its tangent, and the backward would then also compute the
    tangent of its own result."""
    saved = [None if t is None else fwAD.unpack_dual(t).primal for t in inputs]
    ctx.save_for_backward(*saved, *statistics)
    ctx.save_for_forward(*saved, *statistics)
    if statistics:
        ctx.mark_non_differentiable(*statistics)
    ctx.set_materialize_grads(False)


def _as_matrix(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1])


class _Linear(torch.autograd.Function):
    """y = x W^T + b (W two-dimensional), with the tangent of the module docstring."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _torch_linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias = inputs
        ctx.has_bias = bias is not None
        save_for_both(ctx, (x, weight))

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None) -> tuple:
        if grad_y is None:
            return None, None, None
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_matrix = _as_matrix(grad_y)
        grad_x = grad_y @ weight if need_x else None
        grad_weight = grad_matrix.t() @ _as_matrix(x) if need_weight else None
        grad_bias = grad_matrix.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dweight: Tensor | None, dbias: Tensor | None) -> Tensor:
        """Called when at least one of x, weight and bias carries a tangent."""
        x, weight = ctx.saved_tensors
        # (dx W^T + db) + x dW^T: torch's rule for addmm, in its order (rounding included, so
        # that a model whose tangents had no graph before computes the same bits).
        dy = None if dx is None else _as_matrix(dx) @ weight.t()
        if dbias is not None:
            dy = (
                dbias.expand(x.numel() // x.shape[-1], -1).clone() if dy is None else dy.add_(dbias)
            )
        if dweight is not None:
            x_dweight = _as_matrix(x) @ dweight.t()
            dy = x_dweight if dy is None else dy.add_(x_dweight)
        return dy.view(*x.shape[:-1], weight.shape[0])


class _LayerNorm(torch.autograd.Function):
    """LayerNorm over the trailing `shape` dimensions: torch's forward and backward kernels,
    and the tangent of the module docstring."""

    @staticmethod
    def forward(
        x: Tensor, shape: list[int], weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Any:
        return torch.native_layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, shape, weight, bias, eps = inputs
        _, mean, rstd = output
        ctx.shape, ctx.eps = shape, eps
        save_for_both(ctx, (x, weight, bias), (mean, rstd))

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None, *_: Tensor | None) -> tuple:
        if grad_y is None:
            return (None,) * 5
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, _, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_layer_norm_backward(
            grad_y, x, ctx.shape, mean, rstd, weight, bias, [need_x, need_weight, need_bias]
        )
        return grad_x, None, grad_weight, grad_bias, None

    @staticmethod
    def jvp(
        ctx: Any, dx: Tensor | None, _: Any, dweight: Tensor | None, dbias: Tensor | None, *__: Any
    ) -> tuple:
        """Called when at least one of x, weight and bias carries a tangent."""
        x, weight, _, mean, rstd = ctx.saved_tensors
        dy = None
        if dx is not None:
            # The Jacobian of xh in x is self-adjoint: its product with dx is the backward's.
            dy = torch.ops.aten.native_layer_norm_backward(
                dx, x, ctx.shape, mean, rstd, None, None, [True, False, False]
            )[0]
            if weight is not None:
                dy.mul_(weight)
        if dweight is not None:
            affine = torch.native_layer_norm(x, ctx.shape, dweight, dbias, ctx.eps)[0]
            dy = affine if dy is None else dy.add_(affine)
        elif dbias is not None:
            dy = dbias.expand_as(x).clone() if dy is None else dy.add_(dbias)
        return dy, None, None


class _Attention(torch.autograd.Function):
    """O = softmax(scale * Q K^T) V, with the tangent and backward of the module docstring.
    Batched products only, so `torch.func.vmap` runs it as it is (`l2rw.meta.per_example`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Any:
        p = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
        return p @ v, p

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        *qkv, scale = inputs
        o, p = output
        ctx.scale = scale
        save_for_both(ctx, (*qkv, o), (p,))

    @staticmethod
    def backward(ctx: Any, grad_o: Tensor | None, _: Tensor | None) -> tuple:
        if grad_o is None:
            return None, None, None, None
        q, k, v, o, p = ctx.saved_tensors
        grad_v = p.transpose(-2, -1) @ grad_o
        grad_s = p * (grad_o @ v.transpose(-2, -1) - (grad_o * o).sum(-1, keepdim=True))
        grad_s.mul_(ctx.scale)
        return grad_s @ k, grad_s.transpose(-2, -1) @ q, grad_v, None

    @staticmethod
    def jvp(ctx: Any, dq: Tensor | None, dk: Tensor | None, dv: Tensor | None, _: Any) -> tuple:
        """Called when at least one of q, k and v carries a tangent."""
        q, k, v, o, p = ctx.saved_tensors
        ds = None if dq is None else dq @ k.transpose(-2, -1)
        if dk is not None:
            q_dk = q @ dk.transpose(-2, -1)
            ds = q_dk if ds is None else ds.add_(q_dk)
        do = None
        if ds is not None:
            e = ds.mul_(p).mul_(ctx.scale)
            do = (e @ v).sub_(e.sum(-1, keepdim=True) * o)
        if dv is not None:
            p_dv = p @ dv
            do = p_dv if do is None else do.add_(p_dv)
        return do, None


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear`, with the fused tangent for a two-dimensional weight."""
    if weight.ndim != 2 or input.ndim == 0:
        return _torch_linear(input, weight, bias)
    return _Linear.apply(input, weight, bias)


def layer_norm(
    input: Tensor,
    normalized_shape: list[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """`F.layer_norm`, with the fused tangent."""
    return _LayerNorm.apply(input, list(normalized_shape), weight, bias, eps)[0]


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """`F.scaled_dot_product_attention`, with the fused tangent where there is no mask, no
    dropout and as many key as query heads; otherwise torch's own."""
    if attn_mask is not None or dropout_p or is_causal or enable_gqa:
        return _torch_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return _Attention.apply(query, key, value, scale)[0]


# torch.nn.functional's name -> the function with the fused tangent.
FUSED = {
    "linear": linear,
    "layer_norm": layer_norm,
    "scaled_dot_product_attention": scaled_dot_product_attention,
}


@contextmanager
def fused_functional_tangents(names: tuple[str, ...] | None = None) -> Iterator[None]:
    """Inside, `torch.nn.functional`'s functions `names` (default: all of `FUSED`) are this
    module's."""
    names = tuple(FUSED) if names is None else names
    outer = {name: getattr(F, name) for name in names}
    for name in names:
        setattr(F, name, FUSED[name])
    try:
        yield
    finally:
        for name, function in outer.items():
            setattr(F, name, function)
