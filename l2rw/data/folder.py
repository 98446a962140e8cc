"""`dataset=folder`: any image classification tree, ROOT/train/<class>/* and ROOT/test/<class>/*.

Class names are the sorted folder names under `train/` (or `dataset.options.classes`, in that
order: label = position). Images of any format PIL reads, of any size: with
`dataset.options.size=S` each is resized (shorter side to S) and centre-cropped to S x S, without
it every image must have the first one's size. Channels: 1 when every image is grayscale, else 3
(colour and grayscale mixed are all read as RGB), or `dataset.options.channels`. The whole tree is
decoded once per process into uint8 tensors like the other sources, so batches stay a pure
function of seed and step; its size is computed from the image headers first and a tree that
would not fit in `dataset.options.max_memory_gb` is refused before any decoding.
"""

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from l2rw.config.options import DatasetOptions, OwnDataConf
from l2rw.data.sources import SOURCES, RawSource
from l2rw.data.verify import VerifyCache, verify_images
from l2rw.errors import DataError

SPLITS = ("train", "test")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


@dataclass
class FolderOptions(DatasetOptions):
    # The tree's root, holding train/<class>/ and test/<class>/.
    path: str = MISSING
    # The class folders to read, in this order (label = position); null: every folder under
    # train/, sorted.
    classes: list[str] | None = None
    # Resize (shorter side) and centre-crop every image to size x size; null: keep the images'
    # own size, which must then be the same for all.
    size: int | None = None
    # 1 (grayscale) or 3 (RGB); null: 1 when every image is grayscale, else 3.
    channels: int | None = None
    # Refuse a tree whose decoded uint8 tensors (train and test) would take more than this.
    max_memory_gb: float = 4.0


@dataclass
class FolderConf(OwnDataConf):
    """A user's image tree. Class count and input shape come from the files
    (`${dataset_info:...}`), and so do the channels' mean and std (normalize=standard), over the
    training images, unless given."""

    options: FolderOptions = field(default_factory=FolderOptions)


@dataclass(frozen=True)
class _Listing:
    """One split's image files and labels, in a fixed order (class, then file name)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]


def _fix(root: Path) -> str:
    return (
        f"A folder dataset is a tree {root}/train/<class>/<image> and {root}/test/<class>/<image> "
        "(one sub-folder per class, the same names under both; PNG, JPEG, BMP, ... of any size). "
        "Point dataset.options.path=... at the folder holding train/ and test/."
    )


def _class_folders(root: Path, classes: list[str] | None) -> list[str]:
    train = root / "train"
    if not train.is_dir() or not (root / "test").is_dir():
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        raise DataError(
            f"Dataset 'folder': {root} has no {' and no '.join(f'{m}/' for m in missing)} folder. "
            f"{_fix(root)}"
        )
    found = sorted(p.name for p in train.iterdir() if p.is_dir())
    if classes is None:
        if len(found) < 2:
            raise DataError(
                f"Dataset 'folder': {train} holds {len(found)} class folder(s) "
                f"({', '.join(found)}); a classification tree needs at least two. {_fix(root)}"
            )
        return found
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(
            f"Dataset 'folder': dataset.options.classes names {', '.join(missing)}, which "
            f"{'has' if len(missing) == 1 else 'have'} no folder under {train} (found: "
            f"{', '.join(found) or 'none'}). List existing folders, or set "
            "dataset.options.classes=null to read them all."
        )
    return list(classes)


def _list_split(root: Path, split: str, classes: list[str], listed: bool) -> _Listing:
    """The split's images of `classes`; folders of other classes are ignored when the classes
    were `listed` (dataset.options.classes), and refused under test/ otherwise."""
    folder = root / split
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    if split == "test" and unknown and not listed:
        raise DataError(
            f"Dataset 'folder': {folder} has class folders that {root}/train has not: "
            f"{', '.join(unknown)}. Test images must belong to the training classes: remove "
            "those folders, add them to train/, or list the classes to read in "
            "dataset.options.classes."
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS:
                files.append(path)
                labels.append(label)
    if not files:
        raise DataError(
            f"Dataset 'folder': no images under {folder}/<class>/ (looked for "
            f"{', '.join(IMG_EXTENSIONS)}). {_fix(root)}"
        )
    return _Listing(tuple(files), tuple(labels))


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except Exception as e:  # PIL reports an unreadable header in many exception types
        raise DataError(
            f"Dataset 'folder': {path} cannot be read as an image ({type(e).__name__}: "
            f"{next(iter(str(e).splitlines()), '')}). Replace or delete it."
        ) from None


def decode_image(
    path: Path,
    mode: str,
    size: int | None,
    shape: tuple[int, int],
    dataset: str = "folder",
    fix: str = "Replace or delete it.",
) -> torch.Tensor:
    """uint8 [C, H, W] of the image at `path` in PIL `mode`: resized (shorter side) and
    centre-cropped to `size` x `size`, or, with `size` None, required to be `shape` (H, W). A
    damaged file ends in one DataError naming it, `dataset` and what to do (`fix`)."""
    try:
        with Image.open(path) as image:
            pixels = v2.functional.pil_to_tensor(image.convert(mode))
    except Exception as e:  # a truncated file fails here, after its header read fine
        raise DataError(
            f"Dataset '{dataset}': {path} cannot be decoded ({type(e).__name__}: "
            f"{next(iter(str(e).splitlines()), '')}); the file is damaged. {fix}"
        ) from None
    if size is not None:
        pixels = v2.functional.center_crop(
            v2.functional.resize(pixels, size, antialias=True), [size, size]
        )
    elif tuple(pixels.shape[1:]) != shape:
        raise DataError(
            f"Dataset 'folder': {path} is {pixels.shape[2]}x{pixels.shape[1]} pixels but the first "
            f"image is {shape[1]}x{shape[0]}. Images of different sizes need a common one: set "
            "dataset.options.size=S to resize and centre-crop every image to S x S."
        )
    return pixels


def check_memory(
    dataset: str,
    count: int,
    channels: int,
    side: tuple[int, int],
    max_memory_gb: float,
    advice: str = (
        "Set a smaller dataset.options.size, or raise dataset.options.max_memory_gb if the "
        "machine has the memory."
    ),
) -> None:
    """Refuse, before any decoding, `count` images of `channels` x `side` (H, W) whose uint8
    tensors would take more than `max_memory_gb`; `advice` says what to do."""
    need_gb = count * channels * side[0] * side[1] / 2**30
    if need_gb > max_memory_gb:
        raise DataError(
            f"Dataset '{dataset}': {count} images of {channels}x{side[0]}x{side[1]} take "
            f"{need_gb:.1f} GB decoded (uint8), more than dataset.options.max_memory_gb="
            f"{max_memory_gb}. {advice}"
        )


def tree_stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file under `root` with its size and mtime: a changed tree is read again."""
    stamp = []
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            stamp.append((os.path.join(folder, name), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(stamp))


@lru_cache(maxsize=2)
def _read_tree(
    root: Path,
    classes: tuple[str, ...] | None,
    size: int | None,
    channels: int | None,
    max_memory_gb: float,
    stamp: tuple[tuple[str, int, int], ...],
) -> tuple[RawSource, RawSource]:
    """Both splits, decoded once per process for each state of the tree (`stamp`)."""
    names = _class_folders(root, None if classes is None else list(classes))
    listings = {split: _list_split(root, split, names, classes is not None) for split in SPLITS}
    headers = {split: [_header(p) for p in listing.files] for split, listing in listings.items()}
    every = [h for split in headers.values() for h in split]
    if channels is None:
        channels = 1 if all(mode in GRAYSCALE_MODES for mode, _ in every) else 3
    if channels not in (1, 3):
        raise DataError(f"dataset.options.channels={channels} must be 1 (grayscale) or 3 (RGB).")
    width, height = every[0][1]
    side = (size, size) if size is not None else (height, width)
    check_memory("folder", len(every), channels, side, max_memory_gb)
    mode = "L" if channels == 1 else "RGB"
    sources = []
    for split in SPLITS:
        listing = listings[split]
        x = torch.stack([decode_image(p, mode, size, side) for p in listing.files])
        y = np.asarray(listing.labels, dtype=np.int64)
        sources.append(
            RawSource(x=x, y=y, num_classes=len(names), classes=names, truth_known=False)
        )
    return sources[0], sources[1]


@SOURCES.register("folder", schema=FolderConf)
def _folder(
    root: Path | None,
    train: bool,
    verify: VerifyCache | None,
    path: str | os.PathLike,
    classes: list[str] | None = None,
    size: int | None = None,
    channels: int | None = None,
    max_memory_gb: float = 4.0,
    download: bool = True,
) -> RawSource:
    """`root` (paths.data_dir) and `download` are unused: the tree is `path`. The images'
    labels are the folders': the only labels there are, so `truth_known` is False."""
    tree = Path(path).expanduser().absolute()
    if not tree.is_dir():
        raise DataError(
            f"Dataset 'folder': dataset.options.path={path} is not a folder. {_fix(tree)}"
        )
    listed = None if classes is None else tuple(str(c) for c in classes)
    if verify is not None:
        names = _class_folders(tree, None if listed is None else list(listed))
        split = _list_split(tree, "train" if train else "test", names, listed is not None)
        verify_images(verify, "folder", list(split.files))
    sources = _read_tree(tree, listed, size, channels, float(max_memory_gb), tree_stamp(tree))
    return sources[0 if train else 1]
