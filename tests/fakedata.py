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


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def write_cifar_n(
    root: str | Path,
    num_classes: int = 10,
    n_train: int = 100,
    disagree: bool = False,
) -> Path:
    """CIFAR-N's label file for the CIFAR training split write_cifar10 / write_cifar100 wrote
    (label i % K): root/CIFAR-N/CIFAR-10_human.pt (clean_label, worse_label with every 4th label
    moved on by one class, aggre_label every 10th, random_label1-3 every 6th) or
    CIFAR-100_human.pt (clean_label, noisy_label every 4th), a torch.save'd dict of numpy arrays
    as the real files are. `disagree`: clean_label differs from CIFAR's at position 7."""
    import torch

    clean = np.arange(n_train, dtype=np.int64) % num_classes

    def moved(every: int) -> np.ndarray:
        labels = clean.copy()
        labels[::every] = (labels[::every] + 1) % num_classes
        return labels

    if num_classes == 10:
        name = "CIFAR-10_human.pt"
        content = {"worse_label": moved(4), "aggre_label": moved(10)}
        content.update({f"random_label{r}": moved(6) for r in (1, 2, 3)})
    else:
        name = "CIFAR-100_human.pt"
        content = {"noisy_label": moved(4)}
    given = clean.copy()
    if disagree:
        given[7] = (given[7] + 1) % num_classes
    folder = Path(root) / "CIFAR-N"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"clean_label": given, **content}, folder / name)
    return folder / name


def write_animal10n(root: str | Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> Path:
    """ANIMAL-10N's layout: root/animal10n/{training,testing}/<label>_<id>.jpg, 64x64 JPEGs,
    image i of a split has label i % 10 and id i (5 digits)."""
    base = Path(root) / "animal10n"
    for s, (split, n) in enumerate((("training", n_train), ("testing", n_test))):
        labels = np.arange(n) % 10
        images = class_images(labels, 10, 3, 64, seed + s)
        for i, (image, c) in enumerate(zip(images, labels, strict=True)):
            _save_jpeg(base / split / f"{c}_{i:05d}.jpg", image)
    return base


FOOD_CLASSES = ("apple_pie", "baklava", "churros")


def write_food101n(
    root: str | Path,
    classes: tuple[str, ...] = FOOD_CLASSES,
    n_per_class: int = 6,
    n_test_per_class: int = 2,
    size: int = 20,
    seed: int = 0,
) -> Path:
    """Food-101N's layout under root/: Food-101N_release/images/<class>/<key>.jpg with
    meta/classes.txt ('class_name' then the classes), meta/imagelist.tsv ('class_name/key' then
    <class>/<key>.jpg, class by class), meta/verified_train.tsv and verified_val.tsv
    ('class_name/key<TAB>verification_label'); and Food-101's food-101/images/<class>/<id>.jpg
    with meta/test.txt (<class>/<id>) and meta/classes.txt. In each class, images 0-2 are
    verified correct (1) and image 3 wrong (0) in verified_train.tsv, image 4 correct in
    verified_val.tsv; image 5 shows the next class (a web-label error)."""
    root = Path(root)
    release, food101 = root / "Food-101N_release", root / "food-101"
    (release / "meta").mkdir(parents=True, exist_ok=True)
    (food101 / "meta").mkdir(parents=True, exist_ok=True)
    k = len(classes)
    shown = [(c + (i == 5)) % k for c in range(k) for i in range(n_per_class)]
    images = class_images(np.asarray(shown), k, 3, size, seed)
    listed, verified, val = ["class_name/key"], ["class_name/key\tverification_label"], []
    val.append(verified[0])
    for c, name in enumerate(classes):
        for i in range(n_per_class):
            key = f"{name}/{c:02d}{i:02d}abcdef{seed}.jpg"
            _save_jpeg(release / "images" / key, images[c * n_per_class + i])
            listed.append(key)
            if i < 4:
                verified.append(f"{key}\t{int(i < 3)}")
            elif i == 4:
                val.append(f"{key}\t1")
    (release / "meta" / "classes.txt").write_text("\n".join(["class_name", *classes]) + "\n")
    (release / "meta" / "imagelist.tsv").write_text("\n".join(listed) + "\n")
    (release / "meta" / "verified_train.tsv").write_text("\n".join(verified) + "\n")
    (release / "meta" / "verified_val.tsv").write_text("\n".join(val) + "\n")
    test_labels = np.repeat(np.arange(k), n_test_per_class)
    tests = []
    for i, (image, c) in enumerate(
        zip(class_images(test_labels, k, 3, size, seed + 1), test_labels, strict=True)
    ):
        _save_jpeg(food101 / "images" / classes[c] / f"{100 + i}.jpg", image)
        tests.append(f"{classes[c]}/{100 + i}")
    (food101 / "meta" / "test.txt").write_text("\n".join(tests) + "\n")
    (food101 / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def write_clothing1m(
    root: str | Path,
    n_noisy: int = 28,
    n_overlap: int = 6,
    n_extra: int = 4,
    n_val: int = 3,
    n_test: int = 14,
    size: int = 20,
    seed: int = 0,
) -> Path:
    """Clothing1M's layout under root/clothing1m/: images/<d>/<dd>/<name>.jpg, the label files
    noisy_label_kv.txt / clean_label_kv.txt ('images/... <label>' lines), the key lists
    noisy_train_key_list.txt, clean_train_key_list.txt, clean_val_key_list.txt,
    clean_test_key_list.txt and category_names_eng.txt (14 classes). Noisy key i shows class
    i % 14 and is labelled so, but every third label (i % 3 == 0) is moved on by one class;
    the first `n_overlap` noisy keys also have a clean label (and are clean training keys), as
    have `n_extra` clean training keys of their own, the validation and the test keys."""
    base = Path(root) / "clothing1m"
    base.mkdir(parents=True, exist_ok=True)

    def key(prefix: str, i: int) -> str:
        return f"images/{i % 10}/{i % 100:02d}/{prefix}{i}.jpg"

    def write(prefix: str, n: int, s: int) -> tuple[list[str], np.ndarray]:
        labels = np.arange(n) % 14
        keys = [key(prefix, i) for i in range(n)]
        for k, image in zip(keys, class_images(labels, 14, 3, size, seed + s), strict=True):
            _save_jpeg(base / k, image)
        return keys, labels

    noisy_keys, true = write("n", n_noisy, 0)
    noisy = true.copy()
    noisy[::3] = (noisy[::3] + 1) % 14
    extra, extra_y = write("c", n_extra, 1)
    val, val_y = write("v", n_val, 2)
    test, test_y = write("t", n_test, 3)
    clean_train = noisy_keys[:n_overlap] + extra

    def lines(keys: list[str], labels=None) -> str:
        rows = keys if labels is None else [f"{k} {y}" for k, y in zip(keys, labels, strict=True)]
        return "\n".join(rows) + "\n"

    (base / "noisy_label_kv.txt").write_text(lines(noisy_keys, noisy))
    clean_keys = noisy_keys[:n_overlap] + extra + val + test
    clean_y = [*true[:n_overlap], *extra_y, *val_y, *test_y]
    (base / "clean_label_kv.txt").write_text(lines(clean_keys, clean_y))
    (base / "noisy_train_key_list.txt").write_text(lines(noisy_keys))
    (base / "clean_train_key_list.txt").write_text(lines(clean_train))
    (base / "clean_val_key_list.txt").write_text(lines(val))
    (base / "clean_test_key_list.txt").write_text(lines(test))
    names = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker"]
    names += ["Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]
    (base / "category_names_eng.txt").write_text("\n".join(names) + "\n")
    return base
