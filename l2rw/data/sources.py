"""Raw datasets as in-memory uint8 tensors, read from torchvision's on-disk layouts.

A source is one registered function `(root, train, verify, **options) -> RawSource`, `verify`
being the `VerifyCache` its files are checked with before they are read (None: no checks), and
its `options` the fields of the schema's `options` it is registered with; the schema also holds
the dataset's protocol values (classes, input shape, normalisation, split sizes, budgets).
Missing or damaged files end in one `DataError` paragraph (what is expected or wrong, where, how
to fix), never a torchvision traceback.
"""

import gzip
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets
from torchvision.transforms import v2

from l2rw.config.options import DatasetConf, DatasetOptions
from l2rw.data.verify import (
    VerifyCache,
    verify_archives,
    verify_cifar,
    verify_images,
    verify_mnist,
)
from l2rw.errors import DataError
from l2rw.registry import Registry

SOURCES = Registry("dataset", group="dataset")


@dataclass
class MNISTConf(DatasetConf):
    num_classes: int = 10
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    # MNIST's pixel mean / std, used with normalize=standard (the RBC authors' code normalises
    # so).
    mean: list[float] | None = field(default_factory=lambda: [0.1307])
    std: list[float] | None = field(default_factory=lambda: [0.3081])
    hyper_val_size: int = 5000
    # RBC / GBC: 20 meta samples in all, 10 of them drawn at random for the warm-up (the
    # paper's).
    rbc_budget: int | None = 20
    rbc_warmup: int | None = 10
    options: DatasetOptions = field(default_factory=DatasetOptions)


@dataclass
class FashionMNISTConf(DatasetConf):
    num_classes: int = 10
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    hyper_val_size: int = 5000
    # RBC / GBC: as MNIST.
    rbc_budget: int | None = 20
    rbc_warmup: int | None = 10
    options: DatasetOptions = field(default_factory=DatasetOptions)


@dataclass
class CIFARConf(DatasetConf):
    input_shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    # The L2RW authors': [0, 1] -> [-1, 1], pad 2, crop 32, horizontal flip.
    normalize: str = "symmetric"
    augment: str = "crop_flip"
    crop_padding: int = 2
    # L2RW UniformFlip's 1,000 clean images; protocol=l2rw_background sets 10 per class instead.
    clean_size: int = 1000
    hyper_val_size: int = 5000
    options: DatasetOptions = field(default_factory=DatasetOptions)


@dataclass
class CIFAR10Conf(CIFARConf):
    num_classes: int = 10
    # L2RW Table 2 (BackgroundFlip): the background class of trials 1-5.
    background_trial_classes: list[int] | None = field(default_factory=lambda: [0, 1, 3, 5, 7])
    # RBC / GBC: 50 meta samples in all, 10 of them drawn at random for the warm-up (the
    # paper's).
    rbc_budget: int | None = 50
    rbc_warmup: int | None = 10


@dataclass
class CIFAR100Conf(CIFARConf):
    num_classes: int = 100
    background_trial_classes: list[int] | None = field(default_factory=lambda: [7, 12, 41, 62, 85])
    # RBC / GBC: 200 meta samples in all, 50 of them drawn at random for the warm-up (the
    # paper's).
    rbc_budget: int | None = 200
    rbc_warmup: int | None = 50


_FIX = (
    "Fix: set paths.data_dir=... (or the DATA_DIR environment variable) to a folder that holds "
    "the dataset in torchvision's layout"
)


@dataclass(eq=False)
class RawSource:
    """One split of a dataset: images [N, C, H, W] uint8 (feature vectors: float32 [N, D]),
    int64 labels.

    `y` are the true labels as far as the files know them. `y_observed`: the noisy labels the
    files give beside them (an arrays file's `y_train` next to its `y_train_clean`; a real-noise
    benchmark's crowd or web labels), read by `noise=source`. `truth_known=False`: `y` is the
    only label set given and may itself be noisy, so "cleaning" a selected example cannot
    correct it. `clean_candidates`: the training positions whose label is verified true (a
    benchmark's human-checked subset); when given, the clean (meta) pool is drawn among them
    only (None: any training example may be drawn).

    Compared and hashed by identity (tensors have no single truth value): the loaders keep one
    object per state of the files, so per-source work can be cached on it.
    """

    x: torch.Tensor
    y: np.ndarray
    num_classes: int
    classes: list[str]
    y_observed: np.ndarray | None = None
    truth_known: bool = True
    clean_candidates: np.ndarray | None = None


def load_source(
    name: str,
    root: str | os.PathLike | None,
    train: bool,
    *,
    verify: bool = True,
    verify_cache: Path | None = None,
    **options: Any,
) -> RawSource:
    """Load the train (or test) split of the registered dataset `name` from `root`.

    `verify`: check the files it reads first (`l2rw.data.verify`); `verify_cache`: the JSON file
    that remembers which passed, so that unchanged files are not read twice (None: no memory).
    """
    source = SOURCES.get(name)
    cache = VerifyCache(verify_cache) if verify else None
    try:
        return source(None if root is None else Path(root), train, cache, **options)
    finally:
        if cache is not None:
            cache.save()


def require_root(name: str, root: Path | None) -> Path:
    if root is None:
        raise DataError(
            f"No data directory given for dataset '{name}'. Set paths.data_dir=... or the "
            "DATA_DIR environment variable to the folder that holds (or should receive) the "
            "dataset in torchvision's layout."
        )
    return root


def _gunzip_missing(folder: Path, files: list[str]) -> None:
    """Decompress `f.gz` where only the compressed file is present (torchvision reads raw IDX)."""
    for f in files:
        target, packed = folder / f, folder / f"{f}.gz"
        if not target.is_file() and packed.is_file():
            with gzip.open(packed, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _ensure_files(
    name: str, root: Path, folder: Path, files: list[str], download: bool, fetch: Callable[[], Any]
) -> None:
    """Try `fetch` (a torchvision download) if files are missing; raise DataError if still so."""
    if all((folder / f).is_file() for f in files):
        return
    why = "download is disabled (download=False)"
    if download:
        try:
            fetch()
            why = "the download did not produce them"
        except Exception as e:  # network, checksum and disk errors all mean "not available"
            detail = next(iter(str(e).strip().splitlines()), "")
            why = f"the download failed ({type(e).__name__}: {detail})"
        if all((folder / f).is_file() for f in files):
            return
    missing = [f for f in files if not (folder / f).is_file()]
    absent = "none is there" if len(missing) == len(files) else f"missing: {', '.join(missing)}"
    raise DataError(
        f"Dataset '{name}' not found: expected the files {', '.join(files)} in {folder} "
        f"({absent}), and {why}. {_FIX} "
        f"({folder.relative_to(root).as_posix()}/...), or allow the download (download=True) on "
        "a machine with internet access."
    )


def _mnist_like(
    name: str,
    cls: type[datasets.MNIST],
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    download: bool,
) -> RawSource:
    root = require_root(name, root)
    folder = root / cls.__name__ / "raw"
    files = [f"{s}-{k}-ubyte" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    if verify is not None:  # torchvision's MD5s are those of the archives, checked before use
        verify_archives(verify, name, folder, cls.resources, cls.mirrors[0])
    _gunzip_missing(folder, files)
    _ensure_files(name, root, folder, files, download, lambda: cls(str(root), download=True))
    if verify is not None:
        split = "train" if train else "t10k"
        verify_mnist(verify, name, folder, split, len(cls.classes), cls.mirrors[0])
    ds = cls(str(root), train=train, download=False)
    return RawSource(
        x=ds.data.unsqueeze(1).contiguous(),
        y=ds.targets.numpy().astype(np.int64),
        num_classes=len(ds.classes),
        classes=list(ds.classes),
    )


@SOURCES.register("mnist", schema=MNISTConf)
def _mnist(
    root: Path | None, train: bool, verify: VerifyCache | None, download: bool = True
) -> RawSource:
    return _mnist_like("mnist", datasets.MNIST, root, train, verify, download)


@SOURCES.register("fashion_mnist", schema=FashionMNISTConf)
def _fashion_mnist(
    root: Path | None, train: bool, verify: VerifyCache | None, download: bool = True
) -> RawSource:
    return _mnist_like("fashion_mnist", datasets.FashionMNIST, root, train, verify, download)


class CIFAR10Files(datasets.CIFAR10):
    """CIFAR-10 that checks only that its files exist, not their MD5s.

    `verify_cifar` checks the MD5s instead, after the structure, so a truncated file is reported
    as such and `paths.verify_data=false` can skip the check (the small files tests write in the
    real format cannot match). The archive's MD5 is still checked on download.
    """

    train_list = [[f, None] for f, _ in datasets.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class CIFAR100Files(datasets.CIFAR100):
    """CIFAR-100 with existence-only file checks, for the same reason as `CIFAR10Files`."""

    train_list = [[f, None] for f, _ in datasets.CIFAR100.train_list]
    test_list = [[f, None] for f, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


def read_cifar(
    name: str,
    cls: type[datasets.CIFAR10],
    published: type[datasets.CIFAR10],
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    download: bool,
) -> RawSource:
    """`cls` reads the files, `published` (torchvision's class) has their MD5s."""
    root = require_root(name, root)
    folder = root / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    _ensure_files(name, root, folder, files, download, lambda: cls(str(root), download=True))
    if verify is not None:
        batches = published.train_list if train else published.test_list
        verify_cifar(verify, name, folder, batches, published.meta, published.url)
    ds = cls(str(root), train=train, download=False)
    return RawSource(
        x=torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
        y=np.asarray(ds.targets, dtype=np.int64),
        num_classes=len(ds.classes),
        classes=list(ds.classes),
    )


@SOURCES.register("cifar10", schema=CIFAR10Conf)
def _cifar10(
    root: Path | None, train: bool, verify: VerifyCache | None, download: bool = True
) -> RawSource:
    return read_cifar("cifar10", CIFAR10Files, datasets.CIFAR10, root, train, verify, download)


@SOURCES.register("cifar100", schema=CIFAR100Conf)
def _cifar100(
    root: Path | None, train: bool, verify: VerifyCache | None, download: bool = True
) -> RawSource:
    return read_cifar("cifar100", CIFAR100Files, datasets.CIFAR100, root, train, verify, download)


class _ListedImageFolder(datasets.ImageFolder):
    """ImageFolder over the listed class folders only, in the list's order (label = position)."""

    def __init__(self, root: str, listed: list[str], **kwargs: Any) -> None:
        self.listed = listed
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        return list(self.listed), {c: i for i, c in enumerate(self.listed)}


def _missing_classes_error(base: Path, folder: Path, listed: list[str], missing: list[str]) -> str:
    shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
    return (
        f"Dataset 'imagenet10' lists {len(listed)} classes (dataset.options.classes), but "
        f"{len(missing)} of them have no folder in {folder}: {shown}. Each listed WordNet id "
        f"needs a folder {folder}/<wnid>/ with that class's images, under both {base}/train "
        f"(ImageNet's training images of the class) and {base}/val (its validation images, "
        "sorted into the same folder names). Copy or link the missing classes' folders from an "
        "ImageNet (ILSVRC-2012) tree, or point the dataset option path=... at a tree that has "
        "them (other folders there are ignored). To run on the classes you have instead, set "
        "dataset.options.classes=[...] to their folder names and dataset.num_classes to their "
        "number, or dataset.options.classes=null to use every folder found; results then are not "
        "the paper's ImageNet-10. It cannot be downloaded automatically."
    )


# The ten classes of the RBC paper's ImageNet-10 (Chang et al. 2017; Li et al. 2021), by
# WordNet id.
IMAGENET10_CLASSES = [
    "n02056570",  # king penguin
    "n02085936",  # Maltese dog
    "n02128757",  # snow leopard
    "n02690373",  # airliner
    "n02692877",  # airship
    "n03095699",  # container ship
    "n04254680",  # soccer ball
    "n04285008",  # sports car
    "n04467665",  # trailer truck
    "n07747607",  # orange
]


@dataclass
class ImageNet10Options(DatasetOptions):
    # The tree's root; null: ${paths.data_dir}/imagenet10.
    path: str | None = None
    # Images are resized (shorter side) and centre-cropped to this size when loaded.
    image_size: int = 32
    # Only these class folders are read, in this order (label = position); other folders under
    # train/ and val/ are ignored, so a whole ImageNet tree works too. null: every folder
    # found, in sorted order.
    classes: list[str] | None = field(default_factory=lambda: list(IMAGENET10_CLASSES))


@dataclass
class ImageNet10Conf(DatasetConf):
    """An ImageFolder tree at ${paths.data_dir}/imagenet10/{train,val}/<class>/ (or
    options.path), each class folder named by its WordNet id. The RBC paper's ImageNet-10 (Wu et
    al. 2023, "produced by following Li et al. 2021") is the 10-class ImageNet subset of Chang
    et al. 2017 (DAC) that Contrastive Clustering uses: ImageNet's 1,300 training images of each
    class under train/, and for testing its 50 validation images of each class sorted into the
    same folder names under val/."""

    num_classes: int = 10
    input_shape: list[int] = field(
        default_factory=lambda: [
            3,
            "${dataset.options.image_size}",
            "${dataset.options.image_size}",
        ]
    )
    # ImageNet's channel mean / std, the input torchvision's pretrained ResNet-34 expects.
    normalize: str = "standard"
    mean: list[float] | None = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] | None = field(default_factory=lambda: [0.229, 0.224, 0.225])
    augment: str = "crop_flip"
    hyper_val_from: str = "test"
    hyper_val_noisy: bool = False
    # RBC / GBC: 50 meta samples in all, 10 of them drawn at random for the warm-up (the
    # paper's).
    rbc_budget: int | None = 50
    rbc_warmup: int | None = 10
    options: ImageNet10Options = field(default_factory=ImageNet10Options)


@SOURCES.register("imagenet10", schema=ImageNet10Conf)
def _imagenet10(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike | None = None,
    image_size: int = 32,
    classes: Sequence[str] | None = None,
    download: bool = True,
) -> RawSource:
    """ImageFolder tree `<path or root/imagenet10>/{train,val}/<class>/<image>`, resized to fit
    in memory as uint8 [N, 3, S, S] (shorter side to S, then a centre crop). `classes`: the class
    folders to read, in order (label = position in the list), others ignored; None: every folder,
    sorted. `download` is ignored: ImageNet cannot be downloaded automatically."""
    base = Path(path) if path is not None else require_root("imagenet10", root) / "imagenet10"
    folder = base / ("train" if train else "val")
    transform = v2.Compose(
        [v2.ToImage(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    )
    listed = None if classes is None else [str(c) for c in classes]
    try:
        if listed is None:
            ds = datasets.ImageFolder(str(folder), transform=transform)
        else:
            if not folder.is_dir():
                raise FileNotFoundError(folder)
            missing = [c for c in listed if not (folder / c).is_dir()]
            if missing:
                raise DataError(_missing_classes_error(base, folder, listed, missing))
            ds = _ListedImageFolder(str(folder), listed, transform=transform)
    except FileNotFoundError as e:
        reason = str(e) if folder.is_dir() else f"{folder} does not exist"
        raise DataError(
            "Dataset 'imagenet10' not found: expected an ImageFolder tree "
            f"{folder}/<class>/<image> "
            f"(one sub-folder per class, e.g. {folder}/n01440764/img_0.png, for both "
            f"{base}/train and {base}/val), but {reason}. {_FIX} (imagenet10/train/<class>/..., "
            "imagenet10/val/<class>/...), or point the dataset option path=... at the folder "
            "holding train/ and val/. It cannot be downloaded automatically."
        ) from None
    if verify is not None:
        verify_images(verify, "imagenet10", [Path(p) for p, _ in ds.samples])
    x = torch.stack([ds[i][0].as_subclass(torch.Tensor) for i in range(len(ds))])
    return RawSource(
        x=x,
        y=np.asarray(ds.targets, dtype=np.int64),
        num_classes=len(ds.classes),
        classes=list(ds.classes),
    )


TOY2D_SPLITS = {"train": 600, "test": 240, "val": 160}


def make_toy2d(seed: int = 0, std: float = 0.35) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The 1000-point toy set of Wu et al. (AAAI 2023), Fig. 1: returns x, true and observed y.

    Each point comes from one of four isotropic Gaussians, picked uniformly, centred at the
    square's vertices (+-1, +-1); the upper two are class 1, the lower two class 0; then exactly
    10 labels (1%) are flipped. The paper gives no spread: std 0.35 makes the classes overlap a
    little near y = 0, as in its figure, and is an option.
    """
    rng = np.random.default_rng(seed)
    centres = np.array([[-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    component = rng.integers(0, 4, size=1000)
    x = centres[component] + std * rng.standard_normal((1000, 2))
    y_true = (centres[component, 1] > 0).astype(np.int64)
    y = y_true.copy()
    flipped = rng.choice(1000, size=10, replace=False)
    y[flipped] = 1 - y[flipped]
    return torch.from_numpy(x.astype(np.float32)), y_true, y


def toy2d_splits(seed: int = 0, std: float = 0.35) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """The paper's fixed random partition of toy2d into 600 train / 240 test / 160 val points."""
    x, _, y = make_toy2d(seed, std)
    order = np.random.default_rng((seed, 1)).permutation(len(y))
    splits, start = {}, 0
    for split, size in TOY2D_SPLITS.items():
        part = order[start : start + size]
        splits[split] = (x[torch.from_numpy(part)], y[part])
        start += size
    return splits


@dataclass
class Toy2DOptions(DatasetOptions):
    # The draw of the points and their split (default: the run's seed), and the Gaussians' std.
    seed: int = "${seed}"  # type: ignore[assignment]
    std: float = 0.35


@dataclass
class Toy2DConf(DatasetConf):
    """RBC paper, Figure 1: four Gaussians, 600 train / 240 test / 160 validation."""

    num_classes: int = 2
    input_shape: list[int] = field(default_factory=lambda: [2])
    normalize: str = "none"
    clean_size: int = 6
    clean_balanced: bool = False
    hyper_val_size: int = 160
    hyper_val_from: str = "test"
    hyper_val_noisy: bool = False
    # RBC / GBC: 6 meta samples in all, 2 of them drawn at random for the warm-up (Figure 1: 6
    # cleaned meta samples; 2 of them the random warm-up).
    rbc_budget: int | None = 6
    rbc_warmup: int | None = 2
    options: Toy2DOptions = field(default_factory=Toy2DOptions)


@SOURCES.register("toy2d", schema=Toy2DConf)
def _toy2d(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    seed: int = 0,
    std: float = 0.35,
    download: bool = True,
) -> RawSource:
    """Synthetic, so `root`, `verify` and `download` are unused; the 160 validation points come from
    `toy2d_splits`."""
    x, y = toy2d_splits(seed, std)["train" if train else "test"]
    return RawSource(x=x, y=y, num_classes=2, classes=["lower", "upper"])
