"""The classic LeNet-5 of the RBC / GBC authors' MNIST experiments (`src/models/LeNet5.py`)."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.config.options import ModelConf
from l2rw.models import MODELS


class LeNet5(nn.Module):
    """conv 5x5 (1->6) -> ReLU -> max-pool 2 -> conv 5x5 (6->16) -> ReLU -> max-pool 2 ->
    FC 256-120-84 (ReLU) -> C; PyTorch default init. `features` is the 84-d input of the last
    linear layer."""

    input_shape: tuple[int, ...] = (1, 28, 28)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.classifier = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class LeNet5Conf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])


@MODELS.register("lenet5", schema=LeNet5Conf)
def lenet5(num_classes: int) -> LeNet5:
    """RBC / GBC MNIST LeNet-5."""
    return LeNet5(num_classes)
