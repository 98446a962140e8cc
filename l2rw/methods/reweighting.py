"""The methods' step rules: the per-batch re-weighting baselines of the L2RW paper (Sec. 4.1 and
Eq. 16), L2RW, and meta re-weighting with persistent weights (Wu et al. 2023).

Each registered function builds the rule for a run's data. Every rule takes one optimizer step on
sum_i w_i * loss_i; the weights sum to one (or are all zero), except PROPORTION's, which sum to
one in expectation over batches, and meta re-weighting's, which are mean_i w_i with w_i in [0, 1].
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from l2rw.config.options import MethodConf, check_milestones, choice, needs_meta_set, require
from l2rw.data.batches import META_STREAMS
from l2rw.meta import l2rw_step, meta_reweight_step, normalize_weights
from l2rw.meta.l2rw import ENGINES as L2RW_ENGINES
from l2rw.meta.l2rw import LOOKAHEADS
from l2rw.meta.meta_reweight import ENGINES as META_REWEIGHT_ENGINES
from l2rw.methods import METHODS
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Batch, StepRule
from l2rw.seeding import AUGMENT, CLEAN_BATCHES, WEIGHTS, generator


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def weighted_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    weigh,
    loss: Callable[[Tensor, Tensor], Tensor] = _cross_entropy,
) -> tuple[Tensor, Tensor]:
    """One SGD step on sum_i w_i * loss_i(logits_i, y_i), w = weigh(losses, batch)."""
    optimizer.zero_grad(set_to_none=True)
    losses = loss(model(batch.x), batch.y)
    weights = weigh(losses.detach(), batch)
    (weights * losses).sum().backward()
    optimizer.step()
    return losses.detach(), weights


def uniform_weights(losses: Tensor, batch: Batch) -> Tensor:
    return torch.full_like(losses, 1.0 / len(losses))


class UniformRule:
    """Uniform weights: plain SGD on the batch's mean loss."""

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        return weighted_step(model, optimizer, batch, uniform_weights)


@METHODS.register("baseline", schema=MethodConf)
def baseline(ctx: RunContext) -> StepRule:
    return UniformRule()


class _BalancedUniform(UniformRule):
    """Uniform weights; the loop draws class-balanced batches for it."""

    balanced_batches = True


@METHODS.register("resample", schema=MethodConf)
def resample(ctx: RunContext) -> StepRule:
    """Uniform weights on class-balanced mini-batches, drawn with replacement inside each class
    (L2RW Sec. 4.1)."""
    return _BalancedUniform()


def proportion_weights(labels: Tensor, counts: Tensor, form: str) -> Tensor:
    """Inverse-frequency weights of a batch with observed `labels`, given the training set's
    per-class `counts` (L2RW Sec. 4.1, PROPORTION).

    - `expected`: w_i = N / (K n_{y_i} B), K the classes present. Every class gets an expected
      1/K of the batch's weight, whatever the ratio, and the weights sum to 1 in expectation
      (not per batch), so a batch without a minority example is a smaller step, not a uniform one.
    - `batch`: 1 / n_{y_i}, normalised to sum 1 within each batch. A batch without a minority
      example becomes a uniform step, so the minority's expected share falls with the ratio.
    - `authors`: 1 - n_{y_i} / N, unnormalised (the L2RW authors' MNIST code: minority weight p,
      majority 1 - p, for two classes).
    """
    counts = counts.to(labels.device, torch.float64)
    n_total, present = counts.sum(), (counts > 0).sum()
    if form == "expected":
        w = n_total / (present * counts[labels] * len(labels))
    elif form == "batch":
        w = 1.0 / counts[labels]
        w = w / w.sum()
    elif form == "authors":
        w = 1.0 - counts[labels] / n_total
    else:
        raise ValueError(f"unknown PROPORTION form {form!r}: use expected, batch or authors")
    return w.float()


@dataclass
class ProportionConf(MethodConf):
    # Inverse-frequency weights summing to 1 in "expected" value over batches (default),
    # normalised per "batch", or the L2RW authors' unnormalised p / 1 - p ("authors").
    weighting: str = "expected"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        choice(cfg, "method.weighting", ("expected", "batch", "authors"))


@METHODS.register("proportion", schema=ProportionConf)
def proportion(ctx: RunContext) -> StepRule:
    """Weight each example by the inverse frequency of its (observed) class in the training set;
    `method.weighting` picks the normalisation (see `proportion_weights`)."""
    counts = torch.bincount(ctx.data.train.y, minlength=ctx.data.num_classes)
    form = ctx.cfg.method.weighting

    def weigh(losses: Tensor, batch: Batch) -> Tensor:
        return proportion_weights(batch.y, counts, form)

    return lambda m, o, b: weighted_step(m, o, b, weigh)


@dataclass
class HardMiningConf(MethodConf):
    """Hard mining as in the L2RW authors' MNIST code: batches of 500."""

    batch_size: int | None = 500


@METHODS.register("hard_mining", schema=HardMiningConf)
def hard_mining(ctx: RunContext) -> StepRule:
    """Keep every non-majority example and as many of the highest-loss majority examples
    (at least one), uniform weights over the kept ones. Uses per-example losses (the authors'
    code ranked by a scalar batch loss, i.e. at random). Losses for the ranking come from a
    no-grad forward; only the kept examples are trained on."""
    majority = int(torch.bincount(ctx.data.train.y).argmax())

    def rule(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        with torch.no_grad():
            losses = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        is_major = batch.y == majority
        k = min(max(int((~is_major).sum()), 1), int(is_major.sum()))
        ranked = torch.where(is_major, losses, torch.full_like(losses, -float("inf")))
        keep = ~is_major
        keep[ranked.topk(k).indices] = True
        weights = keep.float() / keep.sum()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x[keep]), batch.y[keep]).backward()
        optimizer.step()
        return losses, weights

    return rule


@dataclass
class RandomConf(MethodConf):
    # Std of the Gaussian before rectification (L2RW Eq. 16).
    random_std: float = 1.0

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        std = cfg.method.random_std
        require(std > 0, f"method.random_std={std} must be positive.")


@METHODS.register("random", schema=RandomConf)
def random_weights(ctx: RunContext) -> StepRule:
    """Rectified Gaussian weights, normalised (L2RW Eq. 16)."""
    std, seed = ctx.cfg.method.random_std, ctx.cfg.seed

    def weigh(losses: Tensor, batch: Batch) -> Tensor:
        gen = generator(seed, WEIGHTS, batch.step, device=losses.device)
        z = torch.randn(losses.shape, generator=gen, device=losses.device) * std
        return normalize_weights(z)

    return lambda m, o, b: weighted_step(m, o, b, weigh)


@dataclass
class L2RWConf(MethodConf):
    meta_set: ClassVar[bool] = True

    # fast: forward-mode JVP sharing the forward with the real update; reference: look-ahead
    # model plus a second-order backward (the straightforward computation).
    engine: str = "fast"
    # Add weight_decay * theta to the validation gradient (the authors' CIFAR code).
    val_weight_decay: bool = False
    # The look-ahead: "sgd", the paper's plain-SGD step at the current point, or "optimizer",
    # one step of the run's own optimizer from its state (momentum moves it even at eps = 0).
    lookahead: str = "sgd"
    # fast engine: share the weights' dual forward with the real update (fastest), or run the
    # update's own forward (about 10% slower, memory close to a plain step's instead of about 3x).
    share_forward: bool = True

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        choice(cfg, "method.engine", tuple(L2RW_ENGINES))
        choice(cfg, "method.lookahead", LOOKAHEADS)
        needs_meta_set(cfg)


@METHODS.register("l2rw", schema=L2RWConf)
def l2rw(ctx: RunContext) -> StepRule:
    """Learning to Reweight: weights from one meta-gradient step on a clean batch per step.

    Clean batches go through the same augmentation as training batches (authors' CIFAR code).
    """
    cfg = ctx.cfg
    meta_batch = meta_batches(ctx)
    decay = cfg.optimizer.weight_decay if cfg.method.val_weight_decay else 0.0

    def rule(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        x_val, y_val = meta_batch(batch.step)
        weights, losses = l2rw_step(
            model,
            optimizer,
            batch.x,
            batch.y,
            x_val,
            y_val,
            engine=cfg.method.engine,
            val_weight_decay=decay,
            lookahead=cfg.method.lookahead,
            share_forward=cfg.method.share_forward,
        )
        return losses, weights

    return rule


def meta_batches(ctx: RunContext):
    """step -> (x, y) of the clean (meta) batch of that step, augmented like training batches."""
    cfg, clean, preprocess = ctx.cfg, ctx.data.clean, ctx.preprocess
    sampler = META_STREAMS[cfg.train.meta_sampling]
    stream = sampler(len(clean), cfg.train.meta_batch_size, cfg.seed, CLEAN_BATCHES)

    def meta_batch(step: int) -> tuple[Tensor, Tensor]:
        idx = stream(step).to(clean.y.device)
        gen = generator(cfg.seed, AUGMENT, CLEAN_BATCHES, step, device=clean.y.device)
        return preprocess(clean.x[idx], True, gen), clean.y[idx]

    return meta_batch


def _rectified_gaussian(n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """relu(N(0, 1)) scaled to sum n (the RBC authors' --w_rectified_gaussian_init); the first
    update of each weight clips it into [clamp_min, clamp_max]."""
    w = torch.relu(torch.randn(n, generator=gen, device=device))
    return w * (n / w.sum())


# method.init -> the initial weights of meta re-weighting's table, from (n, generator, device).
WEIGHT_INITS = {
    "uniform": lambda n, gen, device: torch.rand(n, generator=gen, device=device),
    "ones": lambda n, gen, device: torch.ones(n, device=device),
    "rectified_gaussian": _rectified_gaussian,
}


class MetaReweightRule:
    """Persistent per-example weights (Wu et al. 2023, Eq. 2-4), one per training example,
    kept across steps and epochs and saved in the checkpoint. The loss of the real step is
    mean_i(w_i l_i), so the loop is handed w / B."""

    def __init__(self, ctx: RunContext) -> None:
        cfg = ctx.cfg
        self.method = cfg.method
        self.meta_batch = meta_batches(ctx)
        n, device = len(ctx.data.train), ctx.data.train.y.device
        gen = generator(cfg.seed, WEIGHTS, device=device)
        self.weights = WEIGHT_INITS[self.method.init](n, gen, device)

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        x_meta, y_meta = self.meta_batch(batch.step)
        m = self.method
        w_new, losses = meta_reweight_step(
            model,
            optimizer,
            batch.x,
            batch.y,
            self.weights[batch.index],
            x_meta,
            y_meta,
            meta_step_size(m, len(batch.y)) * batch.meta_factor,
            engine=m.engine,
            clamp=(m.clamp_min, m.clamp_max),
        )
        self.weights[batch.index] = w_new
        return losses, w_new / len(w_new)

    def state_dict(self) -> dict[str, Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.weights = state["weights"].to(self.weights.device)


# method.meta_lr_scale -> the factor on meta_lr for a batch of B: "none", meta_lr as is;
# "batch", meta_lr per unit of batch-mean gradient (dL_meta/dw_i carries the look-ahead loss's
# 1/B, so meta_lr * B moves a weight as far per visit at any B).
META_LR_SCALES = {"none": lambda batch_size: 1, "batch": lambda batch_size: batch_size}


def meta_step_size(method: DictConfig, batch_size: int) -> float:
    """The weights' step size for a batch of `batch_size` (`method.meta_lr_scale`)."""
    return method.meta_lr * META_LR_SCALES[method.meta_lr_scale](batch_size)


@dataclass
class MetaReweightConf(MethodConf):
    """Persistent per-example weights (Wu et al. 2023, Eq. 2-4; Shu et al. 2019 with the weights
    learned directly)."""

    meta_set: ClassVar[bool] = True

    # fast: the exact weight gradient as a JVP at the current point; reference: a second-order
    # backward through a functional look-ahead.
    engine: str = "fast"
    # Step size of the weight update w <- clip(w - meta_lr * dL_meta/dw, clamp_min, clamp_max).
    # The paper does not give it (the authors' config files are missing).
    meta_lr: float = 0.1
    # "none": meta_lr as is; "batch": meta_lr per unit of batch-mean gradient, the step being
    # meta_lr * B (dL_meta/dw_i carries the look-ahead's 1/B, so one value moves a weight by
    # the same amount per visit at any batch size).
    meta_lr_scale: str = "none"
    # meta_lr times meta_gamma at each milestone (in train.unit, counted within each phase): the
    # RBC authors' code multiplies it by 0.1 after epoch 120 of 200 on MNIST (none by default).
    meta_milestones: list[int] = field(default_factory=list)
    meta_gamma: float = 0.1
    clamp_min: float = 0.0
    clamp_max: float = 1.0
    # Initial weights: "uniform" U[0, 1) drawn from the seed (the authors' code; the paper does
    # not say), "ones", or "rectified_gaussian" (relu(N(0, 1)) scaled to mean 1, the authors'
    # other option).
    init: str = "uniform"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        m = cfg.method
        choice(cfg, "method.engine", META_REWEIGHT_ENGINES)
        choice(cfg, "method.init", tuple(WEIGHT_INITS))
        choice(cfg, "method.meta_lr_scale", tuple(META_LR_SCALES))
        require(m.meta_lr > 0, f"method.meta_lr={m.meta_lr} must be positive.")
        check_milestones(cfg, "method.meta_milestones")
        require(m.meta_gamma > 0, f"method.meta_gamma={m.meta_gamma} must be positive.")
        require(
            0 <= m.clamp_min < m.clamp_max,
            f"method.clamp_min={m.clamp_min} and clamp_max={m.clamp_max} must satisfy "
            "0 <= clamp_min < clamp_max.",
        )
        needs_meta_set(cfg)


@METHODS.register("meta_reweight", schema=MetaReweightConf)
def meta_reweight(ctx: RunContext) -> StepRule:
    return MetaReweightRule(ctx)
