"""A paper table as a W&B Report (`python -m l2rw.report +table=NAME dashboard=wandb`).

`build_dashboard` is pure: from a table's report (spec, aggregated cells, provenance, the
paper's numbers) to a `wandb_workspaces` Report object, not saved. `publish` saves it when W&B
can be written to (a login and WANDB_MODE neither offline nor disabled), and otherwise writes
the report's specification (the view W&B would store) to RESULTS_DIR/dashboards/<stem>.json,
saying why in one sentence. wandb-workspaces is imported here only (pip install
'l2rw[dashboards]'), so the rest of the tool does not need it.

The report reads the W&B runs of the table (tag table:NAME) at the report's scale (tag
scale:SCALE), grouped by their W&B group, which is the table cell (l2rw.tracking.wandb_group).
"""

import json
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from l2rw.report.build import results_stem
from l2rw.report.figures import CURVES
from l2rw.report.frame import value_label
from l2rw.report.paper import paper_cells, unmatched_rows
from l2rw.report.provenance import scrub
from l2rw.report.render import CELL_LEGEND, Report, cell_text
from l2rw.report.spec import ROUNDS, STAGE, ReportError, TableSpec
from l2rw.tracking.record import write_text_atomic

DASHBOARDS = ("none", "wandb")
# The summary metrics the runs table shows for every table (l2rw.train logs final/<metric>).
SUMMARY = ["final/test_acc", "final/test_acc_es"]
TITLE_LIMIT = 128  # W&B's limit on a report's title
PROVENANCE_SHOWN = ("commits", "seeds", "hardware", "runs", "records from", "total wall time")
INSTALL_HINT = "pip install 'l2rw[dashboards]' (or `make install`)"


def require() -> None:
    """Fail before any work when wandb-workspaces is missing (exit 2, nothing written)."""
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        raise ReportError(
            f"dashboard=wandb builds W&B reports with the wandb-workspaces package, which is "
            f"not installed: {INSTALL_HINT}."
        ) from None


def build_dashboard(report: Report, entity: str = "") -> Any:
    """The W&B Report of one table (a `wandb_workspaces.reports.v2.Report`, not saved), top to
    bottom: what the table shows and where its runs are; the cells (our numbers, and the runs
    table grouped by cell with mean and spread of final/test_acc and final/test_acc_es over
    seeds); the chart shaped like the paper's; the training curves of each cell; the paper's
    numbers beside ours; the commands that reproduce it. `entity` "" leaves the W&B entity to
    whoever saves it (and builds without any network call)."""
    import wandb_workspaces.reports.v2 as wr

    spec = report.spec
    clean = _scrubber(report)
    cells = report.agg.cells
    n_cells = max(len(cells), 1)
    base = _base_filters(spec)

    def grouped(**options: Any) -> Any:
        """The table's runs at this scale, one row per cell (W&B group)."""
        return wr.Runset(
            entity=entity,
            project=spec.wandb_project,
            name=f"{spec.name} at scale {spec.scale}, grouped by cell",
            filters=base,
            groupby=["group"],
            **options,
        )

    blocks: list[Any] = [
        wr.P(clean(_intro(report))),
        wr.MarkdownBlock(clean(_provenance_markdown(report))),
        wr.H2("Cells: mean and spread over seeds"),
        wr.MarkdownBlock(clean(_cells_markdown(report))),
        wr.PanelGrid(
            runsets=[grouped(pinned_columns=[f"summary:{m}" for m in _summary_metrics(spec)])],
            panels=[
                wr.BarPlot(
                    title="Per cell (W&B group): mean ± sd over seeds",
                    metrics=_summary_metrics(spec),
                    groupby="Group",
                    groupby_aggfunc="mean",
                    groupby_rangefunc="stddev",
                    max_runs_to_show=n_cells,
                    max_bars_to_show=n_cells,
                    layout=wr.Layout(w=24, h=max(8, n_cells // 2)),
                )
            ],
        ),
        wr.H2(_chart_heading(report)),
        wr.P(_chart_text(spec)),
        *_chart_grids(report, entity, wr),
        wr.H2("Training curves of each cell"),
        wr.P(
            f"{', '.join(CURVES)} against the step, mean ± sd over the seeds of each cell (the "
            "W&B group); the runs' own metrics.jsonl holds the same rows."
        ),
        wr.PanelGrid(
            runsets=[grouped()],
            panels=[
                wr.LinePlot(
                    title=f"{curve} by cell: mean ± sd over seeds",
                    x="Step",
                    y=[curve],
                    groupby="Group",
                    groupby_aggfunc="mean",
                    groupby_rangefunc="stddev",
                    max_runs_to_show=n_cells,
                    layout=wr.Layout(x=12 * i, w=12, h=8),
                )
                for i, curve in enumerate(CURVES)
            ],
        ),
        wr.H2("The paper's numbers beside ours"),
        wr.MarkdownBlock(clean(_paper_markdown(report))),
        wr.H2("Reproduce"),
        wr.CodeBlock(_commands(spec), language=None),
    ]
    return wr.Report(
        project=spec.wandb_project,
        entity=entity,
        title=_title(spec),
        description=(
            f"Ours at scale {spec.scale}: W&B runs tagged table:{spec.name} and "
            f"scale:{spec.scale}, grouped by table cell; built by l2rw.report."
        ),
        blocks=blocks,
        width="fluid",
    )


def publish(report: Report, results_dir: Path, stem: str) -> str:
    """Save the table's dashboard to W&B, or write its specification to
    `results_dir`/dashboards/`stem`.json; the one sentence to print."""
    spec = report.spec
    why = offline_reason()
    if why is None:
        try:
            entity = spec.wandb_entity or _online_entity()
            dashboard = build_dashboard(report, entity)
            dashboard.save()
            return f"{spec.table}: saved the W&B dashboard {dashboard.url}"
        except Exception as err:  # network, permissions, an unknown project: fall back to a file
            why = f"saving it failed with {type(err).__name__}: {_first_line(err)}"
    entity = spec.wandb_entity or os.environ.get("WANDB_ENTITY") or ""
    dashboard = build_dashboard(report, entity)
    path = Path(results_dir) / "dashboards" / f"{stem}.json"
    write_text_atomic(path, json.dumps(specification(dashboard, why), indent=1) + "\n")
    return f"{spec.table}: the W&B dashboard was not saved ({why}); its specification: {path}"


def specification(dashboard: Any, why: str | None = None) -> dict[str, Any]:
    """What W&B would store for the report (its view spec, as `Report.save` uploads it), with
    the entity and project it belongs in. Built offline: run sets name their project here, not
    by W&B's internal project id (which `save` looks up)."""
    model = dashboard._to_model()
    return {
        "entity": dashboard.entity or None,
        "project": dashboard.project,
        "title": dashboard.title,
        "not_saved_because": why,
        "how_to_save": (
            "re-run the same command after `wandb login` with WANDB_MODE unset or online"
        ),
        "view": model.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def offline_reason() -> str | None:
    """Why the dashboard cannot be saved now (one clause), or None when W&B can be written to:
    WANDB_MODE is not offline / disabled and an API key is configured (checked locally)."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "WANDB_DISABLED is set"
    if not _logged_in():
        return "no W&B login found: run `wandb login`"
    return None


def _logged_in() -> bool:
    """An API key for the W&B host in the environment, ~/.netrc or wandb's settings, without
    prompting and without a network call."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        host = wandb_setup.singleton().settings.base_url
        auth = wbauth.authenticate_session(
            host=host, source="l2rw.report", prompt=False, update_session=False
        )
        return auth is not None
    except Exception:  # wandb's internals moved (another version): look in ~/.netrc ourselves
        pass
    try:
        url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        return netrc.netrc().authenticators(urlparse(url).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _online_entity() -> str:
    import wandb

    api = wandb.Api()
    return api.settings.get("entity") or api.default_entity or ""


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no message"


def _scrubber(report: Report):
    return lambda text: scrub(text, report.provenance.replacements)


def _title(spec: TableSpec) -> str:
    suffix = f" (scale {spec.scale})"
    return spec.title[: TITLE_LIMIT - len(suffix)] + suffix


def _summary_metrics(spec: TableSpec) -> list[str]:
    """final/test_acc, final/test_acc_es and the table's own metrics (a stage's, AUCs)."""
    return list(dict.fromkeys([*SUMMARY, *(f"final/{m}" for _, m in spec.metrics() if m)]))


def _base_filters(spec: TableSpec) -> list[Any]:
    from wandb_workspaces import expr

    return [expr.Tags().isin([f"table:{spec.name}"]), expr.Tags().isin([f"scale:{spec.scale}"])]


def _intro(report: Report) -> str:
    spec = report.spec
    problems = len(report.agg.problems)
    text = (
        f"Ours at scale {spec.scale}, {spec.seeds} seed(s) expected per cell, from the W&B runs "
        f"of project {spec.wandb_project} tagged table:{spec.name} and scale:{spec.scale}; a "
        f"cell is a W&B group (the table plus the run's overrides other than the seed). Value "
        f"in our table: {value_label(spec)}; {CELL_LEGEND}. The W&B panels show the runs' "
        "summary values (final/..., accuracies as fractions)."
    )
    if problems:
        text += (
            f" {problems} problem(s) (missing seeds, failed or excluded runs) are listed under "
            f"Problems in {results_stem(spec)}.md of the results."
        )
    return text


def _provenance_markdown(report: Report) -> str:
    items = [(k, v) for k, v in report.provenance.items if k in PROVENANCE_SHOWN]
    return "\n".join(f"- **{key}**: {value}" for key, value in items)


def _cells_markdown(report: Report) -> str:
    """Our table as the results' Markdown shows it: row labels x column labels."""
    spec, cells = report.spec, report.agg.cells
    rows = list(dict.fromkeys(cells["row"]))
    columns = list(dict.fromkeys(cells["column"]))
    text = {(c.row, c.column): _cell(c) for c in cells.itertuples()}
    names = list(spec.short.values())
    corner = " / ".join(names[: len(spec.rows)])
    if spec.columns:
        corner += f" \\ {' / '.join(names[len(spec.rows) :])}"
    lines = [
        f"Our numbers (l2rw.report over the runs' records): {value_label(spec)}.",
        "",
        _md_row([corner, *[c if c != "" else "value" for c in columns]]),
        _md_row(["---"] + ["---:"] * len(columns)),
    ]
    lines += [_md_row([r, *[text.get((r, c), "—") for c in columns]]) for r in rows]
    return "\n".join(lines)


def _chart_heading(report: Report) -> str:
    ref = report.paper
    item = f"the paper's {ref.table}" if ref else "the paper's table"
    return f"As {item} shows it"


def _chart_layout(spec: TableSpec) -> tuple[list[str], list[str], bool]:
    """(keys that split the chart into one panel per value, keys the bars are grouped by,
    vertical): a figure of the value against a setting (L2RW Fig. 2) gets one panel per row
    with a bar per setting; a table gets one panel per column with a bar per row (method)."""
    config_rows = [k for k in spec.rows if k not in (STAGE, ROUNDS)]
    config_cols = [k for k in spec.columns if k not in (STAGE, ROUNDS)]
    if spec.figure == "error_vs_setting" and config_cols:
        return config_rows, config_cols, True
    return config_cols, config_rows, False


def _chart_text(spec: TableSpec) -> str:
    split, by, vertical = _chart_layout(spec)
    metrics = ", ".join(f"final/{m}" for _, m in spec.metrics())
    what = (
        f"one panel per {' / '.join(split)}, a bar per {' / '.join(by) or 'cell'}"
        if split
        else f"a bar per {' / '.join(by) or 'cell'}"
    )
    text = f"{metrics} ({what}): mean ± sd over seeds."
    if spec.as_error:
        text += " The paper plots the test error, 100 − accuracy (%); W&B shows the accuracy."
    if ROUNDS in spec.keys:
        text += " W&B holds each run's last selection round only; our table has every round."
    if STAGE in spec.keys:
        text += " Each stage is its own metric (" + ", ".join(
            f"{label}: final/{m}" for label, m in spec.stages
        )
        text += ")."
    return text


def _chart_grids(report: Report, entity: str, wr: Any) -> list[Any]:
    """One panel grid per value of the split keys, each with its run set and one bar plot."""
    from wandb_workspaces import expr

    spec, cells = report.spec, report.agg.cells
    split, by, vertical = _chart_layout(spec)
    short = spec.short
    if by and len(by) == 1:
        groupby: Any = wr.Config(by[0])
        runset_groupby = [f"config.{by[0]}"]
    else:
        groupby, runset_groupby = "Group", ["group"]
    metrics = list(dict.fromkeys(f"final/{m}" for _, m in spec.metrics()))
    parts = (
        list(dict.fromkeys(tuple(v) for v in cells[[short[k] for k in split]].to_numpy()))
        if split
        else [()]
    )
    bars = max(len(cells) // max(len(parts), 1), 1) * len(metrics)
    grids = []
    for values in parts:
        label = " / ".join(str(v) for v in values) or spec.name
        filters = _base_filters(spec) + [
            expr.Config(key) == _plain(value)
            for key, value in zip(split, values, strict=True)
            if _filterable(value)
        ]
        by_text = " / ".join(short[k] for k in by) or "cell"
        title = f"{label}: {', '.join(metrics)} by {by_text}" if split else f"by {by_text}"
        grids.append(
            wr.PanelGrid(
                runsets=[
                    wr.Runset(
                        entity=entity,
                        project=spec.wandb_project,
                        name=label,
                        filters=filters,
                        groupby=runset_groupby,
                    )
                ],
                panels=[
                    wr.BarPlot(
                        title=title[:200],
                        metrics=metrics,
                        orientation="v" if vertical else "h",
                        groupby=groupby,
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                        max_runs_to_show=bars,
                        max_bars_to_show=bars,
                        layout=wr.Layout(w=24, h=8),
                    )
                ],
                hide_run_sets=True,
            )
        )
    return grids


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (filters are serialised as JSON)."""
    return value.item() if hasattr(value, "item") else value


def _filterable(value: Any) -> bool:
    value = _plain(value)
    if isinstance(value, float):
        return value == value  # not NaN
    return isinstance(value, str | int | bool)


def _paper_markdown(report: Report) -> str:
    """The paper's printed numbers beside ours, cell by cell, labelled as the paper's; its
    quoted words where it prints none."""
    ref, cells = report.paper, report.agg.cells
    if ref is None:
        return "No paper table is mapped to this table."
    lines = [f"From {ref.citation}, as printed (not ours).", ""]
    printed = paper_cells(ref)
    if printed:
        lines += [
            _md_row(["row", "column", "ours", "paper (its label)"]),
            _md_row(["---", "---", "---:", "---:"]),
        ]
        for c in cells.itertuples():
            if (c.row, c.column) not in printed:
                continue
            value, pm = printed[(c.row, c.column)]
            paper = " ± ".join(x for x in (value, pm) if x)
            label = " / ".join(x for x in (ref.rows.get(c.row), ref.columns.get(c.column)) if x)
            lines.append(_md_row([c.row, c.column, _cell(c), f"{paper} ({label})"]))
        lines.append("")
        missing = unmatched_rows(ref)
        if missing:
            listed = "; ".join(
                f"{row}: "
                + ", ".join(f"{col} {' ± '.join(x for x in (v, pm) if x)}" for col, v, pm in vals)
                for row, vals in missing.items()
            )
            lines += [f"Paper rows with no run of ours (the paper's numbers): {listed}.", ""]
    elif ref.rows or ref.columns:
        lines += ["The paper prints no numbers that map onto this table's cells.", ""]
    else:
        lines += ["The paper prints no numbers for this item.", ""]
    if ref.note:
        lines.append(ref.note)
    return "\n".join(lines).strip()


def _commands(spec: TableSpec) -> str:
    return "\n".join(
        [
            f"python -m l2rw.train +table={spec.table} scale={spec.scale}",
            f"python -m l2rw.report +table={spec.table} scale={spec.scale}",
            f"python -m l2rw.report +table={spec.table} scale={spec.scale} dashboard=wandb",
        ]
    )


def _cell(c: Any) -> str:
    return cell_text(c.mean, c.ci95, c.n, bool(c.flags))


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
