"""Aggregation: mean, t-based 95% CI and n per cell; every run not averaged is accounted for."""

import math

import numpy as np
import pytest
import scipy.stats
from test_report_fakes import fig2_spec, make_record, write_record

from l2rw.report.aggregate import aggregate, ci95
from l2rw.report.frame import records_frame, reported_value, variant
from l2rw.report.records import load_local
from l2rw.report.spec import NOT_APPLICABLE, load_spec, short_names


def aggregated(tmp_path, records, **spec_changes):
    for i, record in enumerate(records):
        write_record(tmp_path, record, name=f"run{i:02d}")
    spec = fig2_spec(**spec_changes)
    return aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)


def cell(agg, method, frac):
    rows = agg.cells[(agg.cells["method"] == method) & (agg.cells["majority_fraction"] == frac)]
    assert len(rows) == 1
    return rows.iloc[0]


def kinds(agg):
    return [p.kind for p in agg.problems]


def test_mean_ci_and_n_match_scipy_t_interval(tmp_path):
    accs = [0.91, 0.87, 0.95, 0.90]
    records = [make_record(seed=s, acc=a) for s, a in enumerate(accs)]
    agg = aggregated(tmp_path, records, seeds=4, expected_seeds=[0, 1, 2, 3])
    got = cell(agg, "l2rw", 0.995)
    errors = 100 * (1 - np.array(accs))
    low, high = scipy.stats.t.interval(
        0.95, len(errors) - 1, loc=errors.mean(), scale=scipy.stats.sem(errors)
    )
    assert got["n"] == 4
    assert got["mean"] == pytest.approx(errors.mean())
    assert got["ci95"] == pytest.approx((high - low) / 2)
    assert got["sd"] == pytest.approx(errors.std(ddof=1))
    assert got["seeds"] == [0, 1, 2, 3]


def test_ci_is_nan_for_one_seed():
    assert math.isnan(ci95(np.array([3.0])))
    # sd = sqrt(2), sem = sd / sqrt(2) = 1
    assert ci95(np.array([1.0, 3.0])) == pytest.approx(scipy.stats.t.ppf(0.975, 1))


def test_as_error_is_test_error_in_percent_and_accuracy_is_percent_otherwise():
    assert reported_value(0.9, fig2_spec()) == pytest.approx(10.0)
    assert reported_value(0.9, fig2_spec(as_error=False)) == pytest.approx(90.0)
    assert reported_value(0.25, fig2_spec(as_error=False, metric="test_loss")) == 0.25
    assert math.isnan(reported_value(None, fig2_spec()))


def test_missing_seed_and_missing_cell_are_flagged(tmp_path):
    records = [
        make_record("l2rw", 0.995, 0),
        make_record("l2rw", 0.995, 1),
        make_record("l2rw", 0.9, 0),
        make_record("baseline", 0.995, 0),
        make_record("baseline", 0.995, 1),
    ]
    agg = aggregated(tmp_path, records)
    short = cell(agg, "l2rw", 0.9)
    assert short["n"] == 1 and short["missing_seeds"] == [1]
    assert "missing_seeds" in short["flags"]
    empty = cell(agg, "baseline", 0.9)
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and "missing_cell" in empty["flags"]
    assert cell(agg, "l2rw", 0.995)["flags"] == []
    texts = " ".join(p.text for p in agg.problems)
    assert "method=l2rw, majority_fraction=0.9: 1 of 2 seeds; missing seeds 1." in texts
    assert "method=baseline, majority_fraction=0.9: no completed run." in texts
    assert len(agg.cells) == 4


def test_failed_and_diverged_runs_are_listed_not_averaged(tmp_path):
    records = [
        make_record(seed=0, acc=0.9),
        make_record(seed=1, status="failed", error="DataError: MNIST files are missing"),
        make_record("baseline", seed=0, acc=0.5, status="diverged"),
    ]
    agg = aggregated(tmp_path, records)
    got = cell(agg, "l2rw", 0.995)
    assert got["n"] == 1 and got["mean"] == pytest.approx(10.0)
    assert "failed_runs" in got["flags"] and "missing_seeds" in got["flags"]
    assert cell(agg, "baseline", 0.995)["n"] == 0
    failed = [p.text for p in agg.problems if p.kind == "failed"]
    assert len(failed) == 1 and "DataError: MNIST files are missing" in failed[0]
    assert "run01" in failed[0]
    assert [p.kind for p in agg.problems].count("diverged") == 1
    assert len(agg.counted) == 1


def test_duplicate_counts_only_the_newest_completed_run(tmp_path):
    records = [
        make_record(seed=0, acc=0.80, minute=5),
        make_record(seed=0, acc=0.90, minute=9),  # newest: counted
        make_record(seed=0, acc=0.70, minute=1),
        make_record(seed=1, acc=0.90),
    ]
    agg = aggregated(tmp_path, records)
    got = cell(agg, "l2rw", 0.995)
    assert got["n"] == 2 and got["mean"] == pytest.approx(10.0)
    assert "duplicates" in got["flags"]
    (dup,) = [p.text for p in agg.problems if p.kind == "duplicate"]
    assert "3 completed runs" in dup and "counted the newest, `l2rw_fig2/run01`" in dup


def test_failed_run_replaced_by_a_completed_one_is_listed_as_superseded(tmp_path):
    records = [
        make_record(seed=0, status="failed", error="boom", minute=0),
        make_record(seed=0, acc=0.9, minute=3),
    ]
    agg = aggregated(tmp_path, records)
    assert "superseded" in kinds(agg) and "failed" not in kinds(agg)
    assert "failed_runs" not in cell(agg, "l2rw", 0.995)["flags"]


def test_other_scale_is_excluded_and_reported(tmp_path):
    records = [
        make_record(seed=0, acc=0.9),
        make_record(seed=1, acc=0.9),
        make_record(seed=0, acc=0.1, scale="full"),
    ]
    agg = aggregated(tmp_path, records)
    assert cell(agg, "l2rw", 0.995)["mean"] == pytest.approx(10.0)
    (other,) = [p.text for p in agg.problems if p.kind == "other_scale"]
    assert "1 run(s) at scale 'full' are excluded" in other and "run02" in other
    assert len(agg.read) == 2


def test_runs_with_different_extra_settings_are_reported(tmp_path):
    records = [make_record(seed=0), make_record(seed=1, extra_overrides=("optimizer.lr=0.1",))]
    agg = aggregated(tmp_path, records)
    (mixed,) = [p.text for p in agg.problems if p.kind == "variant"]
    assert "'optimizer.lr=0.1': 1 runs" in mixed and "'(none)': 1 runs" in mixed


def test_unreadable_record_and_cells_outside_the_sweep_are_reported(tmp_path):
    records = [make_record(seed=0), make_record("random", seed=0)]
    bad = tmp_path / "l2rw_fig2" / "broken"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text("{not json")
    agg = aggregated(tmp_path, records)
    assert "unreadable" in kinds(agg) and "not_in_sweep" in kinds(agg)
    assert "not_in_sweep" in cell(agg, "random", 0.995)["flags"]


def test_variant_ignores_the_tables_own_keys_and_bookkeeping():
    cell_overrides = ["imbalance.majority_fraction=0.9", "method=l2rw", "scale=cpu", "threads=1"]
    keys = ["method.name", "imbalance.majority_fraction"]
    assert variant(cell_overrides, keys) == ""
    assert variant([*cell_overrides, "optimizer.lr=0.1"], keys) == "optimizer.lr=0.1"


def test_a_global_group_that_sets_a_column_key_is_the_tables_own():
    """Table 10's arms are `+pretraining=with|without`, which set `selector.pretrain`."""
    keys = ["selector.name", "noise.name", "selector.pretrain"]
    assert variant(["+pretraining=without", "selector=rbc", "noise=adversarial"], keys) == ""
    assert variant(["+pretraining=without"], ["selector.name"]) == "+pretraining=without"
    spec = load_spec("rbc_table10_mnist", ["scale=cpu"])
    assert spec.expected["selector.pretrain"] == [True, False]


def test_keys_an_approach_sets_together_and_a_key_a_row_does_not_have(tmp_path):
    """vit_fmnist's rows are `+approach` options: `l2rw_optimizer` extends `l2rw` (its
    defaults list), and baseline and meta_reweight have no `method.lookahead`: their cells
    carry NOT_APPLICABLE, and so do their runs, which are counted, not dropped as keyless."""
    spec = load_spec("vit_fmnist", ["scale=cpu"])
    assert spec.joint == (("method.name", "method.lookahead"),)
    rows = {cell[:2] for cell in spec.expected_cells()}
    assert rows == {
        ("baseline", NOT_APPLICABLE),
        ("l2rw", "sgd"),
        ("l2rw", "optimizer"),
        ("meta_reweight", NOT_APPLICABLE),
    }
    records = [make_record(method="baseline"), make_record(method="l2rw")]
    records[1]["config"]["method"]["lookahead"] = "optimizer"
    for i, record in enumerate(records):
        record["metrics"]["test_acc_before_ft"] = 0.5
        write_record(tmp_path, record, name=f"run{i}")
    frame = records_frame(load_local(tmp_path, "l2rw_fig2"), spec)
    assert set(zip(frame["method"], frame["lookahead"], strict=True)) == {
        ("baseline", NOT_APPLICABLE),
        ("l2rw", "optimizer"),
    }
    # A table whose sweep expects the key in every cell still excludes a run without it.
    other = fig2_spec(rows=["method.name", "method.lookahead"], expected={})
    frame = records_frame(load_local(tmp_path, "l2rw_fig2"), other)
    assert frame["lookahead"].isna().sum() == 1


def test_short_names_fall_back_to_full_keys_on_clashes():
    assert short_names(["method.name", "imbalance.majority_fraction"]) == {
        "method.name": "method",
        "imbalance.majority_fraction": "majority_fraction",
    }
    assert short_names(["noise.rate", "imbalance.rate", "x.seed"]) == {
        "noise.rate": "noise_rate",
        "imbalance.rate": "imbalance_rate",
        "x.seed": "x_seed",
    }


@pytest.mark.parametrize(("scale", "seeds"), [("cpu", 2), ("full", 10)])
def test_fig2_spec_expects_the_sweeps_grid(scale, seeds):
    spec = load_spec("l2rw_fig2", [f"scale={scale}"])
    assert spec.expected["method.name"] == [
        "l2rw",
        "baseline",
        "proportion",
        "resample",
        "hard_mining",
        "random",
    ]
    assert spec.expected["imbalance.majority_fraction"] == [0.995, 0.99, 0.98, 0.95, 0.9]
    assert spec.seeds == seeds and spec.expected_seeds == list(range(seeds))
    assert len(spec.expected_cells()) == 30
    assert spec.as_error and spec.figure == "error_vs_setting"


def theorem_cell(tmp_path, values_by_seed):
    """The aggregate of one cell whose runs (written in the given order) report these values."""
    records = []
    for seed, value in values_by_seed:
        record = make_record("l2rw", 0.995, seed, acc=0.9)
        record["metrics"]["theorem1_d_min"] = value
        records.append(record)
    return aggregated(
        tmp_path,
        records,
        metric="theorem1_d_min",
        as_error=False,
        seeds=3,
        expected_seeds=[0, 1, 2],
    )


def test_an_infinite_metric_recorded_as_inf_is_averaged_as_infinity(tmp_path):
    agg = theorem_cell(tmp_path, enumerate(("inf", 2.5, "inf")))
    row = cell(agg, "l2rw", 0.995)
    assert row["n"] == 3 and math.isinf(row["mean"]) and row["mean"] > 0
    assert "no_metric" not in kinds(agg)


def test_a_mean_made_infinite_by_some_seeds_is_flagged_with_the_other_seeds(tmp_path):
    agg = theorem_cell(tmp_path, [(2, "inf"), (0, 1.25), (1, 3.5)])
    row = cell(agg, "l2rw", 0.995)
    assert math.isinf(row["mean"]) and "infinite_values" in row["flags"]
    (problem,) = [p for p in agg.problems if p.kind == "infinite_values"]
    assert "seed(s) 2 gave an infinite value" in problem.text
    assert "1.25 (seed 0), 3.5 (seed 1)" in problem.text


def test_a_cell_infinite_in_every_seed_is_not_flagged(tmp_path):
    agg = theorem_cell(tmp_path, [(0, "inf"), (1, "inf"), (2, "inf")])
    assert math.isinf(cell(agg, "l2rw", 0.995)["mean"])
    assert "infinite_values" not in kinds(agg)


@pytest.mark.parametrize(
    ("overrides", "columns", "seeds"),
    [
        ([], 8, [0, 1, 2, 3, 4]),
        (["rbc_switch=previous,plain"], 2, [0, 1, 2, 3, 4]),
        (["rbc_switch=previous", "seed=2"], 1, [2]),
        (["seed=0,1", "selector=gbc"], 8, [0, 1]),
    ],
)
def test_a_report_expects_the_cells_its_overrides_make_a_sweep_run(overrides, columns, seeds):
    """As Hydra's basic sweeper does, a command-line value of a key the table sweeps replaces
    the table's values, swept or not: the report of `seed=2 rbc_switch=previous` expects that
    one column and seed, as `l2rw.train -m` with the same overrides runs them."""
    spec = load_spec("rbc_ablation_mnist", ["scale=cpu", *overrides])
    assert spec.keys[0] == "selector.name"
    cells = spec.expected_cells()
    assert len({cell[1:] for cell in cells}) == columns
    rows = {"gbc"} if "selector=gbc" in overrides else {"warmup", "random", "rbc", "gbc"}
    assert {cell[0] for cell in cells} == rows
    assert spec.expected_seeds == seeds
    assert spec.overrides == tuple(overrides)  # for the provenance's commands; not the scale
