"""Splits are disjoint, deterministic in the seed, and have the counts the config asks for."""

import numpy as np
import torch

from l2rw.data.splits import build_data


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
