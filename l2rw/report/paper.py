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
    "ta_vaal": "TA-VAAL",
    "craig": "craige",
    "kmeans": "RBC-K",
    "rbc": "RBC",
    "gbc": "GBC",
}

# Table 9 prints its rows under other labels.
RBC_TABLE9_ROWS = {
    "warmup": "Base Model",
    "random": "Random",
    "uncertain": "Uncertainty",
    "certain": "Certainty",
    "finetune": "Finetune",
    "ta_vaal": "TA-VAAL",
    "rbc": "RBC",
    "gbc": "GBC",
}

CIFAR_COLUMNS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# Our noise names -> the RBC paper's column labels.
RBC_NOISES = {"uniform_flip": "uniform", "adversarial": "adversarial"}


def rbc_noise_columns(datasets: dict[str, str]) -> dict[str, str]:
    """Our `dataset / noise` column labels -> the RBC paper's (`CIFAR-10 / uniform`, ...), for
    the datasets given as {our name: the paper's}."""
    return {
        f"{ds} / {noise}": f"{label} / {paper_noise}"
        for ds, label in datasets.items()
        for noise, paper_noise in RBC_NOISES.items()
    }


# The RBC paper's CIFAR columns (Tables 1, 4, 5).
RBC_CIFAR_NOISE_COLUMNS = rbc_noise_columns(CIFAR_COLUMNS)

PAPER_TABLES: dict[str, PaperRef] = {
    "l2rw_table1": PaperRef(
        "l2rw",
        "Table 1",
        rows={
            "baseline / trained": "Baseline",
            "reed_hard / trained": "Reed-Hard",
            "s_model / trained": "S-Model",
            "random / trained": "Random",
            "clean_only / trained": "Clean Only",
            "baseline / +FT": "Baseline +FT",
            "random / +FT": "Random +FT",
            "l2rw / trained": "Ours",
        },
        columns=CIFAR_COLUMNS,
        note="MentorNet's numbers are those of Jiang et al. (2017), copied by the L2RW paper.",
    ),
    "l2rw_table2": PaperRef(
        "l2rw",
        "Table 2",
        rows={
            "baseline / final / trained": "Baseline",
            "baseline / early / trained": "Baseline +ES",
            "random / final / trained": "Random",
            "weighted / final / trained": "Weighted",
            "reed_soft / early / trained": "Reed Soft +ES",
            "reed_hard / early / trained": "Reed Hard +ES",
            "s_model / final / trained": "S-Model",
            "s_model_conf / final / trained": "S-Model +Conf",
            "s_model_conf / early / trained": "S-Model +Conf +ES",
            "clean_only / final / trained": "Clean Only",
            "baseline / final / +FT": "Baseline +FT",
            "baseline / early / +FT": "Baseline +ES +FT",
            "weighted / final / +FT": "Weighted +FT",
            "s_model_conf / final / +FT": "S-Model +Conf +FT",
            "s_model_conf / early / +FT": "S-Model +Conf +ES +FT",
            "l2rw / final / trained": "Ours",
        },
        columns=CIFAR_COLUMNS,
    ),
    "l2rw_fig4": PaperRef(
        "l2rw",
        "Figure 4",
        note=(
            "Figure 4 is a plot; the paper prints no numbers for it. Its text (Sec. 4.3): "
            '"using 15 validation images for all classes only results in a 2% drop in '
            "performance, and the overall classification performance does not grow after having "
            "more than 100 validation images. In comparison, we observe a significant drop in "
            "performance when only fine-tuning on these 15 validation images for the baselines, "
            'and the performance catches up around using 1,000 validation images (100 per class)."'
        ),
    ),
    "l2rw_fig5": PaperRef(
        "l2rw",
        "Figure 5",
        note=(
            "Figure 5 is a plot; the paper prints no numbers for it. Its text (Sec. 4.3): "
            '"our method only drops 6% accuracy when the noise ratio increased from 0% to 50%; '
            "whereas the baseline has dropped more than 40%. At 0% noise, our method only "
            'slightly underperforms baseline."'
        ),
    ),
    "l2rw_table2_fmnist": PaperRef(
        "l2rw",
        "Table 2",
        note=(
            "This table is an analogue on Fashion-MNIST with LeNet-5, not the paper's CIFAR / "
            "ResNet-32 setting: compare the ordering of its rows with the paper's Table 2 "
            "(results/README.md does), not its numbers."
        ),
    ),
    "l2rw_fig4_fmnist": PaperRef(
        "l2rw",
        "Figure 4",
        note=(
            "This figure is an analogue on Fashion-MNIST with LeNet-5, not the paper's CIFAR-10 "
            "/ ResNet-32 setting. The paper's Figure 4 text: L2RW with 15 clean images loses "
            "about 2% and does not improve past 100; fine-tuned baselines drop far with 15 and "
            "catch up around 1,000."
        ),
    ),
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
    "rbc_table1_cifar": PaperRef(
        "rbc",
        "Table 1",
        rows=RBC_SELECTOR_ROWS,
        columns=RBC_CIFAR_NOISE_COLUMNS,
    ),
    "rbc_table1_imagenet10": PaperRef(
        "rbc",
        "Table 1",
        rows=RBC_SELECTOR_ROWS,
        columns=rbc_noise_columns({"imagenet10": "Imagenet-10"}),
        note=(
            "The paper's footnote 7: \"We report the validation accuracy for Imagenet-10 since "
            "the ground-truth labels of test samples are invisible after running the meta "
            're-weighting algorithm with meta samples selected by different methods." Our test '
            "set is 90% of ImageNet's validation images of the ten classes (the other 10% "
            "validate)."
        ),
    ),
    "rbc_table3": PaperRef("rbc", "Table 3", rows=RBC_SELECTOR_ROWS, columns={"0.8": "All"}),
    "rbc_table3_boundary": PaperRef(
        "rbc", "Table 3", rows=RBC_SELECTOR_ROWS, columns={"0.8": "Boundary"}
    ),
    "rbc_table4": PaperRef(
        "rbc",
        "Table 4",
        rows={"minimum": "minimum", "5%-quantile": "5%-quantile"},
        columns=RBC_CIFAR_NOISE_COLUMNS,
        note=(
            "At scale=full this is the paper's setting (CIFAR, ResNet-34). At scale=cpu it is an "
            "MNIST / LeNet-5 analogue, not the paper's setting: compare whether D_j stays well "
            'above 1, not the numbers. The paper reads inf as "all the terms in the innermost '
            "sum of Equation (8) have the same signs\". Our D_j: the clustered examples' "
            "last-layer gradients with their observed labels against the round's picks with "
            "their clean labels (docs/fidelity.md); the share of inf is ours, not the paper's."
        ),
    ),
    "rbc_table5": PaperRef(
        "rbc",
        "Table 5",
        rows={"count": "count"},
        columns=RBC_CIFAR_NOISE_COLUMNS,
        note=(
            'The paper counts stable samples "out of 25k", the half of the training set that is '
            "clustered; ours are out of the `clustered` row. At scale=full this is the paper's "
            "setting (CIFAR, ResNet-34). At scale=cpu it is an MNIST / LeNet-5 analogue (about "
            "2,500 clustered), not the paper's setting: compare the stable fraction with the "
            'paper\'s "over 80%", not the counts.'
        ),
    ),
    "rbc_table8": PaperRef(
        "rbc",
        "Table 8",
        rows={str(k): f"K={k}" for k in (4, 6, 10, 50, 100)},
        columns={"0.8": "Test Accuracy"},
    ),
    "rbc_table6": PaperRef(
        "rbc",
        "Table 6",
        rows=RBC_SELECTOR_ROWS,
        columns={str(n): f"{n} meta samples" for n in (20, 30, 40, 50)},
    ),
    "rbc_table6_mnist": PaperRef(
        "rbc",
        "Table 6",
        note=(
            "This table is an analogue on MNIST with LeNet-5 (a budget of 50 instead of the "
            "paper's 20 for MNIST), not the paper's CIFAR-10 / ResNet-34 setting (rbc_table6): "
            "compare how the rows change as meta samples are added, not the numbers. The "
            "paper's text: \"for CIFAR-10 dataset with 60% adversarial label errors, we "
            "repetitively add 10 meta samples and run the meta re-weighting algorithm for 4 "
            'times after the warm-up phase" and "our methods can consistently outperform (with '
            "performance gains up to 13% when 20 meta samples are selected) with respect to the "
            'baseline methods."'
        ),
    ),
    "rbc_table10": PaperRef(
        "rbc",
        "Table 10",
        rows=RBC_SELECTOR_ROWS,
        columns={
            f"{ours} / {arm}": f"{theirs} / {label} pretraining"
            for ours, theirs in RBC_NOISES.items()
            for arm, label in (("True", "with"), ("False", "without"))
        },
    ),
    "rbc_table10_mnist": PaperRef(
        "rbc",
        "Table 10",
        note=(
            "This table is an analogue on MNIST with LeNet-5 (20 meta samples), not the paper's "
            "CIFAR-100 / ResNet-34 setting (rbc_table10): compare the direction of the with / "
            "without difference, not the numbers. The paper's text: \"both our methods and "
            'baseline methods can generally benefit from pre-training phase".'
        ),
    ),
    "rbc_table2": PaperRef(
        "rbc",
        "Table 2",
        rows={**RBC_SELECTOR_ROWS, "warmup": "BaseModel"},
        columns=CIFAR_COLUMNS,
    ),
    "rbc_table2_mnist": PaperRef(
        "rbc",
        "Table 2",
        note=(
            "This table is an analogue on long-tailed MNIST with LeNet-5 (20 meta samples), not "
            "the paper's long-tailed CIFAR / ResNet-34 setting (rbc_table2): compare the ordering "
            "of its rows with the paper's Table 2, not its numbers. The paper's text: \"our "
            'method, RBC, outperforms all the baseline methods for CIFAR-10 and CIFAR-100".'
        ),
    ),
    "rbc_table7": PaperRef(
        "rbc", "Table 7", rows=RBC_SELECTOR_ROWS, columns={"cifar100": "CIFAR-100"}
    ),
    "rbc_table9": PaperRef(
        "rbc",
        "Table 9",
        rows=RBC_TABLE9_ROWS,
        columns={
            f"{ds} / {factor}": f"{label} / {factor}"
            for ds, label in CIFAR_COLUMNS.items()
            for factor in (200, 100)  # the sweep's values label the columns
        },
    ),
    "rbc_table9_mnist": PaperRef(
        "rbc",
        "Table 9",
        note=(
            "This table is an analogue on long-tailed MNIST with 40% uniform noise, LeNet-5 and "
            "the paper's CIFAR-10 budget (10 + 100 meta samples), not the paper's CIFAR / "
            "ResNet-34 setting (rbc_table9): compare the ordering of its rows, not its numbers. "
            "The paper's text: \"With 40% uniform noise and class imbalance levels of 200 and "
            "100, our methods outperform all baselines for CIFAR-100 and CIFAR-10 with imbalance "
            'of 100."'
        ),
    ),
    "rbc_fig4": PaperRef(
        "rbc",
        "Figure 4",
        note=(
            "Figure 4 is a t-SNE plot; the paper prints no numbers for it (the table beside ours "
            "is rbc_table2's). Its text: \"there exists obvious clustering structure on the "
            'sample-wise gradients" and "the cluster centroids discovered in this manner cover '
            'all the clusters very well."'
        ),
    ),
    "rbc_fig4_mnist": PaperRef(
        "rbc",
        "Figure 4",
        note=(
            "Figure 4 is a t-SNE plot of RBC's features on CIFAR-10 with imbalance factor 200; "
            "this is an analogue on MNIST with 60% adversarial noise. The paper's text: "
            '"there exists obvious clustering structure on the sample-wise gradients" and "the '
            'cluster centroids discovered in this manner cover all the clusters very well."'
        ),
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


def unmatched_rows(ref: PaperRef) -> dict[str, list[tuple[str, str, str]]]:
    """The paper table's rows that no row of ours maps to, with what the paper prints for them:
    {row: [(column, value, pm), ...]} (shown as the paper's, e.g. L2RW's MentorNet rows)."""
    numbers = paper_numbers()
    printed = numbers[(numbers["paper"] == ref.paper) & (numbers["table"] == ref.table)]
    mapped = set(ref.rows.values())
    out: dict[str, list[tuple[str, str, str]]] = {}
    for r in printed.itertuples():
        if r.row not in mapped:
            out.setdefault(r.row, []).append((r.column, r.value, r.pm))
    return out
