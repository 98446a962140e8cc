"""`dataset=animal10n`: ANIMAL-10N (Song et al., ICML 2019), labels in the file names."""

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS

from l2rw.config.options import DatasetConf, DatasetOptions
from l2rw.data.benchmarks.listing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode_all,
)
from l2rw.data.folder import check_memory, tree_stamp
from l2rw.data.sources import (
    SOURCES,
    RawSource,
    require_root,
)
from l2rw.data.verify import VerifyCache
from l2rw.errors import DataError

ANIMAL10N_CLASSES = [
    "cat",
    "lynx",
    "wolf",
    "coyote",
    "cheetah",
    "jaguar",
    "chimpanzee",
    "orangutan",
    "hamster",
    "guinea pig",
]
ANIMAL10N_SIZE = 64


@dataclass
class Animal10NOptions(DatasetOptions):
    # The folder holding training/ and testing/; null: ${paths.data_dir}/animal10n.
    path: str | None = None
    # Refuse to decode more than this (50,000 + 5,000 images of 3x64x64 take 0.63 GB).
    max_memory_gb: float = 4.0


@dataclass
class Animal10NConf(DatasetConf):
    """ANIMAL-10N: 50,000 training and 5,000 test images of 64x64, ten animals in five
    confusable pairs, labelled by people (~8% of the training labels wrong, no clean copy: the
    clean pool and cleaned meta samples keep the labels given)."""

    num_classes: int = 10
    input_shape: list[int] = field(default_factory=lambda: [3, 64, 64])
    # No published statistics: ImageNet's, as re-implementations commonly use.
    normalize: str = "standard"
    mean: list[float] | None = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] | None = field(default_factory=lambda: list(IMAGENET_STD))
    # 100 training images per class with the labels given (there are no verified ones).
    clean_size: int = 1000
    # Hyper-validation: 5,000 training images with their labels as given (L2RW's choice), so
    # that the benchmark's 5,000 test images stay whole.
    hyper_val_size: int = 5000
    hyper_val_from: str = "train"
    hyper_val_noisy: bool = True
    # RBC / GBC: as CIFAR-10's (10 classes); no paper's.
    rbc_budget: int | None = 50
    rbc_warmup: int | None = 10
    options: Animal10NOptions = field(default_factory=Animal10NOptions)


def _animal10n_fix(root: Path) -> str:
    return (
        f"ANIMAL-10N is the folders {root}/training/ (50,000 images) and {root}/testing/ (5,000), "
        "each image named <label>_<id>.jpg with its label 0-9 before the first underscore, as "
        "in the authors' raw_image.zip (https://dm.kaist.ac.kr/datasets/animal-10n). Point "
        "dataset.options.path=... at the folder holding training/ and testing/."
    )


def _animal10n_split(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"Dataset 'animal10n': {folder} does not exist. {_animal10n_fix(root)}")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
    )
    if not files:
        raise DataError(f"Dataset 'animal10n': no images in {folder}. {_animal10n_fix(root)}")
    labels = []
    for f in files:
        prefix = f.name.split("_", 1)[0]
        if "_" not in f.name or not prefix.isdigit() or int(prefix) >= len(ANIMAL10N_CLASSES):
            raise DataError(
                f"Dataset 'animal10n': {f} has no label prefix 0-9 (ANIMAL-10N names each image "
                "<label>_<id>.jpg, e.g. 3_01234.jpg). Remove the file or restore its name. "
                f"{_animal10n_fix(root)}"
            )
        labels.append(int(prefix))
    return files, np.asarray(labels, dtype=np.int64)


@lru_cache(maxsize=2)
def _read_animal10n(
    root: Path, max_memory_gb: float, stamp: tuple[tuple[str, int, int], ...]
) -> tuple[RawSource, RawSource]:
    """Both splits, decoded once per process for each state of the folder (`stamp`)."""
    splits = [_animal10n_split(root, s) for s in ("training", "testing")]
    count = sum(len(files) for files, _ in splits)
    check_memory(
        "animal10n",
        count,
        3,
        (ANIMAL10N_SIZE, ANIMAL10N_SIZE),
        max_memory_gb,
        advice="Raise dataset.options.max_memory_gb if the machine has the memory.",
    )
    fix = f"Replace it with the authors' copy. {_animal10n_fix(root)}"
    sources = []
    for (files, y), truth in zip(splits, (False, True), strict=True):
        x = decode_all("animal10n", files, ANIMAL10N_SIZE, fix)
        sources.append(
            RawSource(x=x, y=y, num_classes=10, classes=list(ANIMAL10N_CLASSES), truth_known=truth)
        )
    return sources[0], sources[1]


@SOURCES.register("animal10n", schema=Animal10NConf)
def _animal10n(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike | None = None,
    max_memory_gb: float = 4.0,
    download: bool = True,
) -> RawSource:
    """`<path>/training/*.jpg` and `<path>/testing/*.jpg`, label = the file name's prefix before
    the first underscore, in sorted file-name order; images resized to 64x64 if any is not.
    `verify` and `download` are unused: every image is decoded (a damaged one is named), and
    ANIMAL-10N cannot be downloaded automatically."""
    base = (
        Path(path).expanduser()
        if path is not None
        else (require_root("animal10n", root) / "animal10n")
    )
    base = base.absolute()
    if not base.is_dir():
        raise DataError(f"Dataset 'animal10n': {base} does not exist. {_animal10n_fix(base)}")
    sources = _read_animal10n(base, float(max_memory_gb), tree_stamp(base))
    return sources[0 if train else 1]
