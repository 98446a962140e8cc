"""Records -> one DataFrame row per run: the table's keys, seed, status, and the reported value.

Both sources (local files, W&B) go through here, so they give the same frame for the same runs.
"""

import math
from typing import Any

import pandas as pd

from l2rw.report.records import Record
from l2rw.report.spec import (
    LEGACY_VALUES,
    NOT_APPLICABLE,
    ROUNDS,
    RUN_COLUMNS,
    STAGE,
    TableSpec,
    global_option_value,
    hashable,
    protocol_text,
)
from l2rw.tracking.record import RunRecord, is_bookkeeping, override_key


def records_frame(records: list[Record], spec: TableSpec) -> pd.DataFrame:
    """One row per record (per record and stage with report.stages, per record and selection
    round with the key selection.meta_samples); key columns use the short names of the table's
    rows and columns."""
    rows = [
        _row(record, spec, own, name, metric)
        for record in records
        for own, name, metric in record_values(record.data, spec)
    ]
    frame = pd.DataFrame(rows, columns=[*spec.short.values(), *RUN_COLUMNS])
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    return frame


# Non-finite numbers as records and W&B write them: JSON has none, so a record stores an
# infinite metric as "inf" (l2rw.tracking.record.json_number); W&B writes "Infinity" and "NaN".
NON_FINITE = {
    "inf": math.inf,
    "-inf": -math.inf,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "NaN": math.nan,
    "nan": math.nan,
}


def as_number(metric: Any) -> Any:
    """A recorded metric with "inf" / "Infinity" / "NaN" (and the negatives) read as floats."""
    return NON_FINITE.get(metric, metric) if isinstance(metric, str) else metric


def reported_value(metric: Any, spec: TableSpec, name: str | None = None) -> float:
    """What a cell shows: the test error in percent with `as_error`, accuracies in percent,
    any other metric as recorded (`name`: the metric's name, by default `spec.metric`)."""
    if not isinstance(metric, int | float) or isinstance(metric, bool):
        return math.nan
    if spec.as_error:
        return 100.0 * (1.0 - metric)
    return 100.0 * metric if is_accuracy(name or spec.metric) else float(metric)


def is_accuracy(metric: str) -> bool:
    """Record accuracies are fractions in [0, 1]: test_acc, test_acc_es, best_val_acc, ..."""
    return metric.endswith("_acc") or "_acc_" in metric


def value_label(spec: TableSpec) -> str:
    if spec.stages:
        by_stage = ", ".join(f"{label}: {metric}" for label, metric in spec.stages)
        unit = "accuracy (%)" if all(is_accuracy(m) for _, m in spec.stages) else "value"
        return f"{unit} of each stage ({by_stage})"
    if spec.as_error:
        label = f"test error (%) = 100·(1 − {spec.metric})"
    else:
        label = f"{spec.metric} (%)" if is_accuracy(spec.metric) else spec.metric
    if spec.per_round:
        label += " after each selection round"
    return label


def record_values(data: RunRecord, spec: TableSpec) -> list[tuple[dict[str, Any], str, Any]]:
    """The frame rows one record yields, each as (the values of the keys the record itself
    gives rather than its config, the metric's name, the metric as recorded):

    - with report.stages, one per stage: `stage` its label, `metrics.<the stage's metric>`;
    - with the key selection.meta_samples, one per round in `selection.rounds`: the key its
      `meta_samples`, the round's `<report.metric>`; and one without a metric for each size the
      table expects that the record has no round of (a run that stopped short, failed or
      records no rounds), so that the run is listed under Problems, not left out;
    - else one, `metrics.<report.metric>`.
    """
    if not spec.per_round:
        metrics = data.metrics
        return [
            ({STAGE: stage} if stage else {}, name, metrics.get(name))
            for stage, name in spec.metrics()
        ]
    rounds = (data.selection or {}).get("rounds") or []
    by_size = {r["meta_samples"]: r for r in rounds if isinstance(r, dict) and "meta_samples" in r}
    sizes = list(dict.fromkeys([*(spec.expected.get(ROUNDS) or []), *by_size])) or [None]
    return [({ROUNDS: n}, spec.metric, by_size.get(n, {}).get(spec.metric)) for n in sizes]


def _row(
    record: Record, spec: TableSpec, own: dict[str, Any], name: str, metric: Any
) -> dict[str, Any]:
    data, config = record.data, record.data.config
    metric = as_number(metric)
    row = {
        short: own[key] if key in own else key_value(config, key, spec)
        for key, short in spec.short.items()
    }
    row.update(
        run=record.run,
        table=data.table,
        scale=data.scale,
        seed=data.seed,
        status=data.status,
        error=data.error,
        metric=metric if isinstance(metric, int | float) else math.nan,
        value=reported_value(metric, spec, name),
        variant=variant(data.cell, spec.keys),
        **run_protocol(config, spec),
        git_commit=data.git_commit,
        device=data.device,
        wall_time_s=data.wall_time_s,
        started_at=data.started_at,
        finished_at=data.finished_at,
    )
    return row


def key_value(config: dict[str, Any], key: str, spec: TableSpec) -> Any:
    """A row / column key's value in a run's config; NOT_APPLICABLE for a run without the
    setting where the table's sweep expects cells without it (else None: the run is excluded
    as having no value for the key)."""
    value = recorded_value(config, key)
    if value is None and NOT_APPLICABLE in (spec.expected.get(key) or []):
        return NOT_APPLICABLE
    return hashable(value)


def run_protocol(config: dict[str, Any], spec: TableSpec) -> dict[str, Any]:
    """The run's values of the table's protocol keys (`protocol`, as text) and whether they are
    the table config's (`own_protocol`). A record without a key that came later ran under its
    earlier value (LEGACY_VALUES); a key the run has no value for does not apply to it (e.g.
    noise.mapping in a run with uniform noise) and is left out."""
    values = [(key, recorded_value(config, key)) for key, _ in spec.protocol]
    values = [(key, value) for key, value in values if value is not None]
    own = dict(spec.protocol)
    return {
        "protocol": protocol_text(values),
        "own_protocol": all(own[key] == value for key, value in values),
    }


def variant(cell: list[str], keys: list[str]) -> str:
    """A run's overrides beyond the table's own keys (and global groups that set them, like
    `+pretraining=without`) and bookkeeping: runs of one table that differ here were run with
    different settings and should not share a cell silently."""
    kept = []
    for override in cell:
        key = override_key(override)
        option = override.split("=", 1)[-1]
        own = any(
            k == key or k.startswith(f"{key}.") or global_option_value(key, option, k) is not None
            for k in keys
        )
        if own or is_bookkeeping(key):
            continue
        kept.append(override)
    return " ".join(sorted(kept))


def recorded_value(config: dict[str, Any], dotted: str) -> Any:
    """`config_value`, or, for a record that predates the key, the value it ran under
    (LEGACY_VALUES); None where neither exists."""
    value = config_value(config, dotted)
    return LEGACY_VALUES.get(dotted) if value is None else value


def config_value(config: dict[str, Any], dotted: str) -> Any:
    """config["a"]["b"] for "a.b"; None where the path does not exist."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
