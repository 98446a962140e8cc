"""Both record sources (local result.json files, W&B runs) give the same frame for the same runs."""

import pandas as pd
import pytest
import wandb
from test_report_fakes import FakeApi, FakeRun, fig2_spec, make_record, write_record

from l2rw.report.frame import records_frame
from l2rw.report.records import load_local
from l2rw.report.spec import ReportError
from l2rw.report.wandb_source import load_wandb

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
    assert got[0].data["metrics"]["test_acc"] == 0.91


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
    assert record.data["config"]["method"] == {"name": "l2rw"}
    assert "_wandb" not in record.data["config"]
    assert record.path is None


def test_wandb_errors_become_one_clear_report_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "Api", refuse)
    with pytest.raises(ReportError, match="needs network access and `wandb login`"):
        load_wandb("l2rw_fig2", "l2rw", None)
