"""The dataset loaders read tiny generated files in the real formats; missing files are clear."""

import gzip
import math
import socket
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from fakedata import write_cifar10, write_cifar100, write_imagenet10, write_mnist
from torchvision import datasets

from l2rw.data.sources import SOURCES, load_source, make_toy2d, toy2d_splits
from l2rw.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def assert_blocks_match_labels(x: torch.Tensor, y: np.ndarray, num_classes: int) -> None:
    """Each image's brightest grid cell is the one fakedata painted for its label."""
    grid = math.ceil(math.sqrt(num_classes))
    cell = x.shape[-1] // grid
    cells = x[..., : grid * cell, : grid * cell].float().mean(1)
    cells = cells.reshape(len(x), grid, cell, grid, cell).mean((2, 4)).flatten(1)
    assert np.array_equal(cells.argmax(1).numpy(), y)


def test_registered_sources():
    assert SOURCES.names() == [
        "animal10n",
        "arrays",
        "cifar10",
        "cifar100",
        "cifar100n",
        "cifar10n",
        "clothing1m",
        "fashion_mnist",
        "folder",
        "food101n",
        "imagenet10",
        "mnist",
        "toy2d",
    ]
    with pytest.raises(ConfigError, match="svhn"):
        load_source("svhn", "/nowhere", train=True)


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_like(tmp_path, name, folder):
    write_mnist(tmp_path, name=folder, n_train=30, n_test=20)
    for train, n in ((True, 30), (False, 20)):
        src = load_source(name, tmp_path, train=train, download=False)
        assert src.x.shape == (n, 1, 28, 28) and src.x.dtype == torch.uint8
        assert src.y.dtype == np.int64 and np.array_equal(src.y, np.arange(n) % 10)
        assert src.num_classes == 10 and len(src.classes) == 10
        assert_blocks_match_labels(src.x, src.y, 10)


def test_mnist_gz_only(tmp_path):
    raw = write_mnist(tmp_path, n_train=20, n_test=10)
    for f in list(raw.iterdir()):
        with gzip.open(f"{f}.gz", "wb") as out:
            out.write(f.read_bytes())
        f.unlink()
    # The fake archives cannot match torchvision's MD5s (test_data_verify checks that they fail).
    src = load_source("mnist", str(tmp_path), train=True, download=False, verify=False)
    assert src.x.shape == (20, 1, 28, 28)


def test_cifar10(tmp_path):
    write_cifar10(tmp_path, n_train=40, n_test=20)
    # Fake files cannot match torchvision's MD5s (test_data_verify checks that they fail).
    train = load_source("cifar10", tmp_path, train=True, download=False, verify=False)
    assert train.x.shape == (40, 3, 32, 32) and train.x.dtype == torch.uint8
    # The five batches concatenate in order, so labels stay i % 10.
    assert train.y.dtype == np.int64 and np.array_equal(train.y, np.arange(40) % 10)
    assert train.num_classes == 10 and train.classes[3] == "cat"
    assert_blocks_match_labels(train.x, train.y, 10)
    test = load_source("cifar10", tmp_path, train=False, download=False, verify=False)
    assert test.x.shape == (20, 3, 32, 32)


def test_cifar100(tmp_path):
    write_cifar100(tmp_path, n_train=200, n_test=100)
    src = load_source("cifar100", tmp_path, train=False, download=False, verify=False)
    assert src.x.shape == (100, 3, 32, 32) and src.x.dtype == torch.uint8
    assert np.array_equal(src.y, np.arange(100))
    assert src.num_classes == 100 and src.classes[7] == "fine_07"
    assert_blocks_match_labels(src.x, src.y, 100)


def test_imagenet10(tmp_path):
    write_imagenet10(tmp_path, n_per_class=2, size=40)
    src = load_source("imagenet10", tmp_path, train=True, image_size=16)
    assert src.x.shape == (20, 3, 16, 16) and src.x.dtype == torch.uint8
    assert np.array_equal(src.y, np.repeat(np.arange(10), 2))
    assert src.classes[0] == "n00000000" and src.num_classes == 10
    assert_blocks_match_labels(src.x, src.y, 10)
    val = load_source("imagenet10", None, train=False, path=tmp_path / "imagenet10")
    assert val.x.shape == (20, 3, 32, 32)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "train-images-idx3-ubyte"),
        ("fashion_mnist", "t10k-labels-idx1-ubyte"),
        ("cifar10", "data_batch_5"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_files_are_a_data_error(tmp_path, name, expected):
    with pytest.raises(DataError) as err:
        load_source(name, tmp_path, train=True, download=False)
    message = str(err.value)
    assert expected in message and str(tmp_path) in message
    assert "DATA_DIR" in message and "download=False" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "cls"),
    [("mnist", datasets.MNIST), ("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)],
)
def test_failed_download_is_a_data_error(tmp_path, monkeypatch, name, cls):
    def offline(self):
        raise URLError("no route to host")

    monkeypatch.setattr(cls, "download", offline)
    with pytest.raises(DataError, match="download failed.*URLError.*DATA_DIR"):
        load_source(name, tmp_path, train=True)


def test_partial_cifar_names_missing_file(tmp_path):
    folder = write_cifar10(tmp_path, n_train=10, n_test=10)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match=r"missing: batches\.meta\)"):
        load_source("cifar10", tmp_path, train=True, download=False)


def test_no_root_is_a_data_error():
    with pytest.raises(DataError, match="DATA_DIR"):
        load_source("mnist", None, train=True)


def test_missing_imagenet10_names_layout(tmp_path):
    with pytest.raises(DataError, match=r"imagenet10/train/<class>.*DATA_DIR"):
        load_source("imagenet10", tmp_path, train=True)


def test_toy2d_dataset():
    x, y_true, y = make_toy2d(seed=0)
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert int((y != y_true).sum()) == 10
    # Class 1 is the upper pair of Gaussians: true labels agree with the sign of x2 almost always.
    assert np.mean(y_true == (x[:, 1].numpy() > 0)) > 0.98
    assert 400 < int(y_true.sum()) < 600
    again = make_toy2d(seed=0)
    assert torch.equal(again[0], x) and np.array_equal(again[2], y)
    assert not torch.equal(make_toy2d(seed=1)[0], x)


def test_toy2d_splits():
    splits = toy2d_splits(seed=3)
    assert {k: len(v[1]) for k, v in splits.items()} == {"train": 600, "test": 240, "val": 160}
    x_all, _, y_all = make_toy2d(seed=3)
    joined = torch.cat([v[0] for v in splits.values()])
    # A partition: every point exactly once.
    assert torch.equal(torch.sort(joined[:, 0]).values, torch.sort(x_all[:, 0]).values)
    assert sum(int(v[1].sum()) for v in splits.values()) == int(y_all.sum())
    train = load_source("toy2d", None, train=True, seed=3)
    test = load_source("toy2d", None, train=False, seed=3)
    assert torch.equal(train.x, splits["train"][0]) and np.array_equal(test.y, splits["test"][1])
    assert train.num_classes == 2
    assert not torch.equal(toy2d_splits(seed=4)["train"][0], train.x)


IMAGENET10_WNIDS = [
    "n02056570",
    "n02085936",
    "n02128757",
    "n02690373",
    "n02692877",
    "n03095699",
    "n04254680",
    "n04285008",
    "n04467665",
    "n07747607",
]


def test_imagenet10_config_lists_the_paper_classes():
    conf = compose_cfg(["dataset=imagenet10", "model=resnet34_imagenet"]).dataset
    assert list(conf.options.classes) == IMAGENET10_WNIDS
    assert conf.num_classes == len(IMAGENET10_WNIDS)


def test_imagenet10_listed_classes_in_list_order(tmp_path):
    # Written in sorted order (block position = index there), listed reversed, plus an extra
    # folder that is not listed: labels follow the list, the extra folder is ignored.
    write_imagenet10(tmp_path, n_per_class=2, size=32, classes=[*IMAGENET10_WNIDS, "n09999999"])
    listed = IMAGENET10_WNIDS[::-1]
    src = load_source("imagenet10", tmp_path, train=True, verify=False, classes=listed)
    assert src.classes == listed and src.num_classes == 10
    assert src.x.shape == (20, 3, 32, 32)
    # ImageFolder reads the folders in sorted order: the last listed first.
    assert np.array_equal(src.y, np.repeat(np.arange(10)[::-1], 2))
    assert_blocks_match_labels(src.x, 9 - src.y, 11)


def test_imagenet10_missing_listed_classes_are_named(tmp_path):
    write_imagenet10(tmp_path, n_per_class=1, size=16, classes=IMAGENET10_WNIDS[:8])
    with pytest.raises(DataError) as err:
        load_source("imagenet10", tmp_path, train=False, classes=IMAGENET10_WNIDS)
    message = str(err.value)
    assert "2 of them have no folder" in message and "\n" not in message
    assert "n04467665, n07747607" in message and "n02056570" not in message
    assert str(tmp_path / "imagenet10" / "val") in message
    assert "dataset.options.classes=null" in message


def test_imagenet10_listed_classes_without_the_tree(tmp_path):
    with pytest.raises(DataError, match=r"imagenet10/train/<class>.*does not exist.*DATA_DIR"):
        load_source("imagenet10", tmp_path, train=True, classes=IMAGENET10_WNIDS)
