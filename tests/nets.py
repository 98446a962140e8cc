"""Small models shared by the meta-gradient tests, in float64, the devices to test on, and the
independent computations the engines are checked against (the real optimizer's step, finite
differences)."""

import copy

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from l2rw.models import build_model


class SmallBNNet(nn.Module):
    """A small CNN with BatchNorm (train mode couples the examples of a batch)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, k)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(h.flatten(1))


def lenet(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", num_classes).double()


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = SmallBNNet().double()
    with torch.no_grad():  # non-trivial running stats, to see they are not touched
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net


# Device-parametrised tests run on the CPU, and on the GPU when there is one.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def dual_jvp(fn, primals, tangents):
    """fn's output and its tangent along `tangents` (dual numbers); a None primal, or one
    without a tangent, is passed as is."""
    with fwAD.dual_level():
        duals = [
            p if p is None or t is None else fwAD.make_dual(p, t)
            for p, t in zip(primals, tangents, strict=True)
        ]
        out = fwAD.unpack_dual(fn(*duals))
    return out.primal, out.tangent


def real_lookahead(model: nn.Module, opt: torch.optim.Optimizer, x, y, w) -> nn.Module:
    """theta_hat by the real optimizer's step on mean_i(w_i l_i), on deep copies of model and
    optimizer (train mode)."""
    model_hat, opt_hat = copy.deepcopy((model, opt))
    model_hat.train()
    opt_hat.zero_grad()
    (w * F.cross_entropy(model_hat(x), y, reduction="none")).mean().backward()
    opt_hat.step()
    return model_hat


def meta_loss_after_step(model, opt, x, y, w, xm, ym) -> torch.Tensor:
    """The mean meta loss (train mode) at the real optimizer's look-ahead."""
    model_hat = real_lookahead(model, opt, x, y, w)
    with torch.no_grad():
        return F.cross_entropy(model_hat(xm), ym)


def central_differences(f, w: torch.Tensor, h: float) -> torch.Tensor:
    """(f(w + h e_i) - f(w - h e_i)) / 2h for every i."""
    out = []
    for i in range(len(w)):
        e = torch.zeros_like(w)
        e[i] = h
        out.append((f(w + e) - f(w - e)) / (2 * h))
    return torch.stack(out)
