"""The RBC tables' data settings, composed from their table configs over tiny generated data:
Table 2's long tail with clean labels, Table 9's long tail then noise with per-dataset budgets,
Table 7's human labels read from a CIFAR-N-format file whose clean labels are checked."""

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from fakedata import write_cifar10, write_cifar100

from l2rw.config.validate import validate
from l2rw.data.imbalance import longtail_counts
from l2rw.data.splits import build_data
from l2rw.errors import DataError

SMALL = ["dataset.hyper_val_size=20", "dataset.options.download=false", "paths.verify_data=false"]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=2000, n_test=60)
    write_cifar100(root, n_train=200, n_test=100)
    return root


def table(name: str, root, *overrides: str):
    cfg = compose_cfg([f"+table={name}", "scale=cpu", f"paths.data_dir={root}", *SMALL, *overrides])
    validate(cfg)
    return cfg


def test_table2_long_tail_keeps_labels_clean_and_clusters_full_gradients(cifar_dir):
    cfg = table("rbc_table2", cifar_dir, "dataset=cifar10", "selector=rbc")
    data = build_data(cfg)
    counts = data.facts["class_counts"]
    # The warm-up's 10 meta samples come out of the long-tailed set.
    expected = longtail_counts(200, 10, 200.0)
    assert sum(counts) + len(data.clean) == sum(expected)
    clean_counts = np.bincount(data.clean.y_true.numpy(), minlength=10)
    assert (np.array(counts) + clean_counts).tolist() == expected
    assert torch.equal(data.train.y, data.train.y_true)
    assert cfg.selector.label_free is None and cfg.noise.name == "none"


def test_table9_budgets_follow_the_dataset_and_noise_follows_the_tail(cifar_dir):
    c100 = table("rbc_table9", cifar_dir, "dataset=cifar100", "imbalance.factor=200")
    assert (c100.dataset.rbc_warmup, c100.selector.budget) == (100, 300)
    cfg = table("rbc_table9", cifar_dir, "dataset=cifar10", "imbalance.factor=100")
    assert (cfg.dataset.clean_size, cfg.selector.budget, cfg.train.meta_batch_size) == (
        10,
        110,
        110,
    )
    data = build_data(cfg)
    true_counts = np.bincount(
        np.concatenate([data.train.y_true.numpy(), data.clean.y_true.numpy()]), minlength=10
    )
    assert true_counts.tolist() == longtail_counts(200, 10, 100.0)
    assert abs(data.facts["noise"]["realized_rate"] - 0.4) < 0.06
    assert bool((data.clean.y == data.clean.y_true).all())


def cifar_n_file(path, clean: np.ndarray, seed: int = 0) -> np.ndarray:
    """A CIFAR-100_human.pt-shaped dict of numpy arrays; returns its noisy labels."""
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(len(clean)) < 0.4, rng.integers(0, 100, len(clean)), clean)
    torch.save({"clean_label": clean, "noisy_label": noisy}, path)
    return noisy


def test_table7_reads_cifar_n_labels_by_source_position(cifar_dir):
    train_labels = np.arange(200) % 100  # write_cifar100's training labels
    noisy = cifar_n_file(cifar_dir / "CIFAR-100_human.pt", train_labels)
    cfg = table(
        "rbc_table7",
        cifar_dir,
        "selector=random",
        "dataset.rbc_warmup=10",
        "dataset.train_subset=null",
    )
    assert cfg.noise.path == f"{cifar_dir}/CIFAR-100_human.pt"
    data = build_data(cfg)
    assert np.array_equal(data.train.y.numpy(), noisy[data.train.index])
    assert np.array_equal(data.train.y_true.numpy(), train_labels[data.train.index])
    assert np.array_equal(data.clean.y.numpy(), train_labels[data.clean.index])


def test_table7_refuses_a_label_file_of_another_dataset(cifar_dir, tmp_path):
    (tmp_path / "cifar-100-python").symlink_to(cifar_dir / "cifar-100-python")
    cifar_n_file(tmp_path / "CIFAR-100_human.pt", (np.arange(200) + 7) % 100)
    cfg = table(
        "rbc_table7",
        tmp_path,
        "selector=random",
        "dataset.rbc_warmup=10",
        "dataset.train_subset=null",
    )
    with pytest.raises(DataError, match="disagree with the dataset's own labels"):
        build_data(cfg)
