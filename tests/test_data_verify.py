"""Dataset files are checked before use: damage ends in one DataError paragraph naming the file,
and what passed is cached by size and mtime so the second load reads nothing twice."""

import gzip
import hashlib
import json
import logging
import os
import pickle
import socket

import numpy as np
import pytest
from conftest import TINY, compose_cfg
from fakedata import write_cifar10, write_cifar100, write_idx, write_imagenet10, write_mnist
from torchvision import datasets

import l2rw.data.verify as verify
from l2rw.data.sources import load_source
from l2rw.data.splits import build_data
from l2rw.errors import DataError, UserError
from l2rw.train import run


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def mnist(tmp_path):
    """A good tiny MNIST tree: its raw folder."""
    return write_mnist(tmp_path / "data", n_train=30, n_test=20)


@pytest.fixture
def calls(monkeypatch):
    """How often each check really runs (not served from the cache)."""
    counts = {}

    def counted(kind, check):
        def wrapper(*args, **kwargs):
            counts[kind] = counts.get(kind, 0) + 1
            return check(*args, **kwargs)

        return wrapper

    for kind, check in list(verify.CHECKS.items()):
        monkeypatch.setitem(verify.CHECKS, kind, counted(kind, check))
    return counts


def load_mnist(raw, cache=None, train=True):
    return load_source("mnist", raw.parent.parent, train=train, download=False, verify_cache=cache)


def damaged(raw, cache=None, train=True) -> str:
    """The DataError message of loading MNIST from `raw`, checked to be one helpful paragraph."""
    with pytest.raises(DataError) as err:
        load_mnist(raw, cache, train)
    message = str(err.value)
    assert "\n" not in message
    assert "paths.verify_data=false" in message and "download" in message
    return message


def test_good_mnist_passes_and_is_then_read_from_the_cache(mnist, tmp_path, monkeypatch, calls):
    cache = tmp_path / "out" / "cache" / "verified-data.json"
    src = load_mnist(mnist, cache)
    assert src.x.shape == (30, 1, 28, 28)
    assert calls == {"idx_images": 1, "idx_labels": 1}
    entries = json.loads(cache.read_text())
    images, labels = (
        str(mnist / f) for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    )
    assert os.path.isabs(images) and set(entries) == {images, labels}
    stat = os.stat(images)
    assert entries[images] == {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "verified": {"check": "idx_images", "shape": [28, 28]},
        "facts": {"count": 30},
    }

    def broken(*args, **kwargs):
        raise AssertionError("a cached file was checked again")

    for kind in verify.CHECKS:
        monkeypatch.setitem(verify.CHECKS, kind, broken)
    assert load_mnist(mnist, cache).x.shape == (30, 1, 28, 28)


def test_test_split_adds_its_files_to_the_cache(mnist, tmp_path, calls):
    cache = tmp_path / "verified-data.json"
    load_mnist(mnist, cache)
    load_mnist(mnist, cache, train=False)
    assert len(json.loads(cache.read_text())) == 4
    assert calls == {"idx_images": 2, "idx_labels": 2}


def test_without_a_cache_file_every_load_checks(mnist, calls):
    load_mnist(mnist)
    load_mnist(mnist)
    assert calls == {"idx_images": 2, "idx_labels": 2}


def test_truncated_images_file(mnist):
    images = mnist / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    message = damaged(mnist)
    assert f"{images} is 1,000 bytes but its header (30 images of 28x28) needs 23,536" in message
    assert "Dataset 'mnist' has a damaged file" in message


def test_wrong_magic(mnist):
    labels = mnist / "train-labels-idx1-ubyte"
    labels.write_bytes((2051).to_bytes(4, "big") + labels.read_bytes()[4:])
    assert f"{labels} starts with the magic number 2051, not 2049" in damaged(mnist)


def test_file_shorter_than_its_header(mnist):
    images = mnist / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:10])
    message = damaged(mnist, train=False)
    assert f"{images} is 10 bytes, shorter than its 16-byte IDX header" in message


def test_image_and_label_counts_disagree(mnist):
    write_idx(mnist / "train-labels-idx1-ubyte", 2049, np.arange(29) % 10)
    message = damaged(mnist)
    assert "holds 30 images but" in message and "holds 29 labels" in message
    assert str(mnist / "train-images-idx3-ubyte") in message
    assert str(mnist / "train-labels-idx1-ubyte") in message


def test_label_out_of_range(mnist):
    labels = np.arange(30) % 10
    labels[7] = 12
    path = mnist / "train-labels-idx1-ubyte"
    write_idx(path, 2049, labels)
    assert f"{path} has label 12 (at index 7) out of range 0-9" in damaged(mnist)


def test_gz_archive_is_checked_against_torchvision_md5(mnist):
    archive = mnist / "train-labels-idx1-ubyte.gz"
    with gzip.open(archive, "wb") as out:
        out.write((mnist / "train-labels-idx1-ubyte").read_bytes())
    message = damaged(mnist)
    assert f"{archive} has MD5" in message and "d53e105ee54ea40749a09fcbcd1e9432" in message


def test_changed_file_is_checked_again(mnist, tmp_path, calls):
    cache = tmp_path / "verified-data.json"
    load_mnist(mnist, cache)
    labels = mnist / "train-labels-idx1-ubyte"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, new mtime
    load_mnist(mnist, cache)
    assert calls == {"idx_images": 1, "idx_labels": 2}
    images = mnist / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])  # new size
    assert "is 23,535 bytes" in damaged(mnist, cache)


def test_unreadable_cache_is_ignored_and_replaced(mnist, tmp_path, calls):
    cache = tmp_path / "verified-data.json"
    cache.write_text("{not json")
    load_mnist(mnist, cache)
    assert len(json.loads(cache.read_text())) == 2
    assert calls == {"idx_images": 1, "idx_labels": 1}


def test_cache_drops_entries_of_files_that_are_gone(mnist, tmp_path):
    cache = tmp_path / "verified-data.json"
    cache.write_text(json.dumps({str(tmp_path / "gone"): {"size": 1}}))
    load_mnist(mnist, cache)
    assert str(tmp_path / "gone") not in json.loads(cache.read_text())


@pytest.mark.parametrize("failure", [PermissionError(13, "Permission denied"), UserError("full")])
def test_a_cache_that_cannot_be_written_costs_only_rechecking(
    mnist, tmp_path, monkeypatch, failure
):
    def refuse(path, obj):
        raise failure

    monkeypatch.setattr(verify, "write_json_atomic", refuse)
    assert load_mnist(mnist, tmp_path / "verified-data.json").x.shape == (30, 1, 28, 28)


def test_nothing_is_written_into_the_data_folder(mnist, tmp_path):
    before = sorted(p.name for p in mnist.iterdir())
    load_mnist(mnist, tmp_path / "verified-data.json")
    assert sorted(p.name for p in mnist.iterdir()) == before


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_truncated_cifar_batch(tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path, n_train=20, n_test=10)
    # Pretend the fake meta file is the published one, so the check reaches the batches.
    meta = {**datasets.CIFAR10.meta, "md5": md5_of(folder / "batches.meta")}
    monkeypatch.setattr(datasets.CIFAR10, "meta", meta)
    batch = folder / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_source("cifar10", tmp_path, train=True, download=False)
    message = str(err.value)
    assert f"Dataset 'cifar10' has a damaged file: {batch} cannot be unpickled (" in message
    assert "cifar-10-python.tar.gz" in message and "\n" not in message


def test_cifar_batch_with_label_out_of_range(tmp_path, monkeypatch):
    folder = write_cifar100(tmp_path, n_train=100, n_test=100)
    meta = {**datasets.CIFAR100.meta, "md5": md5_of(folder / "meta")}
    monkeypatch.setattr(datasets.CIFAR100, "meta", meta)
    batch = pickle.loads((folder / "test").read_bytes())
    batch["fine_labels"][5] = 100
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"test has label 100 \(at index 5\) out of range 0-99"):
        load_source("cifar100", tmp_path, train=False, download=False)


@pytest.mark.parametrize(
    ("name", "write", "first"),
    [("cifar10", write_cifar10, "batches.meta"), ("cifar100", write_cifar100, "meta")],
)
def test_fake_cifar_fails_md5_and_loads_unverified(tmp_path, name, write, first):
    folder = write(tmp_path)
    with pytest.raises(DataError) as err:
        load_source(name, tmp_path, train=True, download=False)
    found = md5_of(folder / first)
    assert f"{folder / first} has MD5 {found}, but torchvision publishes" in str(err.value)
    unchecked = load_source(name, tmp_path, train=True, download=False, verify=False)
    assert unchecked.x.shape[1:] == (3, 32, 32)


def test_corrupt_imagefolder_image(tmp_path):
    base = write_imagenet10(tmp_path, n_per_class=1, size=16, num_classes=2)
    image = base / "val" / "n00000001" / "img_1.png"
    image.write_bytes(image.read_bytes()[:60])
    assert load_source("imagenet10", tmp_path, train=True).x.shape == (2, 3, 32, 32)
    with pytest.raises(DataError) as err:
        load_source("imagenet10", tmp_path, train=False)
    message = str(err.value)
    assert f"{image} cannot be read as an image (" in message
    assert "cannot be downloaded automatically" in message and "\n" not in message


def test_runner_records_a_damaged_file_as_a_failed_run(tmp_path, caplog):
    raw = write_mnist(tmp_path / "data", n_train=100, n_test=40)
    out = tmp_path / "out"
    overrides = [*TINY, f"paths.data_dir={tmp_path / 'data'}", f"paths.output_root={out}"]
    build_data(compose_cfg(overrides))
    cache = json.loads((out / "cache" / "verified-data.json").read_text())
    assert len(cache) == 4
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with caplog.at_level(logging.ERROR):
        record = run(compose_cfg(overrides), tmp_path / "run")
    assert record.status == "failed"
    error = record.error
    assert error.startswith(f"Dataset 'mnist' has a damaged file: {images} is 1,000 bytes")
    assert "\n" not in error and "Traceback" not in error
    assert json.loads((tmp_path / "run" / "result.json").read_text())["error"] == error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [error]
    assert all(r.exc_info is None for r in caplog.records)
    # Switched off, the check is skipped and torchvision meets the damaged file.
    with pytest.raises(RuntimeError, match="is invalid for input of size"):
        run(compose_cfg([*overrides, "paths.verify_data=false"]), tmp_path / "unchecked")
