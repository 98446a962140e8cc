"""The real-noise benchmarks (CIFAR-N, ANIMAL-10N, Food-101N, Clothing1M), read from tiny
copies written in their published layouts, through the real loaders and build_data."""

import numpy as np
import pytest
import torch
from conftest import TINY, compose_cfg
from fakedata import (
    FOOD_CLASSES,
    write_animal10n,
    write_cifar10,
    write_cifar100,
    write_cifar_n,
    write_clothing1m,
    write_food101n,
)

from l2rw.config.validate import validate
from l2rw.data.sources import load_source
from l2rw.data.splits import build_data
from l2rw.errors import ConfigError, DataError
from l2rw.train import resolved, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(name, root, train=True, **options):
    return load_source(name, root, train, verify=False, download=False, **options)


def test_cifar10n_trains_on_the_chosen_human_labels_with_cifars_as_truth(tmp_path):
    write_cifar10(tmp_path, n_train=100, n_test=20)
    labels = torch.load(write_cifar_n(tmp_path), weights_only=False)
    train = load("cifar10n", tmp_path)
    assert tuple(train.x.shape) == (100, 3, 32, 32) and train.truth_known
    assert np.array_equal(train.y, np.arange(100) % 10)
    assert np.array_equal(train.y_observed, labels["worse_label"])
    assert np.mean(train.y_observed != train.y) == 0.25 and train.clean_candidates is None
    aggre = load("cifar10n", tmp_path, label_set="aggre_label")
    assert np.array_equal(aggre.y_observed, labels["aggre_label"])
    test = load("cifar10n", tmp_path, train=False)
    assert len(test.y) == 20 and test.y_observed is None
    with pytest.raises(DataError, match=r"no label set 'worst'.*aggre_label"):
        load("cifar10n", tmp_path, label_set="worst")
    with pytest.raises(DataError, match=r"CIFAR-N.*does not exist.*UCSC-REAL"):
        load("cifar10n", tmp_path, labels_path=str(tmp_path / "nowhere.pt"))


def test_cifar100n_reads_its_own_file_and_label_set(tmp_path):
    write_cifar100(tmp_path, n_train=200, n_test=100)
    write_cifar_n(tmp_path, num_classes=100, n_train=200)
    train = load("cifar100n", tmp_path)
    assert train.num_classes == 100 and np.array_equal(train.y, np.arange(200) % 100)
    assert np.mean(train.y_observed != train.y) == 0.25


def test_a_cifar_n_file_whose_clean_labels_disagree_is_refused(tmp_path):
    write_cifar10(tmp_path, n_train=100, n_test=20)
    path = write_cifar_n(tmp_path, disagree=True)
    with pytest.raises(DataError, match=r"disagrees with CIFAR's own training labels at 1 of 100"):
        load("cifar10n", tmp_path, labels_path=str(path))


def test_animal10n_labels_come_from_the_file_names_and_are_the_only_ones(tmp_path):
    base = write_animal10n(tmp_path, n_train=30, n_test=10)
    train, test = load("animal10n", tmp_path), load("animal10n", tmp_path, train=False)
    assert tuple(train.x.shape) == (30, 3, 64, 64) and train.x.dtype == torch.uint8
    assert tuple(test.x.shape) == (10, 3, 64, 64)
    assert np.bincount(train.y).tolist() == [3] * 10 and train.classes[9] == "guinea pig"
    assert not train.truth_known and train.y_observed is None
    # Sorted by file name: label prefix first.
    assert train.y.tolist() == sorted(train.y.tolist())
    with pytest.raises(DataError, match=r"0\.0 GB.*max_memory_gb=1e-06"):
        load("animal10n", None, path=str(base), max_memory_gb=1e-6)
    (base / "training" / "cat_00031.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"cat_00031\.jpg has no label prefix"):
        load("animal10n", tmp_path)
    (base / "training" / "cat_00031.jpg").unlink()
    (base / "training" / "12_00032.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"12_00032\.jpg has no label prefix 0-9"):
        load("animal10n", tmp_path)


def test_a_truncated_animal10n_image_is_named(tmp_path):
    base = write_animal10n(tmp_path, n_train=10, n_test=10)
    bad = base / "testing" / "3_00003.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{bad}.*damaged"):
        load("animal10n", tmp_path)


def test_food101n_verified_correct_images_are_the_only_clean_candidates(tmp_path):
    write_food101n(tmp_path, n_per_class=6, n_test_per_class=2, size=20)
    train = load("food101n", tmp_path, size=16)
    test = load("food101n", tmp_path, train=False, size=16)
    assert tuple(train.x.shape) == (18, 3, 16, 16) and tuple(test.x.shape) == (6, 3, 16, 16)
    assert train.classes == list(FOOD_CLASSES)
    assert train.y.tolist() == [c for c in range(3) for _ in range(6)]
    assert test.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert not train.truth_known and train.y_observed is None
    # Images 0-2 of each class verified correct; 3 verified wrong; 4 only in verified_val.
    assert train.clean_candidates.tolist() == [c * 6 + i for c in range(3) for i in range(3)]


def test_food101n_clean_pool_is_drawn_among_the_candidates_only(tmp_path):
    write_food101n(tmp_path, n_per_class=6, n_test_per_class=2)
    common = [
        "dataset=food101n",
        f"dataset.options.path={tmp_path}",
        "dataset.options.size=16",
        "dataset.num_classes=3",
        "dataset.hyper_val_size=2",
        "dataset.hyper_val_from=test",
    ]
    candidates = {c * 6 + i for c in range(3) for i in range(3)}
    for seed in range(2):
        cfg = compose_cfg([*common, "dataset.clean_size=6", f"seed={seed}"])
        bundle = build_data(cfg)
        assert len(bundle.clean) == 6 and set(bundle.clean.index) <= candidates
        assert not set(bundle.clean.index) & set(bundle.train.index)
    # Carved out before the imbalance (MW-Net's order), the pool is drawn among them too.
    bundle = build_data(
        compose_cfg([*common, "dataset.clean_size=6", "dataset.clean_from_budget=false"])
    )
    assert len(bundle.clean) == 6 and set(bundle.clean.index) <= candidates
    with pytest.raises(ConfigError, match=r"clean pool for class 0 asks for 4 images but only 3"):
        build_data(compose_cfg([*common, "dataset.clean_size=12"]))
    cfg = compose_cfg([*common, "dataset.clean_size=10", "dataset.clean_balanced=false"])
    with pytest.raises(ConfigError, match=r"clean pool asks for 10 images but only 9"):
        build_data(cfg)


def test_food101n_listing_errors_name_the_file(tmp_path):
    write_food101n(tmp_path)
    listing = tmp_path / "Food-101N_release" / "meta" / "imagelist.tsv"
    with pytest.raises(DataError, match=r"max_memory_gb=1e-06.*smaller dataset.options.size"):
        load("food101n", tmp_path, max_memory_gb=1e-6)
    gone = tmp_path / "Food-101N_release" / "images" / "baklava" / "0102abcdef0.jpg"
    gone.unlink()
    with pytest.raises(DataError, match=rf"{listing} lists 1 image.*{gone}"):
        load("food101n", tmp_path)
    listing.write_text(listing.read_text() + "pizza/xyz.jpg\n")
    with pytest.raises(DataError, match=r"line 20 of .*imagelist.tsv.*'pizza'"):
        load("food101n", tmp_path)


def test_clothing1m_training_split_noisy_labels_truth_and_candidates(tmp_path):
    base = write_clothing1m(tmp_path, n_noisy=28, n_overlap=6, n_extra=4, n_test=14)
    train = load("clothing1m", tmp_path, size=16)
    test = load("clothing1m", tmp_path, train=False, size=16)
    assert tuple(train.x.shape) == (32, 3, 16, 16) and tuple(test.x.shape) == (14, 3, 16, 16)
    true = np.arange(28) % 14
    noisy = true.copy()
    noisy[::3] = (noisy[::3] + 1) % 14
    assert np.array_equal(train.y_observed, [*noisy, *range(4)])
    # The truth where the clean labels know it (the first 6 noisy keys and the 4 extra ones).
    assert np.array_equal(train.y, [*true[:6], *noisy[6:], *range(4)])
    assert train.clean_candidates.tolist() == [0, 1, 2, 3, 4, 5, 28, 29, 30, 31]
    assert not train.truth_known and train.classes[0] == "T-Shirt" and train.num_classes == 14
    assert np.array_equal(test.y, np.arange(14))
    limited = load("clothing1m", None, path=str(base), size=16, train_keys_limit=10)
    # The first 10 noisy keys, then the 4 clean training keys not among them.
    assert len(limited.y) == 14 and np.array_equal(limited.y_observed, [*noisy[:10], *range(4)])
    assert limited.clean_candidates.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13]


def test_clothing1m_with_noise_source_trains_on_the_noisy_labels(tmp_path):
    write_clothing1m(tmp_path)
    cfg = compose_cfg(
        [
            "dataset=clothing1m",
            f"paths.data_dir={tmp_path}",
            "dataset.options.size=16",
            "noise=source",
            "dataset.clean_size=5",
            "dataset.hyper_val_size=4",
        ]
    )
    bundle = build_data(cfg)
    source = load("clothing1m", tmp_path, size=16)
    assert set(bundle.clean.index) <= set(source.clean_candidates.tolist())
    assert np.array_equal(bundle.train.y.numpy(), source.y_observed[bundle.train.index])
    assert np.array_equal(bundle.clean.y.numpy(), source.y[bundle.clean.index])
    assert len(bundle.hyper_val) == 4 and len(bundle.test) == 10


def test_clothing1m_errors_name_the_listing_and_the_file(tmp_path):
    base = write_clothing1m(tmp_path)
    gone = base / "images" / "3" / "03" / "t3.jpg"
    gone.unlink()
    with pytest.raises(DataError, match=rf"clean_test_key_list.txt lists 1 image.*{gone}"):
        load("clothing1m", tmp_path)
    base = write_clothing1m(tmp_path / "b")
    kv = base / "noisy_label_kv.txt"
    lines = kv.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 14"
    kv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 5 of .*noisy_label_kv.txt.*'14', not a class"):
        load("clothing1m", None, path=str(base))
    base = write_clothing1m(tmp_path / "c")
    bad = base / "images" / "5" / "05" / "n5.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{bad} cannot be decoded.*damaged"):
        load("clothing1m", None, path=str(base))
    with pytest.raises(DataError, match=r"24 images of 3x32x32.*max_memory_gb=1e-06"):
        load("clothing1m", None, path=str(base), max_memory_gb=1e-6, train_keys_limit=1)


@pytest.mark.parametrize(
    ("dataset", "protocol", "noise", "model", "arch"),
    [
        ("clothing1m", "clothing1m", "source", "torchvision", "resnet50"),
        ("food101n", "food101n", "none", "torchvision", "resnet50"),
        ("animal10n", "animal10n", "none", "torchvision", "vgg19_bn"),
        ("cifar10n", "cifar_n", "source", "resnet34", None),
        ("cifar100n", "cifar_n", "source", "resnet34", None),
    ],
)
def test_the_protocol_presets_compose(dataset, protocol, noise, model, arch):
    cfg = compose_cfg([f"dataset={dataset}", f"protocol={protocol}", "paths.data_dir=/data"])
    validate(cfg)
    values = resolved(cfg)
    assert values["noise"]["name"] == noise and values["model"]["name"] == model
    assert values["model"]["input_shape"] == values["dataset"]["input_shape"]
    if arch is not None:
        assert values["model"]["options"]["arch"] == arch
        assert values["model"]["options"]["weights_path"] is None
    assert values["optimizer"]["name"] == "sgd"
    assert values["train"]["unit"] == "epochs" or protocol == "food101n"


@pytest.mark.parametrize("selector", ["random", "rbc"])
def test_a_selector_cleans_only_examples_whose_true_label_is_known(tmp_path, selector):
    """Clothing1M knows the truth of 10 of its 32 training images (the clean_label_kv keys):
    the meta samples a selector picks, to be cleaned, are among those, whatever it prefers."""
    write_clothing1m(tmp_path)
    candidates = set(load("clothing1m", tmp_path, size=16).clean_candidates.tolist())
    common = [
        *TINY,
        "dataset=clothing1m",
        f"paths.data_dir={tmp_path}",
        f"paths.output_root={tmp_path / 'outputs'}",
        "dataset.options.size=16",
        "noise=source",
        "model=mlp",
        "method=meta_reweight",
        f"selector={selector}",
        "selector.snapshot_every=1",
        "dataset.clean_size=2",
        "dataset.hyper_val_size=4",
        "dataset.hyper_val_from=test",
        "device=cpu",
    ]
    record = run(compose_cfg([*common, "selector.budget=8"]), tmp_path / "job")
    assert record.status == "completed", record.error
    picked = record.selection["meta_indices"]
    assert len(picked) == 8 and set(picked) <= candidates
    # 8 verified examples are left after the warm-up's 2: a budget needing 9 more is refused.
    record = run(compose_cfg([*common, "selector.budget=11"]), tmp_path / "job2")
    assert record.status == "failed"
    assert "knows the true label of only 8 of the training examples left" in record.error
