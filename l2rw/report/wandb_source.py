"""Run records rebuilt from W&B runs (online, or after `wandb sync`) in result.json's shape.

A run's config is the resolved config; its summary holds `final/<metric>` for every record
metric but the confusion matrix (see l2rw.train); its group (or, where that cannot hold it, a
config entry) is the cell (l2rw.tracking.wandb_group). Offline runs are invisible until synced.
"""

import math
from datetime import datetime, timedelta
from typing import Any

from l2rw.report.frame import as_number
from l2rw.report.records import Record
from l2rw.report.spec import ReportError
from l2rw.tracking.record import RunRecord
from l2rw.tracking.wandb_group import CELL_KEY, parse_group


def load_wandb(table: str, project: str, entity: str | None) -> list[Record]:
    """All runs tagged `table:<table>` in the project, as records (no local artifacts)."""
    try:
        import wandb
    except ImportError:
        raise ReportError(
            "source=wandb needs the wandb package: pip install 'l2rw[wandb]'."
        ) from None
    path = f"{entity}/{project}" if entity else project
    try:
        runs = list(wandb.Api().runs(path, filters={"tags": f"table:{table}"}, lazy=False))
    except Exception as err:  # network, login, unknown project: all end the report the same way
        raise ReportError(
            f"Could not read the W&B runs of project '{path}' ({type(err).__name__}: {err}). "
            "source=wandb needs network access and `wandb login`; offline runs must be uploaded "
            "first with `make sync`. Use source=local to read the result.json files instead."
        ) from None
    return [run_record(run, path) for run in runs]


def run_record(run: Any, path: str) -> Record:
    """One W&B run as a record: config, final metrics, status, seed, scale, cell and times."""
    config = _unwrap(dict(run.config))
    summary = _summary(run)
    metrics = {
        k.removeprefix("final/"): as_number(v) for k, v in summary.items() if k.startswith("final/")
    }
    status = _status(run.state, metrics)
    runtime = as_number(summary.get("_runtime"))
    started = str(run.created_at) if run.created_at else None
    table = config.get("table_name")
    cell = parse_group(run.group, table, config)
    config.pop(CELL_KEY, None)  # the sink's addition, not part of the resolved config
    data = {
        "status": status,
        "error": None if status == "completed" else f"W&B run state '{run.state}'",
        "metrics": metrics,
        "config": config,
        "cell": cell,
        "table": table,
        "scale": config.get("scale"),
        "seed": config.get("seed"),
        "method": (config.get("method") or {}).get("name"),
        "git_commit": getattr(run, "commit", None),
        "device": None,
        "wall_time_s": runtime,
        "wandb_run_id": run.id,
        "started_at": started,
        "finished_at": _plus(started, runtime),
    }
    return Record(RunRecord.from_dict(data), f"wandb:{path}/{run.id}", None)


def _unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """Raw W&B configs wrap each top-level value as {"value": v, "desc": ...}; drop `_wandb`."""
    out = {}
    for key, value in config.items():
        if key == "_wandb":
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[key] = value
    return out


def _summary(run: Any) -> dict[str, Any]:
    summary = run.summary
    return dict(getattr(summary, "_json_dict", None) or summary)


def _status(state: str, metrics: dict[str, Any]) -> str:
    """The record status: a failed run that logged final metrics with a non-finite loss diverged."""
    if state == "finished":
        return "completed"
    if state in ("running", "pending", "preempting"):
        return "running"
    loss = metrics.get("train_loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        return "diverged"
    return "failed"


def _plus(started: str | None, seconds: Any) -> str | None:
    if not started or not isinstance(seconds, int | float):
        return None
    try:
        start = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (start + timedelta(seconds=float(seconds))).isoformat(timespec="seconds")
