"""The RBC/GBC authors' CIFAR ResNet-34 (`src/models/resnet3.py`)."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.config.options import ModelConf
from l2rw.models import MODELS


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus a parameter-free shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """avg_pool2d(2) when strided, then zero channels appended after the input's."""
        if self.stride == 2:
            x = F.avg_pool2d(x, 2)
        return F.pad(x, (0, 0, 0, 0, 0, self.c_out - self.c_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(h + self.shortcut(x))


class ResNet34(nn.Module):
    """CIFAR stem (conv3x3, no max-pool), BasicBlock stages [3,4,6,3], avgpool, bias-free FC."""

    input_shape: tuple[int, ...] = (3, 32, 32)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        blocks, c_in = [], 64
        for n_blocks, width, stride in [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]:
            for i in range(n_blocks):
                blocks.append(BasicBlock(c_in, width, stride if i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(512, num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=0)
        # BN keeps PyTorch's init (weight 1, bias 0, running_var 1). The authors' code also sets
        # running_var = 0, which only matters for eval before any training step; not copied.

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class ResNet34Conf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [3, 32, 32])


@MODELS.register("resnet34", schema=ResNet34Conf)
def resnet34(num_classes: int) -> ResNet34:
    """RBC CIFAR ResNet-34 (also used for 32x32 ImageNet-10)."""
    return ResNet34(num_classes)
