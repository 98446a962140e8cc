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


# Our selector names -> the RBC paper's row labels (Tables 1, 2, 6, 9).
RBC_SELECTOR_ROWS = {
    "warmup": "Base model",
    "random": "Random",
    "certain": "Certain",
    "uncertain": "Uncertain",
    "finetune": "Fine-tuning",
    "kmeans": "RBC-K",
    "rbc": "RBC",
    "gbc": "GBC",
}

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
    "rbc_fig1": PaperRef(
        "rbc",
        "Figure 1",
        note=(
            "Figure 1 is a plot of one run; the paper prints two pairs of accuracies for it. "
            'Introduction: "randomly selected meta samples may perform worse than carefully '
            'selected ones by using our methods (62.9% vs. 87.1% on test accuracy)". Caption: '
            '"the one learned by random selections deviates farther from the expected '
            "classifier, thus leading to worse prediction performance than our methods (56.3% "
            'vs. 92.0%)."'
        ),
    ),
    "rbc_table1_mnist": PaperRef(
        "rbc",
        "Table 1",
        rows=RBC_SELECTOR_ROWS,
        columns={"0.6": "MNIST / adversarial"},
    ),
    "rbc_table3": PaperRef("rbc", "Table 3", rows=RBC_SELECTOR_ROWS, columns={"0.8": "All"}),
    "rbc_table3_boundary": PaperRef(
        "rbc", "Table 3", rows=RBC_SELECTOR_ROWS, columns={"0.8": "Boundary"}
    ),
    "rbc_table8": PaperRef(
        "rbc",
        "Table 8",
        rows={str(k): f"K={k}" for k in (4, 6, 10, 50, 100)},
        columns={"0.8": "Test Accuracy"},
    ),
    "rbc_fig3": PaperRef(
        "rbc",
        "Figure 3",
        note=(
            'Figure 3 is a plot; the paper prints no numbers for it. Its text: "both RBC and GBC '
            "outperform all the baseline methods across all the noise rates and the performance "
            'gains become even larger with more samples being noisily labeled (up to 2%)."'
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
