"""`make demo`: the smallest honest slice of L2RW Figure 2.

Baseline against L2RW on MNIST 4 vs 9 at a 0.995 majority proportion (200:1), two seeds, at
`scale=cpu` (1,000 steps), then a small table of test error read back from the run records.
MNIST is read from (or downloaded into) DATA_DIR. The console shows one progress bar for the
whole sweep; the jobs' own output (Hydra's logs, W&B's banners) goes to a log file, or to the
console with `--verbose` (`make demo VERBOSE=1`).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from tqdm import tqdm

from l2rw.config import CONF_DIR, prepare
from l2rw.report.aggregate import ci95
from l2rw.report.records import load_local
from l2rw.tracking.sinks import METRICS_NAME

OUTPUT_ROOT = Path("outputs/demo")
LOG = OUTPUT_ROOT / "demo.log"
METHODS, SEEDS = ("baseline", "l2rw"), (0, 1)
TABLE = ["+table=l2rw_fig2", "scale=cpu"]
SWEEP = [
    *TABLE,
    "imbalance.majority_fraction=0.995",
    f"method={','.join(METHODS)}",
    f"seed={','.join(map(str, SEEDS))}",
    f"paths.output_root={OUTPUT_ROOT}",
    "train.progress=false",
]


def main(argv: list[str] | None = None) -> int:
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    if not os.environ.get("DATA_DIR"):
        print(
            "Set DATA_DIR to a folder holding MNIST in torchvision's layout (MNIST/raw/...), "
            "or to an empty folder to download it there.",
            file=sys.stderr,
        )
        return 2
    steps = _steps_per_job()
    print(
        "L2RW Figure 2 slice: baseline vs L2RW, MNIST 4 vs 9 at 200:1, LeNet, "
        f"{steps:,} steps, seeds {', '.join(map(str, SEEDS))}."
    )
    returncode = _run_sweep(verbose, steps)
    records = [r for r in load_local(OUTPUT_ROOT, "l2rw_fig2") if r.data.scale == "cpu"]
    completed = [r for r in records if r.data.status == "completed"]
    if returncode != 0 or not completed:
        where = "the output above" if verbose else f"the log: {LOG}"
        print(f"The demo runs did not complete; see {where}.", file=sys.stderr)
        return 1
    _print_table(completed)
    print(
        f"\nRecords: {OUTPUT_ROOT}/l2rw_fig2/*/result.json"
        + ("" if verbose else f"; the jobs' log: {LOG}")
        + ". The paper (Sec. 4.1) reports that at 200:1 L2RW's error rises only about 2% while "
        "the baselines suffer badly; the full figure is `make l2rw-fig2` (SCALE=full for the "
        "paper's 8,000 steps)."
    )
    return 0


def _steps_per_job() -> int:
    """The table's training length at this scale, as the jobs will compose it."""
    prepare()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return int(compose("train", overrides=TABLE).train.length)


def _run_sweep(verbose: bool, steps: int) -> int:
    """The sweep in a child process; unless `verbose`, its output goes to LOG and a progress bar
    follows the steps its jobs have logged."""
    command = [sys.executable, "-m", "l2rw.train", *SWEEP]
    if verbose:
        return subprocess.run(command, check=False).returncode
    LOG.parent.mkdir(parents=True, exist_ok=True)
    total = len(METHODS) * len(SEEDS) * steps
    with open(LOG, "w") as log, tqdm(total=total, unit="step", desc="demo") as bar:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while child.poll() is None:
            time.sleep(0.5)
            bar.update(min(_steps_logged(), total) - bar.n)
        bar.update(min(_steps_logged(), total) - bar.n)
    return child.returncode


def _steps_logged() -> int:
    """Steps reached so far, summed over the sweep's jobs (the last line of each metrics file)."""
    done = 0
    for metrics in (OUTPUT_ROOT / "l2rw_fig2").glob(f"*/{METRICS_NAME}"):
        try:
            last = metrics.read_text().strip().rsplit("\n", 1)[-1]
            done += int(json.loads(last)["step"]) if last else 0
        except (OSError, ValueError, KeyError):
            continue  # a line being written: counted at the next poll
    return done


def _print_table(completed: list) -> None:
    print(f"\n{'method':<10} {'test error %':>14} {'95% CI':>8} {'n':>3}  per seed")
    for method in METHODS:
        runs = sorted((r for r in completed if r.data.method == method), key=lambda r: r.data.seed)
        errors = np.array([100 * (1 - r.data.metrics["test_acc"]) for r in runs])
        if len(errors):
            per_seed = ", ".join(f"{e:.2f}" for e in errors)
            print(
                f"{method:<10} {errors.mean():>14.2f} {ci95(errors):>8.2f} {len(errors):>3}  "
                f"{per_seed}"
            )


if __name__ == "__main__":
    sys.exit(main())
