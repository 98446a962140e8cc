"""torchvision's ImageNet ResNet-34 with a new `num_classes`-way fc, optionally started from
ImageNet weights read from a local file (the RBC authors' `resnet34_imagenet`, rbc_spec §9).

The network is `torchvision.models.resnet34(weights=None)` with `fc = nn.Linear(512,
num_classes)` (the class below is torchvision's `ResNet(BasicBlock, [3, 4, 6, 3])`, so its
state-dict keys are torchvision's); it adds the repository's model contract: `features` (the
512-d pooled output), `classifier` (the fc) and a nominal `input_shape`. Global average pooling
makes it accept any image size from 32x32 up (the stem and four stages divide it by 32).
Nothing is ever downloaded: `weights_path` names a file already on disk, e.g. torchvision's
`resnet34-b627a593.pth` or `resnet34-333f7ec4.pth`, from which everything but `fc` is loaded.
"""

import os
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.models import MODELS
from l2rw.models.checkpoints import load_state_except


class ResNet34ImageNet(ResNet):
    """ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), BasicBlock stages [3, 4, 6, 3] of
    widths 64-512, global average pooling, `fc` 512 -> C with bias; torchvision's init."""

    input_shape: tuple[int, ...] = (3, 224, 224)

    def __init__(self, num_classes: int) -> None:
        super().__init__(BasicBlock, [3, 4, 6, 3], num_classes=1000)
        self.fc = nn.Linear(512, num_classes)

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load_backbone(model: ResNet34ImageNet, weights_path: str | os.PathLike) -> list[str]:
    """Load every tensor of the state dict saved at `weights_path` except `fc.*` into `model`;
    returns the keys loaded. A missing or unreadable file, or keys or shapes that do not fit
    torchvision's ResNet-34, are a one-paragraph ConfigError (`load_state_except`)."""
    return load_state_except(
        model,
        weights_path,
        skip_prefixes=("fc.",),
        what="torchvision's ResNet-34",
        files="resnet34-b627a593.pth or resnet34-333f7ec4.pth",
        alike="ResNet-18/50",
    )


# The expected input follows dataset.options.image_size (224 when the dataset has none).
_SIDE = "${oc.select:dataset.options.image_size,224}"


@dataclass
class ResNet34ImageNetOptions(ModelOptions):
    # A local torchvision ImageNet state dict (resnet34-b627a593.pth or resnet34-333f7ec4.pth)
    # loaded into everything but fc; null: random init. Never downloaded.
    weights_path: str | None = None


@dataclass
class ResNet34ImageNetConf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [3, _SIDE, _SIDE])
    options: ResNet34ImageNetOptions = field(default_factory=ResNet34ImageNetOptions)


@MODELS.register("resnet34_imagenet", schema=ResNet34ImageNetConf)
def resnet34_imagenet(
    num_classes: int, weights_path: str | os.PathLike | None = None
) -> ResNet34ImageNet:
    """torchvision ResNet-34 with a new fc; `weights_path`: a local ImageNet state dict loaded
    into everything but fc (null: torchvision's random init)."""
    model = ResNet34ImageNet(num_classes)
    if weights_path is not None:
        load_backbone(model, weights_path)
    return model
