"""Persistent-weight meta re-weighting (Wu et al., AAAI 2023, Eq. 2-4), exact and fast.

Each training example j keeps a weight w_j in [0, 1] across iterations. One step on a batch of
B examples: a look-ahead theta_hat(w) = one step of the real optimizer on
L_tr(theta; w) = (1/B) sum_i w_i l_i(theta) (Eq. 2); g = d L_meta(theta_hat(w)) / d w with L_meta
the mean loss of a clean meta batch; w <- clamp(w - meta_lr * g) (Eq. 3); then the real step on
L_tr(theta; w_new) (Eq. 4).

Derivation. torch.optim.SGD turns the gradient G = grad L_tr(theta; w) of a parameter into
    d   = s * G + weight_decay * theta                  (s = -1 if maximize else 1)
    buf = d                                              on the first step (no buffer yet)
    buf = momentum * buf_old + (1 - dampening) * d       afterwards
    u   = d + momentum * buf if nesterov else buf        (u = d when momentum == 0)
    theta_hat = theta - lr * u.
Only G depends on w, linearly: dG / dw_i = grad l_i(theta) / B. Weight decay and the old buffer
are constants, so d theta_hat / d w_i = -lr * c * grad l_i(theta) / B with, per parameter,
    k = 1 on the first step, 1 - dampening afterwards   (d buf / d d)
    c = s                    without momentum,
    c = s * (1 + momentum * k) with nesterov,
    c = s * k                otherwise.
theta_hat is affine in w, so the chain rule gives the weight gradient exactly (no Taylor
approximation) as a scaled dot product at the current point:
    g_i = -(1/B) * < lr * c * grad L_meta(theta_hat), grad l_i(theta) >,
where the meta gradient is taken at the look-ahead but the per-example gradients at theta, in
the batch context (BatchNorm couples the examples). The fast engine computes theta_hat from one
backward of L_tr(theta; w_old), the meta gradient from one backward at theta_hat, and all B dot
products at once as one forward-mode JVP of the per-example losses in the direction
lr * c * grad L_meta(theta_hat) (lr and c per parameter, so param groups may differ).
`meta_reweight_step` also reuses the graph of its one forward on x, which gives the look-ahead
gradient, for the real update: one forward and two backwards on x, a forward and backward on
the meta batch, and the JVP (about three forwards). The reference engine differentiates
through a functional look-ahead with a second-order backward, as the method is written; tests
compare the two.

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
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn
from torch.func import functional_call

from l2rw.meta.batchnorm_tangents import fused_batchnorm_tangents
from l2rw.meta.l2rw import LossFn, cross_entropy_per_example
from l2rw.meta.passes import batch_statistics, train_mode


@dataclass(frozen=True)
class _SGDRule:
    """torch.optim.SGD's update rule for parameters of one group that are alike in having a
    momentum buffer or not (`buffers` None: the first step), with the group's hyper-parameters
    and those buffers (read, never written)."""

    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    sign: float
    names: tuple[str, ...]
    buffers: tuple[Tensor, ...] | None

    def lookahead(self, params: list[Tensor], grads: list[Tensor], at: list[int]) -> list[Tensor]:
        """theta_hat = theta - lr * u for the parameters at positions `at` of `names`, out of
        place (differentiable in grads), as few multi-tensor operations: the same elementwise
        arithmetic as SGD's single-tensor path, less the products by exactly 1."""
        d = grads if self.sign == 1 else torch._foreach_mul(grads, self.sign)
        if self.weight_decay:
            d = torch._foreach_add(d, torch._foreach_mul(params, self.weight_decay))
        if self.momentum:
            if self.buffers is None:
                buf = d
            else:
                old = torch._foreach_mul([self.buffers[i] for i in at], self.momentum)
                step = d if self.dampening == 0 else torch._foreach_mul(d, 1 - self.dampening)
                buf = torch._foreach_add(old, step)
            d = (
                torch._foreach_add(d, torch._foreach_mul(buf, self.momentum))
                if self.nesterov
                else buf
            )
        return torch._foreach_sub(params, torch._foreach_mul(d, self.lr))

    @property
    def coefficient(self) -> float:
        """c = d u / d G (see the module docstring)."""
        if not self.momentum:
            return self.sign
        k = 1.0 if self.buffers is None else 1.0 - self.dampening
        return self.sign * (1.0 + self.momentum * k if self.nesterov else k)


def _sgd_rules(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[_SGDRule]:
    """The update rules of the trainable model parameters that the optimizer steps."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise ValueError(
            f"meta re-weighting supports torch.optim.SGD only, got {type(optimizer).__name__}"
        )
    names = {p: name for name, p in model.named_parameters() if p.requires_grad}
    rules = []
    for group in optimizer.param_groups:
        stepped = [p for p in group["params"] if p in names]
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in stepped]
        for first in (True, False):
            alike = [(p, b) for p, b in zip(stepped, buffers, strict=True) if (b is None) == first]
            if alike:
                rules.append(
                    _SGDRule(
                        lr=float(group["lr"]),
                        momentum=float(group["momentum"]),
                        dampening=float(group["dampening"]),
                        nesterov=bool(group["nesterov"]),
                        weight_decay=float(group["weight_decay"]),
                        sign=-1.0 if group.get("maximize", False) else 1.0,
                        names=tuple(names[p] for p, _ in alike),
                        buffers=None if first else tuple(b for _, b in alike),
                    )
                )
    if not rules:
        raise ValueError("the optimizer steps none of the model's trainable parameters")
    return rules


def _gradients(
    loss: Tensor, rules: list[_SGDRule], params: dict[str, Tensor], **grad_options: bool
) -> dict[str, Tensor]:
    """d loss / d theta for each stepped parameter that `loss` depends on."""
    names = [n for rule in rules for n in rule.names]
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True, **grad_options)
    return {n: g for n, g in zip(names, grads, strict=True) if g is not None}


def _lookahead(
    rules: list[_SGDRule], params: dict[str, Tensor], grads: dict[str, Tensor]
) -> dict[str, Tensor]:
    """theta_hat for the parameters that have a gradient (the others keep theta: they do not
    depend on w)."""
    out = {}
    for rule in rules:
        at = [i for i, n in enumerate(rule.names) if n in grads]
        if at:
            names = [rule.names[i] for i in at]
            moved = rule.lookahead([params[n] for n in names], [grads[n] for n in names], at)
            out.update(zip(names, moved, strict=True))
    return out


def _tangent(rules: list[_SGDRule], meta_grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """lr * c * v per parameter: the direction of the JVP that yields g."""
    out = {}
    for rule in rules:
        names = [n for n in rule.names if n in meta_grads]
        if names:
            scaled = torch._foreach_mul([meta_grads[n] for n in names], rule.lr * rule.coefficient)
            out.update(zip(names, scaled, strict=True))
    return out


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


def _fast_grad(
    model: nn.Module,
    rules: list[_SGDRule],
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
    with torch.no_grad():
        lookahead = {n: p.requires_grad_() for n, p in _lookahead(rules, params, used).items()}
    with batch_statistics(model) as buffers:
        out_meta = functional_call(model, (lookahead, buffers), (x_meta,))
        meta_grads = torch.autograd.grad(
            loss_fn(out_meta, y_meta).mean(), list(lookahead.values()), materialize_grads=True
        )
        tangents = _tangent(rules, dict(zip(lookahead, meta_grads, strict=True)))
        with (
            torch.no_grad(),
            fwAD.dual_level(),
            _replaying(rng, x.device),
            fused_batchnorm_tangents(model),
        ):
            duals = {n: fwAD.make_dual(params[n], t) for n, t in tangents.items()}
            out = functional_call(model, (duals, buffers), (x,))
            jvp = fwAD.unpack_dual(loss_fn(out, y)).tangent
    return -jvp / x.shape[0]


def _reference_grad(
    model: nn.Module,
    rules: list[_SGDRule],
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
    with batch_statistics(model) as buffers:
        out = functional_call(model, buffers, (x,))
        train_loss = (w_leaf * loss_fn(out, y)).mean()
        used = _gradients(train_loss, rules, params, create_graph=True)
        lookahead = _lookahead(rules, params, used)
        out_meta = functional_call(model, (lookahead, buffers), (x_meta,))
        (g,) = torch.autograd.grad(loss_fn(out_meta, y_meta).mean(), w_leaf)
    return g


ENGINES = ("fast", "reference")


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
    running statistics), train/eval mode and optimizer state. Only torch.optim.SGD is supported.

    `losses` (fast engine): the batch's per-example losses from the caller's own train-mode
    forward at the current parameters, with their graph; it is used instead of a forward of its
    own and kept, so that the caller's real update can backward through it (a dropout model's
    JVP pass then draws its masks anew).
    """
    _check(engine, x, w)
    rules = _sgd_rules(model, optimizer)
    w = w.detach()
    with train_mode(model):
        if engine == "reference":
            g = _reference_grad(model, rules, x, y, w, x_meta, y_meta, loss_fn)
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
    rules = _sgd_rules(model, optimizer)
    w = w.detach()
    model.train()
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
