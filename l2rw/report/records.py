"""Run records as the report sees them, read from local `result.json` files."""

import json
from dataclasses import dataclass
from pathlib import Path

from l2rw.tracking.record import RECORD_NAME, REPLACED_PREFIX, RunRecord


@dataclass(frozen=True)
class Record:
    """One run: its record, a printable id, and the folder holding its artifacts."""

    data: RunRecord
    # Where it came from, never an absolute path: "<table>/<run dir>" or "wandb:<project>/<id>".
    run: str
    # The run folder (metrics.jsonl, *.npz beside result.json); None for W&B runs.
    path: Path | None


def load_local(output_root: Path, table: str) -> list[Record]:
    """Every result.json under <output_root>/<table>/, at any depth, in path order, but those
    a force=true re-run superseded (in its `replaced-*` folders).

    An unparsable file becomes a record with status "unreadable", so it is reported, not lost.
    """
    root = Path(output_root)
    records = []
    for path in sorted((root / table).rglob(RECORD_NAME)):
        run = path.parent.relative_to(root).as_posix()
        if any(part.startswith(REPLACED_PREFIX) for part in path.parent.relative_to(root).parts):
            continue
        try:
            saved = json.loads(path.read_text())
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            data = RunRecord.from_dict(saved)
        except (OSError, ValueError, TypeError) as err:
            data = RunRecord(status="unreadable", error=f"cannot read {RECORD_NAME}: {err}")
        records.append(Record(data, run, path.parent))
    return records
