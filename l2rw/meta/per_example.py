"""Per-example gradients: the engines' third way to the same weights (`engine="per_example"`).

L2RW's scores and the persistent-weight engine's weight gradient are scaled dot products
<d, grad l_i(theta)>, one per example (`l2rw.meta.l2rw`, `l2rw.meta.meta_reweight`). The fast
engine gets all B of them from one forward-mode JVP: a dual forward, which on top of the primal
forward costs two more matrix products of the same size per linear layer, and the real update's
backward through it. Counting forward-equivalents F of the training batch (matrix products
dominate), the L2RW step is then 3F (the meta batch's forward and backward at the look-ahead)
+ 3F (dual forward) + 2F (backward) = 8F, against a plain step's 3F.

Here the B gradients grad l_i(theta) are formed once instead, by one forward and backward
vectorised over the batch (`torch.func.vmap` of `torch.func.grad`; the per-example weight
gradients are batched products of the same size as the summed one): 3F. Then every quantity
the engines need is a contraction over the batch, with no further pass over the model: the
scores <d, g_i>, the real update's gradient sum_i w_i g_i, and for the persistent-weight engine
the look-ahead's gradient (1/B) sum_i w_i g_i. An L2RW or persistent-weight step is 3F + 3F =
6F. The price is memory, B x P numbers for P parameters (the benchmark's ViT, 139,018 parameters
at batch 100: 56 MB in float32), so this engine suits small and medium models with large batch
costs per parameter, transformers especially; it is exact, and tests compare it with the
reference engines.

It assumes that examples do not interact in the forward, so that example i's gradient in the
batch is its gradient alone: a model with BatchNorm is refused (`check_separable`). Dropout draws
each example's masks on its own (`randomness="different"`), the same masks for the scores and
for the update; in distribution the masks of a batched forward, not the same draws. Attention
runs as `l2rw.meta.functional_tangents`' batched products (softmax(Q K^T) V and its textbook
backward) where it has no mask and no dropout, else on torch's math path: torch's fused kernels
have no batching rule, and vmap would run them one example at a time.

A parameter the loss does not reach keeps no gradient (None), as after a backward, so the
optimizer skips it in the look-ahead and the step alike; which parameters the loss reaches is
read from the autograd graph of one example's forward.
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from l2rw.errors import ConfigError
from l2rw.meta.functional_tangents import fused_functional_tangents
from l2rw.meta.passes import batch_statistics, math_attention

LossFn = Callable[[Tensor, Tensor], Tensor]


def check_separable(model: nn.Module) -> None:
    """Refuse a model whose examples interact in the forward (BatchNorm), with what to do."""
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)})
    if norms:
        raise ConfigError(
            f"engine='per_example' needs a model whose examples do not interact in the forward, "
            f"and this one has {', '.join(norms)}: its batch statistics couple the examples, so "
            f"an example's gradient alone is not its gradient in the batch. Use engine='fast' "
            f"(exact with BatchNorm), or a model with LayerNorm or no normalisation."
        )


def _reached(
    model: nn.Module,
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
) -> set[str]:
    """The names of the parameters one example's loss depends on: the leaves its autograd graph
    accumulates into (a forward, no backward)."""
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    names = {id(leaf): name for name, leaf in leaves.items()}
    loss = loss_fn(functional_call(model, (leaves, buffers), (x[:1],)), y[:1]).sum()
    reached, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)
        if leaf is not None and id(leaf) in names:
            reached.add(names[id(leaf)])
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


def per_example_gradients(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
) -> tuple[Tensor, dict[str, Tensor]]:
    """The per-example losses l_i (B,) and gradients grad l_i(theta) ({name: (B, *shape)}) of
    the trainable parameters the loss reaches, in the model's current mode, updating no buffer."""
    check_separable(model)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    with (
        batch_statistics(model) as buffers,
        fused_functional_tangents(("scaled_dot_product_attention",)),
        math_attention(),
    ):
        reached = _reached(model, params, buffers, x, y, loss_fn)
        used = {name: p for name, p in params.items() if name in reached}
        fixed = {name: p for name, p in params.items() if name not in reached}

        def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            out = functional_call(model, ({**p, **fixed}, buffers), (xi.unsqueeze(0),))
            return loss_fn(out, yi.unsqueeze(0)).squeeze(0)

        per_example = vmap(grad_and_value(loss), in_dims=(None, 0, 0), randomness="different")
        grads, losses = per_example(used, x, y)
    return losses, grads


def dots(direction: dict[str, Tensor], grads: dict[str, Tensor]) -> Tensor:
    """<direction, g_i> for every example i, over the parameters in `grads` (a parameter the
    loss does not reach has gradient 0)."""
    total = None
    for name, g in grads.items():
        term = g.flatten(1) @ direction[name].flatten()
        total = term if total is None else total + term
    return total


def weighted_sum(weights: Tensor, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """sum_i weights_i g_i for every parameter in `grads`."""
    return {name: torch.tensordot(weights.to(g.dtype), g, dims=1) for name, g in grads.items()}


def set_gradients(model: nn.Module, grads: dict[str, Tensor]) -> None:
    """`.grad` of each trainable parameter: its entry of `grads`, or None where it has none
    (as a backward leaves a parameter the loss does not reach)."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.grad = grads[name].detach() if name in grads else None
