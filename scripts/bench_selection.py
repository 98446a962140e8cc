"""Time RBC features, projected GBC features and weighted K-means on MNIST-sized data.

60,000 random 1x28x28 inputs (label-free features, as for noisy labels), the repo's LeNet, 6
snapshots (6 differently seeded models) and k = 10 clusters, as in the paper's MNIST setting.
Each line of output is one JSON object: one per stage with seconds and peak memory, then a
summary with the GBC / RBC time ratio (target <= 3).

Peak memory: on CUDA, torch.cuda.max_memory_allocated over the stage; on CPU, the process's
resident set size sampled every 5 ms from /proc/self/statm over the stage (peak_mb) and its rise
over the stage's start (rise_mb). tracemalloc would not see torch's allocations.

    python scripts/bench_selection.py [--n 60000] [--threads N] [--device cuda]
    python scripts/bench_selection.py --count-ops [--gbc-batch 512 1024 4096]

`--count-ops` times nothing: it counts the operations (`opcount.py`) that RBC's and GBC's
features of one snapshot dispatch over the `--n` examples, RBC at its default batch size and GBC
at each `--gbc-batch`. At small batches on a GPU these counts, not arithmetic, set the times.
"""

import argparse
import json
import os
import threading
import time
import warnings
from contextlib import contextmanager

import torch
from opcount import OpCounter

from l2rw.models import build_model
from l2rw.selection import gbc_features, rbc_features, snapshot_features, weighted_kmeans
from l2rw.tracking.record import device_description

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_MB


@contextmanager
def measure(device: torch.device, row: dict):
    """Fill row with seconds and peak memory of the block."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        yield
        torch.cuda.synchronize(device)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        row["memory"] = "torch.cuda.max_memory_allocated"
        return
    base = peak = _rss_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        row["seconds"] = round(time.perf_counter() - start, 2)
        done.set()
        sampler.join()
        peak = max(peak, _rss_mb())
        row.update(peak_mb=round(peak, 1), rise_mb=round(peak - base, 1))
        row["memory"] = "process RSS sampled every 5 ms (/proc/self/statm)"


def count_ops(x: torch.Tensor, proj_dims: tuple[int, int], gbc_batches: list[int]) -> None:
    """Print the operations one snapshot's RBC features and GBC features dispatch."""
    torch.manual_seed(0)
    model = build_model("lenet", 10).to(x.device)
    with OpCounter() as rbc:
        rbc_features(model, x)
    print(json.dumps({"stage": "rbc_features", "n": len(x), "ops": rbc.arithmetic}), flush=True)
    for batch in gbc_batches:
        with OpCounter() as gbc:
            gbc_features(model, x, seed=0, proj_dims=proj_dims, batch_size=batch)
        row = {"stage": "gbc_features", "n": len(x), "batch_size": batch, "ops": gbc.arithmetic}
        print(json.dumps({**row, "ops_over_rbc": round(gbc.arithmetic / rbc.arithmetic, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000, help="examples (MNIST: 60,000)")
    parser.add_argument("--snapshots", type=int, default=6)
    parser.add_argument("--k", type=int, default=10, help="clusters")
    parser.add_argument("--proj-dims", type=int, nargs=2, default=(8, 32))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--count-ops", action="store_true", help="count operations, time nothing")
    parser.add_argument("--gbc-batch", type=int, nargs="*", default=[512], help="with --count-ops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    common = {
        "n": args.n,
        "snapshots": args.snapshots,
        "device": device_description(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    x = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    if args.count_ops:
        count_ops(x, tuple(args.proj_dims), args.gbc_batch)
        return
    models = []
    for seed in range(args.snapshots):
        torch.manual_seed(seed)
        models.append(build_model("lenet", 10).to(device))
    # Warm-up: one-time kernel and allocator set-up stays out of the timings.
    rbc_features(models[0], x[:256])
    gbc_features(models[0], x[:256], seed=0, proj_dims=tuple(args.proj_dims))

    stages = {
        "rbc_features": lambda: snapshot_features(rbc_features, models, x),
        "gbc_features": lambda: snapshot_features(
            gbc_features, models, x, seed=0, proj_dims=tuple(args.proj_dims)
        ),
    }
    seconds = {}
    for name, build in stages.items():
        row = {"stage": name, **common}
        with measure(device, row):
            G = build()
        row["dim"] = G.shape[1]
        row["features_mb"] = round(G.numel() * G.element_size() / 2**20, 1)
        seconds[name] = row["seconds"]
        print(json.dumps(row), flush=True)
        row = {"stage": f"weighted_kmeans_{name.split('_')[0]}", "k": args.k, **common}
        with measure(device, row), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            centroids, _ = weighted_kmeans(G, args.k, seed=0)
        row.update(clusters=len(centroids), converged=not caught, dim=G.shape[1])
        print(json.dumps(row), flush=True)
        del G, centroids
    ratio = seconds["gbc_features"] / seconds["rbc_features"]
    summary = {"stage": "summary", "gbc_over_rbc": round(ratio, 2), "target": 3.0, **common}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
