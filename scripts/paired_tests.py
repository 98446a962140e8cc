"""Paired comparisons of one row of a table against every other row, seed by seed (or, with
`--across columns`, of one column against every other column, within each row: an ablation).

The runs of one seed share the data split and noise draw, so differences are paired by seed:
for each column, the mean difference (row minus reference, in the table's unit), how many seeds
the reference is ahead on (lower error with `report.as_error`, higher value otherwise), and the
paired t-test p-value (scipy.stats.ttest_rel), over the seeds both rows have. Reads the same
records as `python -m l2rw.report`.

`--with OTHER_TABLE` adds another table's runs at the same scale, each label prefixed by its
table (`"rbc_table1_mnist: 0.6"`): a column of one table against a column of another, row by
row, for tables whose rows share their labels (an ablation's reference against the protocol a
paper table chose). Each table keeps its own protocol; the comparison is across them.

    python scripts/paired_tests.py l2rw_table2_fmnist "l2rw / final / trained" \
        --output-root results/records [--scale cpu] [CONFIG_OVERRIDE ...]
    python scripts/paired_tests.py rbc_ablation_mnist "previous / scratch / next / unit" \
        --across columns --output-root results/records
    python scripts/paired_tests.py rbc_ablation_mnist \
        "rbc_ablation_mnist: previous / scratch / next / unit / epochs / uniform / 20" \
        --with rbc_table1_mnist --across columns --scale full --output-root results/records
"""

import argparse
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

from l2rw.report.aggregate import aggregate
from l2rw.report.frame import records_frame
from l2rw.report.records import load_local
from l2rw.report.spec import load_spec


def labelled_runs(table: str, output_root: str, overrides: list[str]) -> tuple[pd.DataFrame, bool]:
    """The runs the report averages for `table`: one line per run with its row and column
    labels, seed and value; and whether the table reports an error (lower is better)."""
    spec = load_spec(table, overrides, output_root)
    agg = aggregate(records_frame(load_local(Path(spec.output_root), spec.name), spec), spec)
    keys = list(spec.short.values())
    labels = agg.cells.set_index(keys)[["row", "column"]]
    return agg.counted.join(labels, on=keys)[["row", "column", "seed", "value"]], spec.as_error


def paired_table(
    table: str,
    reference: str,
    output_root: str,
    overrides: list[str],
    across: str = "rows",
    others: tuple[str, ...] = (),
) -> pd.DataFrame:
    """One line per (group, compared label): `across="rows"` compares rows within each column
    (group: the column), `"columns"` columns within each row (group: the row). With `others`,
    those tables' runs join `table`'s, each compared label prefixed by its table's name; groups
    are matched across tables by their labels. A group without reference runs, and a label
    without a seed in common with the reference, give no line."""
    group_key, label_key = ("column", "row") if across == "rows" else ("row", "column")
    parts = []
    for name in (table, *others):
        runs, as_error = labelled_runs(name, output_root, overrides)
        if others:
            runs = runs.assign(**{label_key: f"{name}: " + runs[label_key].astype(str)})
        parts.append((runs, as_error))
    if len({as_error for _, as_error in parts}) > 1:
        raise SystemExit(
            f"{table} and {', '.join(others)} do not agree on report.as_error (one reports an "
            "error, another an accuracy): pass report.as_error=true or false to compare them."
        )
    as_error = parts[0][1]
    runs = pd.concat([frame for frame, _ in parts], ignore_index=True)
    by_seed = runs.pivot_table(index=[group_key, "seed"], columns=label_key, values="value")
    if reference not in by_seed.columns:
        known = ", ".join(map(repr, by_seed.columns))
        raise SystemExit(f"No {label_key} {reference!r} with completed runs; {label_key}s: {known}")
    out = []
    for column, group in by_seed.groupby(level=group_key, sort=False):
        for row in group.columns:
            if row == reference:
                continue
            both = group[[reference, row]].dropna()
            if both.empty:
                continue
            diff = both[row] - both[reference]
            ahead = diff > 0 if as_error else diff < 0
            p = (
                stats.ttest_rel(both[row], both[reference]).pvalue
                if len(both) > 1
                else float("nan")
            )
            out.append(
                {
                    group_key: column,
                    label_key: row,
                    "seeds": len(both),
                    "mean_diff": round(float(diff.mean()), 2),
                    "reference_ahead": int(ahead.sum()),
                    "p_paired_t": float("nan") if p is None else float(p),
                }
            )
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("reference", help="the row (column) label to compare the others with")
    parser.add_argument("--across", choices=("rows", "columns"), default="rows")
    parser.add_argument("--output-root", default="outputs")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument(
        "--with",
        dest="others",
        action="append",
        default=[],
        metavar="TABLE",
        help="another table whose runs join the comparison, labels prefixed by table name",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    frame = paired_table(
        args.table,
        args.reference,
        args.output_root,
        [f"scale={args.scale}", *args.overrides],
        args.across,
        tuple(args.others),
    )
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    sys.exit(main())
