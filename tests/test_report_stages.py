"""Several rows from one run (report.stages): each record fills one cell per stage with that
stage's metric, and the per-run figures draw each run once."""

from test_report_fakes import fig2_spec, make_record, write_record

from l2rw.report.aggregate import aggregate
from l2rw.report.build import figure_runs
from l2rw.report.frame import records_frame
from l2rw.report.provenance import provenance
from l2rw.report.records import load_local

STAGES = (("trained", "test_acc_before_ft"), ("+FT", "test_acc"))


def staged_spec(**changes):
    return fig2_spec(
        rows=["method.name", "stage"],
        stages=STAGES,
        as_error=False,
        expected={
            "method.name": ["l2rw", "baseline"],
            "stage": ["trained", "+FT"],
            "imbalance.majority_fraction": [0.995],
        },
        **changes,
    )


def write_staged(tmp_path):
    for seed in (0, 1):
        for method, before, after in (("l2rw", 0.80, 0.82), ("baseline", 0.60, 0.75)):
            record = make_record(method, 0.995, seed, acc=after + 0.01 * seed)
            record["metrics"]["test_acc_before_ft"] = before + 0.01 * seed
            write_record(tmp_path, record)


def test_each_stage_is_a_row_with_its_own_metric(tmp_path):
    write_staged(tmp_path)
    spec = staged_spec()
    agg = aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)
    means = dict(zip(agg.cells["row"], agg.cells["mean"].round(3), strict=True))
    assert means == {
        "l2rw / trained": 80.5,
        "l2rw / +FT": 82.5,
        "baseline / trained": 60.5,
        "baseline / +FT": 75.5,
    }
    assert agg.cells["n"].eq(2).all()
    assert not agg.problems


def test_a_run_without_a_stage_metric_is_listed_not_averaged(tmp_path):
    write_staged(tmp_path)
    record = make_record("baseline", 0.995, 2, acc=0.7)
    write_record(tmp_path, record)
    spec = staged_spec()
    agg = aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)
    assert any(p.kind == "no_metric" and "test_acc_before_ft" in p.text for p in agg.problems)
    trained = agg.cells[agg.cells["row"] == "baseline / trained"].iloc[0]
    assert trained["n"] == 2


def test_figures_draw_each_run_once_without_its_stage_and_only_the_asked_rows(tmp_path):
    write_staged(tmp_path)
    spec = staged_spec()
    records = load_local(tmp_path, spec.name)
    agg = aggregate(records_frame(records, spec), spec)
    runs = figure_runs(spec, agg, records)
    assert sorted((r.row, r.seed) for r in runs) == [
        ("baseline", 0),
        ("baseline", 1),
        ("l2rw", 0),
        ("l2rw", 1),
    ]
    only = figure_runs(staged_spec(figure_rows=("l2rw",)), agg, records)
    assert {r.row for r in only} == {"l2rw"} and len(only) == 2


def test_provenance_counts_and_times_each_run_once(tmp_path):
    write_staged(tmp_path)
    spec = staged_spec()
    agg = aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)
    items = dict(provenance(spec, agg.read, agg.counted, "local", []).items)
    assert items["runs"] == "4 averaged (8 values: several per run) of 4 read at this scale"
    wall = agg.read.drop_duplicates("run")["wall_time_s"].sum()
    assert items["total wall time"] == f"{wall / 3600:.2f} h over the 4 runs read"


def test_figures_label_runs_as_the_table_labels_their_cells(tmp_path):
    # A sweep over imbalance.factor=200,100 labels its columns 200 and 100 while the records'
    # configs hold 200.0 (a float field): the figures must find the runs under the same labels.
    for seed in (0, 1):
        write_record(tmp_path, make_record("l2rw", 1.0, seed, acc=0.9))
    spec = fig2_spec(
        as_error=False, expected={"method.name": ["l2rw"], "imbalance.majority_fraction": [1]}
    )
    agg = aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)
    assert agg.cells["column"].tolist() == ["1"]
    assert {r.column for r in figure_runs(spec, agg, load_local(tmp_path, spec.name))} == {"1"}


def test_provenance_commands_carry_the_overrides_and_name_table_files(tmp_path):
    """The commands remake the runs and the report: with the overrides the table was composed
    with, and, when the runs' table_name is built by the config (own_data's), the file that
    builds it; a file reporting another file's runs trains with that file."""
    write_staged(tmp_path)
    spec = staged_spec()
    agg = aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)

    def commands(**changes):
        items = dict(provenance(fig2_spec(**changes), agg.read, agg.counted, "local", []).items)
        return items["train command"], items["report command"]

    assert commands() == (
        "python -m l2rw.train +table=l2rw_fig2 scale=cpu",
        "python -m l2rw.report +table=l2rw_fig2 scale=cpu",
    )
    given = ("dataset=arrays", "noise.rate=0.4,0.6", "dataset.options.path=my data.npz")
    assert commands(name="own_data-arrays", table="own_data", overrides=given) == (
        "python -m l2rw.train +table=own_data scale=cpu dataset=arrays noise.rate=0.4,0.6 "
        "'dataset.options.path=my data.npz'",
        "python -m l2rw.report +table=own_data scale=cpu dataset=arrays noise.rate=0.4,0.6 "
        "'dataset.options.path=my data.npz'",
    )
    assert commands(name="rbc_table1_mnist", table="rbc_fig4_mnist") == (
        "python -m l2rw.train +table=rbc_table1_mnist scale=cpu",
        "python -m l2rw.report +table=rbc_fig4_mnist scale=cpu",
    )
