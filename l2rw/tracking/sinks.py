"""Where a run's time series go: always metrics.jsonl in the run folder, optionally W&B."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from l2rw.tracking.record import storage_errors, write_text_atomic
from l2rw.tracking.wandb_group import format_group

log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"


class JsonlSink:
    """Appends one JSON object per logged step; truncated on resume to the checkpoint's step."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_NAME

    def rows(self) -> list[dict[str, Any]]:
        """The logged rows, without a last line torn by a kill in the middle of its append."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                log.warning("Dropping a torn line of %s: %r", self.path, line[:80])
        return rows

    def truncate_after(self, step: int) -> None:
        if self.path.exists():
            self._write([row for row in self.rows() if row["step"] <= step])

    def replace_up_to(self, step: int, rows: list[dict[str, Any]]) -> None:
        """The logged rows up to `step` become `rows`; later ones stay."""
        self._write(rows + [row for row in self.rows() if row["step"] > step])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        write_text_atomic(self.path, "".join(f"{json.dumps(row)}\n" for row in rows))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        with storage_errors(self.path), self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")


class Tracker:
    """Fans a run's logs out to the local file and, when a W&B run is open, to W&B."""

    def __init__(self, run_dir: Path, wandb_run: Any = None) -> None:
        self.local = JsonlSink(run_dir)
        self.wandb_run = wandb_run

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.local.log(metrics, step)
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def replace_up_to(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Rows logged elsewhere (a shared warm-up's) become this run's rows up to `step`."""
        self.local.replace_up_to(step, rows)
        if self.wandb_run is not None:
            for row in rows:
                self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)


def open_wandb(cfg: DictConfig, config: dict[str, Any], cell: list[str], run_dir: Path):
    """A W&B run as a context manager, or None when W&B is disabled or not installed.

    The group is the table cell (the table plus the overrides other than the seed), so W&B
    aggregates a cell's seeds; `l2rw.tracking.wandb_group` defines it (and, where the group
    cannot hold the whole cell, puts the cell in the run's config). `reinit="finish_previous"`
    plus `finishing` in the caller guarantee one run per job, finished inside the job, even
    in multiruns that reuse a process and when the job fails.
    """
    wb = cfg.logger.wandb
    if wb.mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed, so the W&B sink is off (pip install 'l2rw[wandb]').")
        return None
    facets = {
        "table": cfg.table_name,
        "dataset": cfg.dataset.name,
        "noise": cfg.noise.name,
        "method": cfg.method.name,
        "scale": cfg.scale,
    }
    group, cell_config = format_group(cfg.table_name, cell, wb.group)
    run = wandb.init(
        project=wb.project,
        entity=wb.entity,
        group=group,
        tags=[f"{k}:{v}"[:64] for k, v in facets.items() if v] + list(wb.tags),
        config={**config, **cell_config},
        dir=str(run_dir),
        mode=wb.mode,
        job_type="train",
        reinit="finish_previous",
        settings=wandb.Settings(silent=not wb.verbose),
    )
    log.info("W&B run %s (%s, group %s) in %s", run.id, wb.mode, group, run.dir)
    return run


@contextmanager
def finishing(run: Any) -> Iterator[None]:
    """Finish the W&B `run` (None: nothing to do) on the way out, with exit code 1 if the body
    raised. Unlike the run's own `with`, which prints the traceback of whatever the body raised,
    it prints nothing: a UserError reaches the user as its one paragraph."""
    if run is None:
        yield
        return
    try:
        yield
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
