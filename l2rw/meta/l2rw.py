"""Learning to Reweight (Ren et al., ICML 2018), exact and fast.

At epsilon = 0 a vanilla-SGD look-ahead leaves the parameters where they are, so the meta-gradient
of Eq. 6 is -alpha * <grad L_val(theta), grad l_i(theta)> exactly, and the positive factor cancels
in the normalisation of Eq. 9. The fast engine computes all n dot products at once as one
forward-mode JVP of the per-example training losses in the direction grad L_val(theta);
`l2rw_step` shares that dual forward with the real update (`share_forward=True`), which saves a
forward but keeps the dual forward's graph for the backward: about 3x
a plain step's memory (`scripts/bench_meta_step.py --memory`). `share_forward=False` takes the
weights from a dual forward without a graph and runs the real update's forward apart: memory
close to a plain step's, for one forward more. The reference engine builds the
look-ahead model and takes a second-order backward, exactly as Algorithm 1 is written; tests
compare the two. The per-example engine (`l2rw.meta.per_example`) forms the B gradients
grad l_i(theta) once and takes the scores and the real update's gradient from them as
contractions over the batch: fewer matrix products than the JVP (6 forward-equivalents against
8), B x P numbers of memory, and no BatchNorm.

With `optimizer=` the look-ahead is instead one step of the run's own optimizer from its current
state, theta_hat = theta + U(G(eps)) (`l2rw.meta.optimizer_steps`): at eps = 0 the gradient G is 0,
but theta_hat is not theta (momentum, Adam's moments and decoupled weight decay move it), and the
step's Jacobian D = dU/dG, taken at G = 0, is elementwise. Then
d L_val(theta_hat) / d eps_i = < D * grad L_val(theta_hat), grad l_i(theta) >: the meta gradient
is taken at the look-ahead and scaled element by element before the same one JVP at theta.

Meta passes run the model in train mode (batch statistics, as the authors did) without updating
its BatchNorm running statistics (`l2rw.meta.passes`): only the real step updates them. In the
dual forward BatchNorm (`l2rw.meta.batchnorm_tangents`), linear layers, LayerNorm and attention
(`l2rw.meta.functional_tangents`) take fused tangents, computed without a graph.
"""

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.ops import StochasticDepth

from l2rw.meta.optimizer_steps import (
    jvp_direction,
    lookahead,
    lookahead_with_descent,
    optimizer_steps,
)
from l2rw.meta.passes import batch_statistics, dual_pass, math_attention, train_mode
from l2rw.meta.per_example import (
    LossFn,
    dots,
    per_example_gradients,
    set_gradients,
    weighted_sum,
)


def cross_entropy_per_example(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


def normalize_weights(scores: Tensor) -> Tensor:
    """Eq. 9: w = max(s, 0) / (sum + delta(sum)); all zeros when no example helps."""
    rectified = scores.clamp(min=0)
    total = rectified.sum()
    return rectified / (total + (total == 0).to(total.dtype))


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _kernel_decay(params: dict[str, Tensor], weight_decay: float) -> dict[str, Tensor]:
    """weight_decay * theta on conv / linear kernels only (the authors' `_decay()`), else zero."""
    return {
        name: weight_decay * p.detach() if p.ndim > 1 else torch.zeros_like(p)
        for name, p in params.items()
    }


def validation_gradient(
    model: nn.Module,
    x_val: Tensor,
    y_val: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    val_weight_decay: float = 0.0,
) -> dict[str, Tensor]:
    """grad of the mean validation loss at the current parameters, in train mode, with batch
    statistics and no update of the running ones."""
    return _gradient_at(model, _trainable(model), x_val, y_val, loss_fn, val_weight_decay)


def _gradient_at(
    model: nn.Module,
    params: dict[str, Tensor],
    x_val: Tensor,
    y_val: Tensor,
    loss_fn: LossFn,
    val_weight_decay: float,
) -> dict[str, Tensor]:
    """grad of the mean validation loss at `params` (leaves that require grad), plus the
    authors' kernel decay when asked."""
    with batch_statistics(model) as buffers:
        out = functional_call(model, (params, buffers), (x_val,))
        grads = torch.autograd.grad(
            loss_fn(out, y_val).mean(), list(params.values()), materialize_grads=True
        )
    g_val = dict(zip(params, grads, strict=True))
    if val_weight_decay:
        decay = _kernel_decay(params, val_weight_decay)
        g_val = {name: g + decay[name] for name, g in g_val.items()}
    return g_val


def lookahead_direction(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_val: Tensor,
    y_val: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    val_weight_decay: float = 0.0,
) -> dict[str, Tensor]:
    """-D * grad L_val(theta_hat) per trainable parameter, theta_hat one step of `optimizer` at
    G = 0 (zero for a parameter it does not step): the JVP direction whose per-example values
    are -d L_val(theta_hat) / d eps_i."""
    steps = optimizer_steps(model, optimizer)
    params = {name: p.detach() for name, p in _trainable(model).items()}
    zeros = {name: torch.zeros_like(p) for name, p in params.items()}
    stepped, descents = lookahead_with_descent(steps, params, zeros)
    moved = {name: p.requires_grad_() for name, p in {**params, **stepped}.items()}
    g_val = _gradient_at(model, moved, x_val, y_val, loss_fn, val_weight_decay)
    with torch.no_grad():
        return {**zeros, **jvp_direction(descents, g_val)}


def _dual_losses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    g_val: dict[str, Tensor],
    loss_fn: LossFn,
    buffers: dict[str, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Per-example losses and their derivatives along g_val (call inside a dual level)."""
    params = _trainable(model)
    duals = {name: fwAD.make_dual(p, g_val[name]) for name, p in params.items()}
    tensors = duals if buffers is None else (duals, buffers)
    unpacked = fwAD.unpack_dual(loss_fn(functional_call(model, tensors, (x,)), y))
    return unpacked.primal, unpacked.tangent


def _direction(model, optimizer, x_val, y_val, loss_fn, val_weight_decay) -> dict[str, Tensor]:
    """The JVP direction: grad L_val(theta) for the paper's SGD look-ahead (optimizer None;
    its positive factor lr cancels in Eq. 9), else `lookahead_direction`."""
    if optimizer is None:
        return validation_gradient(model, x_val, y_val, loss_fn, val_weight_decay)
    return lookahead_direction(model, optimizer, x_val, y_val, loss_fn, val_weight_decay)


def _fast_scores(model, optimizer, x, y, x_val, y_val, loss_fn, val_weight_decay) -> Tensor:
    g_val = _direction(model, optimizer, x_val, y_val, loss_fn, val_weight_decay)
    with torch.no_grad(), dual_pass(model), batch_statistics(model) as buffers:
        _, scores = _dual_losses(model, x, y, g_val, loss_fn, buffers)
    return scores


def _per_example_scores(model, optimizer, x, y, x_val, y_val, loss_fn, val_weight_decay) -> Tensor:
    g_val = _direction(model, optimizer, x_val, y_val, loss_fn, val_weight_decay)
    _, grads = per_example_gradients(model, x, y, loss_fn)
    return dots(g_val, grads)


def _reference_scores(model, optimizer, x, y, x_val, y_val, loss_fn, val_weight_decay) -> Tensor:
    """-d L_val(theta_hat(eps)) / d eps at eps = 0 through an explicit look-ahead: a step of
    plain SGD (Alg. 1) or a functional copy of `optimizer`'s step."""
    params = _trainable(model)
    eps = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype, requires_grad=True)
    with batch_statistics(model) as buffers, math_attention():
        out = functional_call(model, (params, buffers), (x,))
        weighted = (eps * loss_fn(out, y)).sum()
        grads = torch.autograd.grad(
            weighted, list(params.values()), create_graph=True, materialize_grads=True
        )
        if optimizer is None:
            moved = {name: p - g for (name, p), g in zip(params.items(), grads, strict=True)}
        else:
            steps = optimizer_steps(model, optimizer)
            moved = {**params, **lookahead(steps, params, dict(zip(params, grads, strict=True)))}
        out_val = functional_call(model, (moved, buffers), (x_val,))
        val_loss = loss_fn(out_val, y_val).mean()
        if val_weight_decay:
            kernels = [p for p in moved.values() if p.ndim > 1]
            val_loss = val_loss + 0.5 * val_weight_decay * sum((p * p).sum() for p in kernels)
        (grad_eps,) = torch.autograd.grad(val_loss, eps)
    return -grad_eps


ENGINES = {
    "fast": _fast_scores,
    "reference": _reference_scores,
    "per_example": _per_example_scores,
}
# Where the look-ahead goes: the paper's plain-SGD step, or one step of the run's optimizer.
LOOKAHEADS = ("sgd", "optimizer")


def l2rw_weights(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
    val_weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> Tensor:
    """Per-example L2RW weights (Eq. 7-9) for the model's current parameters.

    `loss_fn(outputs, targets)` must return one loss per example. With `optimizer`, the
    look-ahead is one step of it from its current state (see the module docstring); without,
    the paper's plain-SGD step. Model and optimizer are left untouched: parameters, `.grad`,
    BatchNorm running statistics, train/eval mode and optimizer state.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {sorted(ENGINES)}, got {engine!r}")
    with train_mode(model):
        scores = ENGINES[engine](model, optimizer, x, y, x_val, y_val, loss_fn, val_weight_decay)
    return normalize_weights(scores.detach())


def _has_active_dropout(model: nn.Module) -> bool:
    """Whether a forward draws random masks: dropout, or torchvision's stochastic depth
    (EfficientNet, ConvNeXt, Swin drop whole residual branches)."""
    dropouts = (
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        StochasticDepth,
    )
    return any(isinstance(m, dropouts) and m.p > 0 for m in model.modules())


def l2rw_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
    val_weight_decay: float = 0.0,
    lookahead: str = "sgd",
    share_forward: bool = True,
) -> tuple[Tensor, Tensor]:
    """One L2RW training step: weights, weighted loss sum_i w_i l_i, optimizer step.

    `lookahead`: "sgd", the paper's plain-SGD look-ahead, or "optimizer", one step of
    `optimizer` from its current state. Returns (weights, per-example losses). With the fast
    engine, `share_forward` and no active dropout, the dual forward that yields the weights is
    also the forward of the real update (fastest; its graph holds primal and tangent
    activations). Otherwise, and with dropout (the meta pass then draws its own masks, as the
    authors' code does), the real update runs its own forward. The per-example engine takes the
    weights and the update's gradient from the same per-example gradients (same masks).
    """
    if lookahead not in LOOKAHEADS:
        raise ValueError(f"lookahead must be one of {list(LOOKAHEADS)}, got {lookahead!r}")
    stepped = optimizer if lookahead == "optimizer" else None
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if engine == "per_example":
        g_val = _direction(model, stepped, x_val, y_val, loss_fn, val_weight_decay)
        losses, grads = per_example_gradients(model, x, y, loss_fn)
        weights = normalize_weights(dots(g_val, grads))
        set_gradients(model, weighted_sum(weights, grads))
        optimizer.step()
        return weights, losses.detach()
    if engine == "fast" and share_forward and not _has_active_dropout(model):
        g_val = _direction(model, stepped, x_val, y_val, loss_fn, val_weight_decay)
        with dual_pass(model):
            losses, scores = _dual_losses(model, x, y, g_val, loss_fn, buffers=None)
        weights = normalize_weights(scores.detach())
    else:
        weights = l2rw_weights(
            model,
            x,
            y,
            x_val,
            y_val,
            loss_fn,
            engine=engine,
            val_weight_decay=val_weight_decay,
            optimizer=stepped,
        )
        losses = loss_fn(model(x), y)
    (weights * losses).sum().backward()
    optimizer.step()
    return weights, losses.detach()
