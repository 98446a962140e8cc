"""The one entrypoint: compose -> validate -> seed -> build -> dispatch -> record.

python -m l2rw.train dataset=mnist noise=uniform_flip noise.rate=0.4 method=l2rw
python -m l2rw.train +table=l2rw_fig2            # a whole table (multirun)
"""

import logging
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    InterpolationKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
)

from l2rw.config import CONF_DIR, prepare
from l2rw.config.validate import validate
from l2rw.errors import ConfigError, StorageError, UserError
from l2rw.seeding import seed_everything
from l2rw.tracking.locks import exclusive
from l2rw.tracking.record import (
    LOCK_NAME,
    RECORD_NAME,
    REPLACED_PREFIX,
    RunRecord,
    cell_of,
    device_description,
    environment,
    git_commit,
    read_record,
    setting_of,
    write_record,
)
from l2rw.tracking.sinks import Tracker, finishing, open_wandb

log = logging.getLogger("l2rw")

prepare()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"The setting {err.full_key} has no value but this run needs one: pass "
            f"{err.full_key}=... on the command line."
        ) from None
    except InterpolationKeyError as err:
        raise ConfigError(
            f"The setting {err.full_key} is taken from another setting that this combination of "
            f"options does not have ({str(err).splitlines()[0]}): the options do not fit "
            "together (e.g. model=vit reads its image size from an image dataset's input_shape). "
            f"Choose options that do, or set {err.full_key}=... yourself."
        ) from None
    except InterpolationResolutionError as err:
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise ConfigError(f"The setting {err.full_key}: {cause}") from None


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> RunRecord:
    """Run one job into `run_dir` and return its record (also written to run_dir/result.json;
    a completed record already there is returned as it is, unless `force`).

    The job owns `run_dir` while it runs: a second launch of the same cell meanwhile (the same
    sweep started twice, two users) is skipped with a message and writes nothing; its record
    has status "skipped" and is not saved.
    """
    run_dir = Path(run_dir)
    with exclusive(run_dir / LOCK_NAME, wait=False) as holder:
        if holder is not None:
            log.warning(
                "Skipping %s: %s is running this cell now (lock %s). Re-run the command after it "
                "ends to pick up its record.",
                run_dir,
                holder,
                run_dir / LOCK_NAME,
            )
            return RunRecord(status="skipped", output_dir=str(run_dir))
        return _run_owned(cfg, run_dir, list(overrides or []))


def _run_owned(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> RunRecord:
    previous = read_record(run_dir)
    if previous and previous.status == "completed" and not cfg.force:
        log.info(
            "Skipping %s: it already holds a completed record (pass force=true to re-run).", run_dir
        )
        return previous
    if cfg.force:
        _move_aside(run_dir)
        previous = None
    # A launch that resumes an unfinished run adds to its time and keeps its start: the record
    # says what the cell cost over all its launches, not the last one's share.
    earlier_s = (previous.wall_time_s or 0.0) if previous else 0.0
    started = time.time()
    record = RunRecord(
        config=OmegaConf.to_container(cfg, resolve=False),  # type: ignore[arg-type]
        overrides=overrides,
        cell=cell_of(overrides),
        table=cfg.table_name,
        scale=cfg.scale,
        seed=cfg.seed,
        method=cfg.method.name,
        git_commit=git_commit(),
        started_at=(previous and previous.started_at)
        or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=environment(),
        output_dir=str(run_dir),
    )
    try:
        record.config = resolved(cfg)
        validate(cfg)
        _execute(cfg, run_dir, record)
    except UserError as err:
        record.error = str(err)
        log.error("%s", err)
    except KeyboardInterrupt:
        record.error = "interrupted; re-run the same command to resume from the checkpoint"
        raise
    except Exception as err:
        record.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        record.wall_time_s = round(earlier_s + time.time() - started, 3)
        record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            write_record(run_dir, record)
        except StorageError as err:
            record.status = "failed"
            record.error = record.error or str(err)
            log.error("%s", err)
    return record


def _move_aside(run_dir: Path) -> None:
    """force=true: the folder's earlier state (record, checkpoints, phases, snapshots, logs of
    metrics) goes into `replaced-<time>/`, so the run starts over and nothing is deleted."""
    kept = {".hydra", "train.log", LOCK_NAME}
    earlier = [
        p
        for p in (run_dir.iterdir() if run_dir.is_dir() else [])
        if p.name not in kept and not p.name.startswith(REPLACED_PREFIX)
    ]
    if not earlier:
        return
    aside = run_dir / f"{REPLACED_PREFIX}{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir()
    for path in earlier:
        path.replace(aside / path.name)
    log.info("force=true: moved this run's earlier state to %s; starting over.", aside)


def _execute(cfg: DictConfig, run_dir: Path, record: RunRecord) -> None:
    from l2rw.data.splits import build_data
    from l2rw.methods import run_pipeline
    from l2rw.methods.context import RunContext
    from l2rw.models import build_model

    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    record.device = device_description(device)
    data = build_data(cfg)
    record.data = data.facts
    log.info(
        "Data: %s; realized noise rate %.4f.",
        data.facts["sizes"],
        data.facts["noise"]["realized_rate"],
    )
    model = build_model(cfg.model.name, data.num_classes, **cfg.model.options).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    wandb_run = open_wandb(cfg, record.config, record.cell, run_dir)
    with finishing(wandb_run):
        record.wandb_run_id = getattr(wandb_run, "id", None)
        ctx = RunContext(
            cfg,
            data.to(device),
            model,
            device,
            run_dir,
            Tracker(run_dir, wandb_run),
            setting_of(record.config),
        )
        # A pipeline that changes the splits (selection cleans examples into the meta set)
        # returns the facts of the data it ended with.
        run_pipeline(ctx).fill(record)
        ctx.tracker.summary(
            {f"final/{k}": v for k, v in record.metrics.items() if k != "confusion"}
        )
        if wandb_run is not None and record.status != "completed":
            wandb_run.finish(exit_code=1)
    log.info(
        "Status %s: test accuracy %.4f (early-stopped %s). Record: %s",
        record.status,
        record.metrics["test_acc"],
        record.metrics["test_acc_es"],
        run_dir / RECORD_NAME,
    )


def _interrupt(signum, frame) -> None:
    """SIGTERM (a cluster pre-empting the job) ends it like Ctrl-C: record written, resumable."""
    raise KeyboardInterrupt


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    signal.signal(signal.SIGTERM, _interrupt)
    hc = HydraConfig.get()
    record = run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))
    if record.status != "completed" and hc.mode == RunMode.RUN:
        sys.exit(1)
    return record.metrics.get("test_acc")


if __name__ == "__main__":
    main()
