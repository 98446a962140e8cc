"""Phases shared by the jobs of a sweep: the warm-up of Algorithm 2 is the same for every selector
of a (data, noise, model, method, seed, warm-up start), and the authors' Stage A for every
warm-up of a (data, noise, model, schedule, seed). With `selector.cache_warmup` each runs once in
`<output_root>/cache/<kind>-<key>/` (the key a hash of its setting), under a file lock so that
parallel jobs wait for it and later jobs reuse it; each job's log then starts with its
evaluations.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from l2rw.methods.context import RunContext
from l2rw.methods.phases import PhaseResult
from l2rw.tracking.locks import exclusive
from l2rw.tracking.record import setting_of
from l2rw.tracking.sinks import JsonlSink, Tracker

log = logging.getLogger(__name__)

# Config groups that do not change the warm-up (beside bookkeeping): the selector (but its
# snapshot period), the report, and the table's per-scale values (read through the keys they set).
WARMUP_IRRELEVANT = ("selector", "report", "scales", "per_dataset")
# The selector's options that change the warm-up (beside the whole non-selector config).
WARMUP_SELECTOR_KEYS = ("snapshot_every", "snapshot_unit", "pretrain", "warmup_init")
# A method's keys that change a plain phase's schedule (`plan_phase`), so Stage A's too.
METHOD_SCHEDULE_KEYS = ("batch_size", "length", "milestones")


def warmup_setting(ctx: RunContext) -> dict[str, Any]:
    """Everything that determines the warm-up (data, noise, model, method, schedule, seed, the
    snapshot period, the pre-training and where the warm-up starts), and nothing else."""
    config = OmegaConf.to_container(ctx.cfg, resolve=True)
    setting = setting_of(config, ignore=WARMUP_IRRELEVANT)  # type: ignore[arg-type]
    for key in WARMUP_SELECTOR_KEYS:
        setting[key] = ctx.cfg.selector[key]
    return setting


def setting_key(setting: dict[str, Any]) -> str:
    """A shared phase's cache key: a hash of its setting (`warmup_setting`, `stage_a_setting`)."""
    encoded = json.dumps(setting, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def stage_a_setting(ctx: RunContext) -> dict[str, Any]:
    """Everything that determines Stage A (data, noise, model, schedule, seed), and nothing else:
    plain training reads neither the method nor the selector, but for a method's own schedule."""
    config = OmegaConf.to_container(ctx.cfg, resolve=True)
    setting = setting_of(config, ignore=(*WARMUP_IRRELEVANT, "method"))  # type: ignore[arg-type]
    setting["method_schedule"] = {k: config["method"].get(k) for k in METHOD_SCHEDULE_KEYS}
    return setting


def shared_phases(
    ctx: RunContext,
    kind: str,
    setting: dict[str, Any],
    train: Callable[[RunContext, Path], tuple[PhaseResult, int]],
) -> tuple[PhaseResult, int]:
    """`train` (phases that return their last result and the steps they logged) run once in
    `<output_root>/cache/<kind>-<key>/`, the key a hash of `setting`, under a file lock so
    parallel jobs wait for it and later ones reuse it; its evaluations are then copied into the
    start of `ctx`'s log."""
    folder = Path(ctx.cfg.paths.output_root) / "cache" / f"{kind}-{setting_key(setting)}"
    with exclusive(folder.with_suffix(".lock"), wait=True):
        shared_ctx = replace(ctx, run_dir=folder, tracker=Tracker(folder), setting=setting)
        result, steps = train(shared_ctx, folder)
    log.info("Shared %s: %s.", kind, folder)
    replay_log(ctx, folder, steps)
    return result, steps


def replay_log(ctx: RunContext, folder: Path, steps: int) -> None:
    """Make this job's log start with the evaluations of the shared phases in `folder` (also
    after a kill in the middle of copying them), keeping the rows of its later phases."""
    shared = JsonlSink(folder).rows()
    if [r for r in ctx.tracker.local.rows() if r["step"] <= steps] != shared:
        ctx.tracker.replace_up_to(steps, shared)
