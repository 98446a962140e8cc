"""Dataset files checked before a loader reads them, so a truncated or corrupt file ends in one
`DataError` paragraph that names it, not in a torchvision traceback.

One check per format looks at what the loader relies on: IDX headers, sizes and labels (MNIST,
Fashion-MNIST), CIFAR pickles, images that PIL can decode, and the MD5s torchvision publishes
(CIFAR files, MNIST `.gz` archives). What passed is remembered in one JSON file, absolute path ->
{size, mtime_ns, verified: the check and its parameters, facts: what it found}, so an unchanged
file is not read again. The cache only saves work: an unreadable one is ignored, and two jobs
writing it at once may lose an entry, which means checking that file again.
"""

import hashlib
import json
import logging
import math
import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from l2rw.errors import DataError, UserError
from l2rw.tracking.record import write_json_atomic

log = logging.getLogger(__name__)

IDX_IMAGES, IDX_LABELS = 2051, 2049  # IDX magic: unsigned bytes in 3 (images) or 1 dimension
CIFAR_PIXELS = 3 * 32 * 32


class Corrupt(Exception):
    """What is wrong with a file, as the rest of a sentence that starts with its path."""


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {next(iter(str(err).strip().splitlines()), '')}"


def _idx_dims(path: Path, magic: int, what: str) -> list[int]:
    """The dimensions an IDX file's header gives, once its magic number is `magic` and its size
    is the header plus one byte per element, exactly."""
    ndim = magic & 0xFF
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4:
        raise Corrupt(f"is {size} bytes, too short to hold an IDX header")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise Corrupt(
            f"starts with the magic number {found}, not {magic} (IDX {what}: unsigned bytes in "
            f"{ndim} dimension{'s' * (ndim > 1)})"
        )
    if len(header) < 4 + 4 * ndim:
        raise Corrupt(f"is {size} bytes, shorter than its {4 + 4 * ndim}-byte IDX header")
    dims = [int.from_bytes(header[i : i + 4], "big") for i in range(4, len(header), 4)]
    need = len(header) + math.prod(dims)
    if size != need:
        shape = f" of {'x'.join(map(str, dims[1:]))}" if ndim > 1 else ""
        raise Corrupt(f"is {size:,} bytes but its header ({dims[0]} {what}{shape}) needs {need:,}")
    return dims


def _check_labels(labels: np.ndarray, classes: int) -> None:
    if labels.size and labels.dtype.kind not in "iu":
        raise Corrupt(f"holds labels of type {labels.dtype}, not integers")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise Corrupt(
            f"has label {labels[bad[0]]} (at index {bad[0]}) out of range 0-{classes - 1}"
        )


def check_idx_images(path: Path, shape: list[int]) -> dict[str, Any]:
    count, *dims = _idx_dims(path, IDX_IMAGES, "images")
    if dims != shape:
        raise Corrupt(
            f"holds images of {'x'.join(map(str, dims))}, not {'x'.join(map(str, shape))}"
        )
    return {"count": count}


def check_idx_labels(path: Path, classes: int) -> dict[str, Any]:
    (count,) = _idx_dims(path, IDX_LABELS, "labels")
    _check_labels(np.fromfile(path, dtype=np.uint8, offset=8), classes)
    return {"count": count}


def check_md5(path: Path, md5: str) -> dict[str, Any]:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != md5:
        raise Corrupt(f"has MD5 {digest.hexdigest()}, but torchvision publishes {md5} for it")
    return {}


def _unpickle(path: Path) -> dict[str, Any]:
    """The pickle as torchvision reads it (latin1, for the Python 2 originals)."""
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # a damaged pickle fails with EOFError, UnpicklingError, ValueError...
        raise Corrupt(f"cannot be unpickled ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise Corrupt(f"holds a {type(obj).__name__}, not the dict of a CIFAR file")
    return obj


def check_cifar_batch(path: Path, classes: int, md5: str) -> dict[str, Any]:
    """A batch has `data`, N x 3072 uint8, and N `labels` (CIFAR-100: `fine_labels`)."""
    batch = _unpickle(path)
    data = batch.get("data")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
        raise Corrupt(f"has no 'data' array of N x {CIFAR_PIXELS} uint8 images")
    if data.shape[1] != CIFAR_PIXELS:
        raise Corrupt(f"has images of {data.shape[1]} bytes, not {CIFAR_PIXELS} (3x32x32)")
    labels = batch["labels"] if "labels" in batch else batch.get("fine_labels")
    if labels is None:
        raise Corrupt("has neither 'labels' nor 'fine_labels'")
    if len(labels) != len(data):
        raise Corrupt(f"holds {len(data)} images but {len(labels)} labels")
    _check_labels(np.asarray(labels), classes)
    check_md5(path, md5)
    return {"count": len(data)}


def check_cifar_meta(path: Path, key: str, md5: str) -> dict[str, Any]:
    names = _unpickle(path).get(key)
    if not (isinstance(names, list) and names):
        raise Corrupt(f"has no list of class names under '{key}'")
    check_md5(path, md5)
    return {"classes": len(names)}


def check_image(path: Path) -> dict[str, Any]:
    """`verify()` checks the structure and, where the format has them (PNG), checksums; it does
    not decode, so a truncated JPEG passes it: `load()` (JPEG: at 1/8 scale) catches that."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.draft(image.mode, (1, 1))
            image.load()
            return {"format": image.format}
    except Exception as e:  # PIL reports damage as OSError, SyntaxError, struct.error...
        raise Corrupt(f"cannot be read as an image ({_first_line(e)})") from None


CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "idx_images": check_idx_images,
    "idx_labels": check_idx_labels,
    "md5": check_md5,
    "cifar_batch": check_cifar_batch,
    "cifar_meta": check_cifar_meta,
    "image": check_image,
}


def _read_entries(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


class VerifyCache:
    """Files that passed a check, unchanged since: `path` (a JSON file) keeps them between runs;
    None keeps them for this object's life only."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries = _read_entries(path)
        self.new: dict[str, Any] = {}

    def facts(self, file: Path, check: str, **params: Any) -> dict[str, Any]:
        """What `CHECKS[check](file, **params)` finds (raising `Corrupt` if the file fails it),
        from the cache when the same check passed on this file at its present size and mtime."""
        key = str(file.absolute())
        stat = file.stat()  # before reading: a file changed meanwhile is checked again next time
        verified = {"check": check, **params}
        entry = self.entries.get(key)
        if (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
            and entry.get("verified") == verified
            and isinstance(entry.get("facts"), dict)
        ):
            return entry["facts"]
        found = CHECKS[check](file, **params)
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "verified": verified}
        self.entries[key] = self.new[key] = {**entry, "facts": found}
        return found

    def save(self) -> None:
        """Add what was checked to the file, re-read first so as to keep other jobs' entries,
        dropping those of files that are gone; a failure to write costs only re-checking."""
        if self.path is None or not self.new:
            return
        merged = {**_read_entries(self.path), **self.new}
        try:
            write_json_atomic(self.path, {k: v for k, v in merged.items() if Path(k).exists()})
        except (OSError, UserError) as e:  # a failed write may come as a UserError (StorageError)
            log.warning(
                "Could not save %s, so its files will be checked again next time: %s", self.path, e
            )
            return
        self.new = {}


def _damaged(dataset: str, problem: str, source: str | None, n: int = 1) -> DataError:
    it, files = ("it", "a damaged file") if n == 1 else ("them", "damaged files")
    if source is None:
        fix = (
            f"replace {it} with a good copy from where the dataset came from ('{dataset}' cannot "
            "be downloaded automatically)"
        )
    else:
        fix = (
            f"delete {it} and re-run with the download allowed (download=True, the default) on a "
            f"machine with internet access, or copy a good copy from the dataset's source "
            f"({source})"
        )
    return DataError(
        f"Dataset '{dataset}' has {files}: {problem}. Fix: {fix}. "
        "Setting paths.verify_data=false skips this check, at your own risk."
    )


def _facts(
    cache: VerifyCache, dataset: str, source: str | None, file: Path, check: str, **params: Any
) -> dict[str, Any]:
    try:
        return cache.facts(file, check, **params)
    except Corrupt as e:
        raise _damaged(dataset, f"{file.absolute()} {e}", source) from None


def verify_archives(
    cache: VerifyCache, dataset: str, folder: Path, resources: list[tuple[str, str]], source: str
) -> None:
    """The MD5 of each archive in `resources` (torchvision's (file name, MD5)) that is present."""
    for name, md5 in resources:
        if (folder / name).is_file():
            _facts(cache, dataset, source, folder / name, "md5", md5=md5)


def verify_mnist(
    cache: VerifyCache, dataset: str, folder: Path, split: str, classes: int, source: str
) -> None:
    """The IDX images and labels of `split` ("train" or "t10k"), and that their counts agree."""
    images, labels = (folder / f"{split}-{k}-ubyte" for k in ("images-idx3", "labels-idx1"))
    check = partial(_facts, cache, dataset, source)
    n_images = check(images, "idx_images", shape=[28, 28])["count"]
    n_labels = check(labels, "idx_labels", classes=classes)["count"]
    if n_images != n_labels:
        problem = (
            f"{images.absolute()} holds {n_images} images but {labels.absolute()} holds "
            f"{n_labels} labels"
        )
        raise _damaged(dataset, problem, source, n=2)


def verify_cifar(
    cache: VerifyCache,
    dataset: str,
    folder: Path,
    batches: list[list[str]],
    meta: dict[str, str],
    source: str,
) -> None:
    """The meta file and `batches`, as torchvision lists them ([file name, MD5] and a dict of
    filename, key, md5); labels must be below the meta file's class count."""
    check = partial(_facts, cache, dataset, source)
    found = check(folder / meta["filename"], "cifar_meta", key=meta["key"], md5=meta["md5"])
    for name, md5 in batches:
        check(folder / name, "cifar_batch", classes=found["classes"], md5=md5)


def verify_images(cache: VerifyCache, dataset: str, files: list[Path]) -> None:
    """Every image file decodes; such datasets are not downloaded, so there is no MD5."""
    for file in files:
        _facts(cache, dataset, None, file, "image")
