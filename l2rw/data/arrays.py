"""`dataset=arrays`: one `.npz` (or `.pt`) file with `x_train, y_train, x_test, y_test`.

Images are (N, H, W) or (N, H, W, C) uint8 arrays (numpy's channel-last; (N, C, H, W) with
`dataset.options.layout=nchw`), feature vectors (N, D) of any real dtype, read as float32 (tabular
data: `model=mlp`, sized from the data). Labels are integers 0..K-1; K is the largest label + 1.
With `y_train_clean` beside `y_train`, the file gives both a noisy and a true label per training
example: `y_train` is what `noise=source` trains on, and the realized noise, the weight AUC and
the cleaning of selected meta samples use `y_train_clean`. Without it, `y_train` is the only label
set, taken as true (`truth_known=False`: a selector's "cleaning" keeps it).
"""

import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING

from l2rw.config.options import DatasetOptions, OwnDataConf
from l2rw.data.noise import integer_labels
from l2rw.data.sources import SOURCES, RawSource
from l2rw.data.verify import VerifyCache
from l2rw.errors import DataError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = ("auto", "nhwc", "nchw")


@dataclass
class ArraysOptions(DatasetOptions):
    # The .npz or .pt file.
    path: str = MISSING
    # How 4-D image arrays are laid out: "nhwc" (numpy's), "nchw" (torch's) or "auto" (nhwc
    # unless the last axis cannot be channels, i.e. is not 1, 3 or 4, and the second can).
    layout: str = "auto"


@dataclass
class ArraysConf(OwnDataConf):
    """Arrays from one file; class count, input shape and the inputs' mean and std
    (normalize=standard: per channel for images, per feature for vectors, over the training
    split) come from it unless given."""

    options: ArraysOptions = field(default_factory=ArraysOptions)


def _fix(path: Path) -> str:
    return (
        f"dataset=arrays reads one .npz (numpy.savez) or .pt (torch.save of a dict) file with the "
        f"arrays {', '.join(REQUIRED)} (optionally y_train_clean); {path} is read."
    )


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(content, dict):
                raise ValueError(f"it holds a {type(content).__name__}, not a dict")
            return {
                str(k): v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                for k, v in content.items()
            }
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"Dataset 'arrays': {path} cannot be read ({type(e).__name__}: "
            f"{next(iter(str(e).splitlines()), '')}). {_fix(path)}"
        ) from None


def _labels(path: Path, key: str, values: np.ndarray, n: int) -> np.ndarray:
    if values.ndim != 1 or len(values) != n:
        raise DataError(
            f"Dataset 'arrays': {key} in {path} has shape {list(values.shape)}, but the matching "
            f"x array holds {n} examples: it must be one integer label per example, shape [{n}]."
        )
    labels = integer_labels(values)
    if labels is None or (len(labels) and labels.min() < 0):
        raise DataError(
            f"Dataset 'arrays': {key} in {path} must hold class indices 0..K-1 (integers); "
            f"it holds {values.dtype} values from {values.min()} to {values.max()}. Map class "
            "names to indices first (e.g. numpy.unique(names, return_inverse=True))."
        )
    return labels


def _inputs(path: Path, key: str, x: np.ndarray, layout: str) -> torch.Tensor:
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"Dataset 'arrays': {key} in {path} is not numeric ({x.dtype}).")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.ndim not in (3, 4):
        raise DataError(
            f"Dataset 'arrays': {key} in {path} has shape {list(x.shape)}; expected images "
            "(N, H, W) or (N, H, W, C), or feature vectors (N, D)."
        )
    if x.dtype != np.uint8:
        raise DataError(
            f"Dataset 'arrays': the images {key} in {path} are {x.dtype}; images are read as "
            "uint8 pixels 0..255. Convert them, e.g. (x * 255).round().astype(numpy.uint8) for "
            "floats in [0, 1], or flatten them to (N, D) to read them as feature vectors."
        )
    if x.ndim == 3:
        x = x[:, None]
    elif layout == "nhwc" or (
        layout == "auto" and (x.shape[3] in (1, 3, 4) or x.shape[1] not in (1, 3, 4))
    ):
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


@lru_cache(maxsize=2)
def _read_file(path: Path, layout: str, stamp: tuple[int, int]) -> tuple[RawSource, RawSource]:
    """Both splits, read once per process for each state of the file (`stamp`: size, mtime)."""
    arrays = _read(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise DataError(
            f"Dataset 'arrays': {path} has no {', '.join(missing)} (it holds "
            f"{', '.join(sorted(arrays)) or 'nothing'}). {_fix(path)}"
        )
    x_train = _inputs(path, "x_train", arrays["x_train"], layout)
    x_test = _inputs(path, "x_test", arrays["x_test"], layout)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"Dataset 'arrays': x_train in {path} holds examples of shape "
            f"{list(x_train.shape[1:])} but x_test of {list(x_test.shape[1:])}; both splits "
            "need the same shape."
        )
    y_train = _labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _labels(path, "y_test", arrays["y_test"], len(x_test))
    clean = arrays.get("y_train_clean")
    y_clean = None if clean is None else _labels(path, "y_train_clean", clean, len(x_train))
    label_sets = [y for y in (y_train, y_test, y_clean) if y is not None]
    k = int(max(y.max(initial=0) for y in label_sets)) + 1
    classes = [str(c) for c in range(k)]
    common: dict[str, Any] = {"num_classes": k, "classes": classes}
    if y_clean is None:
        train = RawSource(x=x_train, y=y_train, truth_known=False, **common)
    else:
        train = RawSource(x=x_train, y=y_clean, y_observed=y_train, **common)
    return train, RawSource(x=x_test, y=y_test, truth_known=y_clean is not None, **common)


@SOURCES.register("arrays", schema=ArraysConf)
def _arrays(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike,
    layout: str = "auto",
    download: bool = True,
) -> RawSource:
    """`root` (paths.data_dir), `verify` and `download` are unused: the file is `path`, and its
    structure (keys, shapes, label range) is checked whenever it is read."""
    file = Path(path).expanduser().absolute()
    if layout not in LAYOUTS:
        raise DataError(f"dataset.options.layout={layout!r} is not one of {', '.join(LAYOUTS)}.")
    if not file.is_file():
        raise DataError(
            f"Dataset 'arrays': dataset.options.path={path}: no such file. {_fix(file)}"
        )
    stat = file.stat()
    return _read_file(file, layout, (stat.st_size, stat.st_mtime_ns))[0 if train else 1]
