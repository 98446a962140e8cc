"""Every row of RBC Table 1 runs end to end from its table config: the ten selectors on tiny
CIFAR-10-format data (`+table=rbc_table1_cifar`) and on a tiny ImageFolder tree with the
ImageNet-10 class folders (`+table=rbc_table1_imagenet10`), each reaching its labelling budget.

To run on one CPU core in seconds, the tables' ResNet-34s (21M parameters) are replaced by
the CIFAR ResNet-32 (0.46M), ImageNet-10 is loaded at 8x8, and the protocol is shrunk (20 or
30 training images, one epoch, 6 meta samples with 3 in the warm-up); everything else (optimizer,
noise, meta re-weighting, selection) is the table's. The rows of one dataset share one cached
warm-up. The real `resnet34_imagenet` (too slow here: ~35 s a row) has its meta-engine and
selection-feature checks in tests/test_models.py.
"""

from pathlib import Path

import pytest
from conftest import compose_cfg
from fakedata import write_cifar10, write_imagenet10

from l2rw.train import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = ["warmup", "random", "certain", "uncertain", "finetune"]
ROWS += ["ta_vaal", "craig", "kmeans", "rbc", "gbc"]
BUDGET, WARMUP = 6, 3
SMALL = [
    "scale=cpu",
    "seed=0",
    "device=cpu",
    "logger.wandb.mode=disabled",
    "train.progress=false",
    "dataset.train_subset=null",
    "dataset.hyper_val_size=10",
    f"dataset.rbc_budget={BUDGET}",
    f"dataset.rbc_warmup={WARMUP}",
    "train.length=1",
    "schedule.milestones=[]",
    "train.batch_size=8",
    # Every row the same (the budget; the warm-up's 3 are all of its meta set), so the warm-up's
    # cache key is shared by the warmup row too.
    f"train.meta_batch_size={BUDGET}",
    "train.eval_batch_size=100",
    "train.checkpoint_every=100",
    "selector.snapshot_every=1",
]
# Per row: TA-VAAL trains its networks for one epoch; fine-tuning runs two.
ROW_OVERRIDES = {"ta_vaal": ["selector.epochs=1"], "finetune": ["selector.finetune_epochs=2"]}
TABLES = {
    "rbc_table1_cifar": [
        "noise=uniform_flip",
        "dataset.options.download=false",
        "paths.verify_data=false",  # the generated files cannot match CIFAR's MD5s
    ],
    "rbc_table1_imagenet10": ["noise=adversarial", "dataset.options.image_size=8"],
}
MODELS = {
    "rbc_table1_cifar": ["model=resnet32"],
    "rbc_table1_imagenet10": ["model=resnet32", "model.input_shape=[3,8,8]"],
}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """CIFAR-10 files (20 train, 30 test images) and an ImageFolder tree with the ten
    ImageNet-10 class folders (3 images each in train/ and val/), one output root for all."""
    root = tmp_path_factory.mktemp("table1")
    write_cifar10(root / "data", n_train=20, n_test=30)
    classes = list(compose_cfg(["dataset=imagenet10"]).dataset.options.classes)
    write_imagenet10(root / "data", n_per_class=3, size=24, classes=classes)
    return root


def _compose(root: Path, table: str, *overrides: str):
    return compose_cfg(
        [
            f"+table={table}",
            f"paths.data_dir={root / 'data'}",
            f"paths.output_root={root / 'outputs'}",
            *SMALL,
            *TABLES[table],
            *MODELS[table],
            *overrides,
        ]
    )


WARMUPS: dict[str, str] = {}


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("table", list(TABLES))
def test_table1_row_runs_end_to_end(root, tmp_path, table, row):
    cfg = _compose(root, table, f"selector={row}", *ROW_OVERRIDES.get(row, []))
    assert cfg.table_name == table
    record = run(cfg, tmp_path / "job")
    assert record.status == "completed", record.error
    sel = record.selection
    budget = WARMUP if row == "warmup" else BUDGET
    assert len(sel["meta_indices"]) == len(set(sel["meta_indices"])) == budget
    assert len(sel["warmup_indices"]) == WARMUP
    assert set(sel["warmup_indices"]) <= set(sel["meta_indices"])
    assert [r["round"] for r in sel["rounds"]] == ([0] if row == "warmup" else [0, 1])
    assert record.data["sizes"]["clean"] == budget
    assert 0.0 <= record.metrics["test_acc"] <= 1.0
    # One warm-up per dataset, computed by the first row that runs and reused by the others.
    assert WARMUPS.setdefault(table, sel["warmup_folder"]) == sel["warmup_folder"]
