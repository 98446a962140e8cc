"""The training loop shared by every per-batch re-weighting method.

A method supplies a `StepRule`: given the batch, it performs one optimizer step and returns the
per-example losses and the weights it used. The loop owns the schedule, evaluation on the
hyper-validation and test sets (final and early-stopped accuracy), logging, weight histograms
by clean / flipped example, checkpoints and resume.
"""

import logging
import math
import sys
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from l2rw.data.batches import BalancedStream, EpochStream, steps_per_epoch
from l2rw.methods.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from l2rw.methods.context import RunContext
from l2rw.methods.evaluate import evaluate
from l2rw.seeding import AUGMENT, BATCHES, generator

log = logging.getLogger(__name__)

# Histogram of n * w_i (1 = the uniform weight), for the weight-distribution figure.
WEIGHT_BINS = np.linspace(0.0, 10.0, 51)


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    y_true: Tensor
    step: int


class StepRule(Protocol):
    def __call__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch
    ) -> tuple[Tensor, Tensor]: ...


@dataclass
class Schedule:
    total: int
    milestones: list[int]
    batch_size: int


def schedule(ctx: RunContext) -> Schedule:
    train = ctx.cfg.train
    batch = ctx.cfg.method.batch_size or train.batch_size
    unit = 1 if train.unit == "steps" else steps_per_epoch(len(ctx.data.train), batch)
    total = train.length * unit
    if train.max_steps:
        total = min(total, train.max_steps)
    return Schedule(total, [m * unit for m in train.milestones], batch)


def make_optimizer(ctx: RunContext, sched: Schedule):
    train = ctx.cfg.train
    opt = torch.optim.SGD(
        ctx.model.parameters(),
        lr=train.lr,
        momentum=train.momentum,
        nesterov=train.nesterov,
        weight_decay=train.weight_decay,
    )
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, sched.milestones, gamma=train.gamma)


class _Progress:
    """Best hyper-validation accuracy so far and the test accuracy at that point (+ES)."""

    def __init__(self) -> None:
        self.best_val_acc = -1.0
        self.test_acc_es: float | None = None
        self.best_step = -1
        # Sum and count of the training loss since the last evaluation (logged as its mean).
        self.loss_sum, self.loss_count = 0.0, 0
        self.hist = {
            "clean": np.zeros(len(WEIGHT_BINS) - 1),
            "flipped": np.zeros(len(WEIGHT_BINS) - 1),
        }

    def add_weights(self, weights: Tensor, batch: Batch) -> None:
        scaled = (weights.detach() * len(weights)).cpu().numpy()
        flipped = (batch.y != batch.y_true).cpu().numpy()
        for key, mask in (("clean", ~flipped), ("flipped", flipped)):
            self.hist[key] += np.histogram(np.clip(scaled[mask], 0, WEIGHT_BINS[-1]), WEIGHT_BINS)[
                0
            ]


def train_loop(ctx: RunContext, rule: StepRule) -> dict[str, object]:
    """Run the schedule with `rule`; return the final metrics of the record."""
    cfg, data, model = ctx.cfg, ctx.data, ctx.model
    sched = schedule(ctx)
    optimizer, lr_schedule = make_optimizer(ctx, sched)
    preprocess = ctx.preprocess
    stream = (
        BalancedStream(data.train.y, sched.batch_size, cfg.seed, BATCHES)
        if cfg.method.balanced_batches
        else EpochStream(len(data.train), sched.batch_size, cfg.seed, BATCHES)
    )
    progress, start = _Progress(), 0
    state = load_checkpoint(ctx.run_dir, ctx.device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        progress.__dict__.update(state["progress"])
        start = state["step"]
        ctx.tracker.local.truncate_after(start)
        log.info("Resumed from checkpoint at step %d of %d.", start, sched.total)

    status, last_loss, train_loss = "completed", float("nan"), float("nan")
    evals = {}
    model.train()
    bar = tqdm(
        total=sched.total,
        initial=start,
        disable=not cfg.train.progress,
        desc=cfg.method.name,
        mininterval=1 if sys.stderr.isatty() else 60,
    )
    for step in range(start, sched.total):
        idx = stream(step).to(data.train.y.device)
        gen = generator(cfg.seed, AUGMENT, step, device=ctx.device)
        batch = Batch(
            preprocess(data.train.x[idx], True, gen),
            data.train.y[idx],
            data.train.y_true[idx],
            step,
        )
        losses, weights = rule(model, optimizer, batch)
        lr_schedule.step()
        progress.add_weights(weights, batch)
        last_loss = float((weights * losses).sum())
        progress.loss_sum += last_loss
        progress.loss_count += 1
        bar.update(1)
        if not math.isfinite(last_loss):
            status, train_loss = "diverged", last_loss
            log.warning(
                "Training loss is %s at step %d: stopping, status 'diverged'.", last_loss, step
            )
            break
        done = step + 1
        if done % cfg.train.eval_every == 0 or done == sched.total:
            evals = _evaluate(ctx, preprocess)
            _track(progress, evals, done)
            train_loss = progress.loss_sum / progress.loss_count
            progress.loss_sum, progress.loss_count = 0.0, 0
            row = {"train/loss": train_loss, "lr": lr_schedule.get_last_lr()[0]}
            row.update(
                {
                    f"{split}/{k}": v
                    for split, m in evals.items()
                    for k, v in m.items()
                    if k != "confusion"
                }
            )
            ctx.tracker.log(row, done)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{evals['test']['acc']:.4f}")
        if done % cfg.train.checkpoint_every == 0 and done < sched.total:
            save_checkpoint(
                ctx.run_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_schedule.state_dict(),
                    "progress": progress.__dict__,
                    "step": done,
                },
            )
    bar.close()
    if not evals:
        evals = _evaluate(ctx, preprocess)
    remove_checkpoint(ctx.run_dir)
    return {
        "status": status,
        "metrics": {
            "test_acc": evals["test"]["acc"],
            "test_loss": evals["test"]["loss"],
            "test_acc_es": progress.test_acc_es,
            "best_val_acc": progress.best_val_acc if progress.best_step >= 0 else None,
            "best_step": progress.best_step,
            "final_val_acc": evals.get("val", {}).get("acc"),
            "train_loss": train_loss,
            "steps": sched.total if status == "completed" else step + 1,
            "confusion": evals["test"]["confusion"],
        },
        "weights_hist": {
            "bins": WEIGHT_BINS.tolist(),
            "clean": progress.hist["clean"].tolist(),
            "flipped": progress.hist["flipped"].tolist(),
        },
    }


def _evaluate(ctx: RunContext, preprocess) -> dict[str, dict[str, object]]:
    k, bs = ctx.data.num_classes, ctx.cfg.train.eval_batch_size
    out = {"test": evaluate(ctx.model, ctx.data.test, preprocess, k, bs)}
    if len(ctx.data.hyper_val):
        out["val"] = evaluate(ctx.model, ctx.data.hyper_val, preprocess, k, bs)
    return out


def _track(progress: _Progress, evals: dict[str, dict[str, object]], step: int) -> None:
    if "val" in evals and evals["val"]["acc"] > progress.best_val_acc:
        progress.best_val_acc = evals["val"]["acc"]
        progress.test_acc_es = evals["test"]["acc"]
        progress.best_step = step
