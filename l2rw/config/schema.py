"""Typed schemas for every config group.

Registered in Hydra's ConfigStore as ``train_schema`` and pulled in first by ``conf/train.yaml``,
so a misspelled key or a wrongly typed value fails at compose time with its full key path. Each
dataset, noise, imbalance, model, optimizer, schedule, method, selector, stop and fine-tuning
option's schema is
registered beside its code (`l2rw.registry`); their shared bases are in `l2rw.config.options`.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from l2rw.config.options import (
    DatasetConf,
    ImbalanceConf,
    MethodConf,
    ModelConf,
    NoFinetuneConf,
    NoiseConf,
    OptimizerConf,
    ScheduleConf,
    SelectorConf,
    StopConf,
)


@dataclass
class TrainLoopConf:
    # Unit of `length`, `eval_every`, `checkpoint_every` and the schedule's milestones / warm-up:
    # "steps" or "epochs".
    unit: str = "steps"
    length: int = 8000
    batch_size: int = 100
    # Clean (meta) examples per step for L2RW and meta re-weighting, drawn by "epochs" (shuffled
    # passes over the meta set; all of it each step when it is no larger) or "replacement" (the
    # RBC authors' sampler: meta_batch_size draws with replacement every step).
    meta_batch_size: int = 100
    meta_sampling: str = "epochs"
    eval_every: int = 500
    eval_batch_size: int = 1000
    checkpoint_every: int = 1000
    # Cut any run short (smoke runs, tests), whatever the method's schedule.
    max_steps: int | None = None
    progress: bool = True


@dataclass
class WandbConf:
    mode: str = "offline"
    project: str = "l2rw"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # W&B's own console output (banners, run summaries); false: one line in the run's log.
    verbose: bool = False


@dataclass
class LoggerConf:
    wandb: WandbConf = field(default_factory=WandbConf)


@dataclass
class PathsConf:
    data_dir: str | None = None
    output_root: str = "outputs"
    # Check dataset files (sizes, headers, MD5s) before reading them; what passed is cached in
    # <output_root>/cache/verified-data.json. false: read them unchecked, at your own risk.
    verify_data: bool = True


@dataclass
class ReportConf:
    """How `l2rw.report` turns a table's records into cells (set by conf/table/*.yaml)."""

    title: str = ""
    # The results files' name (RESULTS_DIR/<file>[_<scale>].md, ...); null: the table config's
    # name. A table whose runs depend on the command (own_data: on the dataset) names its files
    # after its table_name, so that two datasets' tables do not overwrite each other.
    file: str | None = None
    # Config keys (dotted) whose values index the rows and the columns of the table.
    rows: list[str] = field(default_factory=lambda: ["method.name"])
    columns: list[str] = field(default_factory=list)
    # Record metric a cell reports, and whether to show it as an error rate in percent.
    metric: str = "test_acc"
    as_error: bool = False
    # Seeds each cell should have at this scale; fewer is flagged.
    seeds: int = 1
    # Several rows from one run: the row key `stage` takes each label here, its cell reporting
    # that metric, e.g. {trained: test_acc_before_ft, +FT: test_acc} for a run that fine-tunes.
    stages: dict[str, str] = field(default_factory=dict)
    # Figure kind drawn beside the table (a key of l2rw.report.figures.FIGURES), if any.
    figure: str | None = None
    # More figures from the same records, written as <results>_<kind>.png.
    extra_figures: list[str] = field(default_factory=list)
    # Rows (labels without the stage) the per-run figures draw, e.g. the paper's Figure 7
    # shows the baseline, S-Model and L2RW; empty: every row.
    figure_rows: list[str] = field(default_factory=list)


@dataclass
class TrainConf:
    dataset: DatasetConf = field(default_factory=DatasetConf)
    noise: NoiseConf = field(default_factory=NoiseConf)
    imbalance: ImbalanceConf = field(default_factory=ImbalanceConf)
    model: ModelConf = field(default_factory=ModelConf)
    method: MethodConf = field(default_factory=MethodConf)
    selector: SelectorConf = field(default_factory=SelectorConf)
    stop: StopConf = field(default_factory=StopConf)
    finetune: NoFinetuneConf = field(default_factory=NoFinetuneConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    paths: PathsConf = field(default_factory=PathsConf)
    train: TrainLoopConf = field(default_factory=TrainLoopConf)
    optimizer: OptimizerConf = field(default_factory=OptimizerConf)
    schedule: ScheduleConf = field(default_factory=ScheduleConf)
    seed: int = 0
    scale: str = "cpu"
    # Name of the table / figure this run belongs to (set by conf/table/*.yaml).
    table_name: str | None = None
    report: ReportConf = field(default_factory=ReportConf)
    device: str = "auto"
    # CPU threads for torch (null: torch's default). Parallel sweeps on a CPU set 1.
    threads: int | None = None
    # Per-scale protocol values that table configs interpolate, e.g. ${scales.${scale}.length}.
    scales: dict[str, Any] = field(default_factory=dict)
    # Per-dataset protocol values that a table sweeping datasets interpolates, e.g.
    # ${per_dataset.${dataset.name}.warmup}.
    per_dataset: dict[str, Any] = field(default_factory=dict)
    # Re-run a job even when its directory already holds a completed record.
    force: bool = False


def register_schemas() -> None:
    """Store the run's schema, and every option's: their modules store them when imported."""
    import l2rw.data.imbalance  # noqa: F401  (imbalance options)
    import l2rw.data.noise  # noqa: F401  (noise options)
    import l2rw.data.sources  # noqa: F401  (dataset options)
    import l2rw.methods.optimizers  # noqa: F401  (optimizer and schedule options)
    import l2rw.methods.stages  # noqa: F401  (methods, stop and fine-tuning options)
    import l2rw.models  # noqa: F401  (model options)
    import l2rw.selection.selectors  # noqa: F401  (selector options)

    ConfigStore.instance().store(name="train_schema", node=TrainConf)
