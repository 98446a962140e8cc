"""A two-hidden-layer MLP for the 2-D toy dataset."""

from dataclasses import dataclass, field

import torch
from torch import nn

from l2rw.config.options import ModelConf, ModelOptions
from l2rw.models import MODELS


class MLP(nn.Module):
    """in_features -> hidden -> hidden (ReLU) -> num_classes, PyTorch default init."""

    def __init__(self, num_classes: int, hidden: int = 32, in_features: int = 2) -> None:
        super().__init__()
        self.in_features = in_features
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(hidden, num_classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class MLPOptions(ModelOptions):
    # Width of both hidden layers.
    hidden: int = 32
    in_features: int = 2


@dataclass
class MLPConf(ModelConf):
    input_shape: list[int] = field(default_factory=lambda: [2])
    options: MLPOptions = field(default_factory=MLPOptions)


@MODELS.register("mlp", schema=MLPConf)
def mlp(num_classes: int, hidden: int = 32, in_features: int = 2) -> MLP:
    """Toy MLP; `hidden` is the width of both hidden layers."""
    return MLP(num_classes, hidden, in_features)
