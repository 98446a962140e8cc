"""Meta-Weight-Net (Shu et al., NeurIPS 2019): each example's weight is a learned function of its
loss, w_i = V(l_i; phi), V a 1-100-1 MLP (ReLU, then sigmoid), trained on the meta set.

One step on a batch of B examples at the current learning rate alpha (MW-Net's Algorithm 1):
    theta_hat(phi) = theta - alpha * grad_theta (1/B) sum_i V(l_i; phi) l_i(theta)    (look-ahead)
    phi <- phi - beta * grad_phi L_meta(theta_hat(phi))                   (Adam in MW-Net's code)
    theta <- one step of the real optimizer on (1/B) sum_i V(l_i; phi_new) l_i(theta)
with L_meta the mean loss of a clean meta batch. The look-ahead is plain SGD at the rate of each
parameter's optimizer group, as in the paper and its code (no momentum, no weight decay).

Derivation. V reads the losses as constants (MW-Net's code feeds `cost.data`), so theta_hat
depends on phi only through the weights w = V(l; phi), and the chain rule splits the meta-gradient
into two exact factors:
    grad_phi L_meta = sum_i (d L_meta / d w_i) * d V(l_i; phi) / d phi = J_V(phi)^T g,
where g = d L_meta(theta_hat(w)) / d w at w = V(l; phi) is the weight gradient of meta
re-weighting with persistent weights (`l2rw.meta.meta_reweight_grad`, one JVP at the current
point for a plain-SGD look-ahead, no second-order graph), and J_V^T g is one backward through the
small MLP with g as its output gradient. The reference engine differentiates
L_meta(theta_hat(phi)) with respect to phi through a look-ahead built with `create_graph`, a
second-order backward through the model, as the method is written; tests compare the two.

The model, its `.grad`, buffers and optimizer state are untouched by the meta pass (the
look-ahead passes use batch statistics and update no running statistics). `mwnet_step` runs one
forward on the training batch, in train mode (it alone updates running statistics): the fast
engine takes the look-ahead's gradient from its graph and the real update backwards through it,
as `meta_reweight_step` does. Dropout: the JVP pass draws its own masks (MW-Net's code also runs
separate forwards for its meta model and its real step).
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call

from l2rw.config.options import MethodConf, choice, needs_meta_set, require
from l2rw.meta import meta_reweight_grad
from l2rw.meta.l2rw import LossFn, cross_entropy_per_example
from l2rw.meta.passes import batch_statistics, math_attention, train_mode
from l2rw.methods import METHODS
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Batch, StepRule
from l2rw.methods.reweighting import meta_batches
from l2rw.seeding import WEIGHT_NET, derive_seed

ENGINES = ("fast", "reference")


class WeightNet(nn.Module):
    """V(loss; phi): Linear(1, hidden), ReLU, Linear(hidden, 1), sigmoid (MW-Net's 1-100-1)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, losses: Tensor) -> Tensor:
        """Weights in (0, 1), one per loss in the 1-D `losses`."""
        return torch.sigmoid(self.layers(losses[:, None])).squeeze(1)


def _plain_sgd(optimizer: torch.optim.Optimizer) -> torch.optim.SGD:
    """MW-Net's look-ahead: plain SGD at the current rate of each of `optimizer`'s groups (a new
    optimizer with no state, so the look-ahead is theta - lr * G)."""
    return torch.optim.SGD([{"params": g["params"], "lr": g["lr"]} for g in optimizer.param_groups])


def _reference_grad(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    net: WeightNet,
    x: Tensor,
    y: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn,
) -> list[Tensor]:
    """grad_phi L_meta(theta_hat(phi)) by a second-order backward through the look-ahead."""
    params = dict(model.named_parameters())
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    stepped = [n for n, p in params.items() if p.requires_grad and id(p) in rate]
    with batch_statistics(model) as buffers, math_attention():
        losses = loss_fn(functional_call(model, buffers, (x,)), y)
        train_loss = (net(losses.detach()) * losses).mean()
        grads = torch.autograd.grad(
            train_loss, [params[n] for n in stepped], create_graph=True, allow_unused=True
        )
        lookahead = {
            n: params[n] - rate[id(params[n])] * g
            for n, g in zip(stepped, grads, strict=True)
            if g is not None
        }
        out_meta = functional_call(model, ({**params, **lookahead}, buffers), (x_meta,))
        meta_loss = loss_fn(out_meta, y_meta).mean()
        return list(torch.autograd.grad(meta_loss, list(net.parameters())))


def mwnet_grad(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    net: WeightNet,
    x: Tensor,
    y: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
    losses: Tensor | None = None,
) -> list[Tensor]:
    """grad_phi L_meta(theta_hat(phi)), one tensor per parameter of `net`.

    theta_hat is one plain-SGD step from the model's parameters at the current rates of
    `optimizer`'s groups. `losses`: the batch's per-example losses from the caller's train-mode
    forward, with their graph (reused by the fast engine for the look-ahead and kept for the
    caller's real update). Model, optimizer and `net` are left untouched.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    with train_mode(model):
        if engine == "reference":
            return _reference_grad(model, optimizer, net, x, y, x_meta, y_meta, loss_fn)
        inputs = losses
        if inputs is None:
            with torch.no_grad(), batch_statistics(model) as buffers:
                inputs = loss_fn(functional_call(model, buffers, (x,)), y)
        inputs = inputs.detach()
        with torch.no_grad():
            w = net(inputs)
        g = meta_reweight_grad(
            model, _plain_sgd(optimizer), x, y, w, x_meta, y_meta, loss_fn, losses=losses
        )
    return list(torch.autograd.grad(net(inputs), list(net.parameters()), grad_outputs=g))


def mwnet_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    net: WeightNet,
    net_optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    x_meta: Tensor,
    y_meta: Tensor,
    loss_fn: LossFn = cross_entropy_per_example,
    *,
    engine: str = "fast",
) -> tuple[Tensor, Tensor]:
    """One MW-Net step: `net_optimizer` steps phi on `mwnet_grad`, then `optimizer` steps the
    model on (1/B) sum_i V(l_i; phi_new) l_i. Returns (weights V(l; phi_new), per-example
    losses), both detached."""
    model.train()
    losses = loss_fn(model(x), y)
    grads = mwnet_grad(
        model, optimizer, net, x, y, x_meta, y_meta, loss_fn, engine=engine, losses=losses
    )
    net_optimizer.zero_grad()
    for p, g in zip(net.parameters(), grads, strict=True):
        p.grad = g
    net_optimizer.step()
    with torch.no_grad():
        w = net(losses.detach())
    optimizer.zero_grad()
    (w * losses).mean().backward()
    optimizer.step()
    return w, losses.detach()


@dataclass
class MWNetConf(MethodConf):
    """Meta-Weight-Net (Shu et al. 2019), with its published settings: V is 1-100-1, trained by
    Adam at 1e-3 with weight decay 1e-4 (the authors' code)."""

    meta_set: ClassVar[bool] = True

    # fast: V's gradient pulled back from meta re-weighting's exact weight gradient; reference:
    # a second-order backward through the look-ahead.
    engine: str = "fast"
    hidden: int = 100
    # Adam's learning rate and weight decay for phi.
    meta_lr: float = 1e-3
    meta_weight_decay: float = 1e-4

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        m = cfg.method
        choice(cfg, "method.engine", ENGINES)
        require(m.hidden > 0, f"method.hidden={m.hidden} must be positive.")
        require(m.meta_lr > 0, f"method.meta_lr={m.meta_lr} must be positive.")
        require(
            m.meta_weight_decay >= 0,
            f"method.meta_weight_decay={m.meta_weight_decay} must be >= 0.",
        )
        needs_meta_set(cfg)


class MWNetRule:
    """The runner's MW-Net: V and its Adam state persist across steps and in checkpoints; V's
    initialisation is drawn from the run's seed. The loop is handed the weights / B (the real
    loss is their mean product with the losses)."""

    def __init__(self, ctx: RunContext) -> None:
        m = ctx.cfg.method
        self.engine = m.engine
        self.meta_batch = meta_batches(ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(ctx.cfg.seed, WEIGHT_NET))
            self.net = WeightNet(m.hidden)
        self.net.to(ctx.device)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=m.meta_lr, weight_decay=m.meta_weight_decay
        )

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        x_meta, y_meta = self.meta_batch(batch.step)
        w, losses = mwnet_step(
            model,
            optimizer,
            self.net,
            self.optimizer,
            batch.x,
            batch.y,
            x_meta,
            y_meta,
            engine=self.engine,
        )
        return losses, w / len(w)

    def state_dict(self) -> dict[str, object]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


@METHODS.register("mwnet", schema=MWNetConf)
def mwnet(ctx: RunContext) -> StepRule:
    return MWNetRule(ctx)
