"""A value per selection round (the key selection.meta_samples, RBC Table 6): each record fills
one cell per round, labelled by the meta samples after it; a run whose rounds are missing is
listed under Problems, not left out."""

import pandas as pd
import pytest
from omegaconf import OmegaConf
from test_report_fakes import make_record, write_record

from l2rw.report.aggregate import aggregate
from l2rw.report.build import Options, build_table
from l2rw.report.frame import records_frame, value_label
from l2rw.report.paper import PAPER_TABLES, paper_cells
from l2rw.report.records import load_local
from l2rw.report.spec import ROUNDS, load_spec, round_meta_samples

SIZES = [10, 20, 30]
TABLE6 = "rbc_table6_mnist"


def rounds_spec():
    spec = load_spec("l2rw_fig2", [])  # any table: its fields, with the keys replaced
    return spec.__class__(
        **{
            **spec.__dict__,
            "rows": ["selector.name"],
            "columns": [ROUNDS],
            "metric": "test_acc_es",
            "as_error": False,
            "seeds": 2,
            "figure": None,
            "scale": "cpu",
            "expected": {"selector.name": ["rbc", "certain"], ROUNDS: SIZES},
            "expected_seeds": [0, 1],
        }
    )


def round_record(selector, seed, accs, table="l2rw_fig2", status="completed", **changes):
    """A selection run's record: `accs` {meta samples: the round's test_acc_es}."""
    record = make_record(seed=seed, status=status, **changes)
    overrides = [f"seed={seed}", f"selector={selector}", f"+table={table}", "scale=cpu"]
    record["config"]["selector"] = {"name": selector}
    record["config"]["table_name"] = record["table"] = table
    record["overrides"], record["cell"] = overrides, [f"selector={selector}"]
    rounds = [
        {"round": r, "meta_samples": n, "test_acc": acc - 0.01, "test_acc_es": acc}
        for r, (n, acc) in enumerate(accs.items())
    ]
    if accs:
        record["metrics"]["test_acc"] = record["metrics"]["test_acc_es"] = rounds[-1]["test_acc_es"]
    record["selection"] = {"selector": selector, "rounds": rounds}
    return record


def accs(base):
    return {n: base + n / 1000 for n in SIZES}


def write_all(tmp_path, records):
    for i, record in enumerate(records):
        write_record(tmp_path, record, name=f"run{i:02d}")


def aggregated(tmp_path, records):
    write_all(tmp_path, records)
    spec = rounds_spec()
    return aggregate(records_frame(load_local(tmp_path, spec.name), spec), spec)


def complete(seeds=(0, 1)):
    return [
        round_record(selector, seed, accs(base + 0.02 * seed))
        for selector, base in (("rbc", 0.8), ("certain", 0.6))
        for seed in seeds
    ]


def means(agg):
    return {(c.selector, c.meta_samples): round(c.mean, 3) for c in agg.cells.itertuples()}


def test_each_round_is_a_cell_labelled_by_its_meta_samples(tmp_path):
    agg = aggregated(tmp_path, complete())
    assert means(agg) == {
        ("rbc", 10): 82.0,
        ("rbc", 20): 83.0,
        ("rbc", 30): 84.0,
        ("certain", 10): 62.0,
        ("certain", 20): 63.0,
        ("certain", 30): 64.0,
    }
    assert list(agg.cells["column"]) == ["10", "20", "30"] * 2
    assert agg.cells["n"].eq(2).all() and agg.cells["seeds"].map([0, 1].__eq__).all()
    assert not agg.problems
    assert value_label(rounds_spec()) == "test_acc_es (%) after each selection round"


def test_a_run_without_rounds_is_listed_not_dropped(tmp_path):
    records = complete(seeds=(0,))
    records.append(round_record("rbc", 1, {}))  # completed, but records no rounds
    short = round_record("certain", 1, {10: 0.5, 20: 0.6})  # stopped before 30
    records.append(short)
    agg = aggregated(tmp_path, records)
    texts = [p.text for p in agg.problems if p.kind == "no_metric"]
    assert texts == [
        f"`l2rw_fig2/run02` completed without a round of {n} meta samples with test_acc_es in "
        "selection.rounds: excluded."
        for n in SIZES
    ] + [
        "`l2rw_fig2/run03` completed without a round of 30 meta samples with test_acc_es in "
        "selection.rounds: excluded."
    ]
    cells = agg.cells.set_index(["selector", "meta_samples"])
    assert cells.loc[("certain", 20), "n"] == 2 and cells.loc[("certain", 30), "n"] == 1
    assert cells.loc[("rbc", 20), "missing_seeds"] == [1]
    assert "missing_seeds" in cells.loc[("rbc", 20), "flags"]


def test_a_failed_run_is_listed_in_each_of_its_cells(tmp_path):
    records = [*complete(seeds=(0,)), round_record("rbc", 1, {}, status="failed", error="boom")]
    agg = aggregated(tmp_path, records)
    failed = [p.text for p in agg.problems if p.kind == "failed"]
    assert len(failed) == len(SIZES) and all("run02" in t and "boom" in t for t in failed)


def test_a_round_outside_the_schedule_is_shown_and_flagged(tmp_path):
    records = complete()
    records[0]["selection"]["rounds"].append({"round": 3, "meta_samples": 35, "test_acc_es": 0.9})
    agg = aggregated(tmp_path, records)
    extra = agg.cells[agg.cells["meta_samples"] == 35].iloc[0]
    assert extra["n"] == 1 and "not_in_sweep" in extra["flags"]
    assert any(p.kind == "not_in_sweep" for p in agg.problems)


@pytest.mark.parametrize(
    ("per_round", "sizes"),
    [(10, [10, 20, 30, 40, 50]), (None, [10, 50]), (15, [10, 25, 40, 50]), (40, [10, 50])],
)
def test_the_schedule_of_meta_set_sizes(per_round, sizes):
    cfg = OmegaConf.create(
        {"dataset": {"clean_size": 10}, "selector": {"budget": 50, "per_round": per_round}}
    )
    assert round_meta_samples(cfg) == sizes


def test_no_schedule_without_a_selector():
    assert round_meta_samples(OmegaConf.create({"dataset": {"clean_size": 10}})) is None


@pytest.mark.parametrize("table", ["rbc_table6", "rbc_table6_mnist"])
def test_table6_configs_expect_four_rounds_after_the_warmup(table):
    spec = load_spec(table, ["scale=cpu"])
    assert spec.per_round and spec.metric == "test_acc_es"
    assert spec.expected == {
        "selector.name": ["certain", "ta_vaal", "rbc", "gbc"],
        ROUNDS: [10, 20, 30, 40, 50],
    }


def test_table6_maps_onto_the_papers_numbers():
    printed = paper_cells(PAPER_TABLES["rbc_table6"])
    assert len(printed) == 16
    assert printed[("rbc", "20")] == ("78.95", "")
    assert printed[("ta_vaal", "50")] == ("61.47", "")
    assert "analogue" in PAPER_TABLES["rbc_table6_mnist"].note


def with_protocol(record, protocol):
    """`record` made under `protocol` ((dotted key, value) pairs), as a run of today's config."""
    for key, value in protocol:
        *path, leaf = key.split(".")
        node = record["config"]
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return record


def test_table6_mnist_report_end_to_end(tmp_path):
    root, results = tmp_path / "outputs", tmp_path / "results"
    # Two seeds expected, whatever the table's cpu scale runs.
    overrides = ["scale=cpu", "scales.cpu.seeds=2"]
    protocol = load_spec(TABLE6, overrides).protocol
    for seed in (0, 1):
        for i, selector in enumerate(("certain", "ta_vaal", "rbc", "gbc")):
            sizes = {n: 0.5 + 0.1 * i + n / 1000 + 0.01 * seed for n in (10, 20, 30, 40, 50)}
            record = round_record(selector, seed, sizes, table=TABLE6)
            write_record(root, with_protocol(record, protocol))
    built = build_table(TABLE6, overrides, Options("local", str(root), str(results)))
    markdown = (results / f"{TABLE6}_cpu.md").read_text()
    assert "| selector \\ meta_samples | 10 | 20 | 30 | 40 | 50 |" in markdown
    assert "| rbc | 71.50 ± 6.35 (2) | 72.50 ± 6.35 (2) |" in markdown
    assert "None: every expected cell has its seeds" in markdown
    assert (results / f"{TABLE6}_cpu.png").exists()
    frame = pd.read_csv(results / f"{TABLE6}_cpu.csv", comment="#")
    assert len(frame) == 20 and set(frame["metric"]) == {"test_acc_es"}
    assert not built.report.agg.problems
