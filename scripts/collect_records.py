"""Copy a table's run records (result.json, metrics.jsonl and, with --artifacts, the figure
artifacts) from an output root into results/records/<table>/, with machine paths replaced by
`DATA_DIR` and `outputs`, so they can be committed beside the tables built from them.

    python scripts/collect_records.py OUTPUT_ROOT TABLE [--match TEXT] [--artifacts]

The data folder is each record's own `paths.data_dir` (when absolute: a relative one names no
machine). Each job lands in the folder a sweep would give it today (`run_dirname` of its
overrides), so a job whose folder named an override that has since become bookkeeping
(`method.engine=...`) joins its cell's other seeds; a record already there is replaced.
"""

import argparse
import json
import shutil
from pathlib import Path

from l2rw.report.figures import FEATURES, TOY_BOUNDARY
from l2rw.tracking.record import RECORD_NAME, run_dirname
from l2rw.tracking.sinks import METRICS_NAME

RESULTS = Path(__file__).resolve().parent.parent / "results" / "records"
TEXT_FILES = (RECORD_NAME, METRICS_NAME)
BINARY_FILES = (TOY_BOUNDARY, FEATURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_root", type=Path)
    parser.add_argument("table")
    parser.add_argument("--match", default="", help="only job folders whose name contains this")
    parser.add_argument(
        "--artifacts", action="store_true", help="also copy the figure artifacts (.npz)"
    )
    args = parser.parse_args()

    outputs = [(str(args.output_root.resolve()), "outputs"), (str(args.output_root), "outputs")]
    jobs = sorted(p.parent for p in (args.output_root / args.table).glob(f"*/{RECORD_NAME}"))
    for job in (j for j in jobs if args.match in j.name):
        record = json.loads((job / RECORD_NAME).read_text())
        target = RESULTS / args.table / run_dirname(record["overrides"])
        target.mkdir(parents=True, exist_ok=True)
        replacements = outputs + _data_dir(record["config"]["paths"]["data_dir"])
        for name in TEXT_FILES:
            if (job / name).exists():
                text = (job / name).read_text()
                for old, new in replacements:
                    text = text.replace(old, new)
                (target / name).write_text(text)
        for name in BINARY_FILES if args.artifacts else ():
            if (job / name).exists():
                shutil.copy2(job / name, target / name)
        print(target)


def _data_dir(data_dir: str | None) -> list[tuple[str, str]]:
    """The (path, "DATA_DIR") replacements for the data folder the run read, as given and
    resolved; none when it was relative or unset (a dataset read from its own path)."""
    if data_dir is None or not Path(data_dir).is_absolute():
        return []
    return [(str(Path(data_dir).resolve()), "DATA_DIR"), (data_dir, "DATA_DIR")]


if __name__ == "__main__":
    main()
