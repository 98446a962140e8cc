"""The papers' own numbers (paper_numbers.csv, as printed) and how our tables map onto them.

Adding a paper table to a report is a data change: one `PAPER_TABLES` entry naming the paper
table and translating our row / column labels (the values of the table's `report.rows` /
`report.columns` keys, joined by " / ") into the paper's labels, e.g.

    "l2rw_table2": PaperRef("l2rw", "Table 2", rows={"baseline": "Baseline", "l2rw": "Ours"},
                            columns={"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}),

Numbers are never typed into code: they live in paper_numbers.csv (paper, table, row, column,
value, pm), with value and ± exactly as printed (pm empty when the paper prints none).
"""

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd

NUMBERS_CSV = Path(__file__).with_name("paper_numbers.csv")
CITATIONS = {
    "l2rw": "Ren, Zeng, Yang, Urtasun. Learning to Reweight Examples for Robust Deep Learning. "
    "ICML 2018",
    "rbc": "Wu, Stein, Gardner, Naik. Learning to Select Pivotal Samples for Meta Re-weighting. "
    "AAAI 2023",
}


@dataclass(frozen=True)
class PaperRef:
    paper: str
    table: str
    # Our row / column label -> the paper's label; labels not listed have no paper counterpart.
    rows: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    # What the paper says in words where it prints no numbers (quoted, never paraphrased).
    note: str = ""

    @property
    def citation(self) -> str:
        return f"{CITATIONS[self.paper]}, {self.table}"


PAPER_TABLES: dict[str, PaperRef] = {
    "l2rw_fig2": PaperRef(
        "l2rw",
        "Figure 2",
        note=(
            "Figure 2 is a plot; the paper prints no numbers for it. Its text (Sec. 4.1): "
            '"Figure 2 plots the test error rate across various imbalance ratios averaged from '
            "10 runs with random splits. Note that our method significantly outperforms all the "
            "baselines. With class imbalance ratio of 200:1, our method only reports a small "
            "increase of error rate around 2%, whereas other methods suffer terribly under this "
            'setting."'
        ),
    ),
}


@cache
def paper_numbers() -> pd.DataFrame:
    """paper_numbers.csv as strings, so "78" stays "78" and "0.60" stays "0.60"."""
    return pd.read_csv(NUMBERS_CSV, dtype=str, keep_default_na=False)


def paper_cells(ref: PaperRef) -> dict[tuple[str, str], tuple[str, str]]:
    """{(our row label, our column label): (value, pm)} for every mapped cell the paper prints."""
    numbers = paper_numbers()
    printed = numbers[(numbers["paper"] == ref.paper) & (numbers["table"] == ref.table)]
    lookup = {(r.row, r.column): (r.value, r.pm) for r in printed.itertuples()}
    return {
        (ours_row, ours_col): lookup[(row, col)]
        for ours_row, row in ref.rows.items()
        for ours_col, col in ref.columns.items()
        if (row, col) in lookup
    }


def unmatched_rows(ref: PaperRef) -> list[str]:
    """The paper table's rows that no row of ours maps to (shown as a note)."""
    numbers = paper_numbers()
    printed = numbers[(numbers["paper"] == ref.paper) & (numbers["table"] == ref.table)]
    mapped = set(ref.rows.values())
    return [row for row in dict.fromkeys(printed["row"]) if row not in mapped]
