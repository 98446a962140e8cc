"""Label noise: each type is one registered function that draws the noise process once.

A noise function takes `(num_classes, rate, rng, **options)`, its options being the fields of the
schema it is registered with (`noise=adversarial noise.mapping=permutation`), draws whatever the
process fixes for the whole run (BackgroundFlip's class, the adversarial permutation, the label
file) and returns a `NoiseProcess`. Applying that process to several splits (training and
hyper-validation) corrupts them with the same class / permutation / file, and only the examples
picked differ. A process's `corrupt` may change the labels in place: `NoiseProcess.__call__` hands
it a private int64 copy.
"""

import csv
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig

from l2rw.config.options import NoiseConf, choice
from l2rw.errors import ConfigError, DataError
from l2rw.registry import Registry

NOISES = Registry("noise", group="noise")

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


@NOISES.register("none", schema=NoiseConf)
def _none(num_classes: int, rate: float, rng: np.random.Generator):
    return (lambda labels, rng, source_index: labels), {}


@dataclass
class SourceConf(NoiseConf):
    """The noisy labels the dataset's own files give beside the true ones (an arrays file's
    `y_train` next to its `y_train_clean`); `rate` is not read: the files decide which labels
    are wrong."""

    reads_source_labels: ClassVar[bool] = True


@NOISES.register("source", schema=SourceConf)
def _source(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    observed: np.ndarray | None = None,
):
    """Every split taken from the training files reads its observed labels there, by source
    position; `observed` (build_data passes the source's) is None for a dataset whose files
    give one label set."""
    if observed is None:
        raise ConfigError(
            "noise=source trains on the noisy labels a dataset's files give beside their true "
            "ones (dataset=arrays with y_train_clean next to y_train), but this dataset's files "
            "give one label set. Use noise=none to train on those labels as they are, or a "
            "synthetic noise (noise=uniform_flip noise.rate=0.4, ...), or noise=real "
            "noise.path=FILE for labels from a file."
        )

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        index = np.arange(len(labels)) if source_index is None else np.asarray(source_index)
        picked = observed[index]
        if len(picked) and (picked.min() < 0 or picked.max() >= num_classes):
            raise DataError(
                f"noise=source: the dataset's noisy labels hold values outside "
                f"0..{num_classes - 1}."
            )
        return picked

    return corrupt, {}


@dataclass
class UniformFlipConf(NoiseConf):
    """Exactly round(rate N) training labels, chosen at random, each flipped to a uniformly
    chosen *other* class (both papers' text)."""

    rate: float = 0.4


@NOISES.register("uniform_flip", schema=UniformFlipConf)
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


@dataclass
class UniformConf(NoiseConf):
    """The transition matrix rate/K 11^T + (1-rate) I, drawn per example: a flip may keep the
    true label, so the realized rate is about rate (K-1)/K (the RBC authors' code, MW-Net)."""

    rate: float = 0.4


@NOISES.register("uniform", schema=UniformConf)
def _uniform(num_classes: int, rate: float, rng: np.random.Generator):
    """The transition matrix C = rate/K 11^T + (1-rate) I (RBC authors' code, MW-Net): the true
    label may be redrawn, so the expected realized rate is rate (K-1)/K and the count is random."""

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        redraw = rng.random(len(labels)) < rate
        labels[redraw] = rng.integers(0, num_classes, size=int(redraw.sum()))
        return labels

    return corrupt, {}


@dataclass
class BackgroundConf(NoiseConf):
    """A fraction rate of labels set to one background class (L2RW's BackgroundFlip)."""

    rate: float = 0.4
    # The background class; null: drawn from the seed.
    background_class: int | None = None


@NOISES.register("background", schema=BackgroundConf)
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


# The class maps of adversarial noise (`_adversarial`).
ADVERSARIAL_MAPPINGS = ("next", "derangement", "permutation")


@dataclass
class AdversarialConf(NoiseConf):
    """A fraction rate of samples mapped class c -> m(c), m given by `mapping`: "next" (c + 1
    mod K), "derangement" (a random permutation without fixed points) or "permutation" (the RBC
    authors' --biased_flip: a random permutation, fixed points allowed)."""

    rate: float = 0.4
    mapping: str = "next"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        NoiseConf.check(cfg)
        choice(cfg, "noise.mapping", ADVERSARIAL_MAPPINGS)


@NOISES.register("adversarial", schema=AdversarialConf)
def _adversarial(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    mapping: str = "next",
):
    """RBC's adversarial noise: picked examples of class c all get m(c) ("0 are all given 1").

    `next`: m(c) = (c + 1) mod K; `derangement`: a random permutation without fixed points,
    drawn once; `permutation`: the authors' code's `--biased_flip`, a random permutation drawn
    once with fixed points allowed (a picked example of a fixed class keeps its true label, so
    the realized rate is below `rate`), and for K = 2 the swap [1, 0].
    """
    _need_two_classes("adversarial", num_classes)
    if mapping == "next":
        target = (np.arange(num_classes) + 1) % num_classes
    elif mapping == "derangement":
        target = rng.permutation(num_classes)
        while np.any(target == np.arange(num_classes)):  # about e tries on average
            target = rng.permutation(num_classes)
    elif mapping == "permutation":
        target = np.array([1, 0]) if num_classes == 2 else rng.permutation(num_classes)
    else:
        raise ConfigError(
            f"noise mapping '{mapping}' is unknown: use mapping=next, mapping=derangement or "
            "mapping=permutation."
        )

    def corrupt(labels: np.ndarray, rng: np.random.Generator, source_index) -> np.ndarray:
        picked = _pick(len(labels), rate, rng)
        labels[picked] = target[labels[picked]]
        return labels

    return corrupt, {"mapping": mapping, "permutation": target.tolist()}


# Where the best-known human label files come from, for the errors that say how to get one.
CIFAR_N_HINT = (
    "CIFAR-N's human labels (Wei et al. 2022) are the files data/CIFAR-10_human.pt (keys "
    "clean_label, worse_label, aggre_label, random_label1-3) and data/CIFAR-100_human.pt (keys "
    "clean_label, noisy_label) of https://github.com/UCSC-REAL/cifar-10-100n"
)


# A label file's column that gives each row's position in the training set.
INDEX_COLUMN = "index"


# What reading a damaged or foreign label file raises (read_label_file): callers turn these into
# one paragraph naming the file.
LABEL_FILE_ERRORS = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError)


def read_label_file(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """Labels from .npy, .csv/.txt or .pt (an array, or a dict of arrays such as CIFAR-N's).

    A .csv / .txt holds one label per line; or two columns `index,label` (no header); or a
    header row naming its columns, one of which may be `index`. Rows with an index may come in
    any order: the labels are put at their positions."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix in (".csv", ".txt"):
        with open(path, newline="") as f:
            first = f.readline().strip()
        if first and not first.split(",")[0].lstrip("-").isdigit():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
            if INDEX_COLUMN in columns:
                return _by_index(path, columns.pop(INDEX_COLUMN).astype(np.int64), columns)
            return columns
        table = np.loadtxt(path, dtype=np.int64, delimiter=",", ndmin=2)
        if table.shape[1] == 2:
            return _by_index(path, table[:, 0], {"label": table[:, 1]})["label"]
        return table.reshape(-1)
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
            return {str(k): np.asarray(v) for k, v in obj.items()}
        return np.asarray(obj)
    raise DataError(f"{path}: unsupported label file type '{suffix}'; use .npy, .csv, .txt or .pt.")


def _by_index(
    path: Path, index: np.ndarray, columns: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The columns' rows put at the positions `index` gives, which must be 0 .. N-1, each once."""
    n = len(index)
    seen = np.bincount(index[(index >= 0) & (index < n)], minlength=n)
    if len(index) and (seen.max() > 1 or seen.min() == 0):
        repeated = np.flatnonzero(seen > 1)[:3].tolist()
        missing = np.flatnonzero(seen == 0)[:3].tolist()
        raise DataError(
            f"noise 'real': the index column of {path} must list each training position 0.."
            f"{n - 1} exactly once (repeated: {repeated or 'none'}; missing: "
            f"{missing or 'none'}). Write one row per training example, its position in the "
            "dataset's training split first, then its label."
        )
    order = np.argsort(index, kind="stable")
    return {k: v[order] for k, v in columns.items()}


def _label_set(
    path: Path, content: np.ndarray | dict[str, np.ndarray], option: str, key: str | None
) -> np.ndarray:
    """One integer label array out of a file's content: the column / entry `key` (the value of
    the noise option `option`) of a file with several label sets, the whole file otherwise."""
    if isinstance(content, dict):
        if key is None and len(content) == 1:
            key = next(iter(content))
        if key not in content:
            raise DataError(
                f"noise 'real': {path} holds several label sets ({', '.join(sorted(content))}): "
                f"name the one to use with the noise option {option}=... (got {key}). "
                f"{CIFAR_N_HINT}."
            )
        content = content[key]
    elif key is not None:
        raise DataError(
            f"noise 'real': {path} holds one label set, so there is no '{key}' in it; drop the "
            "key option or point path=... at a file with named label sets."
        )
    labels = integer_labels(np.asarray(content).reshape(-1))
    if labels is None:
        raise DataError(f"noise 'real': the labels {key or ''} in {path} are not integers.")
    return labels


def integer_labels(values: np.ndarray) -> np.ndarray | None:
    """`values` as int64 when every one is a whole number (an integer type, whole floats, or
    digit strings as a .csv column gives them); None otherwise. What a label file must hold."""
    if values.dtype.kind in "US":
        try:
            values = values.astype(np.int64)
        except ValueError:
            return None
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if not np.issubdtype(values.dtype, np.floating) or np.any(values != np.round(values)):
        return None
    return values.astype(np.int64)


@dataclass
class RealConf(NoiseConf):
    """Labels read from a file indexing the full training split (.npy; .csv / .txt with one
    label per line, `index,label` rows or named columns; or a CIFAR-N .pt dict); `rate` is not
    read."""

    path: str | None = None
    # The file's label set to use (a .pt dict's key, a .csv column).
    key: str | None = None
    # The file's own clean labels (e.g. CIFAR-N's clean_label), checked against the dataset's.
    clean_key: str | None = None


@NOISES.register("real", schema=RealConf)
def _real(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    path: str | os.PathLike | None = None,
    key: str | None = None,
    clean_key: str | None = None,
):
    """Human labels from a file indexing the full source training set (e.g. CIFAR-N);
    `rate` is not used: the file decides which labels are wrong. Every split taken from the
    training images reads its labels from the same file, by source position. With `clean_key`,
    the file's own clean labels must equal the dataset's true labels at every position read: a
    file of another dataset, split or order is refused instead of silently mislabelling."""
    if path is None:
        raise ConfigError(
            "noise 'real' needs the option path=... naming a label file (.npy, .csv, .txt, or "
            f".pt with key=... naming its label set). {CIFAR_N_HINT}."
        )
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"noise 'real': label file {path} does not exist; download it or fix the path "
            f"option. {CIFAR_N_HINT}."
        )
    try:
        content = read_label_file(path)
    except LABEL_FILE_ERRORS as e:
        raise DataError(f"noise 'real': cannot read labels from {path} ({e}).") from None
    noisy = _label_set(path, content, "key", key)
    clean = None if clean_key is None else _label_set(path, content, "clean_key", clean_key)
    if clean is not None and len(clean) != len(noisy):
        raise DataError(
            f"noise 'real': {path} holds {len(noisy)} noisy but {len(clean)} clean labels; the "
            "file is damaged: download it again."
        )

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
        picked = noisy[source_index]
        if len(picked) and (picked.min() < 0 or picked.max() >= num_classes):
            raise DataError(
                f"noise 'real': {path} has labels outside 0..{num_classes - 1}: it is not a "
                f"label file of this {num_classes}-class dataset."
            )
        if clean is not None:
            wrong = np.flatnonzero(clean[source_index] != labels)
            if len(wrong):
                raise DataError(
                    f"noise 'real': the clean labels '{clean_key}' of {path} disagree with the "
                    f"dataset's own labels at {len(wrong)} of {len(labels)} training examples "
                    f"(first at source position {source_index[wrong[0]]}): the file belongs to "
                    "another dataset, or its examples are in another order. Use the file made "
                    f"for this dataset's training split. {CIFAR_N_HINT}."
                )
        return picked

    return corrupt, {"path": str(path), "key": key}
