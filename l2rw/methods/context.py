"""What a method pipeline is handed: config, data on the device, model, run folder, tracker."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from l2rw.data.splits import DataBundle
from l2rw.data.transforms import Preprocess
from l2rw.tracking.sinks import Tracker


@dataclass
class RunContext:
    cfg: DictConfig
    data: DataBundle
    model: nn.Module
    device: torch.device
    run_dir: Path
    tracker: Tracker
    # What determines the training done in this context (`setting_of` the run's resolved config;
    # a shared warm-up's own); its checkpoints carry it and refuse to resume under another.
    setting: dict[str, Any]

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(self.cfg.dataset)
