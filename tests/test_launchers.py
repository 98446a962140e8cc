"""Sweeps beyond one process. Hydra's Ray launcher joined to a Ray instance (started here as
`ray start` starts a cluster's head) writes the same records into the same folders as the joblib
launcher; the README's SLURM and Ray launcher configs compose."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import TINY
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from l2rw.train import CONF_DIR

# Two jobs, one thread each, on the tiny data of conftest.
SWEEP = ["-m", "seed=0,1", *TINY, "threads=1"]
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report over the network
    "RAY_AUTH_MODE": "disabled",  # no token written to ~/.ray, for a loopback-only instance
}


@pytest.fixture
def ray_instance(monkeypatch):
    """A Ray instance of two CPUs owned by the test (a one-node cluster): its GCS address."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Its session in a short folder of its own: socket paths must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="l2rw-ray-")
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own in the driver
    try:
        context = ray.init(
            address="local",  # a new instance, never a cluster some `ray start` left running
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=80 * 2**20,
            log_to_driver=False,
            _temp_dir=temp_dir,
        )
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, sigterm)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _sweep(launcher: list[str], output_root: Path, data_dir: Path, cwd: Path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENV, WANDB_MODE="disabled")
    env.pop("DATA_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "l2rw.train",
        *SWEEP,
        # Absolute, as the README says for a cluster: Ray's workers run in the cwd and
        # environment of the node's `ray start` (here: of this test), not of this command.
        f"paths.output_root={output_root}",
        f"paths.data_dir={data_dir}",
        *launcher,
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


@pytest.mark.slow
def test_ray_sweep_writes_the_same_records_as_joblib(ray_instance, tmp_path, data_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    ray_launcher = ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_instance}"]
    joblib_launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    # Both sweeps at once, each in its own output root.
    by_ray = _sweep(ray_launcher, tmp_path / "by_ray", data_dir, tmp_path)
    by_joblib = _sweep(joblib_launcher, tmp_path / "by_joblib", data_dir, tmp_path)
    try:
        ray_out, _ = by_ray.communicate(timeout=420)
        joblib_out, _ = by_joblib.communicate(timeout=420)
    finally:
        for sweep in (by_ray, by_joblib):
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
    assert by_ray.returncode == 0, ray_out
    assert by_joblib.returncode == 0, joblib_out
    assert "Ray Launcher is launching 2 jobs" in ray_out
    assert "Connected to Ray cluster" in ray_out

    ray_records = _records(tmp_path / "by_ray" / "multirun")
    joblib_records = _records(tmp_path / "by_joblib" / "multirun")
    assert len(ray_records) == 2
    assert sorted(ray_records) == sorted(joblib_records)  # the same folders
    for name, ray_record in ray_records.items():
        joblib_record = joblib_records[name]
        assert ray_record["status"] == joblib_record["status"] == "completed", name
        assert ray_record["output_dir"] == str(tmp_path / "by_ray" / "multirun" / name)
        # CPU runs are deterministic by seed: bit-identical results, whichever launcher.
        for key in ("metrics", "data", "weights_hist", "cell", "seed", "scale", "method"):
            assert ray_record[key] == joblib_record[key], (name, key)
        for record in (ray_record, joblib_record):
            record["config"]["paths"].pop("output_root")
        assert ray_record["config"] == joblib_record["config"], name
    assert {r["metrics"]["test_acc"] > 0.5 for r in ray_records.values()} == {True}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


# The README's commands for a whole table on a cluster ("Sweeps on a cluster").
TABLE = [
    "+table=rbc_table1_mnist",
    "scale=full",
    "threads=1",
    "train.progress=false",
    "paths.output_root=/shared/l2rw/outputs",
    "paths.data_dir=/shared/data",
]


def test_the_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(
        [
            *TABLE,
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.timeout_min=720",
            "hydra.launcher.cpus_per_task=2",
            "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.mem_gb=16",
            "hydra.launcher.array_parallelism=32",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 1, 720)
    # Submitit's job files sit in the table's sweep folder, beside its runs.
    assert launcher.submitit_folder == "/shared/l2rw/outputs/rbc_table1_mnist/.submitit/%j"
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"  # builds; submits nothing


def test_the_ray_launcher_configs_compose():
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    cluster = _compose(
        [*TABLE, "hydra/launcher=ray_cluster", "+hydra.launcher.ray.remote.num_gpus=0.25"]
    )
    launcher = cluster.hydra.launcher
    assert launcher._target_.endswith("RayLauncher")
    # Joining a cluster: ray.init refuses the object store size the plugin sets by default.
    assert dict(launcher.ray.init) == {"address": "auto", "object_store_memory": None}
    assert dict(launcher.ray.remote) == {"num_cpus": 1, "num_gpus": 0.25}
    assert cluster.hydra.sweep.dir == "/shared/l2rw/outputs/rbc_table1_mnist"
    assert type(instantiate(launcher)).__name__ == "RayLauncher"  # connects to nothing yet
    local = _compose([*TABLE, "hydra/launcher=ray"])  # a local instance of its own
    assert local.hydra.launcher.ray.init.address is None
