"""Splits are disjoint, deterministic in the seed, and have the counts the config asks for."""

import numpy as np
import torch
from conftest import compose_cfg

from l2rw.data.splits import build_data
from l2rw.train import run


def _positions(bundle):
    return {s: set(getattr(bundle, s).index.tolist()) for s in ("train", "clean", "hyper_val")}


def test_splits_disjoint_and_sized(tiny_cfg):
    cfg = tiny_cfg("noise=uniform_flip", "noise.rate=0.4", "dataset.clean_size=20")
    data = build_data(cfg)
    pos = _positions(data)
    assert not pos["train"] & pos["clean"]
    assert not pos["train"] & pos["hyper_val"]
    assert not pos["clean"] & pos["hyper_val"]
    assert data.facts["sizes"] == {"train": 360, "clean": 20, "hyper_val": 20, "test": 100}
    assert data.facts["clean_class_counts"] == [2] * 10
    # uniform_flip is exact in count: round(0.4 * 360) = 144 flipped training labels.
    assert int((data.train.y != data.train.y_true).sum()) == 144
    assert abs(data.facts["noise"]["realized_rate"] - 0.4) < 1e-12
    # The clean pool keeps true labels.
    assert torch.equal(data.clean.y, data.clean.y_true)


def test_splits_deterministic_in_seed(tiny_cfg):
    a = build_data(tiny_cfg("noise=uniform_flip", "dataset.clean_size=10", "seed=3"))
    b = build_data(tiny_cfg("noise=uniform_flip", "dataset.clean_size=10", "seed=3"))
    c = build_data(tiny_cfg("noise=uniform_flip", "dataset.clean_size=10", "seed=4"))
    for split in ("train", "clean", "hyper_val", "test"):
        assert np.array_equal(getattr(a, split).index, getattr(b, split).index)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
    assert not np.array_equal(a.clean.index, c.clean.index)
    assert not torch.equal(a.train.y, c.train.y)


def test_binary_imbalance_carves_balanced_clean_pool_from_budget(tiny_cfg):
    cfg = tiny_cfg(
        "imbalance=binary",
        "imbalance.total=30",
        "imbalance.majority_fraction=0.8",
        "dataset.clean_size=4",
        "dataset.hyper_val_size=0",
    )
    data = build_data(cfg)
    assert data.num_classes == 2
    # 24 nines + 6 fours in the budget; 2 + 2 of them become the clean pool.
    assert data.facts["class_counts"] == [4, 22]
    assert data.facts["clean_class_counts"] == [2, 2]
    assert data.facts["sizes"]["train"] + data.facts["sizes"]["clean"] == 30
    # The test set holds only fours and nines, relabelled 0 and 1.
    assert set(data.test.y.tolist()) == {0, 1}
    assert data.facts["sizes"]["test"] == 20


def test_hyper_val_from_test_is_removed_from_test(tiny_cfg):
    data = build_data(tiny_cfg("dataset.hyper_val_from=test", "dataset.hyper_val_size=10"))
    assert data.facts["sizes"]["hyper_val"] == 10 and data.facts["sizes"]["test"] == 90
    assert data.facts["sizes"]["train"] == 400
    assert not set(data.hyper_val.index.tolist()) & set(data.test.index.tolist())


def test_noisy_hyper_validation_is_corrupted_like_training(tiny_cfg):
    cfg = tiny_cfg("noise=uniform_flip", "noise.rate=0.5", "dataset.hyper_val_size=40")
    data = build_data(cfg)
    assert int((data.hyper_val.y != data.hyper_val.y_true).sum()) == 20


def test_toy2d_uses_its_own_split(tiny_cfg):
    cfg = tiny_cfg("dataset=toy2d", "model=mlp", "noise=uniform_flip", "noise.rate=0.6")
    data = build_data(cfg)
    sizes = data.facts["sizes"]
    assert sizes["train"] + sizes["clean"] == 600
    assert sizes["hyper_val"] == 160 and sizes["test"] == 240
    assert data.train.x.dtype == torch.float32


def _flip_targets(split) -> set[int]:
    flipped = split.y != split.y_true
    return set(split.y[flipped].tolist())


def test_hyper_validation_gets_the_training_background_class(tiny_cfg):
    # The class is drawn (no noise.background_class): one draw for both splits, every seed.
    for seed in range(4):
        cfg = tiny_cfg(
            "noise=background", "noise.rate=0.5", "dataset.hyper_val_size=60", f"seed={seed}"
        )
        data = build_data(cfg)
        b = data.facts["noise"]["background_class"]
        assert _flip_targets(data.train) == {b}
        assert _flip_targets(data.hyper_val) == {b}


def test_hyper_validation_gets_the_training_permutation(tiny_cfg):
    cfg = tiny_cfg(
        "noise=adversarial",
        "noise.mapping=derangement",
        "noise.rate=0.5",
        "dataset.hyper_val_size=60",
    )
    data = build_data(cfg)
    perm = torch.tensor(data.facts["noise"]["permutation"])
    for split in (data.train, data.hyper_val):
        flipped = split.y != split.y_true
        assert flipped.sum() == round(0.5 * len(split))
        assert torch.equal(split.y[flipped], perm[split.y_true[flipped]])


def test_real_noise_labels_hyper_validation_from_the_same_file(tiny_cfg, tmp_path):
    file_labels = (np.arange(400) * 7 + 3) % 10  # a fixed relabelling of the 400 images
    np.save(tmp_path / "labels.npy", file_labels)
    cfg = tiny_cfg(
        "noise=real", f"noise.path={tmp_path / 'labels.npy'}", "dataset.hyper_val_size=40"
    )
    data = build_data(cfg)
    for split in (data.train, data.hyper_val):
        assert np.array_equal(split.y.numpy(), file_labels[split.index])
    assert int((data.hyper_val.y != data.hyper_val.y_true).sum()) > 0
    assert data.facts["noise"]["path"] == str(tmp_path / "labels.npy")


def test_background_protocol_uses_the_papers_trial_classes_and_ten_clean_per_class(tiny_cfg):
    for dataset, classes in (("cifar10", [0, 1, 3, 5, 7]), ("cifar100", [7, 12, 41, 62, 85])):
        for seed, expected in enumerate(classes):
            cfg = compose_cfg(
                [f"dataset={dataset}", "model=resnet32", "protocol=l2rw_background", f"seed={seed}"]
            )
            assert cfg.noise.name == "background" and cfg.noise.background_class == expected
            assert cfg.dataset.clean_per_class == 10 and cfg.dataset.clean_size == 0
    cfg = compose_cfg(["dataset=cifar10", "model=resnet32", "protocol=l2rw_uniform"])
    assert cfg.noise.name == "uniform_flip" and cfg.dataset.clean_size == 1000
    # On the tiny MNIST: 10 clean images of each class, the per-trial class for seed 1.
    cfg = tiny_cfg("protocol=l2rw_background", "+dataset.background_trial_classes=[4,8]", "seed=1")
    data = build_data(cfg)
    assert data.facts["clean_class_counts"] == [10] * 10
    assert _flip_targets(data.train) == {8}


def test_background_protocol_refuses_a_seed_without_a_paper_trial(tiny_cfg, tmp_path):
    cfg = tiny_cfg("protocol=l2rw_background", "+dataset.background_trial_classes=[4,8]", "seed=2")
    record = run(cfg, tmp_path)
    assert record.status == "failed"
    assert "seed=2 has no per-trial value" in record.error


def test_clean_size_and_clean_per_class_together_are_refused(tiny_cfg, tmp_path):
    record = run(tiny_cfg("dataset.clean_size=20", "dataset.clean_per_class=2"), tmp_path)
    assert record.status == "failed" and "one size" in record.error


def test_rbc_protocol_clean_validation_from_test_uniform_meta_set_full_head(tiny_cfg):
    cfg = tiny_cfg(
        "protocol=rbc",
        "noise=adversarial",
        "noise.rate=0.6",
        "imbalance=longtail",
        "imbalance.factor=4",
        "dataset.hyper_val_size=10",
        "dataset.clean_size=7",  # not a multiple of 10: drawn uniformly, not per class
    )
    data = build_data(cfg)
    assert data.facts["sizes"]["hyper_val"] == 10 and data.facts["sizes"]["test"] == 90
    assert torch.equal(data.hyper_val.y, data.hyper_val.y_true)  # noise-free validation
    assert data.facts["sizes"]["clean"] == 7
    # The head is counted on the whole training split: 40 images of class 0 in the tiny MNIST.
    head = data.facts["class_counts"][0] + data.facts["clean_class_counts"][0]
    assert head == 40
