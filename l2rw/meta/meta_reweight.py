"""Persistent-weight meta re-weighting (Wu et al., AAAI 2023, Eq. 2-4), exact and fast.

Each training example j keeps a weight w_j in [0, 1] across iterations. One step on a batch of
B examples: a look-ahead theta_hat(w) = one step of the real optimizer on
L_tr(theta; w) = (1/B) sum_i w_i l_i(theta) (Eq. 2); g = d L_meta(theta_hat(w)) / d w with L_meta
the mean loss of a clean meta batch; w <- clamp(w - meta_lr * g) (Eq. 3); then the real step on
L_tr(theta; w_new) (Eq. 4).

Derivation. Every supported optimizer (torch.optim.SGD with momentum / Nesterov / weight
decay, Adam, AdamW, RMSprop, Adagrad) updates each parameter element by element from its current
state: theta_hat = theta + U(G), G = grad L_tr(theta; w), and dG / dw_i = grad l_i(theta) / B.
With D = dU/dG, diagonal (one number per parameter element, taken at the actual G; for SGD one
number per group, since U is affine in G), the chain rule gives the weight gradient exactly (no
Taylor approximation) as a scaled dot product:
    g_i = (1/B) * < D * grad L_meta(theta_hat), grad l_i(theta) >,
where the meta gradient is taken at the look-ahead but the per-example gradients at theta, in
the batch context (BatchNorm couples the examples). `l2rw.meta.optimizer_steps` derives U and D
for each optimizer (SGD: D = -lr * c with c from momentum, Nesterov and dampening; Adam's D
depends on G through its second moment, which is not 0 here since w is not). The fast engine
computes theta_hat from one backward of L_tr(theta; w_old), the meta gradient from one backward
at theta_hat, and all B dot products at once as one forward-mode JVP of the per-example losses
in the direction -D * grad L_meta(theta_hat) (per element, so param groups and per-parameter
state may differ). `meta_reweight_step` also reuses the graph of its one forward on x, which
gives the look-ahead gradient, for the real update: one forward and two backwards on x, a
forward and backward on the meta batch, and the JVP (about three forwards). The reference engine
differentiates through a functional copy of the optimizer's step with a second-order backward,
as the method is written; tests compare the two, and each functional copy with the optimizer's
own `step()`. The per-example engine (`l2rw.meta.per_example`) forms the B gradients
grad l_i(theta) once and takes the look-ahead's gradient, the B dot products and the real
update's gradient from them as contractions over the batch: a forward and backward on x and one
on the meta batch, no JVP and no second backward; B x P numbers of memory, and no BatchNorm.

The model runs in train mode. The look-ahead passes use batch statistics and update no running
statistics (`l2rw.meta.passes`), so those are only updated by the real step's forward. In the
JVP, BatchNorm's tangent takes three kernels (`l2rw.meta.batchnorm_tangents`). The
look-ahead and the JVP's direction are computed with multi-tensor (`torch._foreach_*`)
operations per optimizer group: on a GPU, where these steps are bound by kernel launches, the
number of dispatched operations sets their cost (`scripts/bench_meta_step.py --count-ops`).

Randomness (dropout): the one set of masks drawn on the training batch is used for the
look-ahead gradient, for the per-example gradients of g (the JVP pass replays the RNG state of
that forward) and for the real update; the meta batch draws its own. Both engines draw alike,
so they agree under dropout too. The authors' code draws fresh masks for the real update.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from l2rw.meta.l2rw import LossFn, cross_entropy_per_example
from l2rw.meta.optimizer_steps import (
    OptimizerStep,
    jvp_direction,
    lookahead,
    lookahead_with_descent,
    optimizer_steps,
)
from l2rw.meta.passes import batch_statistics, dual_pass, math_attention, train_mode
from l2rw.meta.per_example import dots, per_example_gradients, set_gradients, weighted_sum


def _gradients(
    loss: Tensor, rules: list[OptimizerStep], params: dict[str, Tensor], **grad_options: bool
) -> dict[str, Tensor]:
    """d loss / d theta for each stepped parameter that `loss` depends on."""
    names = [n for rule in rules for n in rule.names]
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True, **grad_options)
    return {n: g for n, g in zip(names, grads, strict=True) if g is not None}


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def _replaying(state: tuple[Tensor, Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the body from an earlier RNG state (same dropout masks), then carry on as before."""
    current = _rng_state(device)
    _set_rng_state(state, device)
    try:
        yield
    finally:
        _set_rng_state(current, device)


def _lookahead_direction(
    model: nn.Module,
    rules: list[OptimizerStep],
    params: dict[str, Tensor],
    used: dict[str, Tensor],
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn,
    buffers: dict[str, Tensor],
) -> dict[str, Tensor]:
    """-D * grad L_meta(theta_hat) for each stepped parameter, theta_hat the optimizer's step
    on the look-ahead gradient `used`."""
    with torch.no_grad():
        moved, descents = lookahead_with_descent(rules, params, used)
        moved = {n: p.requires_grad_() for n, p in moved.items()}
    out_meta = functional_call(model, (moved, buffers), (x_meta,))
    meta_grads = torch.autograd.grad(
        loss_fn(out_meta, y_meta).mean(), list(moved.values()), materialize_grads=True
    )
    with torch.no_grad():
        return jvp_direction(descents, dict(zip(moved, meta_grads, strict=True)))


def _fast_grad(
    model: nn.Module,
    rules: list[OptimizerStep],
    x: Tensor,
    y: Tensor,
    w: Tensor,
    losses: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn,
    rng: tuple[Tensor, Tensor | None],
) -> Tensor:
    """g from the per-example losses at theta (with their graph, drawn from RNG state `rng`).

    The graph of `losses` is kept, so that the real update can reuse it."""
    params = dict(model.named_parameters())
    used = _gradients((w * losses).mean(), rules, params, retain_graph=True)
    with batch_statistics(model) as buffers:
        tangents = _lookahead_direction(
            model, rules, params, used, x_meta, y_meta, loss_fn, buffers
        )
        with torch.no_grad(), dual_pass(model), _replaying(rng, x.device):
            duals = {n: fwAD.make_dual(params[n], t) for n, t in tangents.items()}
            out = functional_call(model, (duals, buffers), (x,))
            jvp = fwAD.unpack_dual(loss_fn(out, y)).tangent
    return -jvp / x.shape[0]


def _per_example_grad(
    model: nn.Module,
    rules: list[OptimizerStep],
    grads: dict[str, Tensor],
    w: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn,
) -> Tensor:
    """g from the per-example gradients `grads` at theta: the look-ahead's gradient and the
    dot products are contractions over the batch (`l2rw.meta.per_example`)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    stepped = {n for rule in rules for n in rule.names}
    batch = w.shape[0]
    used = weighted_sum(w / batch, {n: g for n, g in grads.items() if n in stepped})
    with batch_statistics(model) as buffers:
        tangents = _lookahead_direction(
            model, rules, params, used, x_meta, y_meta, loss_fn, buffers
        )
    return -dots(tangents, {n: g for n, g in grads.items() if n in tangents}) / batch


def _reference_grad(
    model: nn.Module,
    rules: list[OptimizerStep],
    x: Tensor,
    y: Tensor,
    w: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn,
) -> Tensor:
    """d L_meta(theta_hat(w)) / d w through an explicit, differentiable optimizer look-ahead."""
    params = dict(model.named_parameters())
    w_leaf = w.detach().clone().requires_grad_()
    with batch_statistics(model) as buffers, math_attention():
        out = functional_call(model, buffers, (x,))
        train_loss = (w_leaf * loss_fn(out, y)).mean()
        used = _gradients(train_loss, rules, params, create_graph=True)
        moved = lookahead(rules, params, used)
        out_meta = functional_call(model, (moved, buffers), (x_meta,))
        (g,) = torch.autograd.grad(loss_fn(out_meta, y_meta).mean(), w_leaf)
    return g


ENGINES = ("fast", "reference", "per_example")


def _check(engine: str, x: Tensor, w: Tensor) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if w.shape != (x.shape[0],):
        raise ValueError(f"w must have shape ({x.shape[0]},), got {tuple(w.shape)}")


def meta_reweight_grad(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    w: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
    losses: Tensor | None = None,
) -> Tensor:
    """g = d L_meta(theta_hat(w)) / d w (Eq. 3), theta_hat one step of `optimizer` (Eq. 2).

        `loss_fn(outputs, targets)` must return one loss per example; `w` holds the B current
        weights. Model and optimizer are left untouched: parameters, `.grad`, buffers (BatchNorm
        running statistics), train/eval mode and optimizer state. `optimizer` is one of
    `l2rw.meta.optimizer_steps.SUPPORTED`; any other is refused with a ConfigError.

        `losses` (fast engine): the batch's per-example losses from the caller's own train-mode
        forward at the current parameters, with their graph; it is used instead of a forward of its
        own and kept, so that the caller's real update can backward through it (a dropout model's
        JVP pass then draws its masks anew).
    """
    _check(engine, x, w)
    rules = optimizer_steps(model, optimizer)
    w = w.detach()
    with train_mode(model):
        if engine == "reference":
            g = _reference_grad(model, rules, x, y, w, x_meta, y_meta, loss_fn)
        elif engine == "per_example":
            _, grads = per_example_gradients(model, x, y, loss_fn)
            g = _per_example_grad(model, rules, grads, w, x_meta, y_meta, loss_fn)
        else:
            rng = _rng_state(x.device)
            if losses is None:
                with batch_statistics(model) as buffers:
                    losses = loss_fn(functional_call(model, buffers, (x,)), y)
            g = _fast_grad(model, rules, x, y, w, losses, x_meta, y_meta, loss_fn, rng)
    return g.detach().to(w.dtype)


def meta_reweight_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    w: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    meta_lr: float,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
    clamp: tuple[float, float] = (0.0, 1.0),
) -> tuple[Tensor, Tensor]:
    """One step of Eq. 2-4: w_new = clamp(w - meta_lr * g), then an optimizer step on
    (1/B) sum_i w_new_i l_i. Returns (w_new, per-example losses), both detached.

    `w` itself is not modified: the caller stores w_new in its table of persistent weights. The
    model is put in train mode; its running statistics are updated once, by the real step.
    """
    _check(engine, x, w)
    rules = optimizer_steps(model, optimizer)
    w = w.detach()
    model.train()
    if engine == "per_example":
        losses, grads = per_example_gradients(model, x, y, loss_fn)
        g = _per_example_grad(model, rules, grads, w, x_meta, y_meta, loss_fn)
        w_new = (w - meta_lr * g.to(w.dtype)).clamp(*clamp)
        set_gradients(model, weighted_sum(w_new / x.shape[0], grads))
        optimizer.step()
        return w_new, losses.detach()
    rng = _rng_state(x.device)
    if engine == "reference":
        g = _reference_grad(model, rules, x, y, w, x_meta, y_meta, loss_fn)
        with _replaying(rng, x.device):
            losses = loss_fn(model(x), y)
    else:
        losses = loss_fn(model(x), y)
        g = _fast_grad(model, rules, x, y, w, losses, x_meta, y_meta, loss_fn, rng)
    w_new = (w - meta_lr * g.detach().to(w.dtype)).clamp(*clamp)
    optimizer.zero_grad()
    (w_new * losses).mean().backward()
    optimizer.step()
    return w_new, losses.detach()
