"""Label noise: each type is one registered function that draws the noise process once.

A noise function takes `(num_classes, rate, rng, **options)`, draws whatever the process fixes for
the whole run (BackgroundFlip's class, the adversarial permutation, the label file) and returns a
`NoiseProcess`. Applying that process to several splits (training and hyper-validation) corrupts
them with the same class / permutation / file, and only the examples picked differ. A process's
`corrupt` may change the labels in place: `NoiseProcess.__call__` hands it a private int64 copy.
"""

import csv
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2rw.errors import ConfigError, DataError
from l2rw.registry import Registry

NOISES = Registry("noise")

# corrupt(labels, rng, source_index) -> observed labels; source_index holds the positions of
# `labels` in the full source training set (used by `real`).
Corrupt = Callable[[np.ndarray, np.random.Generator, np.ndarray | None], np.ndarray]


@dataclass
class NoiseProcess:
    """One run's noise: `params` are what was drawn or given (written into the record)."""

    name: str
    rate: float
    corrupt: Corrupt
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(
        self,
        labels: np.ndarray,
        rng: np.random.Generator,
        source_index: np.ndarray | None = None,
    ) -> np.ndarray:
        """Observed labels for `labels` (left untouched)."""
        return self.corrupt(np.array(labels, dtype=np.int64), rng, source_index)


def noise_process(
    name: str, num_classes: int, rate: float, rng: np.random.Generator, **options: Any
) -> NoiseProcess:
    """Draw the noise process `name` at `rate`, once for every split it will corrupt."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(
            f"noise rate {rate} is outside [0, 1]: set noise.rate to the fraction of training "
            "labels to corrupt, e.g. noise.rate=0.4 for 40%."
        )
    corrupt, params = NOISES.get(name)(num_classes, rate, rng, **options)
    return NoiseProcess(name, rate, corrupt, params)


def apply_noise(
    name: str,
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    source_index: np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Observed labels after noise `name` at `rate` on one split; `labels` is left untouched."""
    return noise_process(name, num_classes, rate, rng, **options)(labels, rng, source_index)


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
def _none(num_classes: int, rate: float, rng: np.random.Generator):
    return (lambda labels, rng, source_index: labels), {}


@NOISES.register("uniform_flip")
def _uniform_flip(num_classes: int, rate: float, rng: np.random.Generator):
    """Both papers' text: exactly round(rate N) labels flip, each to one of the K-1 *other*
    classes, uniformly."""
    _need_two_classes("uniform_flip", num_classes)

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        picked = _pick(len(labels), rate, rng)
        offset = rng.integers(1, num_classes, size=len(picked))
        labels[picked] = (labels[picked] + offset) % num_classes
        return labels

    return corrupt, {}


@NOISES.register("uniform")
def _uniform(num_classes: int, rate: float, rng: np.random.Generator):
    """The transition matrix C = rate/K 11^T + (1-rate) I (RBC authors' code, MW-Net): the true
    label may be redrawn, so the expected realized rate is rate (K-1)/K and the count is random."""

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        redraw = rng.random(len(labels)) < rate
        labels[redraw] = rng.integers(0, num_classes, size=int(redraw.sum()))
        return labels

    return corrupt, {}


@NOISES.register("background")
def _background(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    background_class: int | None = None,
):
    """L2RW's BackgroundFlip: a `rate` fraction all get one class b (drawn once when not given)."""
    b = int(rng.integers(num_classes)) if background_class is None else background_class
    if not 0 <= b < num_classes:
        raise ConfigError(
            f"noise background_class={b} is not a class of this dataset (0..{num_classes - 1})."
        )

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        labels[_pick(len(labels), rate, rng)] = b
        return labels

    return corrupt, {"background_class": b}


@NOISES.register("adversarial")
def _adversarial(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    mapping: str = "next",
):
    """RBC's adversarial noise: picked examples of class c all get m(c) ("0 are all given 1").

    `next`: m(c) = (c + 1) mod K; `derangement`: a random permutation without fixed points,
    drawn once.
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

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        picked = _pick(len(labels), rate, rng)
        labels[picked] = target[labels[picked]]
        return labels

    return corrupt, {"mapping": mapping, "permutation": target.tolist()}


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
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    path: str | os.PathLike | None = None,
    key: str | None = None,
):
    """Human labels from a file indexing the full source training set (e.g. CIFAR-N);
    `rate` is not used: the file decides which labels are wrong. Every split taken from the
    training images reads its labels from the same file, by source position."""
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
    if not np.issubdtype(noisy.dtype, np.number) or np.any(noisy != np.round(noisy)):
        raise DataError(f"noise 'real': {path} holds non-integer labels.")

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        if source_index is None:
            source_index = np.arange(len(labels))
            fits = len(noisy) == len(labels)
        else:
            source_index = np.asarray(source_index)
            fits = len(source_index) == len(labels) and source_index.max(initial=-1) < len(noisy)
        if not fits:
            raise DataError(
                f"noise 'real': {path} holds {len(noisy)} labels, which does not match the "
                f"{len(labels)} training examples; the file must index the full source training "
                "set (e.g. 50000 entries for CIFAR), and subsets must pass source_index."
            )
        picked = noisy[source_index].astype(np.int64)
        if len(picked) and (picked.min() < 0 or picked.max() >= num_classes):
            raise DataError(f"noise 'real': {path} has labels outside 0..{num_classes - 1}.")
        return picked

    return corrupt, {"path": str(path), "key": key}
