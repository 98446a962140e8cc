"""A two-hidden-layer MLP: the 2-D toy dataset's model, and any feature vectors' (tabular data,
`dataset=arrays` with x of shape (N, D)); images are flattened."""

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.models import MODELS


class MLP(nn.Module):
    """prod(input_shape) -> hidden -> hidden (ReLU) -> num_classes, PyTorch default init."""

    def __init__(self, num_classes: int, hidden: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class MLPOptions(ModelOptions):
    # Width of both hidden layers.
    hidden: int = 32
    # The dataset's input: (D,) feature vectors, or images flattened.
    input_shape: list[int] = "${dataset.input_shape}"  # type: ignore[assignment]


@dataclass
class MLPConf(ModelConf):
    input_shape: list[int] = "${dataset.input_shape}"  # type: ignore[assignment]
    options: MLPOptions = field(default_factory=MLPOptions)


@MODELS.register("mlp", schema=MLPConf)
def mlp(num_classes: int, hidden: int = 32, input_shape: tuple[int, ...] = (2,)) -> MLP:
    """MLP; `hidden` is the width of both hidden layers."""
    return MLP(num_classes, hidden, tuple(input_shape))
