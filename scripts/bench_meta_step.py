"""Time (or measure the peak memory of) a plain optimizer step against the reference and fast
L2RW, meta re-weighting and Meta-Weight-Net steps, and against the peers' way of looking ahead
through AdamW.

All steps of a setting run in one process on one model and optimizer; they are interleaved and
repeated so that machine load affects them alike. Each line of output is one JSON object with
the median milliseconds per step and its ratio to the plain step of the same optimizer, measured
in the same run.

`--optimizer sgd` (the default): momentum-0.9 SGD on the papers' models. The engines are
labelled reference and fast (L2RW; fast_apart: `share_forward=False`, the real update's forward
apart from the weights' dual forward), meta_reweight_fast and meta_reweight_reference,
per_example and meta_reweight_per_example (`engine="per_example"`; not on ResNet-32, whose
BatchNorm that engine refuses), mwnet_fast and mwnet_reference (MW-Net, its weighting net
1-100-1 and Adam step included).

`--optimizer adamw`: a small ViT (`model=vit`: 64 wide, 4 blocks, 4 heads, 4 px patches) on
Fashion-MNIST-sized input, batch 100, meta batch 100, AdamW (lr 1e-3, weight decay 0.05) with its
moments built by two steps:

- adamw: the plain step;
- l2rw_fast / l2rw_reference: an L2RW step whose look-ahead is one AdamW step from the
  optimizer's state (`lookahead="optimizer"`), by the forward-mode engine / by a second-order
  backward through our functional copy of AdamW; l2rw_fast_apart: the fast engine with the
  real update's forward apart (`share_forward=False`);
- meta_reweight_fast / meta_reweight_reference: the persistent-weight step (RBC's engine)
  through AdamW, both engines;
- l2rw_per_example / meta_reweight_per_example: the same two steps by the per-example engine
  (`engine="per_example"`, `l2rw.meta.per_example`: the batch's per-example gradients once,
  everything else a contraction over the batch);
- torchopt_l2rw: the same L2RW step the way the meta-learning libraries do it, TorchOpt's
  differentiable AdamW (`torchopt.adamw`, functional, not in place) for the look-ahead and a
  second-order backward to the example weights, then the real AdamW step (if torchopt imports);
- higher_l2rw_adam: the same with `higher`'s differentiable optimizer; higher 0.2.1 has no
  AdamW, so this row's optimizer is Adam (L2 weight decay), and so is its plain step `adam`,
  which it is compared with (if higher imports; `pip install -e '.[peers]'`).

`--memory` times nothing: it runs each step in a process of its own and reports the peak memory
one step needs above what was resident before it (`peak_mib`; CPU: the process's resident-set
high-water mark, reset before the step, after freed memory went back to the system; CUDA:
torch's peak allocation), with its ratio to the plain step's. `--count-ops` counts the
operations each step dispatches (`opcount.py`). `--batch` and `--meta-batch` replace the
settings' training and validation (meta) batch sizes.

    python scripts/bench_meta_step.py [--repeats 30] [--threads N] [--device cuda]
    python scripts/bench_meta_step.py --optimizer adamw [--repeats 20] [--memory]
    python scripts/bench_meta_step.py --count-ops
    python scripts/bench_meta_step.py --models resnet32 --batch 128 --meta-batch 50
"""

import argparse
import copy
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from opcount import OpCounter
from torch.func import functional_call

from l2rw.errors import ConfigError
from l2rw.meta import l2rw_step, meta_reweight_step, normalize_weights
from l2rw.meta.passes import math_attention
from l2rw.meta.per_example import check_separable
from l2rw.methods.mwnet import WeightNet, mwnet_step
from l2rw.models import build_model
from l2rw.tracking.record import device_description

# --optimizer -> its settings: model, input shape, classes, batch, validation (meta) batch.
SETTINGS = {
    "sgd": [
        # the L2RW paper's settings
        ("lenet", (1, 28, 28), 2, 100, 10),
        ("resnet32", (3, 32, 32), 10, 100, 100),
        # the Fashion-MNIST analogue of L2RW Table 2 (l2rw_table2_fmnist), where MW-Net is a row
        ("lenet5", (1, 28, 28), 10, 100, 100),
    ],
    # a model people train with AdamW, on Fashion-MNIST-sized input (conf/table/vit_fmnist.yaml)
    "adamw": [("vit", (1, 28, 28), 10, 100, 100)],
}
ADAMW = dict(lr=1e-3, weight_decay=0.05)
OPTIMIZERS = {
    "sgd": lambda params, **kw: torch.optim.SGD(params, lr=1e-3, momentum=0.9, **kw),
    "adamw": lambda params, **kw: torch.optim.AdamW(params, **ADAMW, **kw),
    "adam": lambda params, **kw: torch.optim.Adam(params, **ADAMW, **kw),
}
Step = Callable[..., None]


def plain_step(model, optimizer, x, y, x_val, y_val):
    """The optimizer's own step on the mean loss (the ratios' denominator)."""
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def l2rw_engine(engine: str, lookahead: str = "sgd", share_forward: bool = True) -> Step:
    """L2RW's step; `lookahead="optimizer"`: through one step of the run's optimizer;
    `share_forward=False`: the real update's forward apart from the weights' dual forward."""

    def step(model, optimizer, x, y, x_val, y_val):
        l2rw_step(
            model,
            optimizer,
            x,
            y,
            x_val,
            y_val,
            engine=engine,
            lookahead=lookahead,
            share_forward=share_forward,
        )

    return step


def meta_reweight_engine(engine: str) -> Step:
    """The persistent-weight step of Wu et al. (2023), from weights 0.5 (timing ignores them)."""

    def step(model, optimizer, x, y, x_val, y_val):
        w = torch.full((x.shape[0],), 0.5, device=x.device)
        meta_reweight_step(model, optimizer, x, y, w, x_val, y_val, meta_lr=1.0, engine=engine)

    return step


def mwnet_engine(engine: str) -> Step:
    """MW-Net's step (Shu et al. 2019): its 1-100-1 weighting net, stepped by Adam, then the
    weighted real step; the net persists across the steps timed."""
    net = WeightNet()
    net_optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)

    def step(model, optimizer, x, y, x_val, y_val):
        net.to(x.device)
        mwnet_step(model, optimizer, net, net_optimizer, x, y, x_val, y_val, engine=engine)

    return step


def _weighted_step(model, optimizer, x, y, eps_grad):
    weights = normalize_weights(-eps_grad.detach())
    optimizer.zero_grad(set_to_none=True)
    (weights * F.cross_entropy(model(x), y, reduction="none")).sum().backward()
    optimizer.step()


def torchopt_l2rw() -> Step | None:
    """TorchOpt's differentiable AdamW look-ahead (moments from zero: the cost is the same) and
    a second-order backward to eps; None when torchopt does not import."""
    try:
        import torchopt
    except ImportError:
        return None

    def step(model, optimizer, x, y, x_val, y_val):
        params = dict(model.named_parameters())
        inner = torchopt.adamw(**ADAMW)
        state = inner.init(params)
        eps = torch.zeros(x.shape[0], device=x.device, requires_grad=True)
        with math_attention():
            loss = (eps * F.cross_entropy(model(x), y, reduction="none")).sum()
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            updates, _ = inner.update(
                dict(zip(params, grads, strict=False)), state, params=params, inplace=False
            )
            moved = torchopt.apply_updates(params, updates, inplace=False)
            meta = F.cross_entropy(functional_call(model, moved, (x_val,)), y_val)
            (eps_grad,) = torch.autograd.grad(meta, eps)
        _weighted_step(model, optimizer, x, y, eps_grad)

    return step


def higher_l2rw() -> Step | None:
    """higher's differentiable Adam look-ahead and a second-order backward to eps; None when
    higher does not import."""
    try:
        import higher
    except ImportError:
        return None

    def step(model, optimizer, x, y, x_val, y_val):
        eps = torch.zeros(x.shape[0], device=x.device, requires_grad=True)
        with (
            math_attention(),
            higher.innerloop_ctx(model, optimizer, copy_initial_weights=False) as (
                fmodel,
                diffopt,
            ),
        ):
            diffopt.step((eps * F.cross_entropy(fmodel(x), y, reduction="none")).sum())
            (eps_grad,) = torch.autograd.grad(F.cross_entropy(fmodel(x_val), y_val), eps)
        _weighted_step(model, optimizer, x, y, eps_grad)

    return step


def steps_for(optimizer: str) -> dict[str, tuple[str, Step]]:
    """The steps of one --optimizer: name -> (its optimizer, the step). Each optimizer's plain
    step is named after it; the peers' steps are left out when their library does not import."""
    if optimizer == "sgd":
        steps = {
            "sgd": ("sgd", plain_step),
            "reference": ("sgd", l2rw_engine("reference")),
            "fast": ("sgd", l2rw_engine("fast")),
            "fast_apart": ("sgd", l2rw_engine("fast", share_forward=False)),
            "meta_reweight_reference": ("sgd", meta_reweight_engine("reference")),
            "meta_reweight_fast": ("sgd", meta_reweight_engine("fast")),
            "per_example": ("sgd", l2rw_engine("per_example")),
            "meta_reweight_per_example": ("sgd", meta_reweight_engine("per_example")),
            "mwnet_reference": ("sgd", mwnet_engine("reference")),
            "mwnet_fast": ("sgd", mwnet_engine("fast")),
        }
    else:
        steps = {
            "adamw": ("adamw", plain_step),
            "l2rw_fast": ("adamw", l2rw_engine("fast", "optimizer")),
            "l2rw_fast_apart": ("adamw", l2rw_engine("fast", "optimizer", share_forward=False)),
            "l2rw_reference": ("adamw", l2rw_engine("reference", "optimizer")),
            "meta_reweight_fast": ("adamw", meta_reweight_engine("fast")),
            "meta_reweight_reference": ("adamw", meta_reweight_engine("reference")),
            "l2rw_per_example": ("adamw", l2rw_engine("per_example", "optimizer")),
            "meta_reweight_per_example": ("adamw", meta_reweight_engine("per_example")),
            "torchopt_l2rw": ("adamw", torchopt_l2rw()),
            "adam": ("adam", plain_step),
            "higher_l2rw_adam": ("adam", higher_l2rw()),
        }
    return {name: (opt, step) for name, (opt, step) in steps.items() if step is not None}


def steps_of(setting, optimizer: str) -> dict[str, tuple[str, Step]]:
    """`steps_for(optimizer)` less the per-example engine's on a model that engine refuses
    (BatchNorm: its batch statistics couple the examples)."""
    steps = steps_for(optimizer)
    name, _, k, _, _ = setting
    try:
        check_separable(build_model(name, k))
    except ConfigError:
        steps = {step: value for step, value in steps.items() if "per_example" not in step}
    return steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(setting, optimizer: str, device, **optimizer_options):
    """The model in train mode, its optimizer with state from two plain steps, and one fixed
    batch and meta batch (`optimizer_options`, e.g. foreach=True, go to the optimizer)."""
    name, shape, k, batch, val_batch = setting
    torch.manual_seed(0)
    model = build_model(name, k).to(device).train()
    opt = OPTIMIZERS[optimizer](model.parameters(), **optimizer_options)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, k, (batch,), device=device)
    x_val = torch.randn(val_batch, *shape, device=device)
    y_val = torch.randint(0, k, (val_batch,), device=device)
    for _ in range(2):
        plain_step(model, opt, x, y, x_val, y_val)
    return model, opt, (x, y, x_val, y_val)


def _copies(steps, setting, device, **optimizer_options):
    """Each step's own copy of the model and optimizer (all from the same state), and the
    batches of each optimizer."""
    states = {
        opt: _setup(setting, opt, device, **optimizer_options)
        for opt in {opt for opt, _ in steps.values()}
    }
    copies = {name: copy.deepcopy(states[opt][:2]) for name, (opt, _) in steps.items()}
    return copies, {opt: state[2] for opt, state in states.items()}


def _row(setting, device, name, plain, value_key, value, plain_value, **extra) -> dict:
    model, _, _, batch, val_batch = setting
    return {
        "model": model,
        "batch": batch,
        "val_batch": val_batch,
        "optimizer": plain,
        "device": device_description(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "step": name,
        value_key: round(value, 3),
        f"ratio_vs_{plain}": round(value / plain_value, 3),
        **extra,
    }


def bench(setting, optimizer: str, repeats: int, warmup: int, device) -> list[dict]:
    steps = steps_of(setting, optimizer)
    copies, batches = _copies(steps, setting, device)
    times = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, (opt, step) in steps.items():
            sync(device)
            start = time.perf_counter()
            step(*copies[name], *batches[opt])
            sync(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    ms = {name: statistics.median(t) for name, t in times.items()}
    return [
        _row(setting, device, name, opt, "ms_per_step", ms[name], ms[opt], repeats=repeats)
        for name, (opt, _) in steps.items()
    ]


def _status_mib(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def peak_mib(setting, optimizer: str, name: str, device) -> float:
    """The memory one step `name` needs above what is resident before it (after one step
    first, for lazily built state), in a process that ran nothing else."""
    opt, step = steps_for(optimizer)[name]
    model, optimizer_, batches = _setup(setting, opt, device)
    step(model, optimizer_, *batches)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(model, optimizer_, *batches)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("--memory on a CPU needs Linux (/proc/self/status, clear_refs).")
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory back to the system
    Path("/proc/self/clear_refs").write_text("5")  # reset the resident-set high-water mark
    before = _status_mib("VmRSS")
    step(model, optimizer_, *batches)
    return _status_mib("VmHWM") - before


def memory(setting, optimizer: str, args) -> list[dict]:
    """peak_mib of each step, each measured by this script in a fresh process."""
    steps = steps_of(setting, optimizer)
    peaks = {}
    for name in steps:
        command = [
            sys.executable,
            __file__,
            *("--optimizer", optimizer, "--models", setting[0], "--device", args.device),
            *("--batch", str(setting[3]), "--meta-batch", str(setting[4]), "--peak-of", name),
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        peaks[name] = json.loads(out.splitlines()[-1])["peak_mib"]
    device = torch.device(args.device)
    return [
        _row(setting, device, name, opt, "peak_mib", peaks[name], peaks[opt])
        for name, (opt, _) in steps.items()
    ]


def count_ops(setting, optimizer: str, device) -> list[dict]:
    """Operations dispatched by one step of each engine (after two steps of its own), the
    optimizer in its multi-tensor form, which torch.optim takes by default on a GPU."""
    steps = steps_of(setting, optimizer)
    copies, batches = _copies(steps, setting, device, foreach=True)
    counts = {}
    for name, (opt, step) in steps.items():
        for _ in range(2):
            step(*copies[name], *batches[opt])
        with OpCounter() as counter:
            step(*copies[name], *batches[opt])
        counts[name] = counter.arithmetic
    return [
        {
            "model": setting[0],
            "batch": setting[3],
            "val_batch": setting[4],
            "optimizer": opt,
            "torch": torch.__version__,
            "step": name,
            "ops_per_step": counts[name],
            f"ratio_vs_{opt}": round(counts[name] / counts[opt], 3),
        }
        for name, (opt, _) in steps.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(SETTINGS), default="sgd")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=None, help="default: the optimizer's")
    parser.add_argument("--batch", type=int, default=None, help="training batch size")
    parser.add_argument("--meta-batch", type=int, default=None, help="validation (meta) batch")
    parser.add_argument("--count-ops", action="store_true", help="count operations, time nothing")
    parser.add_argument("--memory", action="store_true", help="peak memory per step, time nothing")
    parser.add_argument("--peak-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for name, shape, k, batch, val_batch in SETTINGS[args.optimizer]:
        if args.models is not None and name not in args.models:
            continue
        setting = (name, shape, k, args.batch or batch, args.meta_batch or val_batch)
        if args.peak_of:
            print(json.dumps({"peak_mib": peak_mib(setting, args.optimizer, args.peak_of, device)}))
            return
        if args.count_ops:
            rows = count_ops(setting, args.optimizer, device)
        elif args.memory:
            rows = memory(setting, args.optimizer, args)
        else:
            rows = bench(setting, args.optimizer, args.repeats, args.warmup, device)
        for row in rows:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
