"""Time a plain SGD step against the reference and fast L2RW, meta re-weighting and
Meta-Weight-Net steps.

All steps run in one process on one model and momentum-0.9 SGD optimizer; they are interleaved
and repeated so that machine load affects them alike. Each line of output is one JSON object
with the median milliseconds per step and its ratio to the SGD step. The meta re-weighting
engines are labelled meta_reweight_fast and meta_reweight_reference, MW-Net's mwnet_fast and
mwnet_reference (its weighting net 1-100-1 and Adam step included).

    python scripts/bench_meta_step.py [--repeats 30] [--threads N] [--device cuda]
    python scripts/bench_meta_step.py --count-ops
    python scripts/bench_meta_step.py --models resnet32 --batch 128 --meta-batch 50

`--count-ops` times nothing: it counts the operations each step dispatches (`opcount.py`) at
the settings' batch sizes. `--batch` and `--meta-batch` replace the settings' training and
validation (meta) batch sizes, to time the steps at your own protocol's.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from opcount import OpCounter

from l2rw.meta import l2rw_step, meta_reweight_step
from l2rw.methods.mwnet import WeightNet, mwnet_step
from l2rw.models import build_model
from l2rw.tracking.record import device_description

SETTINGS = [
    # model, input shape, classes, batch, validation batch (the L2RW paper's settings)
    ("lenet", (1, 28, 28), 2, 100, 10),
    ("resnet32", (3, 32, 32), 10, 100, 100),
    # The Fashion-MNIST analogue of L2RW Table 2 (l2rw_table2_fmnist), where MW-Net is a row.
    ("lenet5", (1, 28, 28), 10, 100, 100),
]


def plain_step(model, optimizer, x, y, x_val, y_val):
    """The optimizer's own step on the mean loss (the ratios' denominator)."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def l2rw_engine(engine: str, lookahead: str = "sgd"):
    """L2RW's step; `lookahead="optimizer"`: through one step of the run's optimizer."""

    def step(model, optimizer, x, y, x_val, y_val):
        l2rw_step(model, optimizer, x, y, x_val, y_val, engine=engine, lookahead=lookahead)

    return step


def meta_reweight_engine(engine: str):
    """The persistent-weight step of Wu et al. (2023), from weights 0.5 (timing ignores them)."""

    def step(model, optimizer, x, y, x_val, y_val):
        w = torch.full((x.shape[0],), 0.5, device=x.device)
        meta_reweight_step(model, optimizer, x, y, w, x_val, y_val, meta_lr=1.0, engine=engine)

    return step


def mwnet_engine(engine: str):
    """MW-Net's step (Shu et al. 2019): its 1-100-1 weighting net, stepped by Adam, then the
    weighted real step; the net persists across the steps timed."""
    net = WeightNet()
    net_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)

    def step(model, optimizer, x, y, x_val, y_val):
        net.to(x.device)
        mwnet_step(model, optimizer, net, net_optimizer, x, y, x_val, y_val, engine=engine)

    return step


STEPS = {
    "sgd": plain_step,
    "reference": l2rw_engine("reference"),
    "fast": l2rw_engine("fast"),
    "meta_reweight_reference": meta_reweight_engine("reference"),
    "meta_reweight_fast": meta_reweight_engine("fast"),
    "mwnet_reference": mwnet_engine("reference"),
    "mwnet_fast": mwnet_engine("fast"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(name, shape, k, batch, val_batch, device, foreach=None):
    """The model in train mode, its momentum-0.9 SGD optimizer and one fixed batch and meta batch
    (`foreach`: torch.optim.SGD's choice of implementation; None lets it choose)."""
    torch.manual_seed(0)
    model = build_model(name, k).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=foreach)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, k, (batch,), device=device)
    x_val = torch.randn(val_batch, *shape, device=device)
    y_val = torch.randint(0, k, (val_batch,), device=device)
    return model, optimizer, (x, y, x_val, y_val)


def bench(name, shape, k, batch, val_batch, repeats, warmup, device) -> list[dict]:
    model, optimizer, batches = _setup(name, shape, k, batch, val_batch, device)
    times = {engine: [] for engine in STEPS}
    for i in range(warmup + repeats):
        for engine, step in STEPS.items():
            sync(device)
            start = time.perf_counter()
            step(model, optimizer, *batches)
            sync(device)
            if i >= warmup:
                times[engine].append(1000 * (time.perf_counter() - start))
    sgd = statistics.median(times["sgd"])
    return [
        {
            "model": name,
            "batch": batch,
            "val_batch": val_batch,
            "device": device_description(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "engine": engine,
            "ms_per_step": round(statistics.median(t), 3),
            "ratio_vs_sgd": round(statistics.median(t) / sgd, 3),
            "repeats": repeats,
        }
        for engine, t in times.items()
    ]


def count_ops(name, shape, k, batch, val_batch, device) -> list[dict]:
    """Operations dispatched by one step of each engine (after two warm-up steps, so that the
    optimizer has momentum buffers), the optimizer in its multi-tensor form, which
    torch.optim.SGD takes by default on a GPU."""
    model, optimizer, batches = _setup(name, shape, k, batch, val_batch, device, foreach=True)
    counts = {}
    for engine, step in STEPS.items():
        for _ in range(2):
            step(model, optimizer, *batches)
        with OpCounter() as counter:
            step(model, optimizer, *batches)
        counts[engine] = counter.arithmetic
    return [
        {
            "model": name,
            "batch": batch,
            "val_batch": val_batch,
            "torch": torch.__version__,
            "engine": engine,
            "ops_per_step": n,
            "ratio_vs_sgd": round(n / counts["sgd"], 3),
        }
        for engine, n in counts.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=[s[0] for s in SETTINGS])
    parser.add_argument("--batch", type=int, default=None, help="training batch size")
    parser.add_argument("--meta-batch", type=int, default=None, help="validation (meta) batch")
    parser.add_argument("--count-ops", action="store_true", help="count operations, time nothing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name, shape, k, batch, val_batch in SETTINGS:
        if name in args.models:
            setting = (name, shape, k, args.batch or batch, args.meta_batch or val_batch)
            if args.count_ops:
                rows = count_ops(*setting, device)
            else:
                rows = bench(*setting, args.repeats, args.warmup, device)
            for row in rows:
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
