"""python -m l2rw.report end to end: results files with provenance; clean exit 2 on user errors."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_report_fakes import make_record, write_record

import l2rw.report.__main__ as report_main
from l2rw.report.__main__ import main, parse_args
from l2rw.report.spec import ReportError, table_names

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "l2rw.report", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


@pytest.fixture
def output_root(tmp_path):
    root = tmp_path / "outputs"
    for method in ("l2rw", "baseline"):
        for seed in (0, 1):
            write_record(root, make_record(method, 0.995, seed, acc=0.9 - 0.1 * seed))
    write_record(root, make_record("l2rw", 0.9, 0, acc=0.97))
    error = "DataError: no MNIST files in /secret/machine/datasets/MNIST/raw"
    write_record(root, make_record("baseline", 0.9, 0, status="failed", error=error))
    write_record(root, make_record("l2rw", 0.9, 1, scale="full"))
    return root


def test_end_to_end_writes_md_csv_tex_png_with_provenance(output_root, tmp_path):
    results = tmp_path / "results"
    done = run_cli("+table=l2rw_fig2", f"output_root={output_root}", f"results_dir={results}")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in results.iterdir())
    stem = "l2rw_fig2_cpu"  # reduced scales carry the scale in the file name
    assert names == [f"{stem}.csv", f"{stem}.md", f"{stem}.png", f"{stem}.tex"]
    markdown = (results / f"{stem}.md").read_text()
    assert "| method \\ majority_fraction | 0.995 | 0.99 | 0.98 | 0.95 | 0.9 |" in markdown
    assert "| l2rw | 15.00 ± 63.53 (2) |" in markdown
    assert "3.00 (1)†" in markdown
    for needed in (
        "## The paper's numbers",
        "averaged from 10 runs",  # the paper's own words for Fig. 2, quoted
        "## Provenance",
        "**commits**: abc123 (5 runs)",
        "**hardware**: cpu:x86_64 x1 threads",
        "**total wall time**",
        "`python -m l2rw.train +table=l2rw_fig2 scale=cpu`",
        "`python -m l2rw.report +table=l2rw_fig2 scale=cpu`",
        "## Problems",
        "method=baseline, majority_fraction=0.9, seed 0: failed run",
        "Error: DataError: no MNIST files in DATA_DIR/MNIST/raw",
        "at scale 'full' are excluded",
        "method=hard_mining, majority_fraction=0.9: no completed run.",
    ):
        assert needed in markdown, needed
    frame = pd.read_csv(results / "l2rw_fig2_cpu.csv", comment="#")
    assert {"method", "majority_fraction", "mean", "ci95", "n", "scale", "flags"} <= set(frame)
    assert len(frame) == 30 and set(frame["scale"]) == {"cpu"}
    l2rw = frame[(frame["method"] == "l2rw") & (frame["majority_fraction"] == 0.995)].iloc[0]
    assert l2rw["mean"] == pytest.approx(15.0) and l2rw["n"] == 2
    tex = (results / "l2rw_fig2_cpu.tex").read_text()
    assert "\\begin{tabular}" in tex and "hard\\_mining" in tex and "$\\pm$" in tex
    for path in results.iterdir():
        text = path.read_bytes().decode("latin-1")
        assert str(tmp_path) not in text and "/secret/" not in text, path.name


def test_unknown_table_exits_2_with_one_paragraph_and_writes_nothing(tmp_path):
    done = run_cli("+table=nope", f"results_dir={tmp_path / 'results'}")
    assert done.returncode == 2
    assert "There is no table named 'nope'" in done.stderr and "l2rw_fig2" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_no_records_exits_2_and_writes_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    args = ["+table=l2rw_fig2", f"output_root={tmp_path}", f"results_dir={results}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No records of table 'l2rw_fig2' at scale 'cpu'" in err
    assert "python -m l2rw.train +table=l2rw_fig2 scale=cpu" in err
    assert not results.exists()


def test_records_at_another_scale_only_exit_2_and_say_so(tmp_path, capsys):
    write_record(tmp_path, make_record(seed=0))
    write_record(tmp_path, make_record(seed=1))
    args = ["+table=l2rw_fig2", "scale=full", f"output_root={tmp_path}"]
    assert main([*args, f"results_dir={tmp_path / 'r'}"]) == 2
    assert "There are records at other scales (2 at scale cpu)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_all_reports_every_table_config(output_root, tmp_path, capsys, monkeypatch):
    # Every table config is one name; building each table is the other tests' job, so `all`
    # walks two of them here: one with records, one without.
    assert set(table_names()) == {p.stem for p in (REPO / "conf" / "table").glob("*.yaml")}
    monkeypatch.setattr(report_main, "table_names", lambda: ["l2rw_fig2", "rbc_fig1"])
    results = tmp_path / "results"
    assert main(["--all", f"output_root={output_root}", f"results_dir={results}"]) == 0
    assert sorted(p.name for p in results.glob("*.md")) == ["l2rw_fig2_cpu.md"]
    assert "rbc_fig1: No records" in capsys.readouterr().err
    assert main(["all", f"output_root={tmp_path / 'empty'}", f"results_dir={results}"]) == 2
    assert "l2rw_fig2: No records" in capsys.readouterr().err


def test_bad_source_and_arguments_are_user_errors(tmp_path, capsys):
    assert main(["+table=l2rw_fig2", "source=ftp", f"results_dir={tmp_path}"]) == 2
    assert "source=ftp is not one of local, wandb" in capsys.readouterr().err
    with pytest.raises(ReportError, match="Name one table"):
        parse_args(["scale=cpu"])
    with pytest.raises(ReportError, match="Unexpected argument 'oops'"):
        parse_args(["+table=l2rw_fig2", "oops"])
    request = parse_args(["+table=x", "scale=full", "output_root=o", "logger.wandb.project=p"])
    assert request.table == "x" and request.options == {"output_root": "o"}
    assert request.overrides == ["scale=full", "logger.wandb.project=p"]


def test_help_prints_usage(capsys):
    assert main(["--help"]) == 0
    assert "python -m l2rw.report +table=NAME" in capsys.readouterr().out


def test_a_failure_while_writing_leaves_no_partial_files(tmp_path, monkeypatch):
    from l2rw.report import files

    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        files.write_all(tmp_path, {"a.md": b"x", "a.csv": b"y"})
    assert calls and list(tmp_path.iterdir()) == []
