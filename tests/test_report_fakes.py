"""Hand-made run records, artifacts and W&B runs for the report tests (no tests here)."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from l2rw.report.spec import TableSpec
from l2rw.tracking.wandb_group import format_group

TABLE = "l2rw_fig2"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def fig2_spec(**changes: Any) -> TableSpec:
    """The l2rw_fig2 report settings on a 2 x 2 grid with 2 seeds (no Hydra compose)."""
    fields: dict[str, Any] = {
        "name": TABLE,
        "table": TABLE,
        "title": "Fig 2",
        "file": TABLE,
        "rows": ["method.name"],
        "columns": ["imbalance.majority_fraction"],
        "metric": "test_acc",
        "as_error": True,
        "seeds": 2,
        "figure": "error_vs_setting",
        "scale": "cpu",
        "expected": {
            "method.name": ["l2rw", "baseline"],
            "imbalance.majority_fraction": [0.995, 0.9],
        },
        "expected_seeds": [0, 1],
        "output_root": "outputs",
        "wandb_project": "l2rw",
        "wandb_entity": None,
    }
    fields.update(changes)
    return TableSpec(**fields)


def make_record(
    method: str = "l2rw",
    frac: float = 0.995,
    seed: int = 0,
    acc: float = 0.9,
    status: str = "completed",
    scale: str = "cpu",
    minute: int = 0,
    error: str | None = None,
    extra_overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A record shaped like l2rw.train's result.json; `minute` orders runs in time."""
    overrides = [
        f"seed={seed}",
        f"imbalance.majority_fraction={frac}",
        f"method={method}",
        f"+table={TABLE}",
        f"scale={scale}",
        "threads=1",
        *extra_overrides,
    ]
    started = T0 + timedelta(minutes=minute)
    loss = float("nan") if status == "diverged" else 0.05
    clean = np.zeros(50)
    clean[8:12] = [5, 20, 30, 5]
    flipped = np.zeros(50)
    flipped[0:2] = [12, 3]
    return {
        "schema_version": 1,
        "status": status,
        "error": error,
        "metrics": {
            "test_acc": acc,
            "test_loss": 0.3,
            "test_acc_es": None,
            "best_val_acc": None,
            "best_step": -1,
            "final_val_acc": None,
            "train_loss": loss,
            "steps": 100,
            "confusion": [[90, 10], [int(100 * (1 - acc)), int(100 * acc)]],
        },
        "weights_hist": {
            "bins": np.linspace(0, 10, 51).tolist(),
            "clean": clean.tolist(),
            "flipped": flipped.tolist(),
        },
        "config": {
            "method": {"name": method},
            "imbalance": {"name": "binary", "majority_fraction": frac},
            "noise": {"name": "none", "rate": 0.0},
            "dataset": {"name": "mnist", "clean_size": 10},
            "paths": {"data_dir": "/secret/machine/datasets", "output_root": "/secret/out"},
            "logger": {"wandb": {"mode": "disabled", "project": "l2rw"}},
            "seed": seed,
            "scale": scale,
            "table_name": TABLE,
        },
        "overrides": overrides,
        "cell": sorted(o for o in overrides if not o.startswith(("seed", "+table"))),
        "table": TABLE,
        "scale": scale,
        "seed": seed,
        "method": method,
        "data": {"sizes": {"train": 4990}, "noise": {"name": "none", "rate": 0.0}},
        "git_commit": "abc123",
        "device": "cpu:x86_64 x1 threads",
        "wall_time_s": 60.0,
        "wandb_run_id": None,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": (started + timedelta(seconds=60)).isoformat(timespec="seconds"),
        "output_dir": "/secret/out/run",
    }


def write_record(root: Path, record: dict[str, Any], name: str | None = None) -> Path:
    """Write `record` as <root>/<table>/<name or its override dirname>/result.json."""
    name = name or ",".join(sorted(o for o in record["overrides"] if not o.startswith("+")))
    run_dir = Path(root) / record["table"] / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(record))
    return run_dir


def write_artifacts(run_dir: Path, seed: int) -> None:
    """metrics.jsonl, toy_boundary.npz and features.npz in the shapes the figures read."""
    rng = np.random.default_rng(seed)
    with (run_dir / "metrics.jsonl").open("w") as fh:
        for step in (10, 20, 30):
            row = {"step": step, "train/loss": 1 / step, "lr": 0.1, "test/acc": 0.5 + step / 100}
            fh.write(json.dumps(row) + "\n")
    xx, yy = np.meshgrid(np.linspace(-2, 2, 30), np.linspace(-2, 2, 30))
    x_train = rng.normal(size=(60, 2))
    np.savez(
        run_dir / "toy_boundary.npz",
        xx=xx,
        yy=yy,
        prob=1 / (1 + np.exp(-3 * yy)),
        clean_prob=1 / (1 + np.exp(-3 * (yy - 0.2))),
        x_train=x_train,
        y_train=(x_train[:, 1] > 0).astype(int),
        selected=np.array([0, 5, 9]),
    )
    features = np.concatenate([rng.normal(c, 0.3, size=(15, 4)) for c in (-2, 0, 2)])
    np.savez(
        run_dir / "features.npz",
        features=features,
        labels=np.repeat([0, 1, 2], 15),
        centroids=np.array([[-2.0] * 4, [0.0] * 4, [2.0] * 4]),
        centroid_indices=np.array([0, 15, 30]),
    )


class FakeSummary:
    """wandb's run.summary: dict-like, with the raw values in `_json_dict`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._json_dict = values

    def __iter__(self):
        return iter(self._json_dict)

    def __getitem__(self, key: str) -> Any:
        return self._json_dict[key]


class FakeRun:
    """A public-API run made from a record, as l2rw.train would have logged it."""

    def __init__(self, record: dict[str, Any], run_id: str) -> None:
        finals = {
            f"final/{k}": ("NaN" if isinstance(v, float) and v != v else v)
            for k, v in record["metrics"].items()
            if k != "confusion"
        }
        self.id = run_id
        self.group, cell_config = format_group(TABLE, record["cell"])
        self.config = {**record["config"], **cell_config}
        self.summary = FakeSummary({**finals, "_runtime": record["wall_time_s"]})
        self.tags = [f"table:{TABLE}", "dataset:mnist", f"method:{record['method']}", "scale:cpu"]
        self.state = "finished" if record["status"] == "completed" else "failed"
        self.created_at = record["started_at"]


class FakeApi:
    """wandb.Api() answering `runs` from a fixed list, and remembering what it was asked."""

    calls: list[tuple[str, dict[str, Any], bool]] = []
    runs_to_return: list[FakeRun] = []

    def runs(self, path: str, filters: dict[str, Any] | None = None, lazy: bool = True, **_: Any):
        FakeApi.calls.append((path, filters or {}, lazy))
        return list(FakeApi.runs_to_return)
