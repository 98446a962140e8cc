"""`dataset=cifar10n` / `cifar100n`: CIFAR with CIFAR-N's human labels (Wei et al., ICLR 2022)."""

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torchvision import datasets

from l2rw.config.options import DatasetOptions
from l2rw.data.noise import LABEL_FILE_ERRORS, integer_labels, read_label_file
from l2rw.data.sources import (
    SOURCES,
    CIFAR10Conf,
    CIFAR10Files,
    CIFAR100Conf,
    CIFAR100Files,
    RawSource,
    read_cifar,
    require_root,
)
from l2rw.data.verify import VerifyCache
from l2rw.errors import DataError

CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n (folder data/)"


@dataclass
class CIFARNOptions(DatasetOptions):
    # CIFAR-N's label file; null: ${paths.data_dir}/CIFAR-N/CIFAR-10_human.pt.
    labels_path: str | None = None
    # The file's label set trained on (noise=source): worse_label (CIFAR-10N "Worst", ~40%
    # noise), aggre_label (~9%), random_label1..3 (~17%), or clean_label (no noise).
    label_set: str = "worse_label"


@dataclass
class CIFAR10NConf(CIFAR10Conf):
    """CIFAR-10 with CIFAR-N's human labels (use with noise=source, or protocol=cifar_n)."""

    options: CIFARNOptions = field(default_factory=CIFARNOptions)


@dataclass
class CIFAR100NOptions(CIFARNOptions):
    # labels_path null: ${paths.data_dir}/CIFAR-N/CIFAR-100_human.pt.
    # noisy_label (CIFAR-100N, ~40% noise) or clean_label.
    label_set: str = "noisy_label"


@dataclass
class CIFAR100NConf(CIFAR100Conf):
    """CIFAR-100 with CIFAR-N's human labels (use with noise=source, or protocol=cifar_n)."""

    options: CIFAR100NOptions = field(default_factory=CIFAR100NOptions)


def _cifar_n_labels(
    name: str, path: Path, label_set: str, cifar_labels: np.ndarray, k: int
) -> np.ndarray:
    """The label set `label_set` of CIFAR-N's file `path`, checked against CIFAR's labels."""
    file_name = path.name
    get = (
        f"Download {file_name} from {CIFAR_N_URL} into that folder, or point "
        "dataset.options.labels_path=... at it."
    )
    if not path.is_file():
        raise DataError(
            f"Dataset '{name}' trains on CIFAR-N's human labels, expected in {path}, which does "
            f"not exist. {get}"
        )
    try:
        content = read_label_file(path)
    except LABEL_FILE_ERRORS as e:
        raise DataError(
            f"Dataset '{name}': {path} cannot be read as CIFAR-N's label file "
            f"({type(e).__name__}: {next(iter(str(e).splitlines()), '')}). {get}"
        ) from None
    keys = sorted(content) if isinstance(content, dict) else []
    if "clean_label" not in keys or label_set not in keys:
        wanted = "clean_label" if "clean_label" not in keys else label_set
        raise DataError(
            f"Dataset '{name}': {path} has no label set '{wanted}' (it holds "
            f"{', '.join(keys) or 'one unnamed array'}). CIFAR-10_human.pt holds clean_label, "
            "worse_label, aggre_label, random_label1-3; CIFAR-100_human.pt clean_label, "
            "noisy_label: set dataset.options.label_set to one of those the file has, or "
            f"use the right file. {get}"
        )
    labels = {}
    for key in ("clean_label", label_set):
        raw = np.asarray(content[key]).reshape(-1)
        values = integer_labels(raw)
        if len(raw) != len(cifar_labels) or values is None:
            raise DataError(
                f"Dataset '{name}': {key} in {path} holds {len(raw)} {raw.dtype} values, "
                f"but CIFAR's training split has {len(cifar_labels)} images: CIFAR-N gives one "
                f"integer label per training image, in CIFAR's order. {get}"
            )
        if len(values) and (values.min() < 0 or values.max() >= k):
            raise DataError(
                f"Dataset '{name}': {key} in {path} holds labels from {values.min()} to "
                f"{values.max()}, outside 0..{k - 1}: it is not a {k}-class CIFAR-N file. {get}"
            )
        labels[key] = values
    wrong = np.flatnonzero(labels["clean_label"] != cifar_labels)
    if len(wrong):
        raise DataError(
            f"Dataset '{name}': the clean_label of {path} disagrees with CIFAR's own training "
            f"labels at {len(wrong)} of {len(cifar_labels)} images (first at position "
            f"{wrong[0]}): the file is not CIFAR-N's for this CIFAR copy, or its images are in "
            "another order (CIFAR-N follows the order of data_batch_1..5 / train). Use the "
            f"matching file (CIFAR-10_human.pt for CIFAR-10, CIFAR-100_human.pt for "
            f"CIFAR-100) and an unmodified CIFAR. {get}"
        )
    return labels[label_set]


def _cifar_n(
    name: str,
    cls: type[datasets.CIFAR10],
    published: type[datasets.CIFAR10],
    file_name: str,
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    download: bool,
    labels_path: str | os.PathLike | None,
    label_set: str,
) -> RawSource:
    source = read_cifar(name, cls, published, root, train, verify, download)
    if not train:
        return source
    path = (
        Path(labels_path).expanduser()
        if labels_path is not None
        else require_root(name, root) / "CIFAR-N" / file_name
    )
    observed = _cifar_n_labels(name, path, label_set, source.y, source.num_classes)
    return replace(source, y_observed=observed)


@SOURCES.register("cifar10n", schema=CIFAR10NConf)
def _cifar10n(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    labels_path: str | os.PathLike | None = None,
    label_set: str = "worse_label",
    download: bool = True,
) -> RawSource:
    """CIFAR-10 (downloaded like dataset=cifar10); the training split's `y_observed` is the
    CIFAR-N label set `label_set`, its `y` CIFAR's labels (which the file's clean_label must
    equal)."""
    return _cifar_n(
        "cifar10n",
        CIFAR10Files,
        datasets.CIFAR10,
        "CIFAR-10_human.pt",
        root,
        train,
        verify,
        download,
        labels_path,
        label_set,
    )


@SOURCES.register("cifar100n", schema=CIFAR100NConf)
def _cifar100n(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    labels_path: str | os.PathLike | None = None,
    label_set: str = "noisy_label",
    download: bool = True,
) -> RawSource:
    """CIFAR-100 with CIFAR-100N's `label_set` as `y_observed`, as `_cifar10n`."""
    return _cifar_n(
        "cifar100n",
        CIFAR100Files,
        datasets.CIFAR100,
        "CIFAR-100_human.pt",
        root,
        train,
        verify,
        download,
        labels_path,
        label_set,
    )
