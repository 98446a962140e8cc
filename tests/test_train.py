"""End to end: records, every method, resume, skip, and clean failures on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launches import capture_info, phase_launches

import l2rw.methods.phase_store as phase_store
import l2rw.tracking.record as record_module
from l2rw.config.validate import validate
from l2rw.errors import ConfigError
from l2rw.train import run

FIG2_METHODS = ["baseline", "proportion", "resample", "hard_mining", "random", "l2rw"]
REPO = Path(__file__).resolve().parent.parent


def test_short_baseline_run_writes_complete_record(tiny_cfg, tmp_path):
    cfg = tiny_cfg("noise=uniform_flip", "noise.rate=0.4")
    record = run(cfg, tmp_path, ["noise=uniform_flip", "seed=0"])
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["status"] == record.status == "completed"
    for key in ("config", "overrides", "git_commit", "device", "wall_time_s", "wandb_run_id"):
        assert key in on_disk
    assert 0.0 <= on_disk["metrics"]["test_acc"] <= 1.0
    assert on_disk["metrics"]["test_acc_es"] is not None
    assert on_disk["data"]["sizes"]["train"] == 380
    assert on_disk["data"]["noise"] == {"name": "uniform_flip", "rate": 0.4, "realized_rate": 0.4}
    assert sum(on_disk["data"]["class_counts"]) == 380
    assert on_disk["config"]["noise"]["rate"] == 0.4
    assert on_disk["cell"] == ["noise=uniform_flip"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [4, 8, 12]
    assert not list(tmp_path.glob("checkpoint*.pt"))


@pytest.mark.parametrize("method", FIG2_METHODS)
def test_every_figure2_method_runs(tiny_cfg, tmp_path, method):
    cfg = tiny_cfg(
        "+table=l2rw_fig2",
        "hydra.mode=RUN",
        f"method={method}",
        "imbalance.total=40",
        "dataset.hyper_val_size=0",
        "imbalance.majority_fraction=0.8",
        "dataset.clean_size=10",
        "train.max_steps=6",
        "train.batch_size=16",
        "train.meta_batch_size=10",
        "train.eval_every=3",
        "optimizer.lr=0.05",
    )
    record = run(cfg, tmp_path)
    assert record.status == "completed", record.error
    assert record.metrics["steps"] == 6
    assert record.data["clean_class_counts"] == [5, 5]
    assert sum(record.weights_hist["clean"]) > 0


def test_toy2d_with_mlp_runs(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "dataset=toy2d", "model=mlp", "noise=uniform_flip", "noise.rate=0.6", "method=l2rw"
    )
    assert run(cfg, tmp_path).status == "completed"


def test_l2rw_looks_ahead_through_the_runs_optimizer_on_request(tiny_cfg, tmp_path):
    """method.lookahead=optimizer steps the look-ahead with the run's momentum, so from the
    second step on (a momentum buffer exists) the weights, hence the run, differ from the
    paper's plain-SGD look-ahead."""
    common = (
        "noise=uniform_flip",
        "method=l2rw",
        "dataset.clean_size=20",
        "optimizer.momentum=0.9",
    )
    records = {
        how: run(tiny_cfg(*common, f"method.lookahead={how}"), tmp_path / how)
        for how in ("sgd", "optimizer")
    }
    assert all(r.status == "completed" for r in records.values())
    assert records["sgd"].metrics != records["optimizer"].metrics
    with pytest.raises(ConfigError, match="method.lookahead='adam'"):
        validate(tiny_cfg(*common, "method.lookahead=adam"))


def test_l2rw_with_the_update_forward_apart_trains_the_same(tiny_cfg, tmp_path):
    """method.share_forward=false (memory close to a plain step's) runs the real update's own
    forward: the same weights and updates, so the same run up to float rounding."""
    common = ("noise=uniform_flip", "method=l2rw", "dataset.clean_size=20")
    shared = run(tiny_cfg(*common), tmp_path / "shared")
    apart = run(tiny_cfg(*common, "method.share_forward=false"), tmp_path / "apart")
    assert shared.status == apart.status == "completed"
    assert apart.config["method"]["share_forward"] is False
    for name in ("test_acc", "final_val_acc", "train_loss"):
        assert apart.metrics[name] == pytest.approx(shared.metrics[name], rel=1e-5), name


def test_a_vision_transformer_trains_with_l2rw_looking_ahead_through_the_optimizer(
    tiny_cfg, tmp_path
):
    small = ("model.options.dim=8", "model.options.depth=1", "model.options.heads=2")
    cfg = tiny_cfg(
        "model=vit", *small, "method=l2rw", "method.lookahead=optimizer", "dataset.clean_size=20"
    )
    record = run(cfg, tmp_path)
    assert record.status == "completed", record.error


def test_options_that_do_not_fit_together_fail_in_one_paragraph(tiny_cfg, tmp_path):
    """A ViT takes its image size from an image dataset: on the 2-D toy data the record says
    which setting cannot be filled in, rather than a traceback."""
    record = run(tiny_cfg("model=vit", "dataset=toy2d"), tmp_path)
    assert record.status == "failed"
    assert "model.options.image_size" in record.error and "do not fit" in record.error


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(tiny_cfg, tmp_path, monkeypatch, caplog):
    # Bit-identical resume is a CPU guarantee: CUDA's kernels are not deterministic.
    overrides = (
        "noise=uniform_flip",
        "method=l2rw",
        "dataset.clean_size=20",
        "train.length=12",
        "device=cpu",
    )
    capture_info(caplog)
    straight = run(tiny_cfg(*overrides), tmp_path / "straight")
    assert phase_launches(caplog.text) == [("train", 0, 12, 12)]

    saves = []
    real_save = phase_store.save_checkpoint

    def save_then_die(folder, name, state, *identity):
        real_save(folder, name, state, *identity)
        saves.append(state["step"])
        if len(saves) == 2:
            raise Interrupted

    monkeypatch.setattr(phase_store, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        run(tiny_cfg(*overrides), tmp_path / "resumed")
    partial = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert partial["status"] == "failed"
    assert (tmp_path / "resumed" / "checkpoint-train.pt").exists()
    # The interrupted launch began long ago (both launches here fall in the same second).
    partial["started_at"] = "2000-01-01T00:00:00+00:00"
    (tmp_path / "resumed" / "result.json").write_text(json.dumps(partial))
    monkeypatch.setattr(phase_store, "save_checkpoint", real_save)

    caplog.clear()
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    assert saves == [4, 8]
    assert resumed.status == "completed"
    # It resumed from the checkpoint of step 8: this launch made the last 4 steps only.
    assert "Resumed phase train from its checkpoint at step 8 of 12." in caplog.text
    assert phase_launches(caplog.text) == [("train", 8, 4, 12)]
    assert not list((tmp_path / "resumed").glob("checkpoint-train.pt*"))
    for key in ("test_acc", "test_loss", "train_loss", "test_acc_es", "best_step"):
        assert resumed.metrics[key] == straight.metrics[key], key
    # The record's time and start are the run's over both launches, not the last one's.
    assert resumed.started_at == partial["started_at"]
    assert resumed.wall_time_s > partial["wall_time_s"] > 0
    assert resumed.weights_hist == straight.weights_hist
    straight_log = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text() == straight_log


def test_completed_job_is_skipped_unless_forced(tiny_cfg, tmp_path, caplog):
    capture_info(caplog)
    first = run(tiny_cfg(), tmp_path)
    first_record = (tmp_path / "result.json").read_bytes()
    first_log = (tmp_path / "metrics.jsonl").read_text()
    assert phase_launches(caplog.text) == [("train", 0, 12, 12)]

    caplog.clear()
    again = run(tiny_cfg(), tmp_path)
    assert "already holds a completed record" in caplog.text
    assert phase_launches(caplog.text) == []  # nothing trained
    assert again.to_dict() == json.loads(first_record)
    assert (tmp_path / "result.json").read_bytes() == first_record

    caplog.clear()
    # The completed record says it took long and began long ago, to see that neither carries.
    slow = {
        **json.loads(first_record),
        "wall_time_s": 1e6,
        "started_at": "2000-01-01T00:00:00+00:00",
    }
    slow_record = json.dumps(slow).encode()
    (tmp_path / "result.json").write_bytes(slow_record)
    forced = run(tiny_cfg("force=true"), tmp_path)
    # Trained again from step 0, the earlier record and metrics moved aside, not deleted.
    assert phase_launches(caplog.text) == [("train", 0, 12, 12)]
    assert forced.status == "completed"
    (aside,) = tmp_path.glob(f"{record_module.REPLACED_PREFIX}*")
    assert (aside / "result.json").read_bytes() == slow_record
    # Started over: neither the time nor the start of the run it replaced carry over.
    assert forced.wall_time_s < 1e6
    assert forced.started_at != slow["started_at"]
    assert (aside / "metrics.jsonl").read_text() == first_log
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(
        json.dumps(forced.to_dict())
    )
    # The same computation again: the same metrics and evaluations.
    assert forced.metrics == first.metrics
    assert (tmp_path / "metrics.jsonl").read_text() == first_log


def _cli(args, tmp_path, data_dir):
    env = {**os.environ, "WANDB_MODE": "disabled", "DATA_DIR": str(data_dir)}
    cmd = [
        sys.executable,
        "-m",
        "l2rw.train",
        *args,
        "train.progress=false",
        "dataset.options.download=false",
        f"hydra.run.dir={tmp_path}",
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train.lrr=1"], "lrr"),
        (["noise=uniform_flip", "noise.rate=1.5"], "noise.rate=1.5"),
        (["dataset=fashion_mnist", "paths.data_dir=/nonexistent/place"], "train-images-idx3-ubyte"),
        (["dataset=nope"], "nope"),
    ],
    ids=["unknown_key", "noise_rate", "missing_files", "unknown_dataset"],
)
def test_bad_input_fails_cleanly(args, needle, tmp_path, data_dir):
    out = _cli(args, tmp_path, data_dir)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert needle in text
    assert "Traceback" not in text
    record = tmp_path / "result.json"
    assert not record.exists() or json.loads(record.read_text())["status"] == "failed"


def test_cli_run_prints_accuracy_and_record(tmp_path, data_dir):
    out = _cli(
        ["train.length=4", "train.eval_every=2", "dataset.hyper_val_size=20"], tmp_path, data_dir
    )
    assert out.returncode == 0, out.stderr
    assert "test accuracy" in out.stdout + out.stderr
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"


def test_multirun_writes_one_record_per_job_then_skips_them_under_other_bookkeeping(
    tmp_path, data_dir
):
    args = [
        "-m",
        "seed=0,1",
        "train.length=2",
        "train.eval_every=2",
        "dataset.hyper_val_size=0",
        "hydra.sweep.dir=" + str(tmp_path / "sweep"),
    ]
    first = _cli(args, tmp_path / "unused", data_dir)
    assert first.returncode == 0, first.stderr
    records = sorted((tmp_path / "sweep").glob("*/result.json"))
    assert [json.loads(p.read_text())["seed"] for p in records] == [0, 1]
    folders = [p.parent.name for p in records]
    assert all("seed=" in f and "device" not in f for f in folders)
    before = [p.read_bytes() for p in records]
    # The same sweep with other bookkeeping (device, threads) finds the same folders and skips
    # both completed jobs: no new folder, no record rewritten.
    again = _cli([*args, "device=cpu", "threads=1"], tmp_path / "unused", data_dir)
    assert again.returncode == 0, again.stderr
    assert (again.stdout + again.stderr).count("Skipping") == 2
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/result.json")) == folders
    assert [p.read_bytes() for p in records] == before


def test_wandb_offline_sink_records_one_run_per_job(tiny_cfg, tmp_path):
    pytest.importorskip("wandb")
    cfg = tiny_cfg("logger.wandb.mode=offline", "train.length=2", "train.eval_every=2")
    record = run(cfg, tmp_path, ["seed=0"])
    assert record.status == "completed"
    assert record.wandb_run_id
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{record.wandb_run_id}"))


def test_schedule_in_epochs(tiny_cfg, tmp_path):
    record = run(tiny_cfg("train.unit=epochs", "train.length=1", "train.eval_every=100"), tmp_path)
    # 380 training images in batches of 16: 23 steps per epoch (last partial batch dropped).
    assert record.metrics["steps"] == 23


def test_divergence_is_recorded(tiny_cfg, tmp_path):
    record = run(tiny_cfg("optimizer.lr=1e30"), tmp_path)
    assert record.status == "diverged"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_commit_comes_from_the_environment_in_a_tree_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise subprocess.CalledProcessError(128, args[0])

    monkeypatch.setattr(record_module.subprocess, "run", no_git)
    monkeypatch.delenv("L2RW_GIT_COMMIT", raising=False)
    assert record_module.git_commit() is None
    monkeypatch.setenv("L2RW_GIT_COMMIT", "0123abc")
    assert record_module.git_commit() == "0123abc"


def test_cell_leaves_out_seed_and_bookkeeping_only():
    overrides = [
        "seed=3",
        "+table=l2rw_fig2",
        "scale=full",
        "threads=1",
        "device=cuda",
        "method.engine=per_example",
        "train.progress=false",
        "paths.data_dir=/data",
        "logger.wandb.mode=offline",
        "hydra.launcher.n_jobs=15",
        "method=l2rw",
        "imbalance.majority_fraction=0.99",
        "optimizer.lr=0.01",
        "seed_offset=1",
    ]
    assert record_module.cell_of(overrides) == [
        "imbalance.majority_fraction=0.99",
        "method=l2rw",
        "optimizer.lr=0.01",
        "seed_offset=1",
    ]


def test_the_engine_is_not_part_of_a_runs_setting():
    """Engines compute the same meta-gradient, so a checkpoint, a record and a cached warm-up
    made with one serve a run with another; a real setting (the meta lr) still tells them apart."""
    config = {"seed": 0, "scale": "full", "method": {"engine": "fast", "meta_lr": 100.0}}
    faster = {**config, "method": {"engine": "per_example", "meta_lr": 100.0}}
    other = {**config, "method": {"engine": "fast", "meta_lr": 10.0}}
    assert record_module.setting_of(faster) == record_module.setting_of(config)
    assert record_module.setting_of(other) != record_module.setting_of(config)
    assert "method.engine" not in record_module.setting_of(config)


def test_run_folder_is_the_cell_plus_seed_and_scale():
    job = [
        "method=l2rw",
        "seed=3",
        "scale=full",
        "+table=l2rw_fig2",
        "imbalance.majority_fraction=0.99",
    ]
    rerun = [*job, "device=cuda", "threads=1", "paths.data_dir=/d", "logger.wandb.mode=offline"]
    name = "imbalance.majority_fraction=0.99,method=l2rw,scale=full,seed=3"
    assert record_module.run_dirname(job) == record_module.run_dirname(rerun) == name
    assert record_module.cell_of(rerun) == ["imbalance.majority_fraction=0.99", "method=l2rw"]


def test_a_long_run_folder_name_is_cut_and_made_unique_by_a_hash():
    many = [f"train.option_{i}={'x' * 20}" for i in range(12)]
    name = record_module.run_dirname([*many, "seed=0"])
    assert len(name.encode()) <= record_module.MAX_DIRNAME_BYTES
    assert name == record_module.run_dirname([*reversed(many), "seed=0", "threads=2"])
    assert name.startswith("seed=0,train.option_0=")
    assert name != record_module.run_dirname([*many, "seed=1"])


def test_a_sweep_without_a_table_writes_under_multirun():
    from hydra import compose, initialize_config_dir

    from l2rw.train import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_root=/out"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir == "/out/multirun"
