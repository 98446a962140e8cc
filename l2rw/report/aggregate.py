"""Runs -> table cells (mean, 95% CI, n), with every run that is not averaged accounted for.

Honest aggregation: one run per cell and seed (the newest completed; duplicates listed), failed
and diverged runs listed with their error, runs of another scale or table excluded and listed,
cells short of seeds (or with none) flagged with the missing seeds.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from l2rw.report.spec import ROUNDS, TableSpec, protocol_text, value_order

# Problem kinds, in the order the report lists them.
KINDS = (
    "earlier_protocol",
    "missing_cell",
    "missing_seeds",
    "failed",
    "diverged",
    "running",
    "superseded",
    "duplicate",
    "no_metric",
    "no_key",
    "other_scale",
    "other_protocol",
    "other_table",
    "unreadable",
    "not_in_sweep",
    "infinite_values",
    "variant",
    "figure",
)
MAX_LISTED = 12


@dataclass(frozen=True)
class Problem:
    kind: str
    text: str


@dataclass
class Aggregate:
    # One row per cell in table order: key columns, row / column labels, mean, sd, ci95, n,
    # seeds, missing_seeds, flags (list of problem kinds that concern the cell).
    cells: pd.DataFrame
    # The runs averaged: one completed run per cell and seed.
    counted: pd.DataFrame
    # Every run of this table at this scale, averaged or not (for provenance).
    read: pd.DataFrame
    problems: list[Problem]


def ci95(values: np.ndarray) -> float:
    """Half-width of the Student-t 95% interval of the mean; NaN below two values or with an
    infinite one."""
    n, sd = len(values), _sd(values)
    return math.nan if math.isnan(sd) else float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def aggregate(frame: pd.DataFrame, spec: TableSpec) -> Aggregate:
    keys = list(spec.short.values())
    problems: list[Problem] = []
    frame = frame.assign(_time=frame["finished_at"].fillna(frame["started_at"]))
    read = _exclude_foreign(frame, spec, keys, problems)
    counted, failed, duplicated = _one_per_seed(read, keys, problems)
    flagged = {"failed_runs": failed, "duplicates": duplicated}
    cells = _cells(read, counted, spec, flagged, problems)
    variants = read["variant"].value_counts()
    if len(variants) > 1:
        listed = "; ".join(f"'{v or '(none)'}': {n} runs" for v, n in variants.items())
        problems.append(
            Problem(
                "variant",
                "Runs of this table were made with different settings beyond the table's rows "
                f"and columns, and share cells: {listed}.",
            )
        )
    problems.sort(key=lambda p: KINDS.index(p.kind))
    return Aggregate(cells, counted.drop(columns="_time"), read.drop(columns="_time"), problems)


def _describe(spec: TableSpec, cell: tuple[Any, ...]) -> str:
    return ", ".join(
        f"{name}={value}" for name, value in zip(spec.short.values(), cell, strict=True)
    )


def _one_protocol(frame: pd.DataFrame, spec: TableSpec, problems: list[Problem]) -> pd.DataFrame:
    """The runs of one protocol (`TableSpec.protocol`): the table config's or, when no run was
    made under it (a table not re-run since its protocol changed), the earlier one most runs
    share, said so; runs of any other protocol are excluded and listed."""
    if frame.empty or not spec.protocol:
        return frame
    kept = frame["own_protocol"].astype(bool)
    if not kept.any():
        earlier = frame["protocol"].value_counts().index[0]
        kept = frame["protocol"] == earlier
        problems.append(
            Problem(
                "earlier_protocol",
                f"every run reported here was made under an earlier protocol: "
                f"{_changes(earlier, spec)}; the table's config now runs "
                f"{protocol_text(spec.protocol)}. Re-run the table to report it under that.",
            )
        )
    for protocol, group in frame[~kept].groupby("protocol"):
        runs = group["run"].drop_duplicates()
        problems.append(
            Problem(
                "other_protocol",
                f"{len(runs)} run(s) made under another protocol ({protocol}) are excluded: "
                f"{_listing(runs)}.",
            )
        )
    return frame[kept]


def _changes(earlier: str, spec: TableSpec) -> str:
    """The settings of the `earlier` protocol (as `protocol_text` wrote it) that the table's
    config has changed, each with its value now."""
    then = dict(item.split("=", 1) for item in earlier.split(", ") if "=" in item)
    return ", ".join(
        f"{key}={then[key]} (now {value})"
        for key, value in spec.protocol
        if key in then and then[key] != str(value)
    )


def _exclude_foreign(
    frame: pd.DataFrame, spec: TableSpec, keys: list[str], problems: list[Problem]
) -> pd.DataFrame:
    """Drop (and list) runs that cannot join this table: unreadable, another table or scale,
    without the table's keys or seed, or completed without the metric."""
    bad = frame["status"] == "unreadable"
    for r in frame[bad].itertuples():
        problems.append(Problem("unreadable", f"`{r.run}`: {r.error}"))
    frame = frame[~bad]
    other = frame["table"].notna() & (frame["table"] != spec.name)
    for r in frame[other].itertuples():
        problems.append(Problem("other_table", f"`{r.run}` is a run of table '{r.table}'."))
    frame = frame[~other]
    for scale, group in frame[frame["scale"] != spec.scale].groupby("scale", dropna=False):
        problems.append(
            Problem(
                "other_scale",
                f"{len(group)} run(s) at scale '{scale}' are excluded (this report is scale "
                f"'{spec.scale}'; pass scale={scale} to report them): {_listing(group['run'])}.",
            )
        )
    frame = _one_protocol(frame[frame["scale"] == spec.scale], spec, problems)
    unkeyed = frame[[*keys, "seed"]].isna().any(axis=1)
    for r in frame[unkeyed].itertuples():
        missing = [k for k in [*keys, "seed"] if pd.isna(getattr(r, k))]
        problems.append(Problem("no_key", f"`{r.run}` has no {', '.join(missing)}: excluded."))
    frame = frame[~unkeyed]
    no_metric = (frame["status"] == "completed") & frame["value"].isna()
    for r in frame[no_metric].to_dict("records"):
        if spec.per_round:
            size = r[spec.short[ROUNDS]]
            what = f"a round of {size} meta samples with {spec.metric} in selection.rounds"
        else:
            what = f"metric {' / '.join(m for _, m in spec.metrics())}"
        problems.append(Problem("no_metric", f"`{r['run']}` completed without {what}: excluded."))
    frame = frame[~no_metric]
    return frame.assign(seed=frame["seed"].astype(int))


def _one_per_seed(
    read: pd.DataFrame, keys: list[str], problems: list[Problem]
) -> tuple[pd.DataFrame, set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The newest completed run of each cell and seed; the others are listed. Also returns the
    cells with unreplaced failed runs and the cells with duplicated runs."""
    kept, failed, duplicated = [], set(), set()
    for (*cell, seed), group in read.groupby([*keys, "seed"], sort=False):
        where = ", ".join(f"{k}={v}" for k, v in zip(keys, cell, strict=True)) + f", seed {seed}"
        done = group[group["status"] == "completed"].sort_values("_time", na_position="first")
        if len(done):
            kept.append(done.index[-1])
        if len(done) > 1:
            duplicated.add(tuple(cell))
            problems.append(
                Problem(
                    "duplicate",
                    f"{where}: {len(done)} completed runs; counted the newest, "
                    f"`{done['run'].iloc[-1]}`; not counted: {_listing(done['run'].iloc[:-1])}.",
                )
            )
        for r in group[group["status"] != "completed"].itertuples():
            if len(done):
                text = f"{where}: {r.status} run `{r.run}` ({r.error}); a completed run of this "
                problems.append(Problem("superseded", text + "cell and seed is counted instead."))
            else:
                failed.add(tuple(cell))
                kind = r.status if r.status in ("diverged", "running") else "failed"
                text = f"{where}: {r.status} run `{r.run}`, not averaged. Error: {r.error}"
                problems.append(Problem(kind, text))
    return read.loc[kept], failed, duplicated


def _cells(
    read: pd.DataFrame,
    counted: pd.DataFrame,
    spec: TableSpec,
    flagged: dict[str, set[tuple[Any, ...]]],
    problems: list[Problem],
) -> pd.DataFrame:
    keys = list(spec.short.values())
    observed = list(dict.fromkeys(read[keys].itertuples(index=False, name=None)))
    expected = spec.expected_cells()
    order = expected if expected is not None else sorted(observed, key=value_order)
    extras = [c for c in observed if c not in order]
    runs = dict(iter(counted.groupby(keys, sort=False))) if len(counted) else {}
    rows = []
    for cell in [*order, *extras]:
        group = runs.get(cell)
        values = group["value"].to_numpy(float) if group is not None else np.array([])
        runs_seeds = [] if group is None else [int(s) for s in group["seed"]]
        by_seed = sorted(zip(runs_seeds, values, strict=True))
        seeds = [s for s, _ in by_seed]
        missing = [s for s in spec.expected_seeds if s not in seeds]
        where = _describe(spec, cell)
        flags = [flag for flag, cells in flagged.items() if cell in cells]
        if not seeds:
            flags.insert(0, "missing_cell")
            problems.append(Problem("missing_cell", f"{where}: no completed run."))
        elif len(seeds) < spec.seeds:
            flags.insert(0, "missing_seeds")
            problems.append(
                Problem(
                    "missing_seeds",
                    f"{where}: {len(seeds)} of {spec.seeds} seeds; missing seeds "
                    f"{', '.join(map(str, missing))}.",
                )
            )
        infinite = [s for s, v in by_seed if math.isinf(v)]
        if infinite and len(infinite) < len(values):
            flags.append("infinite_values")
            finite = ", ".join(f"{v:.5g} (seed {s})" for s, v in by_seed if math.isfinite(v))
            problems.append(
                Problem(
                    "infinite_values",
                    f"{where}: seed(s) {', '.join(map(str, infinite))} gave an infinite value, "
                    f"so the mean is infinite; the other seeds: {finite}.",
                )
            )
        if cell in extras:
            flags.append("not_in_sweep")
            problems.append(
                Problem("not_in_sweep", f"{where}: not in the table's sweep, shown anyway.")
            )
        rows.append(
            {
                **dict(zip(keys, cell, strict=True)),
                "row": row_label(cell[: len(spec.rows)]),
                "column": row_label(cell[len(spec.rows) :]),
                "mean": float(values.mean()) if len(values) else math.nan,
                "sd": _sd(values),
                "ci95": ci95(values),
                "n": len(values),
                "seeds": seeds,
                "missing_seeds": missing if len(seeds) < spec.seeds else [],
                "flags": flags,
            }
        )
    return pd.DataFrame(rows)


def _sd(values: np.ndarray) -> float:
    """The sample standard deviation over seeds (NaN for one seed, or with an infinite value)."""
    if len(values) < 2 or not np.isfinite(values).all():
        return math.nan
    return float(np.std(values, ddof=1))


def row_label(values: tuple[Any, ...]) -> str:
    """A row's (or column's) label: its key values joined by " / "."""
    return " / ".join(str(v) for v in values)


def _listing(runs: pd.Series) -> str:
    names = [f"`{r}`" for r in runs]
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more
