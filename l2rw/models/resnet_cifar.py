"""The L2RW authors' pre-activation CIFAR ResNets (`models/cnn/resnet_module.py`): ResNet-32 and
WRN-28-10, both with parameter-free option-A shortcuts."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.models import MODELS


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale γ can be dropped: the authors' TF batch_norm has a shift β only."""

    def __init__(self, channels: int, momentum: float, eps: float, scale: bool) -> None:
        super().__init__(channels, eps=eps, momentum=momentum)
        if not scale:
            self.weight = None


class PreActUnit(nn.Module):
    """[BN -> ReLU -> dropout ->] conv3x3(stride) -> BN -> ReLU -> conv3x3, plus the shortcut."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        preact: bool,
        dropout: float,
        norm: Callable[[int], nn.BatchNorm2d],
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        # The very first unit takes the stem's already activated output, so it skips BN-ReLU.
        self.bn1 = norm(c_in) if preact else None
        self.drop = nn.Dropout(dropout) if preact and dropout > 0 else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: average-pool by the stride, then zero-pad channels equally on both sides."""
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        pad = (self.c_out - self.c_in) // 2
        return F.pad(x, (0, 0, 0, 0, pad, pad)) if pad else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.bn1 is None else self.drop(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(x)


class PreActResNet(nn.Module):
    """Stem conv-BN-ReLU, stages of pre-activation units, head BN-ReLU-avgpool-FC."""

    input_shape: tuple[int, ...] = (3, 32, 32)

    def __init__(
        self,
        num_classes: int,
        units: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        dropout: float = 0.0,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        bn_scale: bool = True,
    ) -> None:
        super().__init__()
        norm = partial(_BatchNorm, momentum=bn_momentum, eps=bn_eps, scale=bn_scale)
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            norm(widths[0]),
            nn.ReLU(),
        )
        blocks = []
        for stage, (n_units, stride) in enumerate(zip(units, strides, strict=True)):
            for i in range(n_units):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(
                    PreActUnit(
                        c_in,
                        widths[stage + 1],
                        stride if i == 0 else 1,
                        preact=(stage, i) != (0, 0),
                        dropout=dropout,
                        norm=norm,
                    )
                )
        self.units = nn.Sequential(*blocks)
        self.head_bn = norm(widths[-1])
        self.classifier = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # truncated_normal(0, sqrt(2 / (k*k*out))), TF truncates at 2 std.
                std = math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        # TF uniform_unit_scaling(factor=1): U(±sqrt(3 / fan_in)).
        bound = math.sqrt(3.0 / widths[-1])
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.units(self.stem(x))
        return F.relu(self.head_bn(h)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class BatchNormOptions(ModelOptions):
    # The authors' TF BatchNorm is bn_momentum=0.001, bn_eps=1e-3, bn_scale=False.
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    bn_scale: bool = True


@dataclass
class ResNet32Conf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    options: BatchNormOptions = field(default_factory=BatchNormOptions)


@dataclass
class WRNOptions(BatchNormOptions):
    # Dropout after the first BN-ReLU of each unit (the authors' placement).
    dropout: float = 0.3


@dataclass
class WRN28_10Conf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    options: WRNOptions = field(default_factory=WRNOptions)


@MODELS.register("resnet32", schema=ResNet32Conf)
def resnet32(
    num_classes: int, bn_momentum: float = 0.1, bn_eps: float = 1e-5, bn_scale: bool = True
) -> PreActResNet:
    """ResNet-32; the authors' TF BN is bn_momentum=0.001, bn_eps=1e-3, bn_scale=False."""
    return PreActResNet(
        num_classes, [5, 5, 5], [16, 16, 32, 64], [1, 2, 2], 0.0, bn_momentum, bn_eps, bn_scale
    )


@MODELS.register("wrn28_10", schema=WRN28_10Conf)
def wrn28_10(
    num_classes: int,
    dropout: float = 0.3,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bn_scale: bool = True,
) -> PreActResNet:
    """WRN-28-10 with the authors' dropout placement (after the first BN-ReLU, before conv1)."""
    return PreActResNet(
        num_classes,
        [4, 4, 4],
        [16, 160, 320, 640],
        [1, 2, 2],
        dropout,
        bn_momentum,
        bn_eps,
        bn_scale,
    )
