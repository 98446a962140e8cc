"""Copy a table's run records (result.json, metrics.jsonl and, with --artifacts, the figure
artifacts) from an output root into results/records/<table>/, with machine paths replaced by
`DATA_DIR` and `outputs`, so they can be committed beside the tables built from them.

    python scripts/collect_records.py OUTPUT_ROOT TABLE [--data-dir DIR] [--match TEXT]
        [--artifacts]

A record already in results/records for the same job folder is replaced.
"""

import argparse
import shutil
from pathlib import Path

from l2rw.report.figures import FEATURES, TOY_BOUNDARY
from l2rw.tracking.record import RECORD_NAME
from l2rw.tracking.sinks import METRICS_NAME

RESULTS = Path(__file__).resolve().parent.parent / "results" / "records"
TEXT_FILES = (RECORD_NAME, METRICS_NAME)
BINARY_FILES = (TOY_BOUNDARY, FEATURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_root", type=Path)
    parser.add_argument("table")
    parser.add_argument("--data-dir", help="the data folder the runs read (becomes DATA_DIR)")
    parser.add_argument("--match", default="", help="only job folders whose name contains this")
    parser.add_argument(
        "--artifacts", action="store_true", help="also copy the figure artifacts (.npz)"
    )
    args = parser.parse_args()

    replacements = [
        (str(args.output_root.resolve()), "outputs"),
        (str(args.output_root), "outputs"),
    ]
    if args.data_dir:
        replacements += [
            (str(Path(args.data_dir).resolve()), "DATA_DIR"),
            (args.data_dir, "DATA_DIR"),
        ]
    jobs = sorted(p.parent for p in (args.output_root / args.table).glob(f"*/{RECORD_NAME}"))
    for job in (j for j in jobs if args.match in j.name):
        target = RESULTS / args.table / job.name
        target.mkdir(parents=True, exist_ok=True)
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


if __name__ == "__main__":
    main()
