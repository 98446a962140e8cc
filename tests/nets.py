"""Small models shared by the meta-gradient tests, in float64, and the devices to test on."""

import pytest
import torch
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
