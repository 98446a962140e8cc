"""Meta-sample selection, Algorithm 2 of Wu et al. (2023), as one job of phases.

Warm-up: the method (meta re-weighting, or L2RW) trains with the dataset's clean pool (M0 random
training examples, cleaned) as the meta set, keeping model snapshots; it starts from scratch or
(`selector.warmup_init=plain`) from the best model of the authors' Stage A, plain training on the
noisy data. Then rounds until `selector.budget`: the selector reads the previous phase's
snapshots (the best-validation model t* and every P epochs after it) and picks examples; they are
cleaned (true label), leave the training set and join the meta set; the method trains again with
the grown meta set, from the previous phase's best model (`selector.round_init=previous`, the
paper's "pre-train the models by running the meta re-weighting algorithm with small amount of
randomly selected meta samples") or from scratch, with fresh weights, optimiser and schedule
either way (or, for `round_training=finetune`, the previous model is trained further on the meta
set alone). The reported number is the test accuracy of the last phase at its best validation
accuracy.

Every phase is resumable on its own: a finished phase leaves `phase-<name>.json` beside its
snapshots, a round's selection is written to `round-<r>.json` before its training starts, and a
phase in progress has its own checkpoint. The warm-up and Stage A are shared by the jobs of a
sweep (`l2rw.methods.phase_cache`); what the pipeline records beside the algorithm (the weights'
AUC, the figures' artifacts) is `l2rw.methods.selection_outputs`.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from l2rw.data.batches import steps_per_epoch
from l2rw.data.splits import DataBundle, data_facts
from l2rw.errors import ConfigError
from l2rw.methods.context import RunContext
from l2rw.methods.loop import (
    START_METRICS,
    plan_phase,
    snapshot_interval,
    train_loop,
    train_method,
)
from l2rw.methods.phase_cache import shared_phases, stage_a_setting, warmup_setting
from l2rw.methods.phases import (
    PhaseResult,
    finetune,
    finetune_phase,
    fresh_model,
    reported_metrics,
    run_phase,
    snapshot_model,
)
from l2rw.methods.results import JobResult
from l2rw.methods.reweighting import UniformRule
from l2rw.methods.selection_outputs import weight_diagnostics, write_selection_artifacts
from l2rw.selection.selectors import SELECTORS, Candidates, Selection
from l2rw.tracking.record import write_json_atomic

log = logging.getLogger(__name__)

# What a round's record in `selection.rounds` copies from its round-<r>.json.
ROUND_FACTS = ("snapshot_steps", "theorem_checks")


def selection_pipeline(ctx: RunContext) -> JobResult:
    cfg, sel = ctx.cfg, ctx.cfg.selector
    label_free = sel.label_free if sel.label_free is not None else cfg.noise.name != "none"
    data = ctx.data
    wanted = sel.budget - len(data.clean)
    if wanted >= len(data.train):
        raise ConfigError(
            f"selector={sel.name} would clean {wanted} more training examples (selector.budget="
            f"{sel.budget} meta samples, {len(data.clean)} of them the warm-up's), but only "
            f"{len(data.train)} training examples are left to choose from and train on. Lower "
            "selector.budget (or dataset.rbc_budget), or use more training data "
            "(dataset.train_subset)."
        )
    cleanable = len(data.cleanable_positions())
    if wanted > cleanable:
        raise ConfigError(
            f"selector={sel.name} would clean {wanted} more training examples (selector.budget="
            f"{sel.budget} meta samples, {len(data.clean)} of them the warm-up's), but "
            f"dataset={cfg.dataset.name} knows the true label of only "
            f"{cleanable} of the training examples left (its verified "
            "labels), and only those can be cleaned. Lower selector.budget (or "
            "dataset.rbc_budget)."
        )
    warm, offset = _warmup(ctx)
    rounds: list[dict[str, Any]] = [_summary(warm, 0, [], 0, len(data.clean))]
    prev, r = warm, 0
    selection: Selection | None = None
    candidate_classes = data.train.y_true  # of the last round's candidates
    checks: dict[str, Any] = {}
    while len(data.clean) < sel.budget:
        r += 1
        k = min(sel.per_round or sel.budget, sel.budget - len(data.clean))
        positions, noisy, selection, picked = _select(ctx, r, prev, data, k, label_free)
        checks = picked.get("theorem_checks", {})
        candidate_classes = data.train.y_true[data.cleanable_positions()]
        chosen = data.train.index[positions.cpu().numpy()].tolist()
        data = data.move_to_meta(positions)
        prev = _round(ctx, r, data, prev, offset)
        offset += prev.steps
        rounds.append(_summary(prev, r, chosen, noisy, len(data.clean)))
        rounds[-1].update({k: picked[k] for k in ROUND_FACTS if k in picked})
        if prev.out.status != "completed":
            break

    write_selection_artifacts(ctx, selection, candidate_classes, prev, data)
    metrics = reported_metrics(prev.out.metrics, early=True)
    metrics.update(weight_diagnostics(ctx, prev, data))
    metrics.update(checks)  # the last round's (selector.theorem_checks; each round's in rounds)
    return JobResult(
        status=prev.out.status,
        metrics=metrics,
        weights_hist=prev.out.weights_hist,
        data=data_facts(data, ctx.data.facts["noise"]),
        selection={
            "selector": sel.name,
            "label_free": label_free,
            "meta_indices": data.clean.index.tolist(),
            "warmup_indices": ctx.data.clean.index.tolist(),
            "noisy_selected_before_cleaning": sum(x["noisy_before_cleaning"] for x in rounds),
            "rounds": rounds,
            "warmup_folder": str(warm.store.folder),
        },
    )


def _warmup(ctx: RunContext) -> tuple[PhaseResult, int]:
    """The warm-up phase and the steps logged up to its end (its Stage A's included)."""
    if not ctx.cfg.selector.cache_warmup:
        return _warmup_phases(ctx, ctx.run_dir)
    return shared_phases(ctx, "warmup", warmup_setting(ctx), _warmup_phases)


def _warmup_phases(ctx: RunContext, folder: Path) -> tuple[PhaseResult, int]:
    """The pre-training phase: meta re-weighting with the random clean pool as the meta set
    (after Stage A, plain training on the noisy data, with warmup_init=plain) or, with
    selector.pretrain=false, plain training on the noisy data (no meta samples); and the steps
    of both."""
    sel = ctx.cfg.selector
    if not sel.pretrain:
        warm = _train_phase(ctx, "warmup", 0, ctx.data, folder, 0, plain=True)
        return warm, warm.steps
    stage_a = _stage_a(ctx, folder) if sel.warmup_init == "plain" else None
    offset = stage_a.steps if stage_a else 0
    warm = _train_phase(ctx, "warmup", 0, ctx.data, folder, offset, start=stage_a)
    return warm, offset + warm.steps


def _stage_a(ctx: RunContext, folder: Path) -> PhaseResult:
    """The authors' Stage A: plain training on the noisy data, in `folder` or, with
    `selector.cache_warmup`, once in `<output_root>/cache/stage-a-<key>/` for every warm-up of
    the same data, noise, model, schedule and seed (a meta lr grid's warm-ups share it); its
    evaluations are copied into `ctx`'s log."""

    def train(phase_ctx: RunContext, phase_folder: Path) -> tuple[PhaseResult, int]:
        stage_a = _train_phase(
            phase_ctx, "stage_a", 0, ctx.data, phase_folder, 0, plain=True, selection_follows=False
        )
        return stage_a, stage_a.steps

    if not ctx.cfg.selector.cache_warmup:
        return train(ctx, folder)[0]
    return shared_phases(ctx, "stage-a", stage_a_setting(ctx), train)[0]


def _train_phase(
    ctx: RunContext,
    name: str,
    number: int,
    data: DataBundle,
    folder: Path,
    offset: int,
    plain: bool = False,
    selection_follows: bool = True,
    start: PhaseResult | None = None,
) -> PhaseResult:
    """Meta re-weighting (`plain`: uniform weights) on `data` from the best model of phase
    `start` (None: from scratch), keeping its best and final models and, when a selection round
    follows, the snapshots it reads every P. It evaluates its starting model before any step."""
    sel = ctx.cfg.selector
    data_ctx = replace(ctx, data=data)
    phase = plan_phase(
        data_ctx,
        name,
        folder=folder,
        step_offset=offset,
        snapshot_every=sel.snapshot_every if selection_follows else None,
        snapshot_unit=sel.snapshot_unit,
        keep_best=True,
    )
    phase = replace(phase, eval_at_start=True)

    def train() -> dict[str, Any]:
        log.info(
            "Phase %s: %d training / %d meta examples%s, from %s.",
            name,
            len(data.train),
            len(data.clean),
            " (plain training, uniform weights)" if plain else "",
            "scratch" if start is None else f"the best model of phase {start.name}",
        )
        model = (
            fresh_model(data_ctx, number)
            if start is None
            else snapshot_model(ctx, start.store, "best")
        )
        model_ctx = replace(data_ctx, model=model)
        if plain:
            return train_loop(model_ctx, UniformRule(), phase)
        return train_method(model_ctx, phase)

    return run_phase(phase, train)


def _round(
    ctx: RunContext, r: int, data: DataBundle, prev: PhaseResult, offset: int
) -> PhaseResult:
    sel = ctx.cfg.selector
    follows = len(data.clean) < sel.budget
    if sel.round_training == "reweight":
        start = prev if sel.round_init == "previous" else None
        return _train_phase(
            ctx, f"round{r}", r, data, ctx.run_dir, offset, selection_follows=follows, start=start
        )
    return _finetune(ctx, r, data, prev, offset, selection_follows=follows)


def _finetune(
    ctx: RunContext,
    r: int,
    data: DataBundle,
    prev: PhaseResult,
    offset: int,
    selection_follows: bool,
) -> PhaseResult:
    """The previous phase's best-validation model trained further on the meta set alone, with
    plain SGD at `selector.finetune_lr` (null: optimizer.lr) for `selector.finetune_epochs` (the
    paper's "Fine-tuning" row), keeping its best and final models and, when a selection round
    follows, the snapshots it reads."""
    cfg = ctx.cfg
    batch = min(cfg.train.batch_size, len(data.clean))
    per_epoch = steps_per_epoch(len(data.clean), batch)
    phase = finetune_phase(
        ctx.run_dir,
        f"round{r}",
        steps=cfg.selector.finetune_epochs * per_epoch,
        batch_size=batch,
        eval_every=per_epoch,
        lr=cfg.selector.finetune_lr,
        step_offset=offset,
        snapshot_every=(
            snapshot_interval(cfg.selector.snapshot_every, cfg.selector.snapshot_unit, per_epoch)
            if selection_follows
            else None
        ),
        keep_best=True,
    )

    def train() -> dict[str, Any]:
        model = snapshot_model(ctx, prev.store, "best")
        return finetune(replace(ctx, data=data), model, data.clean, phase)

    return run_phase(phase, train)


def selection_steps(kept: list[int], best_step: int, k: int) -> list[int]:
    """Algorithm 3's time steps besides t*: K - 1 of the kept steps after `best_step`, evenly
    spaced from the first to the last ("uniformly sample K models from t* + 1 .. T"); all of
    them when there are no more than K - 1."""
    after = [s for s in kept if s > best_step]
    if len(after) <= k - 1:
        return after
    positions = np.floor(np.linspace(0, len(after) - 1, k - 1) + 0.5).astype(int)  # half up
    return [after[i] for i in positions]


def selection_models(ctx: RunContext, prev: PhaseResult) -> dict[int, nn.Module]:
    """Algorithm 3's snapshots by the phase's step: the best-validation model t* first, then
    K - 1 of those kept every P epochs after it (`selection_steps`), K in all (fewer when the
    phase ended first)."""
    steps = selection_steps(prev.store.snapshot_steps(), prev.best_step, ctx.cfg.selector.snapshots)
    tags = {prev.best_step: "best", **{s: f"step-{s}" for s in steps}}
    return {s: snapshot_model(ctx, prev.store, t).eval() for s, t in tags.items()}


def _select(
    ctx: RunContext, r: int, prev: PhaseResult, data: DataBundle, k: int, label_free: bool
) -> tuple[torch.Tensor, int, Selection | None, dict[str, Any]]:
    """Round r's picks as positions in `data.train` (read back when the round was selected
    before), how many of them had a wrong label, the selection (None when read back) and
    round-<r>.json's content: the picks by source index, the snapshots read (their steps in the
    previous phase, t* first) and the selector's diagnostics."""
    path = ctx.run_dir / f"round-{r}.json"
    selection = None
    if path.exists():
        saved = json.loads(path.read_text())
        chosen = saved["selected"]
        where = {int(s): i for i, s in enumerate(data.train.index)}
        positions = torch.tensor([where[s] for s in chosen], device=data.train.y.device)
    else:
        cfg = ctx.cfg
        snapshots = selection_models(ctx, prev)
        models = list(snapshots.values())
        # Only examples whose true label is known can be cleaned (a benchmark's verified ones).
        allowed = torch.as_tensor(data.cleanable_positions(), device=data.train.y.device)
        with torch.no_grad():
            x = ctx.preprocess(data.train.x[allowed])
            meta_x = ctx.preprocess(data.clean.x)
        candidates = Candidates(
            x,
            data.train.y[allowed],
            meta_x,
            data.clean.y,
            models,
            label_free,
            cfg.seed,
            r,
            cfg.selector,
            y_true=data.train.y_true[allowed],
        )
        selection = SELECTORS.get(cfg.selector.name)(candidates, k)
        positions = allowed[selection.indices.to(allowed.device)]
        if len(set(positions.tolist())) != len(positions):
            raise RuntimeError(f"selector {cfg.selector.name} picked an example twice")
        saved = {
            "selected": data.train.index[positions.cpu().numpy()].tolist(),
            "snapshot_steps": list(snapshots),
        }
        if selection.diagnostics:
            saved["theorem_checks"] = selection.diagnostics
        write_json_atomic(path, saved)
    noisy = int((data.train.y[positions] != data.train.y_true[positions]).sum())
    log.info(
        "Round %d: %d examples selected, %d of them had a wrong label.", r, len(positions), noisy
    )
    if "theorem_checks" in saved:
        log.info("Round %d, the theorems' checks: %s", r, saved["theorem_checks"])
    return positions, noisy, selection, saved


def _summary(
    result: PhaseResult, r: int, chosen: list[int], noisy: int, meta_samples: int
) -> dict[str, Any]:
    """One phase in the record's `selection.rounds`; `meta_samples`: the meta set's size it
    trained with (the warm-up's random ones and every round's picks so far)."""
    m = result.out.metrics
    return {
        "round": r,
        "phase": result.name,
        "selected": chosen,
        "noisy_before_cleaning": noisy,
        "meta_samples": meta_samples,
        "test_acc": m["test_acc"],
        "test_acc_es": m["test_acc_es"],
        "best_val_acc": m["best_val_acc"],
        "best_step": m["best_step"],
        "steps": result.steps,
        **{k: m[k] for k in START_METRICS if k in m},
    }
