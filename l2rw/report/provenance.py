"""Where a table's numbers come from: code, scale, seeds, hardware, dates, commands.

Results files are committed and shared, so they never hold machine paths: `scrub` rewrites the
output root, data directories, the working directory and the home directory to placeholders.
"""

import os
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from l2rw.report.spec import TableSpec, table_names


@dataclass(frozen=True)
class Provenance:
    items: list[tuple[str, str]]
    # Absolute path -> placeholder, longest first.
    replacements: list[tuple[str, str]]

    def short(self) -> str:
        """One line for a figure's footer."""
        wanted = ("scale", "commits", "seeds", "generated")
        return " · ".join(f"{k} {v}" for k, v in self.items if k in wanted)


def provenance(
    spec: TableSpec, read: pd.DataFrame, counted: pd.DataFrame, source: str, data_dirs: list[str]
) -> Provenance:
    """Facts about the runs read (this table, this scale) and the commands that made them."""
    given = "".join(f" {shlex.quote(o)}" for o in spec.overrides)
    # The runs' table when it is a table file, else (a name the config builds, as own_data's)
    # the file reported.
    runs_table = spec.name if spec.name in table_names() else spec.table
    train_cmd = f"python -m l2rw.train +table={runs_table} scale={spec.scale}{given}"
    report_cmd = f"python -m l2rw.report +table={spec.table} scale={spec.scale}{given}"
    if source != "local":
        report_cmd += f" source={source}"
    # A run with stages or selection rounds gives several frame rows: count and time runs once.
    values = len(counted)
    read, counted = read.drop_duplicates("run"), counted.drop_duplicates("run")
    per_run = f" ({values} values: several per run)" if values != len(counted) else ""
    wall = pd.to_numeric(read["wall_time_s"], errors="coerce").sum()
    first, last = read["started_at"].min(), read["finished_at"].max()
    items = [
        ("table", spec.name),
        ("scale", spec.scale),
        ("source", _source(spec, source)),
        ("commits", _distinct(counted["git_commit"])),
        *([("protocol", _distinct(counted["protocol"]))] if spec.protocol else []),
        ("seeds", ", ".join(str(s) for s in sorted(set(counted["seed"].astype(int)))) or "none"),
        ("hardware", _distinct(counted["device"])),
        ("runs", f"{len(counted)} averaged{per_run} of {len(read)} read at this scale"),
        ("records from", f"{_date(first)} to {_date(last)}"),
        ("total wall time", f"{wall / 3600:.2f} h over the {len(read)} runs read"),
        ("generated", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        ("train command", train_cmd),
        ("report command", report_cmd),
    ]
    return Provenance(items, _replacements(spec.output_root, data_dirs))


def scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    for path, placeholder in replacements:
        text = text.replace(path, placeholder)
    return text


def _source(spec: TableSpec, source: str) -> str:
    if source == "wandb":
        entity = f"{spec.wandb_entity}/" if spec.wandb_entity else ""
        return f"W&B project {entity}{spec.wandb_project}, runs tagged table:{spec.name}"
    return f"OUTPUT_ROOT/{spec.name}/**/result.json (OUTPUT_ROOT: paths.output_root)"


def _distinct(values: pd.Series) -> str:
    counts = values.fillna("unknown").value_counts()
    return "; ".join(f"{v} ({n} runs)" for v, n in counts.items()) or "none"


def _date(value: object) -> str:
    return "unknown" if pd.isna(value) else value.isoformat(timespec="seconds")


def _replacements(output_root: str, data_dirs: list[str]) -> list[tuple[str, str]]:
    pairs = [(str(Path(output_root).resolve()), "OUTPUT_ROOT")]
    for data_dir in data_dirs:
        pairs += [(data_dir, "DATA_DIR"), (str(Path(data_dir).resolve()), "DATA_DIR")]
    pairs += [(os.getcwd(), "."), (str(Path.home()), "~")]
    pairs = [(p, r) for p, r in pairs if os.path.isabs(p) and len(p) > 1]
    return sorted(set(pairs), key=lambda pair: -len(pair[0]))
