"""Class imbalance: each type is one registered function choosing which examples to keep.

A function takes `(labels, num_classes, rng, **options)`, its options being the fields of the
schema it is registered with, and returns an `Imbalanced`; only `rng` supplies randomness.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig

from l2rw.config.options import ImbalanceConf, require
from l2rw.errors import ConfigError
from l2rw.registry import Registry

IMBALANCES = Registry("imbalance", group="imbalance")


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


@IMBALANCES.register("none", schema=ImbalanceConf)
def _none(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> Imbalanced:
    return Imbalanced(np.arange(len(labels)), None, num_classes)


@dataclass
class BinaryConf(ImbalanceConf):
    """Two classes [minority, majority]; L2RW MNIST: 4 vs 9, 5,000 images, 9 the majority."""

    classes: list[int] = field(default_factory=lambda: [4, 9])
    total: int = 5000
    majority_fraction: float = 0.995

    @staticmethod
    def check(cfg: DictConfig) -> None:
        imb, k = cfg.imbalance, cfg.dataset.num_classes
        classes = list(imb.classes)
        require(
            len(classes) == 2 and len(set(classes)) == 2 and all(0 <= c < k for c in classes),
            f"imbalance.classes={classes} must name two different classes in [0, {k}).",
        )
        p, total = imb.majority_fraction, imb.total
        require(total > 0, f"imbalance.total={total} must be positive.")
        n_major = round(total * p)
        require(
            0 < n_major < total,
            f"imbalance.majority_fraction={p} with imbalance.total={total} leaves a class empty "
            f"({n_major} majority, {total - n_major} minority). Use a fraction in (0, 1) that "
            f"keeps at least one image of each class.",
        )


@IMBALANCES.register("binary", schema=BinaryConf)
def _binary(
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    classes: list[int] = (4, 9),
    total: int = 5000,
    majority_fraction: float = 0.995,
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


@dataclass
class LongtailConf(ImbalanceConf):
    """Cui et al. 2019: n_c = n_max * factor^(-c/(C-1)), factor = n_max / n_min."""

    factor: float = 100.0
    # The head class's count; null: the smallest class count of the pool.
    n_max: int | None = None

    @staticmethod
    def check(cfg: DictConfig) -> None:
        imb = cfg.imbalance
        require(imb.factor >= 1, f"imbalance.factor={imb.factor} must be >= 1 (n_max / n_min).")
        require(
            imb.n_max is None or int(imb.n_max / imb.factor) >= 1,
            f"imbalance.n_max={imb.n_max} with factor={imb.factor} leaves the tail class "
            f"empty; raise n_max or lower factor.",
        )


@IMBALANCES.register("longtail", schema=LongtailConf)
def _longtail(
    labels: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    factor: float = 100.0,
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
