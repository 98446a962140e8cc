"""The training loop shared by every method: one *phase* of a job at a time.

A method supplies a `StepRule`: given the batch (with the training examples' indices), it performs
one optimizer step and returns the per-example losses and the weights it used. A rule may hold
state (a per-example weight table): if it has `state_dict` / `load_state_dict`, that state is
saved in and restored from the checkpoint. The loop owns the schedule, evaluation on the
hyper-validation and test sets (final and early-stopped accuracy), logging, weight histograms by
clean / flipped example, model snapshots for selection, checkpoints and resume.

A `Phase` names its checkpoint (`checkpoint-<name>.pt` in its folder) and offsets its steps in
the logs, so one job can run several phases (warm-up, then re-weighting rounds), resume inside any
of them, and never load one phase's checkpoint into another.

Each phase that ends (completed or diverged) logs one line, `LAUNCH_LINE`, saying from which step
it started in this launch (0, or the step of the checkpoint it resumed from) and how many optimizer
steps this launch took: a resumed run is told apart from one that quietly started over by it.
"""

import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from l2rw.data.batches import BalancedStream, EpochStream, steps_per_epoch
from l2rw.methods.checkpoint import checkpoint_identity
from l2rw.methods.context import RunContext
from l2rw.methods.evaluate import evaluate
from l2rw.methods.optimizers import (
    PhaseSchedule,
    build_optimizer,
    meta_rate_schedule,
    phase_schedule,
)
from l2rw.methods.phase_store import PhaseStore
from l2rw.methods.results import LoopResult
from l2rw.seeding import AUGMENT, BATCHES, generator

log = logging.getLogger(__name__)

# Logged once when a phase's training ends: its name, the step this launch started from, the
# optimizer steps this launch took, and the phase's length (read back by tests and scripts).
LAUNCH_LINE = "Phase %s: started at step %d, %d optimizer steps in this launch, of %d."
# LAUNCH_LINE read back, its fields captured: phase, start step, optimizer steps, phase length.
LAUNCH_PATTERN = re.compile(re.escape(LAUNCH_LINE).replace("%s", r"(\S+)").replace("%d", r"(\d+)"))

# Histogram of n * w_i (1 = the uniform weight), for the weight-distribution figure.
WEIGHT_BINS = np.linspace(0.0, 10.0, 51)
# A phase with eval_at_start reports its starting model's accuracies under these names.
START_METRICS = ("start_val_acc", "start_test_acc")


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    y_true: Tensor
    # Positions of the batch's examples in the phase's training split.
    index: Tensor
    step: int
    # The meta learning rate's factor at this step (`Phase.meta_schedule`).
    meta_factor: float = 1.0


class StepRule(Protocol):
    def __call__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch
    ) -> tuple[Tensor, Tensor]: ...


@dataclass
class Phase:
    """One training phase: its schedule in steps, its checkpoint's folder and name, its offset."""

    name: str
    folder: Path
    total: int
    # The learning-rate schedule in steps (a constant rate unless the phase is a run's training).
    schedule: PhaseSchedule
    batch_size: int
    eval_every: int
    checkpoint_every: int
    step_offset: int = 0
    # Class-balanced batches (RESAMPLE) instead of shuffled epochs.
    balanced: bool = False
    # Keep the model's state every this many steps, for selection, and the best-validation and
    # final states (None: keep none). Selection reads only the states after the best-validation
    # one, so those kept before a new best are deleted when it is found: the disk holds the
    # window after the best so far, however fine the interval.
    snapshot_every: int | None = None
    # Keep the best-validation and final states (a later stage starts from one of them).
    keep_best: bool = False
    # Learning rate of this phase (None: optimizer.lr), e.g. a fine-tuning stage's small one.
    lr: float | None = None
    # Evaluate the model before the first step (a phase that starts from an earlier phase's
    # model) and report it as START_METRICS.
    eval_at_start: bool = False
    # The meta learning rate's schedule in steps (`meta_rate_schedule`); the loop hands each step
    # its factor (`Batch.meta_factor`).
    meta_schedule: PhaseSchedule = field(default_factory=PhaseSchedule)

    @property
    def keeps_snapshots(self) -> bool:
        return self.keep_best or self.snapshot_every is not None

    @property
    def store(self) -> PhaseStore:
        """The phase's files (checkpoint, snapshots, rule state, result)."""
        return PhaseStore(self.folder, self.name)


def snapshot_interval(every: int, unit: str, per_epoch: int) -> int:
    """Steps between kept snapshots: `every` epochs of `per_epoch` steps, or `every` steps."""
    return every * per_epoch if unit == "epochs" else every


def plan_phase(
    ctx: RunContext,
    name: str = "train",
    *,
    folder: Path | None = None,
    step_offset: int = 0,
    balanced: bool = False,
    snapshot_every: int | None = None,
    snapshot_unit: str = "epochs",
    keep_best: bool = False,
) -> Phase:
    """The phase `name` over `ctx.data.train` with the run's schedule: `train.length`,
    `eval_every`, `checkpoint_every` and the `schedule`'s milestones / warm-up count in
    `train.unit`; a method with its own `length` / `milestones` (clean-only's short run)
    overrides those two."""
    train, method = ctx.cfg.train, ctx.cfg.method
    batch = method.batch_size or train.batch_size
    per_epoch = steps_per_epoch(len(ctx.data.train), batch)
    unit = 1 if train.unit == "steps" else per_epoch
    length = train.length if method.length is None else method.length
    total = length * unit
    if train.max_steps:
        total = min(total, train.max_steps)
    return Phase(
        name=name,
        folder=Path(folder or ctx.run_dir),
        total=total,
        schedule=phase_schedule(ctx.cfg, length * unit, unit, method.milestones),
        meta_schedule=meta_rate_schedule(method, unit),
        batch_size=batch,
        eval_every=train.eval_every * unit,
        checkpoint_every=train.checkpoint_every * unit,
        step_offset=step_offset,
        balanced=balanced,
        snapshot_every=(
            None
            if snapshot_every is None
            else snapshot_interval(snapshot_every, snapshot_unit, per_epoch)
        ),
        keep_best=keep_best,
    )


def make_optimizer(ctx: RunContext, phase: Phase):
    """The run's optimizer over the model at the phase's rate, and the phase's scheduler."""
    optimizer = build_optimizer(ctx.cfg, ctx.model.parameters(), phase.lr)
    return optimizer, phase.schedule.scheduler(optimizer)


class _Progress:
    """Best hyper-validation accuracy so far and the test accuracy at that point (+ES)."""

    def __init__(self) -> None:
        self.best_val_acc = -1.0
        self.test_acc_es: float | None = None
        self.best_step = -1
        # Confusion (observed label x prediction) on the hyper-validation set at the best step.
        self.val_confusion_es: list[list[int]] | None = None
        # The starting model's accuracies (Phase.eval_at_start), by START_METRICS name.
        self.start: dict[str, float | None] = {}
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

    def state_dict(self) -> dict[str, object]:
        """Plain values and tensors only, so the checkpoint loads with weights_only=True."""
        hist = {k: torch.from_numpy(v.copy()) for k, v in self.hist.items()}
        return {**self.__dict__, "hist": hist}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.hist = {k: v.cpu().numpy() for k, v in state["hist"].items()}


def train_loop(ctx: RunContext, rule: StepRule, phase: Phase | None = None) -> LoopResult:
    """Run `phase` (by default the job's one phase, "train") with `rule`; return its status,
    final metrics and weight histograms."""
    cfg, data, model = ctx.cfg, ctx.data, ctx.model
    phase = phase or plan_phase(ctx)
    optimizer, lr_schedule = make_optimizer(ctx, phase)
    preprocess = ctx.preprocess
    stream = (
        BalancedStream(data.train.y, phase.batch_size, cfg.seed, BATCHES)
        if phase.balanced
        else EpochStream(len(data.train), phase.batch_size, cfg.seed, BATCHES)
    )
    progress, start = _Progress(), 0
    identity = checkpoint_identity(ctx.setting)
    store = phase.store
    state = store.load_checkpoint(ctx.device, identity)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        progress.load_state_dict(state["progress"])
        if hasattr(rule, "load_state_dict"):
            rule.load_state_dict(state["rule"])
        start = state["step"]
        log.info(
            "Resumed phase %s from its checkpoint at step %d of %d.", phase.name, start, phase.total
        )

    # Rows this phase logged after its checkpoint (or at all, when it starts afresh) are redone.
    ctx.tracker.local.truncate_after(phase.step_offset + start)
    if phase.eval_at_start and start == 0:
        first = _evaluate(ctx, preprocess)
        progress.start = dict(
            zip(START_METRICS, (first.get("val", {}).get("acc"), first["test"]["acc"]), strict=True)
        )
        log.info("Phase %s starts at %s.", phase.name, progress.start)
    status, last_loss, train_loss = "completed", float("nan"), float("nan")
    evals = {}
    model.train()
    bar = tqdm(
        total=phase.total,
        initial=start,
        disable=not cfg.train.progress,
        desc=f"{cfg.method.name}:{phase.name}",
        mininterval=1 if sys.stderr.isatty() else 60,
    )
    step, taken = start, 0
    for step in range(start, phase.total):
        idx = stream(step).to(data.train.y.device)
        gen = generator(cfg.seed, AUGMENT, phase.step_offset + step, device=ctx.device)
        batch = Batch(
            preprocess(data.train.x[idx], True, gen),
            data.train.y[idx],
            data.train.y_true[idx],
            idx,
            phase.step_offset + step,
            phase.meta_schedule.factor(step),
        )
        losses, weights = rule(model, optimizer, batch)
        taken += 1
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
        if done % phase.eval_every == 0 or done == phase.total:
            evals = _evaluate(ctx, preprocess)
            if _track(progress, evals, done) and phase.keeps_snapshots:
                store.save_model("best", model)
                if phase.snapshot_every:
                    store.forget_steps_through(done)
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
            ctx.tracker.log(row, phase.step_offset + done)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{evals['test']['acc']:.4f}")
        after_best = done > progress.best_step  # the best's own state is kept as "best"
        if phase.snapshot_every and done % phase.snapshot_every == 0 and after_best:
            store.save_model(f"step-{done}", model)
        if done % phase.checkpoint_every == 0 and done < phase.total:
            store.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_schedule.state_dict(),
                    "progress": progress.state_dict(),
                    "rule": rule.state_dict() if hasattr(rule, "state_dict") else None,
                    "step": done,
                },
                identity,
            )
    bar.close()
    log.info(LAUNCH_LINE, phase.name, start, taken, phase.total)
    if not evals:
        evals = _evaluate(ctx, preprocess)
    if phase.keeps_snapshots:
        store.save_model("final", model)
        if hasattr(rule, "state_dict"):
            store.save_rule_state(rule.state_dict())
    store.remove_checkpoint()
    return LoopResult(
        status=status,
        metrics={
            "test_acc": evals["test"]["acc"],
            "test_loss": evals["test"]["loss"],
            "test_acc_es": progress.test_acc_es,
            "best_val_acc": progress.best_val_acc if progress.best_step >= 0 else None,
            "best_step": progress.best_step,
            "final_val_acc": evals.get("val", {}).get("acc"),
            "train_loss": train_loss,
            "steps": phase.total if status == "completed" else step + 1,
            "confusion": evals["test"]["confusion"],
            # On the hyper-validation set, whose labels are as noisy as training's: observed
            # label x prediction, of the final and of the best-validation model (S-Model +CONF).
            "val_confusion": evals.get("val", {}).get("confusion"),
            "val_confusion_es": progress.val_confusion_es,
            **progress.start,
        },
        weights_hist={
            "bins": WEIGHT_BINS.tolist(),
            "clean": progress.hist["clean"].tolist(),
            "flipped": progress.hist["flipped"].tolist(),
        },
    )


def train_method(ctx: RunContext, phase: Phase) -> LoopResult:
    """Train `ctx.model` on `ctx.data` for `phase` with the step rule of `ctx.cfg.method`."""
    from l2rw.methods import METHODS

    return train_loop(ctx, METHODS.get(ctx.cfg.method.name)(ctx), phase)


def _evaluate(ctx: RunContext, preprocess) -> dict[str, dict[str, object]]:
    k, bs = ctx.data.num_classes, ctx.cfg.train.eval_batch_size
    out = {"test": evaluate(ctx.model, ctx.data.test, preprocess, k, bs)}
    if len(ctx.data.hyper_val):
        out["val"] = evaluate(ctx.model, ctx.data.hyper_val, preprocess, k, bs)
    return out


def _track(progress: _Progress, evals: dict[str, dict[str, object]], step: int) -> bool:
    """Note a new best hyper-validation accuracy; True when this evaluation is the new best."""
    if "val" in evals and evals["val"]["acc"] > progress.best_val_acc:
        progress.best_val_acc = evals["val"]["acc"]
        progress.test_acc_es = evals["test"]["acc"]
        progress.best_step = step
        progress.val_confusion_es = evals["val"]["confusion"]
        return True
    return False
