"""Any torchvision classification model by name (`model=torchvision model.options.arch=resnet50`),
with a `num_classes`-way head and optionally weights read from a local file, never downloaded.

The network is `torchvision.models.get_model(arch, weights=None, num_classes=num_classes)` (ViTs
and MaxViT also get the dataset's image size, which they fix at construction). Its classifier is
found generically: the last nn.Linear, in module order, with `num_classes` outputs (ResNet and
RegNet `fc`, VGG / EfficientNet / MobileNet / ConvNeXt `classifier[-1]`, DenseNet `classifier`,
ViT `heads.head`, Swin `head`). It is taken out of the network (replaced by nn.Identity) and kept
as `classifier`, so `features(x)` is the flattened output of everything before it (dropout in
front of the head included: identity in eval mode) and `model(x) == classifier(features(x))`.
At build time one forward pass checks that this equals torchvision's own output, and that the
network takes the dataset's image size at all (ImageNet-shaped networks such as AlexNet,
Inception-v3 or DenseNet downsample a 32x32 image to nothing): if not, a ConfigError says so.
A network whose classifier is not an nn.Linear (SqueezeNet's is a convolution) is refused, as
the RBC/GBC selectors read the last linear layer.

Grayscale images (in_channels=1) are repeated to three identical channels inside the model, so
the first convolution and a checkpoint's weights stay torchvision's (with pretrained weights this
equals summing the first convolution's filters over the colour channels).

`weights_path` names a local torchvision state dict (e.g. `resnet50-0676ba61.pth` copied from
~/.cache/torch/hub/checkpoints/); every tensor but the classifier's is loaded, under torchvision's
own key names, into the inner network (`model.net`) before its head is taken out. GoogLeNet and
Inception-v3 are built without their auxiliary heads (their checkpoint tensors are skipped too),
and, with weights, with torchvision's `transform_input=True` as torchvision does for them.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.errors import ConfigError
from l2rw.models import MODELS
from l2rw.models.checkpoints import load_state_except

# torchvision's image classification models (not detection, segmentation, video, optical flow or
# quantized ones).
ARCHS: list[str] = torchvision.models.list_models(module=torchvision.models)

# Archs that fix their input size at construction: the keyword that sets it, by name prefix.
_SIZE_KWARGS: dict[str, Callable[[int], dict[str, Any]]] = {
    "vit_": lambda side: {"image_size": side},
    "maxvit_": lambda side: {"input_size": (side, side)},
}
# No auxiliary heads (their train-mode output is a tuple); init_weights=True is the current
# default, passed to silence torchvision's warning that it will change.
_AUX = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
_BUILD_KWARGS = {arch: {"aux_logits": False, "init_weights": True} for arch in _AUX}
_FORWARD_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError)


class TorchvisionModel(nn.Module):
    """A torchvision network `net` with its classifier taken out (nn.Identity in its place) and
    kept as `classifier`; the repository's model contract (`features`, `classifier`,
    `input_shape`). Single-channel images are repeated to three channels."""

    def __init__(
        self, net: nn.Module, classifier: nn.Linear, arch: str, input_shape: tuple[int, int, int]
    ) -> None:
        super().__init__()
        self.arch = arch
        self.input_shape = input_shape
        self.net = net
        self.classifier = classifier  # registered last: the model's last nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape[0] == 1:
            x = x.expand(-1, 3, -1, -1)
        return torch.flatten(self.net(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {next(iter(str(err).strip().splitlines()), '')}"


def _size_error(arch: str, shape: tuple[int, ...], err: BaseException) -> ConfigError:
    return ConfigError(
        f"model=torchvision arch={arch} cannot take the dataset's input shape {list(shape)} "
        f"({_first_line(err)}). Resize the images to a size this network takes, e.g. "
        f"torchvision's ImageNet size 224 (dataset.options.image_size=224 for imagenet10, "
        f"dataset.options.size=224 for an image folder), or pick an arch that takes small "
        f"images (resnet18, mobilenet_v3_small, efficientnet_b0, regnet_x_400mf and swin_t "
        f"take 32x32)."
    )


def _take_out(net: nn.Module, path: str) -> None:
    """Replace the submodule at dotted `path` by nn.Identity."""
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent), name, nn.Identity())


@dataclass
class TorchvisionOptions(ModelOptions):
    # A torchvision classification model's name (torchvision.models.list_models()).
    arch: str = "resnet18"
    # A local torchvision state dict loaded into everything but the classifier; null: random
    # init. Never downloaded.
    weights_path: str | None = None
    # The dataset's image side and channels (square images; 1 channel is repeated to 3).
    image_size: int = "${dataset.input_shape.1}"  # type: ignore[assignment]
    in_channels: int = "${dataset.input_shape.0}"  # type: ignore[assignment]
    # More keyword arguments of torchvision's builder, e.g. {dropout: 0.2} for VGG or
    # EfficientNet, {stochastic_depth_prob: 0.1} for Swin.
    arch_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TorchvisionConf(ModelConf):
    input_shape: list[int] = "${dataset.input_shape}"  # type: ignore[assignment]
    options: TorchvisionOptions = field(default_factory=TorchvisionOptions)


@MODELS.register("torchvision", schema=TorchvisionConf)
def torchvision_model(
    num_classes: int,
    arch: str = "resnet18",
    weights_path: str | os.PathLike | None = None,
    image_size: int = 224,
    in_channels: int = 3,
    arch_options: dict[str, Any] | None = None,
) -> TorchvisionModel:
    """torchvision's `arch` with a `num_classes`-way linear classifier for square images of
    `in_channels` (1 or 3) x `image_size` x `image_size`; `weights_path`: a local torchvision
    state dict loaded into everything but the classifier (null: torchvision's random init);
    `arch_options`: more keyword arguments of torchvision's builder."""
    if arch not in ARCHS:
        raise ConfigError(
            f"model.options.arch={arch!r} is not a torchvision classification model. Known: "
            f"{', '.join(ARCHS)} (torchvision {torchvision.__version__}; detection, "
            f"segmentation, video and quantized models cannot be used). Pick one of these."
        )
    if in_channels not in (1, 3):
        raise ConfigError(
            f"model=torchvision takes images of 1 or 3 channels, but the dataset's have "
            f"{in_channels}. Pick another model, or set model.options.in_channels."
        )
    shape = (in_channels, image_size, image_size)
    kwargs: dict[str, Any] = dict(_BUILD_KWARGS.get(arch, {}))
    for prefix, size_kwargs in _SIZE_KWARGS.items():
        if arch.startswith(prefix):
            kwargs.update(size_kwargs(image_size))
    if weights_path is not None and arch in _AUX:
        kwargs["transform_input"] = True  # as torchvision builds them for its ImageNet weights
    kwargs.update(arch_options or {})
    try:
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as err:  # an arch_options key the builder does not take
        raise ConfigError(
            f"model=torchvision arch={arch} does not take model.options.arch_options="
            f"{dict(arch_options or {})} ({_first_line(err)}). Use keyword arguments of "
            f"torchvision.models.{arch} (its documentation lists them), or drop them."
        ) from None
    except _FORWARD_ERRORS as err:  # a ViT's patch size, a MaxViT's window, against the size
        raise _size_error(arch, shape, err) from None

    heads = [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not heads:
        raise ConfigError(
            f"model=torchvision arch={arch} has no nn.Linear classifier with {num_classes} "
            f"outputs (its head is another layer, e.g. SqueezeNet's convolution); the "
            f"selectors and meta engines need a linear classifier. Pick another arch."
        )
    head_path, head = heads[-1]
    if weights_path is not None:
        load_state_except(
            net,
            weights_path,
            skip_prefixes=(f"{head_path}.", *_AUX.get(arch, ())),
            what=f"torchvision's {arch}",
            files=f"torchvision's {arch}-<hash>.pth",
        )

    # One forward pass in eval mode: the network takes this size, and the wrapper computes
    # torchvision's own output (the classifier is the last operation). A private generator
    # leaves the global random stream, hence the model's initialisation, alone.
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    net.eval()
    try:
        with torch.no_grad():
            expected = net(x.expand(-1, 3, -1, -1))
    except _FORWARD_ERRORS as err:
        raise _size_error(arch, shape, err) from None
    _take_out(net, head_path)
    model = TorchvisionModel(net, head, arch, shape).eval()
    with torch.no_grad():
        got = model(x)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise ConfigError(
            f"model=torchvision arch={arch}: its last {num_classes}-output nn.Linear "
            f"({head_path}) is not the network's final operation, so it cannot be split into "
            f"features and a linear classifier. Pick another arch."
        )
    return model.train()
