"""The training optimizer (`optimizer=sgd|adam|adamw|rmsprop|adagrad`) and its learning-rate
schedule (`schedule=multistep|cosine|constant`), each option registered with its schema.

Every phase of a run (training, fine-tuning, a selection round) uses the run's optimizer with its
settings; a phase may set its own constant rate (fine-tuning's). The schedule counts in
`train.unit` (steps or epochs) and is turned into steps per phase (`PhaseSchedule`): `multistep`
multiplies the rate by `gamma` at each milestone (torch's MultiStepLR, as every paper table
uses), `cosine` warms up linearly over `warmup` units then follows a half cosine down to
`min_factor` x the rate at the phase's end, `constant` keeps it. The meta-gradient engines look
ahead through any of these optimizers exactly (`l2rw.meta.optimizer_steps`).
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig

from l2rw.config.options import OptimizerConf, ScheduleConf, check_milestones, require
from l2rw.registry import Registry

OPTIMIZERS = Registry("optimizer", group="optimizer")
SCHEDULES = Registry("schedule", group="schedule")


@dataclass
class SGDConf(OptimizerConf):
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConf(OptimizerConf):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class AdamWConf(AdamConf):
    # torch's AdamW default.
    weight_decay: float = 0.01


@dataclass
class RMSpropConf(OptimizerConf):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@dataclass
class AdagradConf(OptimizerConf):
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0


Params = Iterable[torch.nn.Parameter]


def _torch_optimizer(optimizer: type[torch.optim.Optimizer]) -> Callable[..., Any]:
    """A builder of torch's `optimizer` from an option's fields, which are its keyword
    arguments (a list, such as Adam's betas, passed as a tuple)."""

    def build(params: Params, **options: Any) -> torch.optim.Optimizer:
        kwargs = {
            k: tuple(v) if isinstance(v, list | ListConfig) else v for k, v in options.items()
        }
        return optimizer(params, **kwargs)

    build.__doc__ = f"torch.optim.{optimizer.__name__} over `params` with the option's values."
    return build


for _name, _schema, _optimizer in (
    ("sgd", SGDConf, torch.optim.SGD),
    ("adam", AdamConf, torch.optim.Adam),
    ("adamw", AdamWConf, torch.optim.AdamW),
    ("rmsprop", RMSpropConf, torch.optim.RMSprop),
    ("adagrad", AdagradConf, torch.optim.Adagrad),
):
    OPTIMIZERS.register(_name, schema=_schema)(_torch_optimizer(_optimizer))


def build_optimizer(cfg: DictConfig, params: Params, lr: float | None = None):
    """The run's optimizer (`cfg.optimizer`) over `params`, at rate `lr` (None: optimizer.lr)."""
    options: dict[str, Any] = {k: v for k, v in cfg.optimizer.items() if k != "name"}
    if lr is not None:
        options["lr"] = lr
    return OPTIMIZERS.get(cfg.optimizer.name)(params, **options)


@dataclass
class MultiStepConf(ScheduleConf):
    """The rate times `gamma` at each milestone (in train.unit): the papers' step schedules."""

    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1

    @staticmethod
    def check(cfg: DictConfig) -> None:
        check_milestones(cfg, "schedule.milestones")


@dataclass
class CosineConf(ScheduleConf):
    """Linear warm-up over `warmup` units (train.unit) from rate / warmup, then a half cosine
    from the rate down to `min_factor` x the rate at the phase's end."""

    warmup: int = 0
    min_factor: float = 0.0

    @staticmethod
    def check(cfg: DictConfig) -> None:
        s = cfg.schedule
        require(s.warmup >= 0, f"schedule.warmup={s.warmup} must be >= 0.")
        require(
            0.0 <= s.min_factor <= 1.0, f"schedule.min_factor={s.min_factor} must be in [0, 1]."
        )


@dataclass
class PhaseSchedule:
    """A phase's schedule in steps: the rate's factor at each step (`factor`), and the torch
    scheduler that applies it (`scheduler`)."""

    name: str = "constant"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup: int = 0
    total: int = 0
    min_factor: float = 0.0

    def factor(self, step: int) -> float:
        """The rate's multiplier after `step` steps."""
        return SCHEDULES.get(self.name)(self, step)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        if self.name == "cosine":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
        # multistep, and constant as a multistep with no milestones: torch's own arithmetic, so
        # that the paper tables' runs stay bit-identical.
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, self.milestones, gamma=self.gamma)


@SCHEDULES.register("constant", schema=ScheduleConf)
def _constant(schedule: PhaseSchedule, step: int) -> float:
    return 1.0


@SCHEDULES.register("multistep", schema=MultiStepConf)
def _multistep(schedule: PhaseSchedule, step: int) -> float:
    return schedule.gamma ** sum(m <= step for m in schedule.milestones)


@SCHEDULES.register("cosine", schema=CosineConf)
def _cosine(schedule: PhaseSchedule, step: int) -> float:
    if step < schedule.warmup:
        return (step + 1) / schedule.warmup
    span = max(schedule.total - schedule.warmup, 1)
    progress = min((step - schedule.warmup) / span, 1.0)
    return schedule.min_factor + (1.0 - schedule.min_factor) * 0.5 * (
        1.0 + math.cos(math.pi * progress)
    )


def meta_rate_schedule(method: DictConfig, unit: int) -> PhaseSchedule:
    """The meta learning rate's factor over a phase of `unit` steps per train.unit: times
    `method.meta_gamma` at each of `method.meta_milestones` (meta re-weighting's; constant for a
    method without them). Like the model's rate, a pure function of the phase's step, so a
    resumed phase continues it exactly."""
    return PhaseSchedule(
        name="multistep",
        milestones=[m * unit for m in method.get("meta_milestones") or []],
        gamma=method.get("meta_gamma", 0.1),
    )


def phase_schedule(
    cfg: DictConfig, total: int, unit: int, milestones: list[int] | None = None
) -> PhaseSchedule:
    """The run's schedule (`cfg.schedule`) over a phase of `total` steps, `unit` steps per
    train.unit; `milestones` (in train.unit) replace the schedule's own (a method's own short
    run, `method.milestones`)."""
    s = cfg.schedule
    ms = s.get("milestones", []) if milestones is None else milestones
    return PhaseSchedule(
        name=s.name,
        milestones=[m * unit for m in ms],
        gamma=s.get("gamma", 0.1),
        warmup=s.get("warmup", 0) * unit,
        total=total,
        min_factor=s.get("min_factor", 0.0),
    )
