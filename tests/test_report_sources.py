"""Both record sources (local result.json files, W&B runs) give the same frame for the same runs."""

from types import SimpleNamespace

import pandas as pd
import pytest
import wandb
from omegaconf import OmegaConf
from test_report_fakes import TABLE, FakeApi, FakeRun, fig2_spec, make_record, write_record

from l2rw.report.frame import records_frame
from l2rw.report.records import load_local
from l2rw.report.spec import ReportError
from l2rw.report.wandb_source import load_wandb
from l2rw.tracking.sinks import open_wandb
from l2rw.tracking.wandb_group import CELL_KEY, GROUP_LIMIT, format_group, parse_group

# Columns that name where a run came from, which differ by source by design.
SOURCE_ONLY = ["run", "error", "git_commit", "device"]


@pytest.fixture
def records():
    return [
        make_record("l2rw", 0.995, 0, acc=0.93),
        make_record("l2rw", 0.995, 1, acc=0.91, minute=2),
        make_record("baseline", 0.9, 0, acc=0.60, minute=4),
        make_record("baseline", 0.9, 1, status="diverged", minute=6),
        make_record("baseline", 0.995, 0, status="failed", error="boom", minute=8),
    ]


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(wandb, "Api", FakeApi)
    return FakeApi


def test_local_source_reads_result_files_at_any_depth(tmp_path, records):
    write_record(tmp_path, records[0], name="sweep_a/job0")
    write_record(tmp_path, records[1], name="job1")
    write_record(tmp_path / "elsewhere", records[2])
    got = load_local(tmp_path, "l2rw_fig2")
    assert [r.run for r in got] == ["l2rw_fig2/job1", "l2rw_fig2/sweep_a/job0"]
    assert got[0].path == tmp_path / "l2rw_fig2" / "job1"
    assert got[0].data.metrics["test_acc"] == 0.91


def test_wandb_source_gives_the_local_frame(tmp_path, records, fake_api):
    for i, record in enumerate(records):
        write_record(tmp_path, record, name=f"run{i}")
    fake_api.runs_to_return = [FakeRun(r, f"id{i}") for i, r in enumerate(records)]
    spec = fig2_spec(wandb_entity="team")
    local = records_frame(load_local(tmp_path, spec.name), spec)
    remote = records_frame(load_wandb(spec.name, "l2rw", "team"), spec)
    assert fake_api.calls == [("team/l2rw", {"tags": "table:l2rw_fig2"}, False)]
    pd.testing.assert_frame_equal(
        local.drop(columns=SOURCE_ONLY), remote.drop(columns=SOURCE_ONLY), check_dtype=False
    )
    assert list(remote["status"]) == ["completed", "completed", "completed", "diverged", "failed"]
    assert remote["run"].iloc[0] == "wandb:team/l2rw/id0"


def test_wandb_source_unwraps_raw_config_values(fake_api):
    run = FakeRun(make_record(), "x")
    run.config = {k: {"value": v, "desc": None} for k, v in run.config.items()}
    run.config["_wandb"] = {"value": {"cli_version": "0.31.0"}}
    fake_api.runs_to_return = [run]
    (record,) = load_wandb("l2rw_fig2", "l2rw", None)
    assert record.data.config["method"] == {"name": "l2rw"}
    assert "_wandb" not in record.data.config
    assert record.path is None


def test_wandb_errors_become_one_clear_report_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "Api", refuse)
    with pytest.raises(ReportError, match="needs network access and `wandb login`"):
        load_wandb("l2rw_fig2", "l2rw", None)


# A cell longer than W&B's 128-character group, and one with a `/` in a value (a path).
LONG = ("+method.options.note=" + "n" * 150,)
SLASH = ("method.confusion_from=/runs/baseline/seed0",)


def logged_runs(monkeypatch, tmp_path, records):
    """Each record as l2rw.train would log it to W&B (open_wandb's group and config), read
    back as a public-API run."""
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(id=f"id{len(calls)}", dir=str(tmp_path))

    monkeypatch.setattr(wandb, "init", init)
    runs = []
    for i, record in enumerate(records):
        cfg = OmegaConf.create(
            {
                "logger": {
                    "wandb": {
                        "mode": "offline",
                        "project": "l2rw",
                        "entity": None,
                        "group": None,
                        "tags": [],
                        "verbose": False,
                    }
                },
                "table_name": record["table"],
                "dataset": {"name": "mnist"},
                "noise": {"name": "none"},
                "method": {"name": record["method"]},
                "scale": record["scale"],
            }
        )
        open_wandb(cfg, record["config"], record["cell"], tmp_path)
        run = FakeRun(record, f"id{i}")
        run.group, run.config = calls[-1]["group"], calls[-1]["config"]
        runs.append(run)
    return runs


def test_long_cells_and_paths_come_back_whole_from_wandb(tmp_path, fake_api, monkeypatch):
    records = [
        make_record("l2rw", 0.995, 0, acc=0.93, extra_overrides=LONG),
        make_record("l2rw", 0.995, 1, acc=0.91, minute=2, extra_overrides=LONG),
        make_record("baseline", 0.9, 0, acc=0.60, minute=4, extra_overrides=SLASH),
        make_record("baseline", 0.9, 1, acc=0.62, minute=6),
    ]
    for i, record in enumerate(records):
        write_record(tmp_path / "local", record, name=f"run{i}")
    fake_api.runs_to_return = logged_runs(monkeypatch, tmp_path, records)
    groups = [run.group for run in fake_api.runs_to_return]
    assert max(map(len, groups)) <= GROUP_LIMIT
    assert len("/".join([TABLE, *records[0]["cell"]])) > GROUP_LIMIT  # the case under test
    assert groups[0] == groups[1] != groups[2]  # seeds of a cell share its group

    spec = fig2_spec()
    local_records = load_local(tmp_path / "local", spec.name)
    remote_records = load_wandb(spec.name, "l2rw", None)
    assert [r.data.cell for r in remote_records] == [r["cell"] for r in records]
    assert [r.data.config for r in remote_records] == [r["config"] for r in records]
    local, remote = records_frame(local_records, spec), records_frame(remote_records, spec)
    pd.testing.assert_frame_equal(
        local.drop(columns=SOURCE_ONLY), remote.drop(columns=SOURCE_ONLY), check_dtype=False
    )
    assert remote["variant"].iloc[0].startswith("+method.options.note=nnn")


def test_group_format_keeps_short_cells_in_the_group_alone():
    cell = ["imbalance.majority_fraction=0.995", "method=l2rw"]
    group, extra = format_group("l2rw_fig2", cell)
    assert (group, extra) == ("l2rw_fig2/imbalance.majority_fraction=0.995/method=l2rw", {})
    assert parse_group(group, "l2rw_fig2", {}) == cell
    adhoc, extra = format_group(None, cell)  # a run outside any table
    assert adhoc.startswith("adhoc/") and not extra and parse_group(adhoc, None, {}) == cell
    assert format_group("t", []) == ("t", {}) and parse_group("t", "t", {}) == []

    long_a, long_b = [*cell, "x=" + "a" * 130], [*cell, "x=" + "a" * 129 + "b"]
    (group_a, extra_a), (group_b, _) = format_group("t", long_a), format_group("t", long_b)
    assert len(group_a) == GROUP_LIMIT and group_a != group_b  # hashed: no two cells share one
    assert extra_a == {CELL_KEY: long_a} and parse_group(group_a, "t", extra_a) == long_a

    chosen, extra = format_group("t", cell, chosen="my-group")
    assert chosen == "my-group" and parse_group(chosen, "t", extra) == cell
    assert parse_group("someone-else/x", "t", {}) == []


def test_wandb_keeps_quiet_on_the_console_unless_verbose(tmp_path, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(id="id", dir=str(tmp_path))

    monkeypatch.setattr(wandb, "init", init)
    record = make_record("l2rw", 0.995, 0, acc=0.9)
    for verbose in (False, True):
        cfg = OmegaConf.create(
            {
                "logger": {"wandb": {"mode": "offline", "project": "l2rw", "entity": None}},
                "table_name": record["table"],
                "dataset": {"name": "mnist"},
                "noise": {"name": "none"},
                "method": {"name": "l2rw"},
                "scale": "cpu",
            }
        )
        cfg.logger.wandb.update({"group": None, "tags": [], "verbose": verbose})
        open_wandb(cfg, record["config"], record["cell"], tmp_path)
        assert calls[-1]["settings"].silent is (not verbose)
