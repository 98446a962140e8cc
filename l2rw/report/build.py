"""One table end to end: spec -> records -> frame -> aggregate -> md, csv, tex (+ png)."""

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2rw.report.aggregate import Aggregate, Problem, aggregate, row_label
from l2rw.report.figures import FIGURES, FigureData, FigureError, Run
from l2rw.report.files import write_all
from l2rw.report.frame import config_value, records_frame
from l2rw.report.paper import PAPER_TABLES
from l2rw.report.provenance import Provenance, provenance, scrub
from l2rw.report.records import Record, load_local
from l2rw.report.render import Report, to_csv, to_latex, to_markdown
from l2rw.report.spec import STAGE, ReportError, TableSpec, load_spec

SOURCES = ("local", "wandb")


class NoRecords(ReportError):
    """The table has no records at the asked scale."""


@dataclass(frozen=True)
class Options:
    source: str = "local"
    # Where the runs' records are; None: the composed paths.output_root.
    output_root: str | None = None
    results_dir: str = "results"


@dataclass(frozen=True)
class Built:
    paths: list[Path]
    report: Report


def build_table(table: str, overrides: list[str], options: Options) -> Built:
    """Write results/<table>.{md,csv,tex}[,.png] from the table's records; raise ReportError
    (nothing written) when the table is unknown or has no records at this scale."""
    if options.source not in SOURCES:
        raise ReportError(f"source={options.source} is not one of {', '.join(SOURCES)}.")
    spec = load_spec(table, overrides, options.output_root)
    stem = results_stem(spec)
    kinds = {f"{stem}.png": spec.figure} if spec.figure else {}
    kinds.update({f"{stem}_{kind}.png": kind for kind in spec.extra_figures})
    for kind in kinds.values():
        FIGURES.get(kind)  # an unknown figure kind fails before any work
    records = _load(spec, options.source)
    frame = records_frame(records, spec)
    if not (frame["scale"] == spec.scale).any():
        raise NoRecords(_no_records(spec, options, frame))
    agg = aggregate(frame, spec)
    data_dirs = sorted({d for d in map(_data_dir, records) if isinstance(d, str)})
    prov = provenance(spec, agg.read, agg.counted, options.source, data_dirs)
    files: dict[str, bytes] = {}
    for name, kind in kinds.items():
        try:
            files[name] = _figure_png(spec, kind, agg, records, prov)
        except FigureError as err:
            agg.problems.append(Problem("figure", f"{kind} not drawn: {err}"))
    figures = [name for name in kinds if name in files]
    report = Report(spec, agg, prov, PAPER_TABLES.get(spec.table), figures)
    for suffix, text in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        files[f"{stem}.{suffix}"] = scrub(text(report), prov.replacements).encode()
    return Built(write_all(Path(options.results_dir), files), report)


def results_stem(spec: TableSpec) -> str:
    """results/<file> for the paper's protocol, results/<file>_<scale> for a reduced scale;
    <file> is the table config's name unless its report.file says otherwise."""
    return spec.file if spec.scale == "full" else f"{spec.file}_{spec.scale}"


def _load(spec: TableSpec, source: str) -> list[Record]:
    if source == "wandb":
        from l2rw.report.wandb_source import load_wandb

        return load_wandb(spec.name, spec.wandb_project, spec.wandb_entity)
    return load_local(Path(spec.output_root), spec.name)


def _data_dir(record: Record) -> object:
    return config_value(record.data.config, "paths.data_dir")


def _no_records(spec: TableSpec, options: Options, frame: pd.DataFrame) -> str:
    where = (
        f"W&B project {spec.wandb_project} (runs tagged table:{spec.name})"
        if options.source == "wandb"
        else f"{Path(spec.output_root) / spec.name} (output_root={spec.output_root})"
    )
    text = f"No records of table '{spec.name}' at scale '{spec.scale}' in {where}."
    others = frame["scale"].dropna().value_counts()
    if len(others):
        listed = ", ".join(f"{n} at scale {s}" for s, n in others.items())
        text += f" There are records at other scales ({listed}): pass scale=... to report them."
    return (
        f"{text} Run the table first (python -m l2rw.train +table={spec.name} "
        f"scale={spec.scale}), or point output_root=... at the folder that holds its records."
    )


def figure_runs(spec: TableSpec, agg: Aggregate, records: list[Record]) -> list[Run]:
    """The averaged runs with their cell's labels, each run once: with report.stages a run
    fills one cell per stage, so its row label here leaves the stage out. Only the rows of
    `report.figure_rows`, when it names any."""
    by_run = {r.run: r for r in records}
    keys = list(spec.short.values())
    row_keys = [spec.short[k] for k in spec.rows if k != STAGE]
    stage = spec.short.get(STAGE)
    # A cell's values as the table labels them (a swept 200 where the record's config has 200.0).
    as_labelled = {c: c for c in agg.cells[keys].itertuples(index=False, name=None)}
    runs, seen = [], set()
    for r in agg.counted[[*keys, "run", "seed"]].to_dict("records"):
        raw = tuple(r[k] for k in keys)
        r.update(zip(keys, as_labelled.get(raw, raw), strict=True))
        row = row_label(tuple(r[k] for k in row_keys))
        column = row_label(tuple(r[spec.short[k]] for k in spec.columns))
        if (stage and r["run"] in seen) or (spec.figure_rows and row not in spec.figure_rows):
            continue
        seen.add(r["run"])
        runs.append(Run(by_run[r["run"]], row, column, int(r["seed"])))
    return runs


def _figure_png(
    spec: TableSpec, kind: str, agg: Aggregate, records: list[Record], prov: Provenance
) -> bytes:
    fig = FIGURES.get(kind)(FigureData(spec, agg.cells, figure_runs(spec, agg, records)))
    footer = scrub(prov.short(), prov.replacements)
    fig.text(0.0, -0.01, footer, fontsize=6, color="grey", va="top", wrap=True)
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=130,
        bbox_inches="tight",
        metadata={"Title": spec.title, "Description": footer, "Software": "l2rw.report"},
    )
    return buffer.getvalue()
