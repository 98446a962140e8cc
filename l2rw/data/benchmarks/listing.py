"""What the benchmark loaders share: reading their listings and decoding their images."""

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from l2rw.config.options import DatasetConf
from l2rw.data.folder import decode_image
from l2rw.errors import DataError

# ImageNet's channel mean / std, the input torchvision's pretrained networks expect.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Images decoded per batch of threads (bounds the futures held at once).
_CHUNK = 4096


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_all(dataset: str, files: list[Path], size: int, fix: str) -> torch.Tensor:
    """uint8 [N, 3, size, size] of `files`, in order, decoded on a few threads (PIL and torch
    release the GIL) into one preallocated tensor."""
    x = torch.empty((len(files), 3, size, size), dtype=torch.uint8)

    def one(i: int) -> None:
        x[i] = decode_image(files[i], "RGB", size, (size, size), dataset, fix)

    with ThreadPoolExecutor(_workers()) as pool:
        for start in range(0, len(files), _CHUNK):
            # list() re-raises the first failure (in file order) before the next chunk starts.
            list(pool.map(one, range(start, min(start + _CHUNK, len(files)))))
    return x


def file_stamp(files: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of the listing files: a changed listing is read again. (The images are not
    stamped: a million stat calls per load would cost more than they save.)"""
    stamp = []
    for f in files:
        stat = f.stat() if f.is_file() else None
        stamp.append((str(f), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1))
    return tuple(stamp)


def read_lines(dataset: str, path: Path, fix: str) -> list[str]:
    """The file's non-empty lines, stripped."""
    if not path.is_file():
        raise DataError(f"Dataset '{dataset}': {path} does not exist. {fix}")
    try:
        with open(path, encoding="utf-8") as f:
            return [s for line in f if (s := line.strip())]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"Dataset '{dataset}': {path} cannot be read as text ({type(e).__name__}: "
            f"{next(iter(str(e).splitlines()), '')}). {fix}"
        ) from None


def parse_label(dataset: str, path: Path, line_no: int, text: str, k: int, fix: str) -> int:
    """`text` as a class index 0..k-1, else a DataError naming the file and line."""
    if not (text.isdigit() and int(text) < k):
        raise DataError(
            f"Dataset '{dataset}': line {line_no} of {path} gives the label {text!r}, not a "
            f"class index 0..{k - 1}. The file is damaged or not this dataset's. {fix}"
        )
    return int(text)


def require_images(dataset: str, listing: Path, files: list[Path], fix: str) -> None:
    """Every listed image exists; else one paragraph naming the listing and the first missing."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        shown = ", ".join(str(f) for f in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(
            f"Dataset '{dataset}': {listing} lists {len(missing)} image(s) that are not on disk: "
            f"{shown}. The images are incomplete (an archive not fully extracted?) or the "
            f"listing belongs to another copy. {fix}"
        )


@dataclass
class WebImagesConf(DatasetConf):
    """What the web-image benchmarks share (Food-101N, Clothing1M): photos resized to
    `dataset.options.size`, ImageNet's channel mean / std (the input of the ImageNet-pretrained
    ResNet-50 the literature fine-tunes), random crops and flips in training."""

    input_shape: list[int] = field(
        default_factory=lambda: [3, "${dataset.options.size}", "${dataset.options.size}"]
    )
    normalize: str = "standard"
    mean: list[float] | None = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] | None = field(default_factory=lambda: list(IMAGENET_STD))
    augment: str = "crop_flip"
