"""Label noise: each type is one registered function returning the observed labels.

A noise function takes `(labels, num_classes, rate, rng, **options)` and may change `labels` in
place: `apply_noise` hands it a private int64 copy. Only `rng` supplies randomness.
"""

import csv
import inspect
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2rw.errors import ConfigError, DataError
from l2rw.registry import Registry

NOISES = Registry("noise")


def apply_noise(
    name: str,
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    source_index: np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Observed labels after noise `name` at `rate`; `labels` is left untouched.

    `source_index` holds the positions of `labels` in the full source training set; only noise
    types that read per-example labels from a file (`real`) use it.
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(
            f"noise rate {rate} is outside [0, 1]: set noise.rate to the fraction of training "
            "labels to corrupt, e.g. noise.rate=0.4 for 40%."
        )
    fn = NOISES.get(name)
    if "source_index" in inspect.signature(fn).parameters:
        options["source_index"] = source_index
    return fn(np.array(labels, dtype=np.int64), num_classes, rate, rng, **options)


def transition_matrix(
    labels_true: np.ndarray, labels_noisy: np.ndarray, num_classes: int
) -> np.ndarray:
    """Empirical P(noisy = j | true = i), rows normalised; a class never seen gives a zero row."""
    counts = np.bincount(
        np.asarray(labels_true) * num_classes + np.asarray(labels_noisy),
        minlength=num_classes * num_classes,
    ).reshape(num_classes, num_classes)
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(totals, 1)


def _pick(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(rate * n) distinct positions, uniformly at random."""
    return rng.choice(n, size=round(rate * n), replace=False)


def _need_two_classes(name: str, num_classes: int) -> None:
    if num_classes < 2:
        raise ConfigError(f"noise '{name}' needs at least 2 classes, got {num_classes}.")


@NOISES.register("none")
def _none(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    return labels


@NOISES.register("uniform_flip")
def _uniform_flip(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Both papers' text: a `rate` fraction flips to one of the K-1 *other* classes, uniformly."""
    _need_two_classes("uniform_flip", num_classes)
    picked = _pick(len(labels), rate, rng)
    offset = rng.integers(1, num_classes, size=len(picked))
    labels[picked] = (labels[picked] + offset) % num_classes
    return labels


@NOISES.register("uniform")
def _uniform(
    labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Meta-Weight-Net's C = rate/K 11^T + (1-rate) I: the true label may be redrawn, so the
    expected realized rate is rate (K-1)/K and the count is random."""
    redraw = rng.random(len(labels)) < rate
    labels[redraw] = rng.integers(0, num_classes, size=int(redraw.sum()))
    return labels


@NOISES.register("background")
def _background(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    background_class: int | None = None,
) -> np.ndarray:
    """L2RW's BackgroundFlip: a `rate` fraction all get one class b (drawn when not given)."""
    b = int(rng.integers(num_classes)) if background_class is None else background_class
    if not 0 <= b < num_classes:
        raise ConfigError(
            f"noise background_class={b} is not a class of this dataset (0..{num_classes - 1})."
        )
    labels[_pick(len(labels), rate, rng)] = b
    return labels


@NOISES.register("adversarial")
def _adversarial(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    mapping: str = "next",
) -> np.ndarray:
    """RBC's adversarial noise: picked examples of class c all get m(c) ("0 are all given 1").

    `next`: m(c) = (c + 1) mod K; `derangement`: a random permutation without fixed points.
    """
    _need_two_classes("adversarial", num_classes)
    if mapping == "next":
        target = (np.arange(num_classes) + 1) % num_classes
    elif mapping == "derangement":
        target = rng.permutation(num_classes)
        while np.any(target == np.arange(num_classes)):  # about e tries on average
            target = rng.permutation(num_classes)
    else:
        raise ConfigError(
            f"noise mapping '{mapping}' is unknown: use mapping=next or mapping=derangement."
        )
    picked = _pick(len(labels), rate, rng)
    labels[picked] = target[labels[picked]]
    return labels


def _read_label_file(path: Path, key: str | None) -> np.ndarray:
    """Labels from .npy, .csv/.txt (one per line, or column `key`) or .pt (CIFAR-N dict)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".csv", ".txt"):
        if key is None:
            return np.loadtxt(path, dtype=np.int64, ndmin=1)
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if key not in (reader.fieldnames or []):
                raise DataError(f"{path} has no column '{key}'; its columns: {reader.fieldnames}.")
            return np.array([int(row[key]) for row in reader], dtype=np.int64)
    if suffix == ".pt":
        # CIFAR-N's files hold numpy arrays (saved under numpy 1, whose module names differ from
        # numpy 2's): allow exactly what an array needs instead of unpickling arbitrary code.
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        names = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")
        dtypes = [type(np.dtype(c)) for c in np.typecodes["AllInteger"] + np.typecodes["Float"]]
        allowed = [(reconstruct, n) for n in names] + [np.ndarray, np.dtype, *dtypes]
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, weights_only=True)
        if isinstance(obj, dict):
            if key not in obj:
                raise DataError(
                    f"{path} holds several label sets: choose one with the noise option key=..., "
                    f"one of {sorted(obj)} (got key={key})."
                )
            obj = obj[key]
        return np.asarray(obj)
    raise DataError(f"{path}: unsupported label file type '{suffix}'; use .npy, .csv, .txt or .pt.")


@NOISES.register("real")
def _real(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    path: str | os.PathLike | None = None,
    key: str | None = None,
    source_index: np.ndarray | None = None,
) -> np.ndarray:
    """Human labels from a file indexing the full source training set (e.g. CIFAR-N);
    `rate` is not used: the file decides which labels are wrong."""
    if path is None:
        raise ConfigError(
            "noise 'real' needs the option path=... naming a label file (.npy, .csv, .txt or "
            ".pt such as CIFAR-N's CIFAR-10_human.pt, with key=worse_label or similar)."
        )
    path = Path(path)
    if not path.is_file():
        raise DataError(f"noise 'real': label file {path} does not exist; check the path option.")
    try:
        noisy = _read_label_file(path, key)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise DataError(f"noise 'real': cannot read labels from {path} ({e}).") from None
    noisy = noisy.reshape(-1)
    if source_index is None:
        source_index = np.arange(len(labels))
        fits = len(noisy) == len(labels)
    else:
        source_index = np.asarray(source_index)
        fits = len(source_index) == len(labels) and source_index.max(initial=-1) < len(noisy)
    if not fits:
        raise DataError(
            f"noise 'real': {path} holds {len(noisy)} labels, which does not match the "
            f"{len(labels)} training examples; the file must index the full source training set "
            "(e.g. 50000 entries for CIFAR), and subsets must pass source_index."
        )
    picked = noisy[source_index]
    if not np.issubdtype(picked.dtype, np.number) or np.any(picked != np.round(picked)):
        raise DataError(f"noise 'real': {path} holds non-integer labels.")
    picked = picked.astype(np.int64)
    if len(picked) and (picked.min() < 0 or picked.max() >= num_classes):
        raise DataError(f"noise 'real': {path} has labels outside 0..{num_classes - 1}.")
    return picked
