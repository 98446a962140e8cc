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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.errors import ConfigError
from l2rw.models import MODELS

# A BatchNorm's batch counter: absent from checkpoints older than PyTorch 0.4 (resnet34-333f7ec4).
_OPTIONAL = "num_batches_tracked"


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


def _fix(path: Path) -> str:
    return (
        f"Fix: set model.options.weights_path to a local copy of torchvision's ImageNet "
        f"ResNet-34 state dict (resnet34-b627a593.pth or resnet34-333f7ec4.pth; copy it from a "
        f"machine where torchvision downloaded it into ~/.cache/torch/hub/checkpoints/), or to "
        f"null to train from a random init (this run reads {path}; nothing is downloaded)."
    )


def load_backbone(model: ResNet34ImageNet, weights_path: str | os.PathLike) -> list[str]:
    """Load every tensor of the state dict saved at `weights_path` except `fc.*` into `model`;
    returns the keys loaded. A missing or unreadable file, or keys or shapes that do not fit
    torchvision's ResNet-34, are a one-paragraph ConfigError."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.options.weights_path={weights_path}: no such file"
            f"{'' if path.is_absolute() else f' (relative to {Path.cwd()})'}. {_fix(path)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and tensor errors all mean "not a usable state dict"
        detail = next(iter(str(err).strip().splitlines()), "")
        raise ConfigError(
            f"model.options.weights_path={weights_path} cannot be read as a PyTorch state dict "
            f"({type(err).__name__}: {detail}). {_fix(path)}"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(
            f"model.options.weights_path={weights_path} holds a {type(state).__name__}, not a "
            f"state dict (a mapping of parameter names to tensors). {_fix(path)}"
        )
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(k for k in expected.keys() - backbone.keys() if not k.endswith(_OPTIONAL))
    unexpected = sorted(backbone.keys() - expected.keys())
    shapes = sorted(
        f"{k} {tuple(backbone[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in backbone.keys() & expected.keys()
        if backbone[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        problems = [
            f"{label} {len(items)}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", shapes),
            )
            if items
        ]
        raise ConfigError(
            f"model.options.weights_path={weights_path} does not fit torchvision's ResNet-34 "
            f"(keys such as conv1.weight, layer1.0.bn1.running_mean; fc is not loaded): "
            f"{'; '.join(problems)}. It may be another architecture's checkpoint (ResNet-18/50) "
            f"or a wrapped one (keys prefixed 'module.'). {_fix(path)}"
        )
    model.load_state_dict(backbone, strict=False)
    return sorted(backbone)


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
