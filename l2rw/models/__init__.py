"""Model registry: every model maps (num_classes, options) to an nn.Module with `features`,
`classifier` and `input_shape`, so the meta-gradient engines can treat them alike. Each is
registered with its schema (`l2rw.config.options.ModelConf`: the input it expects and its
`options`, the builder's keyword arguments)."""

import inspect
from typing import Any

from torch import nn

from l2rw.errors import ConfigError
from l2rw.registry import Registry

MODELS = Registry("model", group="model")

# Imported after MODELS exists so that each module can register itself.
from l2rw.models import (  # noqa: E402, F401
    lenet,
    lenet5,
    mlp,
    resnet34,
    resnet34_imagenet,
    resnet_cifar,
    torchvision_model,
    vit,
)


def build_model(name: str, num_classes: int, **options: Any) -> nn.Module:
    """Build the registered model `name`; an option it does not take is a ConfigError."""
    builder = MODELS.get(name)
    try:
        inspect.signature(builder).bind(num_classes, **options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
        raise ConfigError(
            f"Model '{name}' does not take options {sorted(options)} ({err}). "
            f"Its options are: {', '.join(accepted) or 'none'}."
        ) from None
    return builder(num_classes, **options)
