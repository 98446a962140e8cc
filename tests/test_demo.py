"""`make demo`'s console: one progress bar fed by the jobs' metrics files, the sweep's length
read from the table config, and a one-paragraph refusal without DATA_DIR."""

import json

import l2rw.demo as demo


def test_progress_sums_each_jobs_last_logged_step(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "OUTPUT_ROOT", tmp_path)
    for job, steps in (("method=baseline,seed=0", [250, 500]), ("method=l2rw,seed=0", [250])):
        folder = tmp_path / "l2rw_fig2" / job
        folder.mkdir(parents=True)
        lines = [json.dumps({"step": s, "test/acc": 0.5}) for s in steps]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    torn = tmp_path / "l2rw_fig2" / "method=l2rw,seed=1"
    torn.mkdir()
    (torn / "metrics.jsonl").write_text('{"step": 2')  # being written: not counted yet
    assert demo._steps_logged() == 750


def test_steps_per_job_is_the_tables_cpu_length():
    assert demo._steps_per_job() == 1000


def test_without_data_dir_the_demo_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("DATA_DIR", raising=False)
    assert demo.main([]) == 2
    assert "Set DATA_DIR" in capsys.readouterr().err
