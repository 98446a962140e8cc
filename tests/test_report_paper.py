"""The papers' numbers: one data file, as printed, shown beside ours and labelled as the paper's."""

import re

import pandas as pd
import pytest
from test_report_fakes import make_record, write_record

from l2rw.report import build
from l2rw.report.build import Options, build_table
from l2rw.report.paper import (
    CITATIONS,
    PAPER_TABLES,
    PaperRef,
    paper_cells,
    paper_numbers,
    unmatched_rows,
)

NUMBER = re.compile(r"^(\d+(\.\d+)?|inf)$")


def test_paper_numbers_file_is_well_formed():
    numbers = paper_numbers()
    assert list(numbers.columns) == ["paper", "table", "row", "column", "value", "pm"]
    assert set(numbers["paper"]) <= set(CITATIONS)
    assert not numbers.duplicated(["paper", "table", "row", "column"]).any()
    assert numbers["value"].map(lambda v: bool(NUMBER.match(v))).all()
    assert numbers["pm"].map(lambda v: v == "" or bool(NUMBER.match(v))).all()


@pytest.mark.parametrize(
    ("paper", "table", "row", "column", "value", "pm"),
    [
        ("l2rw", "Table 1", "Ours", "CIFAR-10", "86.92", "0.19"),
        ("l2rw", "Table 1", "MentorNet +FT", "CIFAR-100", "59", ""),
        ("l2rw", "Table 2", "Baseline", "CIFAR-100", "37.82", "0.69"),
        ("l2rw", "Table 2", "Ours", "CIFAR-100", "59.30", "0.60"),
        ("rbc", "Table 1", "GBC", "CIFAR-100 / adversarial", "53.14", "1.33"),
        ("rbc", "Table 1", "Base model", "Imagenet-10 / uniform", "72.22", ""),
        ("rbc", "Table 2", "RBC", "CIFAR-10", "68.18", "1.58"),
        ("rbc", "Table 9", "Base Model", "CIFAR-10 / 200", "27.3", ""),
    ],
)
def test_values_are_transcribed_as_printed(paper, table, row, column, value, pm):
    numbers = paper_numbers()
    hit = numbers[
        (numbers["paper"] == paper)
        & (numbers["table"] == table)
        & (numbers["row"] == row)
        & (numbers["column"] == column)
    ]
    assert hit[["value", "pm"]].values.tolist() == [[value, pm]]


def test_every_table_of_both_papers_is_there_and_figure_2_has_no_numbers():
    numbers = paper_numbers()
    tables = numbers.groupby("paper")["table"].unique().map(set)
    assert tables["l2rw"] == {"Table 1", "Table 2"}
    assert tables["rbc"] == {f"Table {i}" for i in range(1, 11)}
    assert not (numbers["table"].str.startswith("Figure")).any()
    assert "averaged from 10 runs" in PAPER_TABLES["l2rw_fig2"].note


def test_mapping_translates_our_labels_to_the_papers():
    ref = PaperRef("l2rw", "Table 2", {"l2rw": "Ours", "baseline": "Baseline"}, {"": "CIFAR-10"})
    assert paper_cells(ref) == {
        ("l2rw", ""): ("86.73", "0.48"),
        ("baseline", ""): ("59.54", "2.16"),
    }
    assert "Baseline +ES" in unmatched_rows(ref) and "Ours" not in unmatched_rows(ref)
    assert ("CIFAR-10", "64.96", "1.19") in unmatched_rows(ref)["Baseline +ES"]


def test_reports_show_the_papers_numbers_beside_ours(tmp_path, monkeypatch):
    ref = PaperRef(
        "l2rw",
        "Table 1",
        rows={"l2rw": "Ours", "baseline": "Baseline"},
        columns={"0.995": "CIFAR-10", "0.9": "CIFAR-100"},
    )
    monkeypatch.setitem(build.PAPER_TABLES, "l2rw_fig2", ref)
    root = tmp_path / "outputs"
    for seed in (0, 1):
        write_record(root, make_record("l2rw", 0.995, seed, acc=0.9))
    results = tmp_path / "results"
    build_table("l2rw_fig2", ["report.figure=null"], Options("local", str(root), str(results)))
    markdown = (results / "l2rw_fig2_cpu.md").read_text()
    assert "From Ren, Zeng, Yang, Urtasun" in markdown and "Table 1, as printed" in markdown
    assert "| l2rw (Ours) | 86.92 ± 0.19 | 61.34 ± 2.06 |" in markdown
    assert "| baseline (Baseline) | 67.97 ± 0.62 | 50.66 ± 0.24 |" in markdown
    reported = "Paper rows with no run of ours (the paper's numbers, as reported): Reed-Hard: "
    assert reported + "CIFAR-10 69.66 ± 1.21" in markdown
    frame = pd.read_csv(results / "l2rw_fig2_cpu.csv", comment="#", dtype={"paper_value": str})
    ours = frame[(frame["method"] == "l2rw") & (frame["majority_fraction"] == 0.995)].iloc[0]
    assert ours["paper_value"] == "86.92" and ours["paper_pm"] == 0.19
    assert "As printed in Ren" in (results / "l2rw_fig2_cpu.tex").read_text()
    assert not (results / "l2rw_fig2_cpu.png").exists()


@pytest.mark.parametrize("table", sorted(PAPER_TABLES))
def test_every_mapped_paper_label_is_printed_in_the_paper(table):
    """A misspelt label would silently show no paper number: each one is a row / column the
    paper prints (in this table, or, for labels shared across tables, in another)."""
    ref = PAPER_TABLES[table]
    numbers = paper_numbers()
    paper = numbers[numbers["paper"] == ref.paper]
    assert set(ref.rows.values()) <= set(paper["row"]), table
    printed = paper[paper["table"] == ref.table]
    assert set(ref.columns.values()) <= set(printed["column"]), table
