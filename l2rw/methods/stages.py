"""A method's job without selection: its training stage, the model the job reports (`stop`),
and an optional fine-tuning stage on the clean pool (`finetune=clean`, the L2RW tables' +FT).

- `stop=final` reports the model at the end of training; `stop=early` (+ES) the one of best
  hyper-validation accuracy (`metrics.test_acc` is then `test_acc_es`; the final model's is kept
  as `test_acc_final`).
- With `finetune=clean`, the reported model is trained further on the clean pool alone; the
  record's `test_acc` is after fine-tuning, `test_acc_before_ft` what the training stage
  reported. Both stages are resumable phases of the one job: a finished training stage is not
  re-run when the job is resumed inside its fine-tuning.
"""

from dataclasses import dataclass, replace

from omegaconf import DictConfig

from l2rw.config.options import NoFinetuneConf, StopConf, needs_meta_set, require
from l2rw.methods import METHODS
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Phase, plan_phase, train_loop
from l2rw.methods.phases import (
    finetune,
    finetune_phase,
    load_snapshot_into,
    reported_metrics,
    run_phase,
)
from l2rw.methods.results import JobResult, LoopResult
from l2rw.registry import Registry

# stop: which model of the training stage the run reports; finetune: what follows training.
STOPS = Registry("stop", group="stop")
STOPS.option("final", StopConf)
STOPS.option("early", StopConf)


@dataclass
class FinetuneConf(NoFinetuneConf):
    """+FT: after the method's training, train its reported model (final, or the early-stopped
    one with stop=early) further on the clean pool alone, plain SGD with uniform weights, batch
    100, at the training stage's last learning rate (L2RW Sec. 4.2: "extra 5K steps of training
    on the limited clean data"; the authors' code: 1e-3). The record keeps the accuracy before
    and after."""

    name: str = "clean"
    steps: int = 5000
    # Constant learning rate; null: the training stage's last one (lr * gamma^#milestones,
    # the authors' 1e-3).
    lr: float | None = None
    batch_size: int = 100
    eval_every: int = 500

    @staticmethod
    def check(cfg: DictConfig) -> None:
        ft = cfg.finetune
        for key in ("steps", "batch_size", "eval_every"):
            require(ft[key] > 0, f"finetune.{key}={ft[key]} must be positive.")
        require(ft.lr is None or ft.lr > 0, f"finetune.lr={ft.lr} must be positive (or null).")
        require(
            cfg.selector.name == "none",
            "finetune=clean follows a method's training; a selection pipeline has its own "
            "fine-tuning rounds (selector=finetune).",
        )
        needs_meta_set(cfg)


FINETUNES = Registry("finetune", group="finetune")
FINETUNES.option("none", NoFinetuneConf)
FINETUNES.option("clean", FinetuneConf)

# The training stage's metrics that describe the model it reports, kept as they are when a
# fine-tuning stage follows (the S-Model +CONF baseline lookup reads its confusions).
TRAINING_ONLY = ("best_val_acc", "best_step", "val_confusion", "val_confusion_es", "test_acc_es")


def method_pipeline(ctx: RunContext) -> JobResult:
    cfg = ctx.cfg
    rule = METHODS.get(cfg.method.name)(ctx)
    train_ctx = ctx
    if getattr(rule, "trains_on_clean", False):
        train_ctx = replace(ctx, data=replace(ctx.data, train=ctx.data.clean))
    fine_tune = cfg.finetune.name != "none"
    phase = plan_phase(
        train_ctx, balanced=getattr(rule, "balanced_batches", False), keep_best=fine_tune
    )
    if not fine_tune:
        return _reported(train_loop(train_ctx, rule, phase), cfg.stop.name)
    trained = run_phase(phase, lambda: train_loop(train_ctx, rule, phase))
    out = _reported(trained.out, cfg.stop.name)
    if out.status != "completed":
        return out
    start = "best" if cfg.stop.name == "early" else "final"
    model = load_snapshot_into(ctx.model, phase.store, start)
    ft_phase = _finetune_phase(ctx, phase, trained.steps)
    tuned = run_phase(ft_phase, lambda: finetune(ctx, model, ctx.data.clean, ft_phase)).out
    metrics = dict(out.metrics)
    metrics.update(
        {k: v for k, v in tuned.metrics.items() if k not in TRAINING_ONLY},
        test_acc_before_ft=out.metrics["test_acc"],
        confusion_before_ft=out.metrics["confusion"],
        finetune_from=start,
        finetune_lr=ft_phase.lr,
        finetune_steps=tuned.metrics["steps"],
        steps=out.metrics["steps"],
    )
    return replace(out, status=tuned.status, metrics=metrics)


def _reported(out: LoopResult, stop: str) -> JobResult:
    """The training stage's result with `test_acc` the accuracy of the model `stop` reports."""
    metrics = reported_metrics(out.metrics, early=stop == "early")
    return JobResult(status=out.status, metrics=metrics, weights_hist=out.weights_hist)


def _finetune_phase(ctx: RunContext, trained: Phase, trained_steps: int) -> Phase:
    """`finetune.steps` on the clean pool at `finetune.lr`, or at the training stage's last
    learning rate (optimizer.lr times the schedule's factor where training stopped)."""
    cfg, ft = ctx.cfg, ctx.cfg.finetune
    lr = ft.lr
    if lr is None:
        lr = cfg.optimizer.lr * trained.schedule.factor(trained_steps)
    return finetune_phase(
        trained.folder,
        "finetune",
        steps=ft.steps,
        batch_size=min(ft.batch_size, len(ctx.data.clean)),
        eval_every=ft.eval_every,
        lr=lr,
        step_offset=trained_steps,
    )
