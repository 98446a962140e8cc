"""Finished phases and the stages built from them, shared by every pipeline.

A phase that finished leaves its result (the loop's output) in its store
(`l2rw.methods.phase_store`), so a resumed job skips it. `finetune_phase` / `finetune` are the
one fine-tuning stage: a model trained further on the clean (meta) set alone with plain SGD,
after any method's training (the L2RW tables' +FT) or as a selection round (the RBC paper's
"Fine-tuning" row).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from l2rw.data.splits import Split
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Phase, train_loop
from l2rw.methods.optimizers import PhaseSchedule
from l2rw.methods.phase_store import PhaseStore
from l2rw.methods.results import LoopResult
from l2rw.methods.reweighting import UniformRule
from l2rw.models import build_model
from l2rw.seeding import MODEL_INIT, derive_seed

log = logging.getLogger(__name__)


@dataclass
class PhaseResult:
    """A finished phase: the loop's output, its length, and its files (snapshots, rule state)."""

    name: str
    out: LoopResult
    steps: int
    store: PhaseStore

    @property
    def best_step(self) -> int:
        return int(self.out.metrics["best_step"])


def run_phase(phase: Phase, train: Callable[[], LoopResult]) -> PhaseResult:
    """Run `train` for `phase` (or load the phase, when it finished before) and record that it
    finished."""
    store = phase.store
    done = store.load_result()
    if done is not None:
        log.info("Phase %s finished before: reusing it from %s.", phase.name, phase.folder)
        return PhaseResult(phase.name, LoopResult.from_dict(done["out"]), done["steps"], store)
    out = train()
    steps = int(out.metrics["steps"])
    store.save_result({"out": out.to_dict(), "steps": steps})
    return PhaseResult(phase.name, out, steps, store)


def fresh_model(ctx: RunContext, phase_number: int) -> nn.Module:
    """A newly initialised model for a phase, its initialisation fixed by (seed, phase)."""
    cfg = ctx.cfg
    state = torch.get_rng_state()
    torch.manual_seed(derive_seed(cfg.seed, MODEL_INIT, phase_number))
    model = build_model(cfg.model.name, ctx.data.num_classes, **cfg.model.options)
    torch.set_rng_state(state)
    return model.to(ctx.device)


def load_snapshot_into(model: nn.Module, store: PhaseStore, tag: str) -> nn.Module:
    """`model` holding the snapshot `tag` of the phase of `store` (its parameters must match)."""
    device = next(model.parameters()).device
    model.load_state_dict(store.load_model_state(tag, device))
    return model


def reported_metrics(metrics: dict[str, Any], early: bool) -> dict[str, Any]:
    """The one rule for which model a job reports: `test_acc` is the final model's or, with
    `early` (stop=early, and every selection pipeline), the best-validation model's
    (`test_acc_es`); the final model's is kept as `test_acc_final`."""
    reported = dict(metrics)
    reported["test_acc_final"] = reported["test_acc"]
    if early:
        reported["test_acc"] = reported["test_acc_es"]
    return reported


def snapshot_model(ctx: RunContext, store: PhaseStore, tag: str) -> nn.Module:
    """A model of the run's architecture holding the snapshot `tag` of the phase of `store`."""
    return load_snapshot_into(fresh_model(ctx, 0), store, tag)


def finetune_phase(
    folder: Path,
    name: str,
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    lr: float | None,
    step_offset: int,
    snapshot_every: int | None = None,
    keep_best: bool = False,
) -> Phase:
    """A constant-learning-rate phase of `steps` on the clean set (lr None: optimizer.lr)."""
    return Phase(
        name=name,
        folder=Path(folder),
        total=steps,
        schedule=PhaseSchedule(),
        batch_size=batch_size,
        eval_every=min(eval_every, steps),
        checkpoint_every=max(steps // 4, 1),
        step_offset=step_offset,
        snapshot_every=snapshot_every,
        keep_best=keep_best,
        lr=lr,
    )


def finetune(ctx: RunContext, model: nn.Module, clean: Split, phase: Phase) -> LoopResult:
    """Train `model` further on `clean` alone with uniform weights (evaluated as usual)."""
    ft_ctx = replace(ctx, data=replace(ctx.data, train=clean), model=model.train())
    return train_loop(ft_ctx, UniformRule(), phase)
