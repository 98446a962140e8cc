"""What a dataset's files say about it: class count, input shape, the inputs' mean and std.

Datasets read from a user's files (`dataset=folder`, `dataset=arrays`) take these protocol values
from the data through the `${dataset_info:FIELD}` resolver instead of their schema, so the model
is sized, checked and the inputs standardised with no setting; the resolved values are written
into the run's record like any other. The training split is read once per process
(the sources keep it), so resolving costs one read of the files.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from l2rw.data.sources import RawSource, load_source
from l2rw.errors import ConfigError


@dataclass
class SourceInfo:
    num_classes: int
    input_shape: list[int]
    # Per channel (images, on the [0, 1] scale) or per feature (vectors): over the training split.
    mean: list[float]
    std: list[float]


# Each field's value while the dataset's files are not named yet (see `dataset_info`).
EMPTY: dict[str, Any] = {"num_classes": 0, "input_shape": [], "mean": [], "std": []}


@lru_cache(maxsize=2)
def describe(source: RawSource) -> SourceInfo:
    """The protocol values of a training split; a constant input's std is taken as 1. Cached
    per source object: `${dataset_info:...}` is resolved at every access to a field, and the
    loaders return the same object while the files are unchanged."""
    x = source.x
    values = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    dims = [d for d in range(values.dim()) if d != 1]
    std = values.std(dim=dims) if len(values) > 1 else torch.ones(values.shape[1])
    std = torch.where(std > 0, std, torch.ones_like(std))
    return SourceInfo(
        num_classes=source.num_classes,
        input_shape=list(x.shape[1:]),
        mean=[round(float(v), 6) for v in values.mean(dim=dims)],
        std=[round(float(v), 6) for v in std],
    )


def source_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """How a run reads its dataset's files: data folder, verification and its cache, options."""
    missing = [k for k in cfg.dataset.options if OmegaConf.is_missing(cfg.dataset.options, k)]
    if missing:
        raise ConfigError(
            f"dataset={cfg.dataset.name} needs "
            f"{' and '.join(f'dataset.options.{k}=...' for k in missing)} (e.g. "
            f"dataset.options.path=/path/to/your/data): it reads your files from there."
        )
    return {
        "root": cfg.paths.data_dir,
        "verify": cfg.paths.verify_data,
        "verify_cache": Path(cfg.paths.output_root) / "cache" / "verified-data.json",
        **OmegaConf.to_container(cfg.dataset.options, resolve=True),
    }


def dataset_info(field: str, *, _root_: DictConfig) -> Any:
    """`${dataset_info:num_classes|input_shape|mean|std}`: that value of the run's dataset,
    computed from its training files."""
    if field not in SourceInfo.__dataclass_fields__:
        raise ConfigError(
            f"${{dataset_info:{field}}}: no such field; use one of "
            f"{', '.join(SourceInfo.__dataclass_fields__)}."
        )
    options = _root_.dataset.options
    if any(OmegaConf.is_missing(options, k) for k in options):
        # Hydra resolves some interpolations while it merges the dataset's schema, before the
        # command line sets dataset.options.path: an empty value of the field's type then. A
        # run whose path is still missing stops at resolution, naming the key.
        return EMPTY[field]
    kwargs = source_kwargs(_root_)
    source = load_source(_root_.dataset.name, kwargs.pop("root"), train=True, **kwargs)
    return getattr(describe(source), field)
