"""Per-batch example re-weighting methods of the L2RW paper (Sec. 4.1 and Eq. 16), and L2RW.

Every rule takes one optimizer step on sum_i w_i * loss_i; the weights sum to one (or are all
zero), except PROPORTION's, which sum to one in expectation over batches.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from l2rw.data.batches import EpochStream
from l2rw.meta import l2rw_step, normalize_weights
from l2rw.methods import METHODS
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Batch, train_loop
from l2rw.seeding import AUGMENT, CLEAN_BATCHES, WEIGHTS, generator


def _weighted_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, weigh
) -> tuple[Tensor, Tensor]:
    optimizer.zero_grad(set_to_none=True)
    losses = F.cross_entropy(model(batch.x), batch.y, reduction="none")
    weights = weigh(losses.detach(), batch)
    (weights * losses).sum().backward()
    optimizer.step()
    return losses.detach(), weights


def _uniform(losses: Tensor, batch: Batch) -> Tensor:
    return torch.full_like(losses, 1.0 / len(losses))


@METHODS.register("baseline")
def baseline(ctx: RunContext) -> dict:
    return train_loop(ctx, lambda m, o, b: _weighted_step(m, o, b, _uniform))


@METHODS.register("resample")
def resample(ctx: RunContext) -> dict:
    """Uniform weights on class-balanced batches (the config sets method.balanced_batches)."""
    return train_loop(ctx, lambda m, o, b: _weighted_step(m, o, b, _uniform))


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


@METHODS.register("proportion")
def proportion(ctx: RunContext) -> dict:
    """Weight each example by the inverse frequency of its (observed) class in the training set;
    `method.weighting` picks the normalisation (see `proportion_weights`)."""
    counts = torch.bincount(ctx.data.train.y, minlength=ctx.data.num_classes)
    form = ctx.cfg.method.weighting

    def weigh(losses: Tensor, batch: Batch) -> Tensor:
        return proportion_weights(batch.y, counts, form)

    return train_loop(ctx, lambda m, o, b: _weighted_step(m, o, b, weigh))


@METHODS.register("hard_mining")
def hard_mining(ctx: RunContext) -> dict:
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

    return train_loop(ctx, rule)


@METHODS.register("random")
def random_weights(ctx: RunContext) -> dict:
    """Rectified Gaussian weights, normalised (L2RW Eq. 16)."""
    std, seed = ctx.cfg.method.random_std, ctx.cfg.seed

    def weigh(losses: Tensor, batch: Batch) -> Tensor:
        gen = generator(seed, WEIGHTS, batch.step, device=losses.device)
        z = torch.randn(losses.shape, generator=gen, device=losses.device) * std
        return normalize_weights(z)

    return train_loop(ctx, lambda m, o, b: _weighted_step(m, o, b, weigh))


@METHODS.register("l2rw")
def l2rw(ctx: RunContext) -> dict:
    """Learning to Reweight: weights from one meta-gradient step on a clean batch per step.

    Clean batches go through the same augmentation as training batches (authors' CIFAR code).
    """
    cfg, clean = ctx.cfg, ctx.data.clean
    stream = EpochStream(len(clean), cfg.train.meta_batch_size, cfg.seed, CLEAN_BATCHES)
    preprocess = ctx.preprocess
    decay = cfg.train.weight_decay if cfg.method.val_weight_decay else 0.0

    def rule(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        idx = stream(batch.step).to(clean.y.device)
        gen = generator(cfg.seed, AUGMENT, CLEAN_BATCHES, batch.step, device=clean.y.device)
        x_val = preprocess(clean.x[idx], True, gen)
        weights, losses = l2rw_step(
            model,
            optimizer,
            batch.x,
            batch.y,
            x_val,
            clean.y[idx],
            engine=cfg.method.engine,
            val_weight_decay=decay,
        )
        return losses, weights

    return train_loop(ctx, rule)
