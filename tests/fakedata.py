"""Tiny datasets written in the real on-disk formats, so tests exercise the real loaders.

Labels are balanced (example i has class i % K) and each image shows a bright block whose grid
position encodes its class, over dim noise: a small model can learn them.
"""

import math
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def class_images(
    labels: np.ndarray, num_classes: int, channels: int, size: int, seed: int
) -> np.ndarray:
    """uint8 [N, size, size, channels]: noise in 0..59 plus a 255 block at the class's cell."""
    rng = np.random.default_rng(seed)
    grid = math.ceil(math.sqrt(num_classes))
    cell = size // grid
    images = rng.integers(0, 60, size=(len(labels), size, size, channels), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, k = divmod(int(c), grid)
        images[i, r * cell : (r + 1) * cell, k * cell : (k + 1) * cell] = 255
    return images


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """IDX: big-endian int32 magic and dimensions, then the uint8 payload."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(
    root: str | Path,
    name: str = "MNIST",
    n_train: int = 100,
    n_test: int = 50,
    num_classes: int = 10,
    seed: int = 0,
) -> Path:
    """Uncompressed IDX files under root/<name>/raw/ (name "FashionMNIST" for Fashion-MNIST)."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % num_classes
        images = class_images(labels, num_classes, 1, 28, seed + (split == "t10k"))[..., 0]
        write_idx(raw / f"{split}-images-idx3-ubyte", 2051, images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", 2049, labels)
    return raw


def _pickle(path: Path, obj: dict) -> None:
    # The real files are Python 2 pickles whose keys load as str under torchvision's latin1
    # decoding (b'data' only under encoding="bytes"); str keys reproduce what torchvision reads.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(labels: np.ndarray, label_key: str, num_classes: int, seed: int) -> dict:
    images = class_images(labels, num_classes, 3, 32, seed)
    return {
        "batch_label": "fake batch",
        "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3072),
        label_key: [int(c) for c in labels],
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
    }


def write_cifar10(root: str | Path, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """root/cifar-10-batches-py/: data_batch_1..5 (the train set split in five), test_batch,
    batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train) % 10
    for b, part in enumerate(np.array_split(labels, 5), start=1):
        _pickle(folder / f"data_batch_{b}", _cifar_batch(part, "labels", 10, seed + b))
    _pickle(folder / "test_batch", _cifar_batch(np.arange(n_test) % 10, "labels", 10, seed))
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _pickle(
        folder / "batches.meta",
        {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072},
    )
    return folder


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """root/cifar-100-python/: train, test (fine and coarse labels), meta."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 100
        batch = _cifar_batch(labels, "fine_labels", 100, seed + (split == "test"))
        batch["coarse_labels"] = [int(c) // 5 for c in labels]
        _pickle(folder / split, batch)
    _pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{c:02d}" for c in range(100)],
            "coarse_label_names": [f"coarse_{c:02d}" for c in range(20)],
        },
    )
    return folder


def write_imagenet10(
    root: str | Path,
    n_per_class: int = 3,
    size: int = 40,
    num_classes: int = 10,
    seed: int = 0,
    classes: list[str] | None = None,
) -> Path:
    """PNG files in an ImageFolder tree root/imagenet10/{train,val}/<wnid>/<i>.png; the folders
    are named `classes` (their number overrides num_classes) or n00000000, n00000001, ..."""
    if classes is not None:
        num_classes = len(classes)
    names = list(classes) if classes is not None else [f"n{c:08d}" for c in range(num_classes)]
    base = Path(root) / "imagenet10"
    for s, split in enumerate(("train", "val")):
        labels = np.repeat(np.arange(num_classes), n_per_class)
        images = class_images(labels, num_classes, 3, size, seed + s)
        for i, (image, c) in enumerate(zip(images, labels, strict=True)):
            folder = base / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"img_{i}.png")
    return base


def write_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "eel"),
    n_train: int = 30,
    n_test: int = 12,
    size: int = 16,
    grayscale: bool = False,
    mixed_sizes: bool = True,
    seed: int = 0,
) -> Path:
    """A user's image tree root/{train,test}/<class>/<i>.{png,jpg}: PNG and JPEG files in turn,
    each image `size` px plus 0-3 (`mixed_sizes`), grayscale (mode L) or RGB."""
    root = Path(root)
    for s, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = np.arange(n) % len(classes)
        images = class_images(labels, len(classes), 1 if grayscale else 3, size + 3, seed + s)
        for i, (image, c) in enumerate(zip(images, labels, strict=True)):
            side = size + (i % 4 if mixed_sizes else 0)
            pixels = image[:side, :side, 0] if grayscale else image[:side, :side]
            folder = root / split / classes[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def write_arrays(
    path: str | Path,
    n_train: int = 120,
    n_test: int = 60,
    num_classes: int = 3,
    shape: tuple[int, ...] = (12, 12),
    clean_labels: bool = False,
    seed: int = 0,
) -> Path:
    """A `dataset=arrays` file (.npz, or .pt by suffix): uint8 images of `shape` ((H, W) or
    (H, W, C)) or float32 feature vectors ((D,)) whose class shows in them; with
    `clean_labels`, y_train_clean is the truth and y_train has every fourth label moved on by
    one class."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % num_classes
        if len(shape) == 1:
            x = rng.normal(size=(n, *shape)).astype(np.float32)
            x[np.arange(n), y] += 3.0
        else:
            channels = shape[2] if len(shape) == 3 else 1
            x = class_images(y, num_classes, channels, shape[0], seed).reshape(n, *shape)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    if clean_labels:
        arrays["y_train_clean"] = arrays["y_train"].copy()
        noisy = arrays["y_train"].copy()
        noisy[::4] = (noisy[::4] + 1) % num_classes
        arrays["y_train"] = noisy
    path = Path(path)
    if path.suffix == ".pt":
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    else:
        np.savez(path, **arrays)
    return path
