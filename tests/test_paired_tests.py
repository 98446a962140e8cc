"""scripts/paired_tests.py: paired differences and t-tests by seed, from the report's records."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_report_fakes import make_record, write_record

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "paired_tests.py"
L2RW_ACC = [0.91, 0.87, 0.95]
BASELINE_ACC = [0.85, 0.88, 0.80]


def _load_script():
    spec = importlib.util.spec_from_file_location("paired_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def output_root(tmp_path):
    for method, accs in (("l2rw", L2RW_ACC), ("baseline", BASELINE_ACC)):
        for seed, acc in enumerate(accs):
            write_record(tmp_path, make_record(method=method, seed=seed, acc=acc))
    return tmp_path


def test_differences_and_p_values_match_scipy_on_the_seed_pairs(output_root):
    frame = _load_script().paired_table("l2rw_fig2", "l2rw", str(output_root), ["scale=cpu"])
    row = frame[(frame["row"] == "baseline") & (frame["column"] == "0.995")].iloc[0]
    l2rw_err = 100 * (1 - np.array(L2RW_ACC))
    base_err = 100 * (1 - np.array(BASELINE_ACC))
    assert row["seeds"] == 3
    assert row["mean_diff"] == pytest.approx((base_err - l2rw_err).mean(), abs=0.005)
    assert row["reference_ahead"] == int((base_err > l2rw_err).sum()) == 2
    assert row["p_paired_t"] == pytest.approx(scipy.stats.ttest_rel(base_err, l2rw_err).pvalue)
    assert len(frame) == 1


def test_config_overrides_may_follow_the_options(output_root):
    """Overrides after --output-root / --scale (as the docstring's usage puts them) apply."""
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "l2rw_fig2",
            "l2rw",
            "--output-root",
            str(output_root),
            "--scale",
            "cpu",
            "report.as_error=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    diff = 100 * (np.array(BASELINE_ACC) - np.array(L2RW_ACC)).mean()
    assert f"{diff:.3g}" in out.stdout.split()


def test_across_columns_compares_each_column_with_the_reference_within_each_row(tmp_path):
    low = [0.80, 0.84, 0.90]
    for seed, (hi, lo) in enumerate(zip(L2RW_ACC, low, strict=True)):
        write_record(tmp_path, make_record(method="l2rw", frac=0.995, seed=seed, acc=hi))
        write_record(tmp_path, make_record(method="l2rw", frac=0.9, seed=seed, acc=lo))
    frame = _load_script().paired_table(
        "l2rw_fig2", "0.995", str(tmp_path), ["scale=cpu", "report.as_error=false"], "columns"
    )
    (row,) = frame.to_dict("records")
    assert (row["row"], row["column"], row["seeds"]) == ("l2rw", "0.9", 3)
    diff = 100 * (np.array(low) - np.array(L2RW_ACC))
    assert row["mean_diff"] == pytest.approx(diff.mean(), abs=0.005)
    assert row["reference_ahead"] == 3
    assert row["p_paired_t"] == pytest.approx(
        scipy.stats.ttest_rel(100 * np.array(low), 100 * np.array(L2RW_ACC)).pvalue
    )


def _runs(rows: dict[str, list[float]], column: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"row": row, "column": column, "seed": seed, "value": value}
            for row, values in rows.items()
            for seed, value in enumerate(values)
        ]
    )


def test_with_compares_a_column_of_one_table_with_a_column_of_another_row_by_row(monkeypatch):
    """`--with`: each table's labels prefixed by its name, rows matched by their labels and
    seeds; a row only the other table has (kmeans) is not compared; a seed only one table
    has is left out of the pair."""
    module = _load_script()
    ablation = _runs({"random": [70.0, 72.0, 75.0], "gbc": [85.0, 80.0, 90.0]}, "ref")
    table1 = _runs({"random": [78.0, 77.0], "gbc": [94.0, 95.0], "kmeans": [90.0, 91.0]}, "0.6")
    frames = {"ablation": (ablation, False), "table1": (table1, False)}
    monkeypatch.setattr(module, "labelled_runs", lambda name, root, overrides: frames[name])
    frame = module.paired_table(
        "ablation", "ablation: ref", "outputs", [], "columns", others=("table1",)
    )
    lines = {line["row"]: line for line in frame.to_dict("records")}
    assert set(lines) == {"random", "gbc"}
    assert {line["column"] for line in lines.values()} == {"table1: 0.6"}
    assert lines["random"]["seeds"] == 2
    assert lines["random"]["mean_diff"] == pytest.approx(((78 - 70) + (77 - 72)) / 2)
    assert lines["random"]["reference_ahead"] == 0
    assert lines["gbc"]["p_paired_t"] == pytest.approx(
        scipy.stats.ttest_rel([94.0, 95.0], [85.0, 80.0]).pvalue
    )


def test_a_label_without_a_seed_in_common_with_the_reference_gives_no_line(monkeypatch):
    """A column run for some rows only (an ablation part-way) is compared where it has runs;
    rows it lacks give no line rather than a line of NaN."""
    module = _load_script()
    ref = _runs({"warmup": [56.0, 50.0, 58.0], "random": [75.0, 71.0, 79.0]}, "ref")
    plain = _runs({"warmup": [72.0, 53.0, 71.0]}, "plain")
    frames = {"ablation": (pd.concat([ref, plain], ignore_index=True), False)}
    monkeypatch.setattr(module, "labelled_runs", lambda name, root, overrides: frames[name])
    frame = module.paired_table("ablation", "ref", "outputs", [], "columns")
    assert frame[["row", "column", "seeds"]].to_dict("records") == [
        {"row": "warmup", "column": "plain", "seeds": 3}
    ]


def test_with_refuses_tables_that_disagree_on_error_or_accuracy(monkeypatch):
    module = _load_script()
    frames = {
        "a": (_runs({"random": [70.0]}, "x"), False),
        "b": (_runs({"random": [30.0]}, "y"), True),
    }
    monkeypatch.setattr(module, "labelled_runs", lambda name, root, overrides: frames[name])
    with pytest.raises(SystemExit, match="report.as_error"):
        module.paired_table("a", "a: x", "outputs", [], "columns", others=("b",))
