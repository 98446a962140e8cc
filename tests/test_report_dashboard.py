"""W&B dashboards of paper tables, checked on the report specification: no network, no login."""

import json
import sys
from pathlib import Path

import pytest
import wandb
from test_report_fakes import make_record, write_record

from l2rw.report import dashboard
from l2rw.report.__main__ import main, parse_args
from l2rw.report.build import Options, build_table
from l2rw.report.render import cell_text
from l2rw.report.spec import ReportError

wr = pytest.importorskip("wandb_workspaces.reports.v2", reason="pip install 'l2rw[dashboards]'")

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "results" / "records"


@pytest.fixture(autouse=True)
def no_wandb_network(monkeypatch):
    """Any call to the W&B API (a login check, a project lookup, a save) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the dashboard called the W&B API")

    monkeypatch.setattr(wandb, "Api", refuse)


def committed(table: str, tmp_path_factory) -> object:
    """The report of `table` at scale full from the committed records (results/records)."""
    results = tmp_path_factory.mktemp(f"results-{table}")
    options = Options(output_root=str(RECORDS), results_dir=str(results))
    return build_table(table, ["scale=full"], options).report


@pytest.fixture(scope="module")
def fig2(tmp_path_factory):
    return committed("l2rw_fig2", tmp_path_factory)


@pytest.fixture(scope="module")
def rbc_table1(tmp_path_factory):
    return committed("rbc_table1_mnist", tmp_path_factory)


def blocks_of(board, kind):
    return [b for b in board.blocks if isinstance(b, kind)]


def test_fig2_dashboard_has_every_panel(fig2):
    board = dashboard.build_dashboard(fig2)
    spec, cells = fig2.spec, fig2.agg.cells
    assert board.project == "l2rw" and board.entity == ""
    assert board.title.startswith("L2RW Figure 2") and board.title.endswith("(scale full)")
    headings = [b.text for b in blocks_of(board, wr.H2)]
    assert headings == [
        "Cells: mean and spread over seeds",
        "As the paper's Figure 2 shows it",
        "Training curves of each cell",
        "The paper's numbers beside ours",
        "Reproduce",
    ]
    grids = blocks_of(board, wr.PanelGrid)
    mine = "Metric(\"Tags\") in ['table:l2rw_fig2'] and Metric(\"Tags\") in ['scale:full']"
    for grid in grids:
        (runset,) = grid.runsets
        assert runset.project == "l2rw" and runset.filters.startswith(mine)

    # The runs table grouped by cell, with mean and spread of both accuracies over seeds.
    cells_grid, *charts, curves = grids
    (runset,) = cells_grid.runsets
    assert runset.groupby == ["group"] and not cells_grid.hide_run_sets
    assert {"summary:final/test_acc", "summary:final/test_acc_es"} <= set(runset.pinned_columns)
    (spread,) = cells_grid.panels
    assert isinstance(spread, wr.BarPlot)
    assert spread.metrics[:2] == ["final/test_acc", "final/test_acc_es"]
    assert (spread.groupby, spread.groupby_aggfunc, spread.groupby_rangefunc) == (
        "Group",
        "mean",
        "stddev",
    )
    assert spread.max_bars_to_show >= len(cells) == 30

    # Shaped like Figure 2: per method, the accuracy at each majority fraction.
    assert [c.runsets[0].name for c in charts] == spec.expected["method.name"]
    for chart, method in zip(charts, spec.expected["method.name"], strict=True):
        assert chart.runsets[0].filters.endswith(f"Config(\"method.name\") == '{method}'")
        (bars,) = chart.panels
        assert bars.orientation == "v" and bars.metrics == ["final/test_acc"]
        assert bars.groupby == wr.Config("imbalance.majority_fraction")
        assert (bars.groupby_aggfunc, bars.groupby_rangefunc) == ("mean", "stddev")

    # The training curves of each cell.
    assert curves.runsets[0].groupby == ["group"]
    assert [(p.x, p.y, p.groupby) for p in curves.panels] == [
        ("Step", ["test/acc"], "Group"),
        ("Step", ["train/loss"], "Group"),
    ]
    assert all(p.max_runs_to_show >= 30 for p in curves.panels)

    # Our numbers (as the results' Markdown), the paper's beside them, the commands.
    texts = [b.text for b in blocks_of(board, wr.MarkdownBlock)]
    first = cells.iloc[0]
    ours = cell_text(first["mean"], first["ci95"], first["n"], bool(first["flags"]))
    assert f"| {first['row']} | {ours} |" in texts[1]
    assert "| method \\ majority_fraction | 0.995 | 0.99 | 0.98 | 0.95 | 0.9 |" in texts[1]
    assert "Ren, Zeng, Yang, Urtasun" in texts[2] and "averaged from 10 runs" in texts[2]
    (code,) = blocks_of(board, wr.CodeBlock)
    assert "python -m l2rw.train +table=l2rw_fig2 scale=full" in code.code
    assert "python -m l2rw.report +table=l2rw_fig2 scale=full dashboard=wandb" in code.code


def test_rbc_table_dashboard_has_a_bar_per_method_and_the_papers_numbers(rbc_table1):
    board = dashboard.build_dashboard(rbc_table1, entity="team")
    _, chart, _ = blocks_of(board, wr.PanelGrid)
    (runset,) = chart.runsets
    assert runset.entity == "team" and runset.name == "0.6"
    assert runset.filters.endswith('Config("noise.rate") == 0.6')
    (bars,) = chart.panels
    assert bars.orientation == "h" and bars.groupby == wr.Config("selector.name")
    paper = blocks_of(board, wr.MarkdownBlock)[-1].text
    assert "| row | column | ours | paper (its label) |" in paper
    assert "94.26 ± 0.24 (GBC / MNIST / adversarial)" in paper  # as printed in the paper


def test_the_specification_is_built_offline_and_holds_no_machine_path(fig2):
    spec = dashboard.specification(dashboard.build_dashboard(fig2), "WANDB_MODE=disabled")
    text = json.dumps(spec)
    assert spec["project"] == "l2rw" and spec["entity"] is None
    kinds = [block["type"] for block in spec["view"]["spec"]["blocks"]]
    assert kinds.count("panel-grid") == 8 and "markdown-block" in kinds and "code-block" in kinds
    assert str(REPO) not in text and str(Path.home()) not in text


def test_offline_publish_writes_the_specification_and_says_so(fig2, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    message = dashboard.publish(fig2, tmp_path, "l2rw_fig2")
    path = tmp_path / "dashboards" / "l2rw_fig2.json"
    assert message == (
        "l2rw_fig2: the W&B dashboard was not saved (WANDB_MODE=disabled); its specification: "
        f"{path}"
    )
    written = json.loads(path.read_text())
    assert written["title"].startswith("L2RW Figure 2")
    assert written["not_saved_because"] == "WANDB_MODE=disabled"


def test_without_a_login_it_writes_the_specification(fig2, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(dashboard, "_logged_in", lambda: False)
    message = dashboard.publish(fig2, tmp_path, "l2rw_fig2")
    assert "not saved (no W&B login found: run `wandb login`)" in message
    assert (tmp_path / "dashboards" / "l2rw_fig2.json").exists()


@pytest.fixture
def online(monkeypatch):
    """W&B looks reachable and logged in; `save` is recorded instead of uploading."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(dashboard, "_logged_in", lambda: True)
    monkeypatch.setattr(dashboard, "_online_entity", lambda: "team")
    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, **kw: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "https://wandb.test/r/1"))
    return saved


def test_online_publish_saves_the_report_in_the_users_entity(fig2, tmp_path, online):
    message = dashboard.publish(fig2, tmp_path, "l2rw_fig2")
    assert message == "l2rw_fig2: saved the W&B dashboard https://wandb.test/r/1"
    (board,) = online
    assert board.entity == "team" and board.project == "l2rw"
    assert {g.runsets[0].entity for g in blocks_of(board, wr.PanelGrid)} == {"team"}
    assert not (tmp_path / "dashboards").exists()


def test_a_failed_save_falls_back_to_the_file(fig2, tmp_path, online, monkeypatch):
    def fail(self, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(wr.Report, "save", fail)
    message = dashboard.publish(fig2, tmp_path, "l2rw_fig2")
    assert "not saved (saving it failed with ConnectionError: no route to host)" in message
    assert (tmp_path / "dashboards" / "l2rw_fig2.json").exists()


def test_cli_option_end_to_end(tmp_path, capsys):
    root, results = tmp_path / "outputs", tmp_path / "results"
    for method in ("l2rw", "baseline"):
        for seed in (0, 1):
            write_record(root, make_record(method, 0.995, seed, acc=0.9 - 0.1 * seed))
    args = ["+table=l2rw_fig2", f"output_root={root}", f"results_dir={results}"]
    assert main([*args, "dashboard=wandb"]) == 0
    out = capsys.readouterr().out.splitlines()
    path = results / "dashboards" / "l2rw_fig2_cpu.json"
    assert out[-1] == (
        f"l2rw_fig2: the W&B dashboard was not saved (WANDB_MODE=disabled); its specification: "
        f"{path}"
    )
    assert json.loads(path.read_text())["view"]["spec"]["blocks"]


def test_cli_option_errors(tmp_path, capsys, monkeypatch):
    request = parse_args(["+table=x", "dashboard=wandb", "output_root=o"])
    assert request.dashboard == "wandb" and request.options == {"output_root": "o"}
    assert parse_args(["+table=x"]).dashboard == "none"
    results = tmp_path / "results"
    assert main(["+table=l2rw_fig2", "dashboard=grafana", f"results_dir={results}"]) == 2
    assert "dashboard=grafana is not one of none, wandb" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    with pytest.raises(ReportError, match=r"pip install 'l2rw\[dashboards\]'"):
        dashboard.require()
    assert main(["+table=l2rw_fig2", "dashboard=wandb", f"results_dir={results}"]) == 2
    assert "wandb-workspaces" in capsys.readouterr().err and not results.exists()


def test_online_means_a_local_login_and_wandb_mode_not_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert dashboard.offline_reason() is None  # decided locally: wandb.Api is never called
    for mode in ("offline", "disabled"):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert dashboard.offline_reason() == f"WANDB_MODE={mode}"
