"""Command line: python -m l2rw.report +table=NAME [...] | all. Exit 2 with one paragraph on
stderr (no traceback, nothing written) for a user error: unknown table, no records, bad source."""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from l2rw.errors import UserError
from l2rw.report import dashboard
from l2rw.report.build import NoRecords, Options, build_table, results_stem
from l2rw.report.dashboard import DASHBOARDS
from l2rw.report.spec import ReportError, table_names

USAGE = """\
usage: python -m l2rw.report +table=NAME [scale=cpu|full] [source=local|wandb]
                             [output_root=DIR] [results_dir=DIR] [dashboard=none|wandb]
                             [CONFIG_OVERRIDE ...]
       python -m l2rw.report all|--all [same options]

Reads the table's run records (source=local: OUTPUT_ROOT/NAME/**/result.json, OUTPUT_ROOT
being output_root= or paths.output_root, default `outputs`; source=wandb: the W&B runs tagged
table:NAME in logger.wandb.project) and writes RESULTS_DIR/NAME.md, .csv, .tex and, when the
table has a figure, .png. dashboard=wandb also builds the table's W&B Report (runs table by
cell, a chart shaped like the paper's, training curves, the paper's numbers, the commands) in
logger.wandb.project / .entity: saved when logged in to W&B and WANDB_MODE is not offline or
disabled, else its specification goes to RESULTS_DIR/dashboards/NAME[_SCALE].json (needs
wandb-workspaces: pip install 'l2rw[dashboards]'). Other KEY=VALUE arguments are config
overrides for composing the table (as for python -m l2rw.train). Tables: conf/table/*.yaml."""
# Options of the report itself (l2rw.report.build.Options), not config overrides.
OPTION_KEYS = ("source", "output_root", "results_dir")


@dataclass
class Request:
    table: str | None = None
    every: bool = False
    overrides: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    dashboard: str = "none"


def parse_args(argv: list[str]) -> Request:
    request = Request()
    for arg in argv:
        key, eq, value = arg.partition("=")
        if arg in ("all", "--all"):
            request.every = True
        elif eq and key.lstrip("+") == "table":
            request.table = value
        elif eq and key in OPTION_KEYS:
            request.options[key] = value
        elif eq and key == "dashboard":
            if value not in DASHBOARDS:
                raise ReportError(f"dashboard={value} is not one of {', '.join(DASHBOARDS)}.")
            request.dashboard = value
        elif eq:
            request.overrides.append(arg)
        else:
            raise ReportError(f"Unexpected argument '{arg}'.\n\n{USAGE}")
    if request.every == bool(request.table):
        raise ReportError(f"Name one table with +table=NAME, or pass `all`.\n\n{USAGE}")
    return request


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return 0
    try:
        request = parse_args(argv)
        options = Options(**request.options)
        if request.dashboard == "wandb":
            dashboard.require()
        if not request.every:
            _report(request.table, request.overrides, options, request.dashboard)
            return 0
    except UserError as err:
        print(f"l2rw.report: {err}", file=sys.stderr)
        return 2
    return _report_all(request.overrides, options, request.dashboard)


def _report(table: str, overrides: list[str], options: Options, board: str = "none") -> None:
    built = build_table(table, overrides, options)
    for path in built.paths:
        print(f"wrote {path}")
    problems = len(built.report.agg.problems)
    if problems:
        markdown = next(p for p in built.paths if p.suffix == ".md")
        print(f"{table}: {problems} problem(s), listed in {markdown}")
    if board == "wandb":
        stem = results_stem(built.report.spec)
        print(dashboard.publish(built.report, Path(options.results_dir), stem))


def _report_all(overrides: list[str], options: Options, board: str = "none") -> int:
    """Every table with records; tables without any are named on stderr. Exit 2 if a table
    failed otherwise, or if none could be reported."""
    done, failed = 0, False
    for table in table_names():
        try:
            _report(table, overrides, options, board)
            done += 1
        except UserError as err:
            failed = failed or not isinstance(err, NoRecords)
            print(f"l2rw.report: {table}: {err}", file=sys.stderr)
    return 2 if failed or not done else 0


if __name__ == "__main__":
    sys.exit(main())
