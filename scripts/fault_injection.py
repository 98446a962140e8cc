"""Fault injection: a sweep whose workers are killed with SIGKILL at random moments, then
re-launched until it is done. Every cell must end with exactly one completed record, never
re-trained once completed, with the metrics of the same sweep run without faults (on CPU).

    python scripts/fault_injection.py --data-dir DATA_DIR --root /tmp/faults \
        --cells 6 --kills 10 --workers 2 [--set key=value ...]
    python scripts/fault_injection.py --protocol selection --root /tmp/faults-rbc --cells 2

The sweep is `python -m l2rw.train --multirun seed=0..cells-1` (with `--protocol selection`,
times three selectors) with the joblib launcher, the `--set` overrides and a small protocol
below; the uninterrupted reference runs first into ROOT/clean, the faulted one into
ROOT/faulty. Each kill comes a random 0..--max-delay seconds after a job of the launch writes
a checkpoint, so kills land at random training steps, evaluations and checkpoint writes; when
that moment finds no phase of the launch training any more, it waits for the next checkpoint.
Prints one JSON summary (with `checkpoint_resumes`, the phases the relaunches resumed from a
checkpoint, read from the jobs' train.log) and exits 1 if any cell was lost, rewritten after
completion, or differs from the reference, or if a resumed phase trained from another step than
its checkpoint's.
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from l2rw.methods.loop import LAUNCH_PATTERN
from l2rw.tracking.record import RECORD_NAME, RunRecord, read_record

REPO = Path(__file__).resolve().parent.parent
COMMON = [
    "train.progress=false",
    "logger.wandb.mode=disabled",
    "device=cpu",
    "threads=1",
]
# Small protocols: L2RW on an MNIST-format folder, one cell per seed; and the RBC pipeline on
# the toy 2-D data, one cell per (seed, selector), the selectors of a seed sharing one cached
# warm-up (so kills also land while jobs wait for, or compute, a shared warm-up).
PROTOCOLS = {
    "l2rw": [
        "method=l2rw",
        "noise=uniform_flip",
        "noise.rate=0.4",
        "dataset.clean_size=20",
        "dataset.hyper_val_size=20",
        "train.batch_size=16",
        "train.meta_batch_size=8",
        "train.length=60",
        "train.eval_every=8",
        "train.checkpoint_every=2",
        "train.eval_batch_size=64",
        "optimizer.lr=0.05",
        "dataset.options.download=false",
    ],
    "selection": [
        "dataset=toy2d",
        "model=mlp",
        "protocol=rbc",
        "method=meta_reweight",
        "noise=uniform_flip",
        "noise.rate=0.6",
        "train.batch_size=32",
        "train.length=30",
        "train.eval_every=2",
        "train.checkpoint_every=1",
        "optimizer.lr=0.1",
    ],
}
SELECTORS = ["random", "rbc", "gbc"]


def expected_cells(args: argparse.Namespace) -> int:
    return args.cells * (len(SELECTORS) if args.protocol == "selection" else 1)


def sweep_command(root: Path, args: argparse.Namespace) -> list[str]:
    seeds = ",".join(str(s) for s in range(args.cells))
    grid = [f"seed={seeds}"]
    if args.protocol == "selection":
        grid.append(f"selector={','.join(SELECTORS)}")
    return [
        sys.executable,
        "-m",
        "l2rw.train",
        "--multirun",
        *grid,
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={args.workers}",
        f"paths.output_root={root}",
        *([f"paths.data_dir={args.data_dir}"] if args.data_dir else []),
        *COMMON,
        *PROTOCOLS[args.protocol],
        *args.set,
    ]


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    """The sweep in its own session, so one killpg reaches the launcher and every worker."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    with log.open("a") as fh:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def records(root: Path) -> dict[str, RunRecord]:
    return {p.parent.name: read_record(p.parent) for p in root.glob(f"multirun/*/{RECORD_NAME}")}


def record_bytes(root: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in root.glob(f"multirun/*/{RECORD_NAME}")}


def completed(root: Path, cells: int) -> bool:
    done = [r for r in records(root).values() if r.status == "completed"]
    return len(done) == cells


def training_started(root: Path, proc: subprocess.Popen, since: float) -> bool:
    """Wait until some job of this launch has written a checkpoint (so a kill lands in
    training), or the sweep has ended; True in the first case."""
    while proc.poll() is None:
        for path in root.glob("**/checkpoint-*.pt"):
            try:
                if path.stat().st_mtime > since:
                    return True
            except FileNotFoundError:  # replaced or removed meanwhile
                continue
        time.sleep(0.05)
    return False


def in_training(root: Path, since: float) -> bool:
    """Whether a phase of this launch is training: its checkpoint, written since the launch,
    is still there (a finished phase removes it)."""
    for path in root.glob("**/checkpoint-*.pt"):
        try:
            if path.stat().st_mtime > since:
                return True
        except FileNotFoundError:
            continue
    return False


# What l2rw.methods.loop logs when a phase resumes (a phase's end: LAUNCH_PATTERN).
RESUMED = re.compile(r"Resumed phase (\S+) from its checkpoint at step (\d+) ")


def resume_counts(root: Path) -> tuple[int, int]:
    """Over the jobs' logs: how many phases resumed from a checkpoint, and how many of those
    then trained from another step than the checkpoint's (a resume that started over)."""
    resumes = started_over = 0
    for log in root.glob("multirun/*/train.log"):
        pending: dict[str, int] = {}
        for line in log.read_text().splitlines():
            if m := RESUMED.search(line):
                resumes += 1
                pending[m[1]] = int(m[2])
            elif (m := LAUNCH_PATTERN.search(line)) and m[1] in pending:
                started_over += int(m[2]) != pending.pop(m[1])
    return resumes, started_over


def run_faulted(root: Path, args: argparse.Namespace) -> dict:
    """Launch, kill the whole sweep at a random moment of training, re-launch; `args.kills`
    times (fewer if the sweep completes first), then launch until every cell is completed."""
    rng = random.Random(args.seed)
    cmd, log = sweep_command(root, args), root / "launches.log"
    root.mkdir(parents=True, exist_ok=True)
    kills, launches = 0, 0
    while not completed(root, expected_cells(args)) and launches < args.kills + 3:
        launches += 1
        since = time.time()
        proc = launch(cmd, log)
        if kills < args.kills and training_started(root, proc, since):
            time.sleep(rng.uniform(0, args.max_delay))
            # Tiny jobs may have finished meanwhile: then the kill waits for the next checkpoint
            # of this launch, so that it still lands in training.
            if (proc.poll() is None and in_training(root, since)) or training_started(
                root, proc, time.time()
            ):
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
        proc.wait()
    return {"kills": kills, "launches": launches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="an MNIST folder (torchvision layout), for l2rw")
    parser.add_argument("--root", type=Path, required=True, help="where both sweeps write")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="l2rw")
    parser.add_argument("--cells", type=int, default=4, help="seeds (x 3 selectors: selection)")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument(
        "--max-delay",
        type=float,
        default=2.0,
        help="a kill comes 0..this many seconds into training",
    )
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every job")
    args = parser.parse_args()

    clean_root, faulty_root = args.root / "clean", args.root / "faulty"
    clean_root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    launch(sweep_command(clean_root, args), clean_root / "launches.log").wait()
    reference_s = time.time() - started
    faults = run_faulted(faulty_root, args)

    # A completed cell is never trained again: one more launch leaves every record as it was.
    before = record_bytes(faulty_root)
    launch(sweep_command(faulty_root, args), faulty_root / "launches.log").wait()
    rewritten = sorted(k for k, v in record_bytes(faulty_root).items() if before.get(k) != v)

    clean, faulty = records(clean_root), records(faulty_root)
    lost = sorted(k for k in clean if k not in faulty or faulty[k].status != "completed")
    differ = sorted(
        k
        for k in clean
        if k in faulty
        and (
            faulty[k].metrics != clean[k].metrics or faulty[k].weights_hist != clean[k].weights_hist
        )
    )
    resumes, started_over = resume_counts(faulty_root)
    summary = {
        "protocol": args.protocol,
        "cells": expected_cells(args),
        "workers": args.workers,
        "reference_sweep_s": round(reference_s, 1),
        **faults,
        "checkpoint_resumes": resumes,
        "resumes_started_over": started_over,
        "reference_completed": sum(r.status == "completed" for r in clean.values()),
        "records_lost": len(lost),
        "records_rewritten_after_completion": len(rewritten),
        "metrics_differ": len(differ),
        "unexpected_cells": sorted(set(faulty) - set(clean)),
    }
    print(json.dumps(summary, indent=1))
    ok = (
        summary["reference_completed"] == expected_cells(args)
        and not lost
        and not rewritten
        and not differ
        and not started_over
        and not summary["unexpected_cells"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
