"""The LeNet of the L2RW authors' MNIST experiment (`mnist/reweight.py`)."""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.errors import ConfigError
from l2rw.models import MODELS


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3/2 max-pool with TensorFlow 'SAME' padding: an odd padding total puts the extra row and
    column at the bottom/right (PyTorch's `padding=1` would centre it and shift the windows)."""
    pads: list[int] = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=-math.inf), kernel_size=3, stride=2)


class LeNet(nn.Module):
    """Three conv -> max-pool -> ReLU blocks (28 -> 14 -> 7 -> 4), then FC 1024-100-C."""

    input_shape: tuple[int, ...] = (1, 28, 28)

    def __init__(self, num_classes: int, init: str = "tf") -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=5, padding=2)
            for c_in, c_out in [(1, 16), (16, 32), (32, 64)]
        )
        self.fc = nn.Linear(4 * 4 * 64, 100)
        self.classifier = nn.Linear(100, num_classes)
        if init == "tf":
            # The authors' truncated_normal(stddev=0.1), cut at 2 std, on every weight; zero biases.
            for module in [*self.convs, self.fc, self.classifier]:
                nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.zeros_(module.bias)
        elif init != "torch":
            raise ConfigError(f"lenet init must be 'tf' or 'torch', got '{init}'.")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(_max_pool_same(conv(x)))
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class LeNetOptions(ModelOptions):
    # "tf": the authors' initialisation; "torch": PyTorch's defaults.
    init: str = "tf"


@dataclass
class LeNetConf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    options: LeNetOptions = field(default_factory=LeNetOptions)


@MODELS.register("lenet", schema=LeNetConf)
def lenet(num_classes: int, init: str = "tf") -> LeNet:
    """L2RW MNIST LeNet; `init='tf'` is the authors' init, `'torch'` keeps PyTorch defaults."""
    return LeNet(num_classes, init)
