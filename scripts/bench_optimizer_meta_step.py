"""Time the meta steps through AdamW on a Vision Transformer against a plain AdamW step, and
against the peers' way of getting the same meta-gradient.

A small ViT (`model=vit`: 64 wide, 4 blocks, 4 heads, 4 px patches) on Fashion-MNIST-sized input
(1x28x28, 10 classes), batch 100, meta batch 100, AdamW (lr 1e-3, weight decay 0.05) with its
moments built by two steps. All steps run interleaved in one process, so that machine load hits
them alike; each output line is one JSON object with the median milliseconds per step and its
ratio to the plain AdamW step measured in the same run:

- adamw: the plain step;
- l2rw_fast / l2rw_reference: an L2RW step whose look-ahead is one AdamW step from the
  optimizer's state (`lookahead="optimizer"`), by the forward-mode engine / by a second-order
  backward through our functional copy of AdamW;
- meta_reweight_fast / meta_reweight_reference: the persistent-weight step (RBC's engine)
  through AdamW, both engines;
- torchopt_l2rw: the same L2RW step the way the meta-learning libraries do it, TorchOpt's
  differentiable AdamW (`torchopt.adamw`, functional, not in place) for the look-ahead and a
  second-order backward to the example weights, then the real AdamW step (if torchopt imports);
- higher_l2rw_adam: the same with `higher`'s differentiable optimizer; higher 0.2.1 has no
  AdamW, so this row's optimizer is Adam (L2 weight decay), and so is its plain step
  `adam`, which it is also given as a ratio against (if higher imports).

    python scripts/bench_optimizer_meta_step.py [--repeats 20] [--threads N] [--device cuda]
"""

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F
from bench_meta_step import l2rw_engine, meta_reweight_engine, plain_step, sync
from torch.func import functional_call

from l2rw.meta import normalize_weights
from l2rw.meta.passes import math_attention
from l2rw.models import build_model
from l2rw.tracking.record import device_description

SHAPE, CLASSES, BATCH, META_BATCH = (1, 28, 28), 10, 100, 100
ADAMW = dict(lr=1e-3, weight_decay=0.05)


def _weighted_step(model, optimizer, x, y, eps_grad):
    weights = normalize_weights(-eps_grad.detach())
    optimizer.zero_grad(set_to_none=True)
    (weights * F.cross_entropy(model(x), y, reduction="none")).sum().backward()
    optimizer.step()


def torchopt_l2rw():
    """TorchOpt's differentiable AdamW look-ahead (moments from zero: the cost is the same) and
    a second-order backward to eps; returns None when torchopt does not import."""
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


def higher_l2rw():
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


def _setup(optimizer_class, device):
    torch.manual_seed(0)
    model = build_model("vit", CLASSES).to(device).train()
    optimizer = optimizer_class(model.parameters(), **ADAMW)
    x = torch.randn(BATCH, *SHAPE, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)
    x_val = torch.randn(META_BATCH, *SHAPE, device=device)
    y_val = torch.randint(0, CLASSES, (META_BATCH,), device=device)
    for _ in range(2):
        plain_step(model, optimizer, x, y, x_val, y_val)
    return model, optimizer, (x, y, x_val, y_val)


def bench(repeats: int, warmup: int, device: torch.device) -> list[dict]:
    steps = {
        "adamw": (torch.optim.AdamW, plain_step),
        "l2rw_fast": (torch.optim.AdamW, l2rw_engine("fast", "optimizer")),
        "l2rw_reference": (torch.optim.AdamW, l2rw_engine("reference", "optimizer")),
        "meta_reweight_fast": (torch.optim.AdamW, meta_reweight_engine("fast")),
        "meta_reweight_reference": (torch.optim.AdamW, meta_reweight_engine("reference")),
        "torchopt_l2rw": (torch.optim.AdamW, torchopt_l2rw()),
        "adam": (torch.optim.Adam, plain_step),
        "higher_l2rw_adam": (torch.optim.Adam, higher_l2rw()),
    }
    steps = {name: s for name, s in steps.items() if s[1] is not None}
    # Each step gets its own copy of the model and optimizer, so all time the same state.
    states = {cls: _setup(cls, device) for cls in {cls for cls, _ in steps.values()}}
    copies = {name: copy.deepcopy(states[cls][:2]) for name, (cls, _) in steps.items()}
    times = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, (cls, step) in steps.items():
            model, optimizer = copies[name]
            sync(device)
            start = time.perf_counter()
            step(model, optimizer, *states[cls][2])
            sync(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name, ms in medians.items():
        plain = "adam" if steps[name][0] is torch.optim.Adam else "adamw"
        rows.append(
            {
                "model": "vit (64 wide, 4 blocks, 4 heads, 4 px patches)",
                "input": list(SHAPE),
                "batch": BATCH,
                "meta_batch": META_BATCH,
                "optimizer": plain,
                "device": device_description(device),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "step": name,
                "ms_per_step": round(ms, 3),
                f"ratio_vs_{plain}": round(ms / medians[plain], 3),
                "repeats": repeats,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for row in bench(args.repeats, args.warmup, torch.device(args.device)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
