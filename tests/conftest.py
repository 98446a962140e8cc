"""Shared fixtures: composed configs over tiny on-disk datasets, W&B off, no network."""

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).parent))
os.environ["WANDB_MODE"] = "disabled"
# Caches (warm-ups, verified data files) and runs without an explicit output root go here, not
# into the checkout's outputs/.
os.environ["L2RW_OUTPUT_ROOT"] = tempfile.mkdtemp(prefix="l2rw-test-outputs-")

from fakedata import write_mnist  # noqa: E402

from l2rw.train import CONF_DIR  # noqa: E402

# Small protocol: tiny MNIST-format data, few steps, no progress bar, no download attempts.
TINY = [
    "logger.wandb.mode=disabled",
    "train.progress=false",
    "dataset.options.download=false",
    "dataset.hyper_val_size=20",
    "train.batch_size=16",
    "train.meta_batch_size=8",
    "train.length=12",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.eval_batch_size=64",
    "optimizer.lr=0.05",
]


def compose_cfg(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root, n_train=400, n_test=100)
    write_mnist(root, name="FashionMNIST", n_train=200, n_test=50)
    return root


@pytest.fixture
def tiny_cfg(data_dir):
    """compose_cfg with the tiny protocol and the generated data directory."""

    def make(*overrides: str) -> DictConfig:
        return compose_cfg([*TINY, f"paths.data_dir={data_dir}", *overrides])

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: on a shared machine, waking intra-op threads costs more than the work.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
