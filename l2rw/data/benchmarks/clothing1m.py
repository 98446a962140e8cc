"""`dataset=clothing1m`: Clothing1M (Xiao et al., CVPR 2015), its key lists and label files."""

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
    parse_label,
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

_NOISY_KEYS = "noisy_train_key_list.txt"
_CLEAN_KEYS = "clean_train_key_list.txt"
_TEST_KEYS = "clean_test_key_list.txt"
CLOTHING1M_FILES = (
    "noisy_label_kv.txt",
    "clean_label_kv.txt",
    _NOISY_KEYS,
    _CLEAN_KEYS,
    _TEST_KEYS,
)


@dataclass
class Clothing1MOptions(DatasetOptions):
    # The folder holding images/ and the label and key files; null: ${paths.data_dir}/clothing1m.
    path: str | None = None
    # Images are resized (shorter side) and centre-cropped to size x size.
    size: int = 32
    # Refuse to decode more than this (~1.06M images of 3x32x32 take 3.0 GB).
    max_memory_gb: float = 4.0
    # Read only the first N keys of noisy_train_key_list.txt (small machines); null: all 1M.
    # A limited run is NOT the Clothing1M benchmark, only a subset of it.
    train_keys_limit: int | None = None


@dataclass
class Clothing1MConf(WebImagesConf):
    """Clothing1M: 1M training images labelled by their web text (~38% wrong) plus the 47,570
    clean-labelled training images; tested on the 10,526 clean test images. The clean-labelled
    training images are the only clean-pool candidates."""

    num_classes: int = 14
    # The meta set: 7,000 clean-labelled training images, not class-balanced. MW-Net draws its
    # meta set from clean_val (14,313 images) instead, which this pipeline cannot: its clean
    # pool comes from the training split.
    clean_size: int = 7000
    clean_balanced: bool = False
    # Hyper-validation: 1,000 clean test images, noise-free (the pipeline draws it from training
    # or test; clean_val would be the benchmark's own); the test accuracy is then over the
    # other 9,526.
    hyper_val_size: int = 1000
    hyper_val_from: str = "test"
    hyper_val_noisy: bool = False
    # RBC / GBC: as CIFAR-10's; no paper's for Clothing1M.
    rbc_budget: int | None = 50
    rbc_warmup: int | None = 10
    options: Clothing1MOptions = field(default_factory=Clothing1MOptions)


def _clothing1m_fix(base: Path) -> str:
    return (
        f"Clothing1M is read from {base}: images/<d>/<dd>/<name>.jpg and the files "
        f"{', '.join(CLOTHING1M_FILES)} and category_names_eng.txt, as the authors release it "
        "(https://github.com/Cysu/noisy_label; keys are paths relative to that folder, e.g. "
        "images/0/00/xxx.jpg). Point dataset.options.path=... at the folder holding them."
    )


def _kv(base: Path, name: str, k: int, fix: str) -> dict[str, int]:
    path = base / name
    table = {}
    for n, line in enumerate(read_lines("clothing1m", path, fix), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(
                f"Dataset 'clothing1m': line {n} of {path} is {line!r}, not '<image key> "
                f"<label>'. {fix}"
            )
        table[parts[0]] = parse_label("clothing1m", path, n, parts[1], k, fix)
    return table


def _labels_of(
    base: Path, listing: str, keys: list[str], table: dict[str, int], kv: str, fix: str
) -> list[int]:
    unlabelled = [key for key in keys if key not in table]
    if unlabelled:
        raise DataError(
            f"Dataset 'clothing1m': {base / listing} lists {len(unlabelled)} key(s) that "
            f"{base / kv} gives no label (first: {unlabelled[0]}). The files are from different "
            f"copies or damaged. {fix}"
        )
    return [table[key] for key in keys]


@lru_cache(maxsize=2)
def _read_clothing1m(
    base: Path,
    size: int,
    max_memory_gb: float,
    limit: int | None,
    stamp: tuple[tuple[str, int, int], ...],
) -> tuple[RawSource, RawSource]:
    """Both splits, decoded once per process for each state of the listings (`stamp`)."""
    fix = _clothing1m_fix(base)
    names_file = base / "category_names_eng.txt"
    classes = (
        read_lines("clothing1m", names_file, fix)
        if names_file.is_file()
        else [str(c) for c in range(14)]
    )
    k = len(classes)
    noisy_keys = read_lines("clothing1m", base / _NOISY_KEYS, fix)
    if limit is not None:
        noisy_keys = noisy_keys[:limit]
    clean_train = read_lines("clothing1m", base / _CLEAN_KEYS, fix)
    test_keys = read_lines("clothing1m", base / _TEST_KEYS, fix)
    in_noisy = set(noisy_keys)
    extra = [key for key in clean_train if key not in in_noisy]
    train_keys = noisy_keys + extra
    check_memory("clothing1m", len(train_keys) + len(test_keys), 3, (size, size), max_memory_gb)
    noisy = _kv(base, "noisy_label_kv.txt", k, fix)
    clean = _kv(base, "clean_label_kv.txt", k, fix)
    observed = _labels_of(base, _NOISY_KEYS, noisy_keys, noisy, "noisy_label_kv.txt", fix)
    observed += _labels_of(base, _CLEAN_KEYS, extra, clean, "clean_label_kv.txt", fix)
    test_y = _labels_of(base, _TEST_KEYS, test_keys, clean, "clean_label_kv.txt", fix)
    y = [clean.get(key, obs) for key, obs in zip(train_keys, observed, strict=True)]
    verified = set(clean_train)
    candidates = np.asarray(
        [i for i, key in enumerate(train_keys) if key in verified], dtype=np.int64
    )
    for listing, keys in ((_NOISY_KEYS, noisy_keys), (_CLEAN_KEYS, extra), (_TEST_KEYS, test_keys)):
        require_images("clothing1m", base / listing, [base / key for key in keys], fix)
    train_files = [base / key for key in train_keys]
    test_files = [base / key for key in test_keys]
    damaged = f"Replace it with a good copy from the dataset's release. {fix}"
    common = {"num_classes": k, "classes": classes}
    train = RawSource(
        x=decode_all("clothing1m", train_files, size, damaged),
        y=np.asarray(y, dtype=np.int64),
        y_observed=np.asarray(observed, dtype=np.int64),
        truth_known=False,
        clean_candidates=candidates,
        **common,
    )
    test = RawSource(
        x=decode_all("clothing1m", test_files, size, damaged),
        y=np.asarray(test_y, dtype=np.int64),
        **common,
    )
    return train, test


@SOURCES.register("clothing1m", schema=Clothing1MConf)
def _clothing1m(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike | None = None,
    size: int = 32,
    max_memory_gb: float = 4.0,
    train_keys_limit: int | None = None,
    download: bool = True,
) -> RawSource:
    """Training split: the keys of noisy_train_key_list.txt (the first `train_keys_limit`, which
    is then a subset, not the benchmark), `y_observed` their noisy labels, `y` the clean label
    where clean_label_kv.txt has one (else the noisy one); then the keys of
    clean_train_key_list.txt not among them, observed = true = clean label. `clean_candidates`:
    the positions of clean_train_key_list.txt's keys (true label known and held for training).
    The truth is known for those only, so `truth_known=False`. Test split:
    clean_test_key_list.txt. `verify` and `download` are unused: every image is decoded (a
    damaged one is named), and Clothing1M cannot be downloaded automatically."""
    base = (
        Path(path).expanduser()
        if path is not None
        else (require_root("clothing1m", root) / "clothing1m")
    )
    base = base.absolute()
    if not base.is_dir():
        raise DataError(f"Dataset 'clothing1m': {base} does not exist. {_clothing1m_fix(base)}")
    if train_keys_limit is not None and train_keys_limit < 1:
        raise DataError(
            f"dataset.options.train_keys_limit={train_keys_limit} must be positive (or null for "
            "all noisy training keys)."
        )
    stamp = file_stamp([base / f for f in (*CLOTHING1M_FILES, "category_names_eng.txt")])
    sources = _read_clothing1m(
        base,
        int(size),
        float(max_memory_gb),
        None if train_keys_limit is None else int(train_keys_limit),
        stamp,
    )
    return sources[0 if train else 1]
