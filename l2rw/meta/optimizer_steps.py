"""One step of the run's own optimizer as a function of the gradient, for the meta engines.

Every optimizer supported here updates each parameter element by element from its current state:
theta_hat = theta + U(G; state), G the gradient of the (weighted) training loss. The meta engines
need two things of that step: the look-ahead theta_hat itself, as a function of G that autograd
can differentiate (the reference engines), and the diagonal of its Jacobian at the actual G,
D = d theta_hat / d G, element by element (the fast engines: the weight gradient is then
< D * grad L_meta(theta_hat), grad l_i(theta) > / B, one forward-mode JVP in the direction
D * grad L_meta). Each rule below gives both, reading the optimizer's hyper-parameters (per
parameter group) and state, never writing them. `descent` returns E = -D, positive for a plain
SGD step (lr): the engines' JVP direction is E * grad L_meta.

Notation per element: s = -1 with `maximize`, else 1; g = s G (+ weight_decay * theta for the
coupled, L2 decay), t the step count after this step; first-step state is zero (Adagrad: its
initial accumulator).

SGD (lr, momentum mu, dampening tau, nesterov, weight_decay):
    buf = g on the first step, mu buf_old + (1 - tau) g after; u = g + mu buf (nesterov) or buf
    (mu = 0: u = g); theta_hat = theta - lr u. U is affine in G: E = lr s c with c = 1 (mu = 0),
    k (plain momentum) or 1 + mu k (nesterov), k = 1 on the first step, 1 - tau after. One
    scalar per parameter group.

Adam / AdamW (lr, betas b1 b2, eps, weight_decay lambda, amsgrad; AdamW: decoupled decay):
    m = b1 m_old + (1 - b1) g;  v = b2 v_old + (1 - b2) g^2;  r = max(r_old, v) (amsgrad) or v;
    c1 = 1 - b1^t, c2 = 1 - b2^t;  den = sqrt(r) / sqrt(c2) + eps;
    theta_hat = theta (1 - lr lambda) (AdamW) or theta, minus (lr / c1) m / den.
    dm/dg = 1 - b1; d sqrt(r)/dg = (1 - b2) g / sqrt(r) where r = v > 0 (amsgrad: where v is the
    maximum), else 0; so
    E = s (lr / c1) [ (1 - b1) / den - m (1 - b2) g / (sqrt(c2) sqrt(r) den^2) ].
    The second term is why D depends on G: the persistent-weight engine's G is not 0.

RMSprop (lr, alpha a, eps, weight_decay, momentum mu, centered):
    v = a v_old + (1 - a) g^2;  centered: ga = a ga_old + (1 - a) g, q = v - ga^2, else q = v;
    avg = sqrt(q) + eps;  step = g / avg;  theta_hat = theta - lr (mu buf_old + step) (mu > 0)
    or theta - lr step.  d sqrt(q)/dg = (1 - a)(g - ga) / sqrt(q) (ga = 0 if not centered)
    where q > 0, else 0;  E = s lr [ 1 / avg - g d sqrt(q)/dg / avg^2 ].

Adagrad (lr, lr_decay, eps, weight_decay, initial accumulator):
    lr_t = lr / (1 + (t - 1) lr_decay);  S = S_old + g^2;  std = sqrt(S) + eps;
    theta_hat = theta - lr_t g / std;  E = s lr_t [ 1 / std - g^2 / (sqrt(S) std^2) ] (S > 0).

At a point where sqrt's argument is 0 (a zero gradient on a zero state) its derivative does not
exist; both the look-ahead's autograd graph (`_sqrt`) and E take the one-sided value 0 there, so
the two engines agree. With amsgrad, a tie v = r_old takes v's side.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from l2rw.errors import ConfigError

# The optimizers the engines step through exactly, by class (a subclass may change `step`).
SUPPORTED = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)


def _sqrt(x: Tensor) -> Tensor:
    """sqrt(x) whose derivative at x = 0 is 0 rather than inf (see the module docstring)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)


def _inverse_sqrt(x: Tensor) -> Tensor:
    """1 / sqrt(x) where x > 0, else 0."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).rsqrt(), 0.0)


@dataclass(frozen=True)
class SGDStep:
    """torch.optim.SGD's update for parameters of one group that are alike in having a momentum
    buffer or not (`buffers` None: the first step), with the group's hyper-parameters and those
    buffers (read, never written)."""

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

    def lookahead_with_descent(
        self, params: list[Tensor], grads: list[Tensor], at: list[int]
    ) -> tuple[list[Tensor], float]:
        """theta_hat and E = -d theta_hat / d G: one number for the whole group (U is affine
        in G)."""
        return self.lookahead(params, grads, at), self._descent()

    def _descent(self) -> float:
        if not self.momentum:
            return self.lr * self.sign
        k = 1.0 if self.buffers is None else 1.0 - self.dampening
        return self.lr * self.sign * (1.0 + self.momentum * k if self.nesterov else k)


@dataclass(frozen=True)
class _ElementwiseStep:
    """An adaptive optimizer's update for the parameters `names` of one group, each with its own
    state: `state[i]` holds parameter i's state tensors (None before its first step) and its
    step count."""

    names: tuple[str, ...]
    sign: float
    weight_decay: float
    state: tuple[dict[str, Any], ...]

    def lookahead(self, params: list[Tensor], grads: list[Tensor], at: list[int]) -> list[Tensor]:
        return [self._update(i, p, g)[0] for i, p, g in zip(at, params, grads, strict=True)]

    def lookahead_with_descent(
        self, params: list[Tensor], grads: list[Tensor], at: list[int]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """theta_hat and E per parameter, from one pass over the state (no graph)."""
        with torch.no_grad():
            pairs = [self._update(i, p, g) for i, p, g in zip(at, params, grads, strict=True)]
        return [moved for moved, _ in pairs], [e for _, e in pairs]

    def _signed(self, theta: Tensor, grad: Tensor, coupled: bool = True) -> Tensor:
        g = grad if self.sign == 1 else -grad
        return g + self.weight_decay * theta if coupled and self.weight_decay else g

    def _old(self, i: int, key: str, like: Tensor) -> Tensor:
        value = self.state[i].get(key)
        return torch.zeros_like(like) if value is None else value

    def _update(self, i: int, theta: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        """(theta_hat, E) for parameter i of the group."""
        raise NotImplementedError


@dataclass(frozen=True)
class AdamStep(_ElementwiseStep):
    lr: float
    beta1: float
    beta2: float
    eps: float
    amsgrad: bool
    decoupled: bool

    def _update(self, i: int, theta: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        g = self._signed(theta, grad, coupled=not self.decoupled)
        t = self.state[i]["step"] + 1
        m_old = self._old(i, "exp_avg", g)
        m = m_old + (g - m_old) * (1 - self.beta1)
        v = self._old(i, "exp_avg_sq", g) * self.beta2 + g * g * (1 - self.beta2)
        if self.amsgrad:
            r_old = self._old(i, "max_exp_avg_sq", g)
            r = torch.where(v >= r_old, v, r_old)
        else:
            r = v
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        den = _sqrt(r) / math.sqrt(c2) + self.eps
        start = theta * (1 - self.lr * self.weight_decay) if self.decoupled else theta
        theta_hat = start - (self.lr / c1) * m / den
        d_root = (1 - self.beta2) * g * _inverse_sqrt(r)
        if self.amsgrad:
            d_root = torch.where(v >= r, d_root, 0.0)
        e = (self.sign * self.lr / c1) * (
            (1 - self.beta1) / den - m * d_root / (math.sqrt(c2) * den**2)
        )
        return theta_hat, e


@dataclass(frozen=True)
class RMSpropStep(_ElementwiseStep):
    lr: float
    alpha: float
    eps: float
    momentum: float
    centered: bool

    def _update(self, i: int, theta: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        g = self._signed(theta, grad)
        v = self._old(i, "square_avg", g) * self.alpha + g * g * (1 - self.alpha)
        if self.centered:
            ga_old = self._old(i, "grad_avg", g)
            ga = ga_old + (g - ga_old) * (1 - self.alpha)
            q = v - ga * ga
        else:
            ga, q = torch.zeros_like(g), v
        avg = _sqrt(q) + self.eps
        step = g / avg
        if self.momentum > 0:
            step = self._old(i, "momentum_buffer", g) * self.momentum + step
        d_root = (1 - self.alpha) * (g - ga) * _inverse_sqrt(q)
        e = (self.sign * self.lr) * (1 / avg - g * d_root / avg**2)
        return theta - self.lr * step, e


@dataclass(frozen=True)
class AdagradStep(_ElementwiseStep):
    lr: float
    lr_decay: float
    eps: float
    initial_accumulator_value: float

    def _update(self, i: int, theta: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        g = self._signed(theta, grad)
        t = self.state[i]["step"] + 1
        lr_t = self.lr / (1 + (t - 1) * self.lr_decay)
        old = self.state[i].get("sum")
        total = (torch.full_like(g, self.initial_accumulator_value) if old is None else old) + g * g
        std = _sqrt(total) + self.eps
        e = (self.sign * lr_t) * (1 / std - g * g * _inverse_sqrt(total) / std**2)
        return theta - lr_t * g / std, e


OptimizerStep = SGDStep | AdamStep | RMSpropStep | AdagradStep


def _step_count(state: dict[str, Any]) -> int:
    step = state.get("step", 0)
    return int(step.item() if isinstance(step, Tensor) else step)


def _sgd_steps(group: dict[str, Any], named: list[tuple[str, Tensor]], state) -> list[SGDStep]:
    buffers = [state.get(p, {}).get("momentum_buffer") for _, p in named]
    steps = []
    for first in (True, False):
        alike = [(n, b) for (n, _), b in zip(named, buffers, strict=True) if (b is None) == first]
        if alike:
            steps.append(
                SGDStep(
                    lr=float(group["lr"]),
                    momentum=float(group["momentum"]),
                    dampening=float(group["dampening"]),
                    nesterov=bool(group["nesterov"]),
                    weight_decay=float(group["weight_decay"]),
                    sign=-1.0 if group.get("maximize", False) else 1.0,
                    names=tuple(n for n, _ in alike),
                    buffers=None if first else tuple(b for _, b in alike),
                )
            )
    return steps


def _elementwise_step(
    optimizer: torch.optim.Optimizer, group: dict[str, Any], named: list[tuple[str, Tensor]], state
) -> _ElementwiseStep:
    common = dict(
        names=tuple(n for n, _ in named),
        sign=-1.0 if group.get("maximize", False) else 1.0,
        weight_decay=float(group["weight_decay"]),
        state=tuple({**state.get(p, {}), "step": _step_count(state.get(p, {}))} for _, p in named),
        lr=float(group["lr"]),
        eps=float(group["eps"]),
    )
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        beta1, beta2 = (float(b) for b in group["betas"])
        decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get(
            "decoupled_weight_decay", False
        )
        return AdamStep(
            **common,
            beta1=beta1,
            beta2=beta2,
            amsgrad=bool(group["amsgrad"]),
            decoupled=bool(decoupled),
        )
    if isinstance(optimizer, torch.optim.RMSprop):
        return RMSpropStep(
            **common,
            alpha=float(group["alpha"]),
            momentum=float(group["momentum"]),
            centered=bool(group["centered"]),
        )
    return AdagradStep(
        **common,
        lr_decay=float(group["lr_decay"]),
        initial_accumulator_value=float(group["initial_accumulator_value"]),
    )


def optimizer_steps(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[OptimizerStep]:
    """The update rules of the trainable model parameters that `optimizer` steps, per group."""
    if type(optimizer) not in SUPPORTED:
        raise ConfigError(
            f"The meta engines cannot step through {type(optimizer).__name__}: they are exact "
            "for optimizers that update each parameter element by element, and support "
            "torch.optim.SGD (momentum, Nesterov, dampening, weight decay), Adam and AdamW "
            "(amsgrad, L2 or decoupled weight decay), RMSprop (centered, momentum) and Adagrad "
            "(lr decay), each with maximize and per-group settings. Train with one of these "
            "(e.g. optimizer=adamw), or use the plain-SGD look-ahead (method.lookahead=sgd)."
        )
    names = {p: name for name, p in model.named_parameters() if p.requires_grad}
    steps: list[OptimizerStep] = []
    for group in optimizer.param_groups:
        named = [(names[p], p) for p in group["params"] if p in names]
        if any(p.is_complex() for _, p in named):
            raise ConfigError("The meta engines do not support complex parameters.")
        if not named:
            continue
        if isinstance(optimizer, torch.optim.SGD):
            steps += _sgd_steps(group, named, optimizer.state)
        else:
            steps.append(_elementwise_step(optimizer, group, named, optimizer.state))
    if not steps:
        raise ValueError("the optimizer steps none of the model's trainable parameters")
    return steps


def lookahead(
    steps: list[OptimizerStep], params: dict[str, Tensor], grads: dict[str, Tensor]
) -> dict[str, Tensor]:
    """theta_hat for the parameters in `grads` (the others keep theta: they do not depend on the
    weights), differentiable in `grads`."""
    out = {}
    for step in steps:
        at = [i for i, n in enumerate(step.names) if n in grads]
        if at:
            names = [step.names[i] for i in at]
            moved = step.lookahead([params[n] for n in names], [grads[n] for n in names], at)
            out.update(zip(names, moved, strict=True))
    return out


# A step's E at the gradients of its parameters `names`: one number for the group (SGD), or
# one tensor per parameter, in the order of `names`.
Descent = tuple[list[str], float | list[Tensor]]


def lookahead_with_descent(
    steps: list[OptimizerStep], params: dict[str, Tensor], grads: dict[str, Tensor]
) -> tuple[dict[str, Tensor], list[Descent]]:
    """theta_hat for the parameters in `grads` (no graph), and each step's E at those gradients
    (for `jvp_direction`), in one pass over the optimizer's state."""
    moved: dict[str, Tensor] = {}
    descents: list[Descent] = []
    for step in steps:
        at = [i for i, n in enumerate(step.names) if n in grads]
        if at:
            names = [step.names[i] for i in at]
            stepped, descent = step.lookahead_with_descent(
                [params[n] for n in names], [grads[n] for n in names], at
            )
            moved.update(zip(names, stepped, strict=True))
            descents.append((names, descent))
    return moved, descents


def jvp_direction(descents: list[Descent], meta_grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """E * v for each parameter that has both (v, the meta gradient at theta_hat, in
    `meta_grads`): the direction of the engines' forward-mode JVP."""
    out = {}
    for names, descent in descents:
        kept = [i for i, n in enumerate(names) if n in meta_grads]
        if kept:
            factor = descent if isinstance(descent, float) else [descent[i] for i in kept]
            scaled = torch._foreach_mul([meta_grads[names[i]] for i in kept], factor)
            out.update(zip([names[i] for i in kept], scaled, strict=True))
    return out
