"""A user's own data: image folders and array files, through the real loaders and the runner."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import write_arrays, write_image_folder
from PIL import Image

from l2rw.data.describe import describe
from l2rw.data.sources import load_source
from l2rw.data.splits import build_data
from l2rw.errors import ConfigError, DataError
from l2rw.tracking.record import run_dirname
from l2rw.train import resolved

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent


def folder(path, train=True, **options):
    return load_source("folder", None, train, verify=False, path=str(path), **options)


def arrays(path, train=True, **options):
    return load_source("arrays", None, train, verify=False, path=str(path), **options)


def test_a_folder_of_mixed_png_and_jpeg_sizes_is_read_resized_in_sorted_class_order(tmp_path):
    root = write_image_folder(tmp_path / "tree", n_train=30, n_test=12, size=16)
    train, test = folder(root, size=12), folder(root, train=False, size=12)
    assert train.x.dtype == torch.uint8 and tuple(train.x.shape) == (30, 3, 12, 12)
    assert tuple(test.x.shape) == (12, 3, 12, 12)
    assert train.classes == ["cat", "dog", "eel"] and train.num_classes == 3
    assert np.bincount(train.y).tolist() == [10, 10, 10]
    assert not train.truth_known
    # The listed classes only, in the list's order.
    listed = folder(root, size=12, classes=["eel", "cat"])
    assert listed.classes == ["eel", "cat"] and np.bincount(listed.y).tolist() == [10, 10]


def test_a_grayscale_tree_has_one_channel_and_a_uniform_one_needs_no_size(tmp_path):
    root = write_image_folder(tmp_path / "gray", grayscale=True, mixed_sizes=False, size=10)
    source = folder(root)
    assert tuple(source.x.shape[1:]) == (1, 10, 10)
    assert tuple(folder(root, channels=3).x.shape[1:]) == (3, 10, 10)


def test_folder_errors_name_the_file_and_the_fix(tmp_path):
    root = write_image_folder(tmp_path / "tree")
    with pytest.raises(DataError, match=r"first image is .*dataset\.options\.size"):
        folder(root)
    with pytest.raises(DataError, match="max_memory_gb"):
        folder(root, size=12, max_memory_gb=1e-6)
    bad = root / "train" / "dog" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=str(bad)):
        folder(root, size=12)
    with pytest.raises(DataError, match=str(bad)):  # the verification names it too
        load_source("folder", None, True, verify=True, path=str(root), size=12)
    (root / "test" / "yak").mkdir()
    Image.new("RGB", (16, 16)).save(root / "test" / "yak" / "0.png")
    bad.unlink()
    with pytest.raises(DataError, match="yak"):
        folder(root, size=12)
    with pytest.raises(DataError, match="no train/"):
        folder(tmp_path)


def test_arrays_images_in_either_layout_and_feature_vectors(tmp_path):
    nhwc = arrays(write_arrays(tmp_path / "a.npz", shape=(12, 12, 3)))
    assert tuple(nhwc.x.shape) == (120, 3, 12, 12) and nhwc.x.dtype == torch.uint8
    gray = arrays(write_arrays(tmp_path / "b.pt", shape=(12, 12)))
    assert tuple(gray.x.shape) == (120, 1, 12, 12)
    x = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    np.savez(tmp_path / "c.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[1, 0])
    assert tuple(arrays(tmp_path / "c.npz").x.shape) == (2, 3, 4, 5)  # auto: channels first
    assert torch.equal(arrays(tmp_path / "c.npz", layout="nchw").x, torch.from_numpy(x))
    vectors = arrays(write_arrays(tmp_path / "d.npz", shape=(7,)))
    assert vectors.x.dtype == torch.float32 and tuple(vectors.x.shape) == (120, 7)
    assert vectors.num_classes == 3 and not vectors.truth_known


GOOD_ARRAYS = {
    "x_train": np.zeros((2, 3), np.float32),
    "y_train": np.array([0, 1]),
    "x_test": np.zeros((2, 3), np.float32),
    "y_test": np.array([1, 0]),
}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"x_test": None, "y_test": None}, "has no x_test, y_test"),
        ({"y_train": np.array([0, -1])}, "class indices 0..K-1"),
        ({"y_train": np.array([0.5, 1])}, "class indices 0..K-1"),
        ({"y_train": np.array([0, 1, 1])}, r"shape \[3\]"),
        ({"x_train": np.zeros((2, 4, 4), np.float32)}, "uint8"),
        ({"x_test": np.zeros((2, 4), np.float32)}, "same shape"),
    ],
)
def test_a_bad_arrays_file_is_one_paragraph(tmp_path, changes, needle):
    content = {k: v for k, v in {**GOOD_ARRAYS, **changes}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(DataError, match=needle):
        arrays(tmp_path / "bad.npz")


def test_statistics_are_the_training_images_mean_and_std(tmp_path):
    source = arrays(write_arrays(tmp_path / "a.npz", shape=(12, 12, 3)))
    info = describe(source)
    pixels = source.x.double().div(255).permute(1, 0, 2, 3).reshape(3, -1)
    assert info.mean == pytest.approx(pixels.mean(1).tolist(), abs=1e-6)
    assert info.std == pytest.approx(pixels.std(1).tolist(), abs=1e-6)
    assert info.input_shape == [3, 12, 12] and info.num_classes == 3


def test_the_config_takes_classes_shape_and_statistics_from_the_files(tiny_cfg, tmp_path):
    root = write_image_folder(tmp_path / "tree", grayscale=True)
    cfg = tiny_cfg(
        "dataset=folder", f"dataset.options.path={root}", "dataset.options.size=12", "model=mlp"
    )
    config = resolved(cfg)
    assert config["dataset"]["num_classes"] == 3
    assert config["dataset"]["input_shape"] == [1, 12, 12]
    assert config["model"]["options"]["input_shape"] == [1, 12, 12]
    expected = describe(folder(root, size=12))
    assert config["dataset"]["mean"] == expected.mean and config["dataset"]["std"] == expected.std
    with pytest.raises(ConfigError, match=r"dataset\.options\.path"):
        resolved(tiny_cfg("dataset=arrays"))


def test_noise_source_trains_on_the_files_noisy_labels_and_counts_them_against_the_clean(
    tiny_cfg, tmp_path
):
    file = write_arrays(tmp_path / "noisy.npz", n_train=120, shape=(5,), clean_labels=True)
    cfg = tiny_cfg(
        "dataset=arrays",
        f"dataset.options.path={file}",
        "dataset.clean_size=20",
        "dataset.hyper_val_size=10",
        "model=mlp",
        "noise=source",
    )
    bundle = build_data(cfg)
    saved = np.load(file)
    pos = bundle.train.index
    assert bundle.train.y.tolist() == saved["y_train"][pos].tolist()
    assert bundle.train.y_true.tolist() == saved["y_train_clean"][pos].tolist()
    flipped = int((saved["y_train"][pos] != saved["y_train_clean"][pos]).sum())
    assert bundle.facts["noise"]["realized_rate"] == pytest.approx(flipped / len(pos))
    assert flipped > 0 and bundle.facts["truth_known"]
    # The meta (clean) set gets the clean labels.
    assert bundle.clean.y.tolist() == saved["y_train_clean"][bundle.clean.index].tolist()
    one_label_set = write_arrays(tmp_path / "plain.npz", shape=(5,))
    cfg.dataset.options.path = str(one_label_set)
    with pytest.raises(ConfigError, match="noise=source"):
        build_data(cfg)


def test_a_path_in_an_override_stays_one_run_folder():
    name = run_dirname(["dataset.options.path=/data/my leaves", "seed=0"])
    assert "/" not in name and "%2Fdata%2Fmy leaves" in name


def readme_commands() -> list[str]:
    """The commands of the README's "Your own data" section, as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("python ")]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["arrays", "folder"])
def test_the_readme_commands_run_end_to_end_on_new_data(tmp_path, data):
    """A new user's three commands, on a generated .npz (as the README's script writes it) or a
    generated image folder; only where things go, the length (2 epochs) and one seed of the
    three are added."""
    commands = readme_commands()
    assert len(commands) == 3 and "export_digits.py data/digits.npz" in commands[0]
    npz = tmp_path / "digits.npz"
    tree = write_image_folder(tmp_path / "leaves", n_train=150, n_test=130, size=12)
    ours = "dataset=arrays dataset.options.path=data/digits.npz"
    theirs = {
        "arrays": f"dataset=arrays dataset.options.path={npz}",
        "folder": f"dataset=folder dataset.options.path={tree} dataset.options.size=12",
    }[data]
    extra = {
        "l2rw.train": [f"paths.output_root={tmp_path / 'outputs'}", "train.length=2", "seed=0"],
        "l2rw.report": [
            f"output_root={tmp_path / 'outputs'}",
            f"results_dir={tmp_path / 'results'}",
            "train.length=2",
        ],
    }
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    for command in commands:
        args = shlex.split(command.replace(ours, theirs).replace("data/digits.npz", str(npz)))
        args = [sys.executable, *args[1:]]
        args += next((v for k, v in extra.items() if k in command), [])
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    label = f"{data}-{'digits' if data == 'arrays' else 'leaves'}"
    records = list((tmp_path / "outputs" / f"own_data-{label}").rglob("result.json"))
    assert len(records) == 2 * 4  # noise rates x approaches
    assert all(json.loads(r.read_text())["status"] == "completed" for r in records)
    table = (tmp_path / "results" / f"own_data-{label}_cpu.md").read_text()
    for row in ("baseline / none", "l2rw / none", "meta_reweight / random", "meta_reweight / rbc"):
        assert f"| {row} |" in table
    assert (tmp_path / "results" / f"own_data-{label}_cpu.png").stat().st_size > 0


def test_a_selection_budget_larger_than_the_data_is_one_paragraph(tiny_cfg, tmp_path):
    from l2rw.train import run

    file = write_arrays(tmp_path / "small.npz", n_train=60, shape=(5,))
    cfg = tiny_cfg(
        "+table=own_data",
        "+approach=rbc",
        "dataset=arrays",
        f"dataset.options.path={file}",
        "dataset.hyper_val_size=10",
    )
    record = run(cfg, tmp_path / "run")
    assert record.status == "failed"
    assert "selector.budget=100" in record.error
    assert "only 10 training examples are left" in record.error
