"""Class imbalance: each type is one registered function choosing which examples to keep.

A function takes `(labels, num_classes, rng, **options)` and returns an `Imbalanced`; only `rng`
supplies randomness.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from l2rw.errors import ConfigError
from l2rw.registry import Registry

IMBALANCES = Registry("imbalance")


@dataclass
class Imbalanced:
    """Kept positions into `labels` (sorted ascending), and the class set afterwards.

    `label_map` (old class -> new class) is set when the class set changes (e.g. 4-vs-9 becomes
    0/1); examples are kept only from its keys. `None` means labels are unchanged.
    """

    index: np.ndarray
    label_map: dict[int, int] | None
    num_classes: int


def apply_imbalance(
    name: str, labels: np.ndarray, num_classes: int, rng: np.random.Generator, **options: Any
) -> Imbalanced:
    """Which examples of `labels` to keep under imbalance type `name`."""
    return IMBALANCES.get(name)(np.asarray(labels), num_classes, rng, **options)


def longtail_counts(n_max: int, num_classes: int, factor: float) -> list[int]:
    """Cui et al. (2019): n_c = floor(n_max * factor^(-c/(C-1))), class 0 the head,
    `factor` = n_max / n_min."""
    if factor < 1:
        raise ConfigError(
            f"imbalance factor={factor} is below 1: it is n_max/n_min, e.g. factor=100 for a "
            "head class 100 times larger than the tail."
        )
    if num_classes == 1:
        return [n_max]
    return [math.floor(n_max * factor ** (-c / (num_classes - 1))) for c in range(num_classes)]


def _draw(labels: np.ndarray, cls: int, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """`n` random positions of class `cls`, without replacement."""
    pos = np.flatnonzero(labels == cls)
    if n > len(pos):
        raise ConfigError(
            f"imbalance {what}: class {cls} needs {n} examples but only {len(pos)} are available; "
            "lower the requested counts."
        )
    return rng.choice(pos, size=n, replace=False)


@IMBALANCES.register("none")
def _none(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> Imbalanced:
    return Imbalanced(np.arange(len(labels)), None, num_classes)


@IMBALANCES.register("binary")
def _binary(
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    classes: list[int],
    total: int,
    majority_fraction: float,
) -> Imbalanced:
    """L2RW's MNIST task: `total` examples of two classes [minority, majority], a fraction
    `majority_fraction` of them from the majority; relabelled minority -> 0, majority -> 1."""
    classes = [int(c) for c in classes]
    if (
        len(classes) != 2
        or classes[0] == classes[1]
        or not all(0 <= c < num_classes for c in classes)
    ):
        raise ConfigError(
            f"imbalance classes={classes} must be two different classes in 0..{num_classes - 1}, "
            "[minority, majority], e.g. classes=[4,9]."
        )
    n_major = round(total * majority_fraction)
    n_minor = total - n_major
    if n_minor <= 0 or n_major <= 0:
        raise ConfigError(
            f"imbalance majority_fraction={majority_fraction} with total={total} gives "
            f"{n_minor} minority and {n_major} majority examples; both must be at least 1: "
            "choose a fraction strictly between 0 and 1 (e.g. 0.995) or a larger total."
        )
    index = np.concatenate(
        [
            _draw(labels, classes[0], n_minor, rng, "binary"),
            _draw(labels, classes[1], n_major, rng, "binary"),
        ]
    )
    return Imbalanced(np.sort(index), {classes[0]: 0, classes[1]: 1}, 2)


@IMBALANCES.register("longtail")
def _longtail(
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    factor: float,
    n_max: int | None = None,
) -> Imbalanced:
    """Exponential long tail; `n_max` defaults to the smallest class count, so that every class
    can supply its quota."""
    if n_max is None:
        n_max = int(np.bincount(labels, minlength=num_classes).min())
    counts = longtail_counts(n_max, num_classes, factor)
    if counts[-1] < 1:
        raise ConfigError(
            f"imbalance factor={factor} with n_max={n_max} leaves the tail class empty: "
            "use a factor of at most n_max."
        )
    index = np.concatenate([_draw(labels, c, n, rng, "longtail") for c, n in enumerate(counts)])
    return Imbalanced(np.sort(index), None, num_classes)
