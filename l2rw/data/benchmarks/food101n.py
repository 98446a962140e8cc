"""`dataset=food101n`: Food-101N (Lee et al., CVPR 2018), verified labels for the meta pool."""

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from l2rw.config.options import DatasetOptions
from l2rw.data.benchmarks.listing import (
    WebImagesConf,
    decode_all,
    file_stamp,
    read_lines,
    require_images,
)
from l2rw.data.folder import check_memory
from l2rw.data.sources import (
    SOURCES,
    RawSource,
    require_root,
)
from l2rw.data.verify import VerifyCache
from l2rw.errors import DataError


@dataclass
class Food101NOptions(DatasetOptions):
    # The folder holding Food-101N_release/ and food-101/; null: ${paths.data_dir}.
    path: str | None = None
    # Images are resized (shorter side) and centre-cropped to size x size.
    size: int = 64
    # Refuse to decode more than this (310,009 + 25,250 images of 3x64x64 take 3.8 GB).
    max_memory_gb: float = 4.0


@dataclass
class Food101NConf(WebImagesConf):
    """Food-101N: 310,009 web images of the 101 Food-101 classes, labelled by their search
    class (~20% wrong); 52,868 of them verified by people (meta/verified_train.tsv), of which
    those verified correct are the only clean-pool candidates; tested on Food-101's 25,250 test
    images."""

    num_classes: int = 101
    # 10 verified-correct images per class (of ~420 per class).
    clean_size: int = 1010
    # Hyper-validation: 5,000 training images with their web labels (L2RW's choice), so that
    # Food-101's test split stays whole.
    hyper_val_size: int = 5000
    hyper_val_from: str = "train"
    hyper_val_noisy: bool = True
    # RBC / GBC: as CIFAR-100's (the paper's for 100 classes); no paper's for Food-101N.
    rbc_budget: int | None = 200
    rbc_warmup: int | None = 50
    options: Food101NOptions = field(default_factory=Food101NOptions)


def _food101n_fix(base: Path) -> str:
    return (
        f"Food-101N is read from {base}/Food-101N_release/ (images/<class>/<key>.jpg and meta/ "
        "with classes.txt, imagelist.tsv, verified_train.tsv, as released at "
        "https://kuanghuei.github.io/Food-101N) and its test images from Food-101 in "
        f"{base}/food-101/ (images/<class>/<id>.jpg, meta/test.txt, from "
        "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/). Point "
        "dataset.options.path=... at the folder holding both."
    )


def _jpg(key: str) -> str:
    return key if Path(key).suffix else f"{key}.jpg"


@dataclass(frozen=True)
class _Food101NLists:
    """What Food-101N's listings say: the classes, the training images (imagelist.tsv) with
    their web labels and the positions verified correct, and Food-101's test images."""

    classes: list[str]
    files: list[Path]
    labels: list[int]
    correct: np.ndarray
    test_files: list[Path]
    test_labels: list[int]


def _food101n_lists(base: Path) -> _Food101NLists:
    fix = _food101n_fix(base)
    release = base / "Food-101N_release"
    meta = release / "meta"
    if not release.is_dir() or not (base / "food-101").is_dir():
        missing = [str(d) for d in (release, base / "food-101") if not d.is_dir()]
        raise DataError(f"Dataset 'food101n': {' and '.join(missing)} missing. {fix}")
    names = read_lines("food101n", meta / "classes.txt", fix)
    classes = names[1:] if names and names[0] == "class_name" else names
    index = {c: i for i, c in enumerate(classes)}

    def labelled(path: Path, key: str, line_no: int) -> int:
        name = key.split("/", 1)[0]
        if "/" not in key or name not in index:
            raise DataError(
                f"Dataset 'food101n': line {line_no} of {path} names {key!r}, whose class "
                f"{name!r} is not in {meta / 'classes.txt'}. Each line is <class>/<key>.jpg of "
                f"one of its {len(classes)} classes. {fix}"
            )
        return index[name]

    listing = meta / "imagelist.tsv"
    keys, labels = [], []
    for n, line in enumerate(read_lines("food101n", listing, fix), start=1):
        if n == 1 and line.startswith("class_name"):
            continue
        key = _jpg(line.split("\t")[0])
        labels.append(labelled(listing, key, n))
        keys.append(key)
    position = {k: i for i, k in enumerate(keys)}
    verified = meta / "verified_train.tsv"
    correct = []
    for n, line in enumerate(read_lines("food101n", verified, fix), start=1):
        if n == 1 and line.startswith("class_name"):
            continue
        parts = line.split("\t")
        flag = parts[-1].strip() if len(parts) == 2 else ""
        if flag not in ("0", "1"):
            raise DataError(
                f"Dataset 'food101n': line {n} of {verified} is {line!r}, not "
                "'<class>/<key>.jpg<TAB>0|1' (the verification label: 1 = the class label is "
                f"correct). {fix}"
            )
        # A verified key the image list does not hold (a few carry another class there) is
        # not a training image and is skipped.
        if flag == "1" and (i := position.get(_jpg(parts[0]))) is not None:
            correct.append(i)

    food101 = base / "food-101"
    test_list = food101 / "meta" / "test.txt"
    test_files, test_labels = [], []
    for n, line in enumerate(read_lines("food101n", test_list, fix), start=1):
        test_labels.append(labelled(test_list, line, n))
        test_files.append(food101 / "images" / _jpg(line))
    return _Food101NLists(
        classes=classes,
        files=[release / "images" / k for k in keys],
        labels=labels,
        correct=np.unique(np.asarray(correct, dtype=np.int64)),
        test_files=test_files,
        test_labels=test_labels,
    )


@lru_cache(maxsize=2)
def _read_food101n(
    base: Path, size: int, max_memory_gb: float, stamp: tuple[tuple[str, int, int], ...]
) -> tuple[RawSource, RawSource]:
    """Both splits, decoded once per process for each state of the listings (`stamp`)."""
    fix = _food101n_fix(base)
    lists = _food101n_lists(base)
    count = len(lists.files) + len(lists.test_files)
    check_memory("food101n", count, 3, (size, size), max_memory_gb)
    meta = base / "Food-101N_release" / "meta"
    require_images("food101n", meta / "imagelist.tsv", lists.files, fix)
    require_images("food101n", base / "food-101" / "meta" / "test.txt", lists.test_files, fix)
    damaged = f"Replace it with a good copy from the dataset's release. {fix}"
    common = {"num_classes": len(lists.classes), "classes": lists.classes}
    train = RawSource(
        x=decode_all("food101n", lists.files, size, damaged),
        y=np.asarray(lists.labels, dtype=np.int64),
        truth_known=False,
        clean_candidates=lists.correct,
        **common,
    )
    test = RawSource(
        x=decode_all("food101n", lists.test_files, size, damaged),
        y=np.asarray(lists.test_labels, dtype=np.int64),
        **common,
    )
    return train, test


@SOURCES.register("food101n", schema=Food101NConf)
def _food101n(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike | None = None,
    size: int = 64,
    max_memory_gb: float = 4.0,
    download: bool = True,
) -> RawSource:
    """Training split: the images of meta/imagelist.tsv in its order, label = the class folder
    (the web label, the only one given: `truth_known=False`); `clean_candidates`: those
    meta/verified_train.tsv marks 1 (label verified correct). Test split: Food-101's
    meta/test.txt, in its order. `verify` and `download` are unused: every image is decoded (a
    damaged one is named), and neither dataset is downloaded automatically."""
    base = Path(path).expanduser() if path is not None else require_root("food101n", root)
    base = base.absolute()
    meta, test = base / "Food-101N_release" / "meta", base / "food-101" / "meta"
    stamp = file_stamp(
        [meta / "classes.txt", meta / "imagelist.tsv", meta / "verified_train.tsv"]
        + [test / "test.txt"]
    )
    return _read_food101n(base, int(size), float(max_memory_gb), stamp)[0 if train else 1]
