"""Faults: checkpoints from another config or unreadable, concurrent launches, stale locks and
failed writes each end with one message, lose nothing and never leave a record that should not
exist."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launches import capture_info, phase_launches

import l2rw.methods.checkpoint as checkpoint_module
import l2rw.methods.phase_store as phase_store
import l2rw.tracking.record as record_module
from l2rw.errors import ConfigError
from l2rw.report.records import load_local
from l2rw.tracking.locks import exclusive
from l2rw.tracking.record import LOCK_NAME, REPLACED_PREFIX
from l2rw.train import run

REPO = Path(__file__).resolve().parent.parent
OVERRIDES = ("noise=uniform_flip", "method=l2rw", "dataset.clean_size=20", "device=cpu")


class Interrupted(Exception):
    pass


def interrupt_after_first_checkpoint(tiny_cfg, run_dir, monkeypatch, *overrides):
    """Run until the first checkpoint is written, then stop as a killed job would."""
    real_save = phase_store.save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise Interrupted

    monkeypatch.setattr(phase_store, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run(tiny_cfg(*OVERRIDES, *overrides), run_dir)
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)
    assert (run_dir / "checkpoint-train.pt").exists()


def test_an_engine_in_a_checkpoints_setting_is_not_a_difference():
    """Checkpoints written before `method.engine` became bookkeeping carry it in their setting;
    it does not count as a difference, a real one still does."""
    now = {"seed": 0, "method.meta_lr": 100.0}
    checkpoint_module._refuse_other_setting(Path("c.pt"), {**now, "method.engine": "fast"}, now)
    with pytest.raises(ConfigError, match="method.meta_lr: 10.0 in the checkpoint, 100.0 now"):
        checkpoint_module._refuse_other_setting(Path("c.pt"), {**now, "method.meta_lr": 10.0}, now)


def test_checkpoint_from_another_config_is_refused_then_force_starts_over(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    interrupt_after_first_checkpoint(tiny_cfg, tmp_path, monkeypatch, "optimizer.lr=0.05")
    before = (tmp_path / "checkpoint-train.pt").read_bytes()

    refused = run(tiny_cfg(*OVERRIDES, "optimizer.lr=0.02"), tmp_path)
    assert refused.status == "failed"
    assert "different configuration" in refused.error
    assert "optimizer.lr: 0.05 in the checkpoint, 0.02 now" in refused.error
    assert "force=true" in refused.error
    assert (tmp_path / "checkpoint-train.pt").read_bytes() == before
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"

    forced = run(tiny_cfg(*OVERRIDES, "optimizer.lr=0.02", "force=true"), tmp_path)
    assert forced.status == "completed"
    (aside,) = tmp_path.glob(f"{REPLACED_PREFIX}*")
    assert (aside / "checkpoint-train.pt").read_bytes() == before
    assert json.loads((aside / "result.json").read_text())["status"] == "failed"
    fresh = run(tiny_cfg(*OVERRIDES, "optimizer.lr=0.02"), tmp_path / "fresh")
    assert forced.metrics == fresh.metrics
    # Reports read the folder's current record only, not the one the re-run superseded.
    runs = sorted(r.run for r in load_local(tmp_path.parent, tmp_path.name))
    assert runs == [tmp_path.name, f"{tmp_path.name}/fresh"]


def test_unreadable_checkpoint_is_moved_aside_and_the_run_starts_over(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    straight = run(tiny_cfg(*OVERRIDES), tmp_path / "straight")
    run_dir = tmp_path / "run"
    interrupt_after_first_checkpoint(tiny_cfg, run_dir, monkeypatch)
    path = run_dir / "checkpoint-train.pt"
    garbled = path.read_bytes()[:100]
    path.write_bytes(garbled)

    capture_info(caplog)
    resumed = run(tiny_cfg(*OVERRIDES), run_dir)
    assert resumed.status == "completed"
    assert "could not be read" in caplog.text
    assert phase_launches(caplog.text) == [("train", 0, 12, 12)]
    assert resumed.metrics == straight.metrics
    (aside,) = run_dir.glob("checkpoint-train.pt.unreadable-*")
    assert aside.read_bytes() == garbled


def test_checkpoint_loads_weights_only(tiny_cfg, tmp_path, monkeypatch):
    interrupt_after_first_checkpoint(tiny_cfg, tmp_path, monkeypatch)
    state = torch.load(tmp_path / "checkpoint-train.pt", weights_only=True)
    assert state["step"] == 4
    assert state["identity"]["setting"]["optimizer.lr"] == 0.05
    assert "git_commit" in state["identity"]


def test_a_second_launch_of_a_running_cell_is_skipped_and_writes_nothing(tiny_cfg, tmp_path):
    with exclusive(tmp_path / LOCK_NAME, wait=False) as holder:
        assert holder is None
        second = run(tiny_cfg(*OVERRIDES), tmp_path)
    assert second.status == "skipped"
    assert not (tmp_path / "result.json").exists()
    assert not list(tmp_path.glob("checkpoint*"))
    assert run(tiny_cfg(*OVERRIDES), tmp_path).status == "completed"


def test_second_launch_from_the_command_line_says_who_holds_the_cell(tmp_path, data_dir):
    from test_train import _cli

    with exclusive(tmp_path / LOCK_NAME, wait=False):
        proc = _cli(["train.length=4"], tmp_path, data_dir)
    output = proc.stderr + proc.stdout
    assert "is running this cell now" in output and f"pid {os.getpid()} " in output
    assert "Traceback" not in output
    assert not (tmp_path / "result.json").exists()


def test_a_lock_left_by_a_killed_process_is_stale(tiny_cfg, tmp_path):
    lock = tmp_path / LOCK_NAME
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from l2rw.tracking.locks import exclusive\n"
            f"with exclusive({str(lock)!r}, wait=False):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with exclusive(lock, wait=False) as other:
        assert other is not None and other.startswith(f"pid {holder.pid} ")
    holder.kill()
    holder.wait()
    assert lock.exists()
    assert run(tiny_cfg(*OVERRIDES), tmp_path).status == "completed"


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_fails_the_run(
    tiny_cfg, tmp_path, monkeypatch
):
    interrupt_after_first_checkpoint(tiny_cfg, tmp_path, monkeypatch)
    before = (tmp_path / "checkpoint-train.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    record = run(tiny_cfg(*OVERRIDES), tmp_path)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert record.status == "failed"
    assert "checkpoint-train.pt: No space left on device" in record.error
    assert "re-run the same command" in record.error
    assert (tmp_path / "checkpoint-train.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
    assert run(tiny_cfg(*OVERRIDES), tmp_path).status == "completed"


def test_a_failed_record_write_keeps_the_previous_record(tiny_cfg, tmp_path, monkeypatch):
    interrupt_after_first_checkpoint(tiny_cfg, tmp_path, monkeypatch)
    before = (tmp_path / "result.json").read_text()
    real_replace = record_module.os.replace

    def no_permission(src, dst):
        if str(dst).endswith("result.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(record_module.os, "replace", no_permission)
    record = run(tiny_cfg(*OVERRIDES), tmp_path)
    monkeypatch.setattr(record_module.os, "replace", real_replace)
    assert record.status == "failed"
    assert "result.json: Permission denied" in record.error
    assert (tmp_path / "result.json").read_text() == before
    assert not list(tmp_path.glob(".result.json.*"))


@pytest.mark.slow
def test_a_sweep_killed_at_random_steps_and_relaunched_loses_nothing(data_dir, tmp_path):
    """scripts/fault_injection.py, small: 3 cells on 2 workers, the whole sweep SIGKILLed twice
    during training and re-launched until done, against the same sweep run without faults."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "fault_injection.py"),
            f"--data-dir={data_dir}",
            f"--root={tmp_path}",
            "--cells=3",
            "--kills=2",
            "--workers=2",
            "--max-delay=1.5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["kills"] >= 1
    # The relaunches went on from checkpoints: at least one job resumed, and every phase that
    # resumed trained from its checkpoint's step on (the step it restarted from is logged).
    assert summary["checkpoint_resumes"] >= 1
    assert summary["resumes_started_over"] == 0
    assert summary["reference_completed"] == 3
    assert summary["records_lost"] == 0
    assert summary["records_rewritten_after_completion"] == 0
    assert summary["metrics_differ"] == 0


def test_a_log_line_torn_by_a_kill_is_dropped_on_resume(tiny_cfg, tmp_path, monkeypatch, caplog):
    straight = run(tiny_cfg(*OVERRIDES), tmp_path / "straight")
    run_dir = tmp_path / "run"
    interrupt_after_first_checkpoint(tiny_cfg, run_dir, monkeypatch)
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 5, "train/lo')
    capture_info(caplog)
    resumed = run(tiny_cfg(*OVERRIDES), run_dir)
    assert phase_launches(caplog.text) == [("train", 4, 8, 12)]
    assert resumed.metrics == straight.metrics
    log = (run_dir / "metrics.jsonl").read_text()
    assert log == (tmp_path / "straight" / "metrics.jsonl").read_text()


def test_sigterm_writes_a_failed_record_then_the_rerun_resumes(tmp_path, data_dir):
    """A job pre-empted with SIGTERM after its first checkpoint (a real process): its record is
    `failed` and says it was interrupted; the same command again resumes from the checkpoint and
    ends where an uninterrupted run does."""
    from conftest import TINY

    overrides = ["noise=uniform_flip", "device=cpu", "train.length=200", "train.eval_every=50"]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "l2rw.train", *TINY, f"paths.data_dir={data_dir}", *overrides]
    cmd += ["threads=1", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = run_dir / "checkpoint-train.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=120)[0].decode()
    assert job.returncode != 0, output[-2000:]
    record = record_module.read_record(run_dir)
    assert record.status == "failed"
    assert record.error.startswith("interrupted; re-run the same command to resume")
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 4 <= step < 200

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert f"Resumed phase train from its checkpoint at step {step} of 200." in log
    assert phase_launches(log) == [("train", step, 200 - step, 200)]
    resumed = record_module.read_record(run_dir)
    assert resumed.status == "completed"
    assert not checkpoint.exists()
    # The uninterrupted run is the same command (threads=1 too: another thread count may sum
    # the losses in another order and differ in the last bits).
    straight_cmd = [*cmd[:-1], f"hydra.run.dir={tmp_path / 'straight'}"]
    subprocess.run(straight_cmd, cwd=REPO, env=env, capture_output=True, timeout=300, check=True)
    straight = record_module.read_record(tmp_path / "straight")
    assert resumed.metrics == straight.metrics


class FakeWandbRun:
    """Stands in for a W&B run: records how it was finished."""

    id = "fake"
    summary: dict = {}

    def __init__(self) -> None:
        self.exit_codes: list[int] = []

    def log(self, *args, **kwargs) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        self.exit_codes.append(exit_code)


def test_a_user_error_mid_run_with_wandb_on_is_one_paragraph_and_finishes_the_wandb_run(
    tiny_cfg, tmp_path, monkeypatch, capfd
):
    """W&B's own `with` prints the traceback of whatever ends the run; the runner's does not."""
    import l2rw.methods
    import l2rw.train

    wandb_run = FakeWandbRun()
    monkeypatch.setattr(l2rw.train, "open_wandb", lambda *args: wandb_run)

    def refuse(ctx):
        raise ConfigError("engine='per_example' needs a model without BatchNorm.")

    monkeypatch.setattr(l2rw.methods, "run_pipeline", refuse)
    record = run(tiny_cfg(*OVERRIDES), tmp_path)
    assert record.status == "failed"
    assert "per_example" in record.error
    assert wandb_run.exit_codes == [1]
    assert "Traceback" not in capfd.readouterr().err
