"""Training / clean / hyper-validation / test splits, imbalance then noise, deterministic in seed.

Order, following the L2RW authors: the hyper-validation set is drawn first (from training or test
images); the class imbalance picks the training budget; the clean pool (true labels) is carved out
of that budget (or, with `clean_from_budget: false`, out of the full pool before the imbalance, as
in MW-Net's long-tail set-up); label noise is applied last, to the remaining training images only.
"""

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from l2rw.data.describe import source_kwargs
from l2rw.data.imbalance import apply_imbalance
from l2rw.data.noise import noise_process
from l2rw.data.sources import RawSource, load_source, toy2d_splits
from l2rw.errors import ConfigError
from l2rw.seeding import DATA, derive_seed

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Images (uint8, or float features) with observed and true labels and source positions."""

    x: torch.Tensor
    y: torch.Tensor
    y_true: torch.Tensor
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device), self.y_true.to(device), self.index)


@dataclass
class DataBundle:
    train: Split
    clean: Split
    hyper_val: Split
    test: Split
    num_classes: int
    facts: dict[str, Any] = field(default_factory=dict)
    # The source positions of the training examples whose true label is known, so that cleaning
    # one gives it (RawSource.clean_candidates: a benchmark's verified labels); None: all of them.
    cleanable: np.ndarray | None = None

    def to(self, device: torch.device) -> "DataBundle":
        moved = {k: getattr(self, k).to(device) for k in ("train", "clean", "hyper_val", "test")}
        return replace(self, **moved)

    def cleanable_positions(self) -> np.ndarray:
        """The positions in `train` of the examples a selector may pick to clean."""
        if self.cleanable is None:
            return np.arange(len(self.train))
        return np.flatnonzero(np.isin(self.train.index, self.cleanable))

    def move_to_meta(self, positions: torch.Tensor) -> "DataBundle":
        """Clean the training examples at `positions`: they leave the training set and join the
        meta (clean) set with their true labels."""
        train = self.train
        picked = torch.zeros(len(train), dtype=torch.bool, device=train.y.device)
        picked[positions] = True
        keep, take = (~picked).cpu().numpy(), picked.cpu().numpy()
        new_train = Split(
            train.x[~picked], train.y[~picked], train.y_true[~picked], train.index[keep]
        )
        clean = self.clean
        new_clean = Split(
            torch.cat([clean.x, train.x[picked]]),
            torch.cat([clean.y, train.y_true[picked]]),
            torch.cat([clean.y_true, train.y_true[picked]]),
            np.concatenate([clean.index, train.index[take]]),
        )
        return replace(self, train=new_train, clean=new_clean)


def _take(rng: np.random.Generator, pool: np.ndarray, n: int, what: str) -> np.ndarray:
    if n > len(pool):
        raise ConfigError(
            f"The {what} asks for {n} images but only {len(pool)} are available. "
            f"Lower its size in the dataset config (e.g. dataset.clean_size / "
            f"dataset.hyper_val_size) or enlarge the pool (dataset.train_subset)."
        )
    return np.sort(rng.choice(pool, size=n, replace=False)) if n else pool[:0]


def _take_clean(
    rng: np.random.Generator, pool: np.ndarray, labels: np.ndarray, n: int, balanced: bool, k: int
) -> np.ndarray:
    if not balanced:
        return _take(rng, pool, n, "clean pool")
    if n % k:
        raise ConfigError(
            f"dataset.clean_size={n} cannot be split evenly over {k} classes while "
            f"dataset.clean_balanced=true. Use a multiple of {k} or set clean_balanced=false."
        )
    parts = [
        _take(rng, pool[labels[pool] == c], n // k, f"clean pool for class {c}") for c in range(k)
    ]
    return np.sort(np.concatenate(parts))


def _clean_candidates(src: RawSource, pool: np.ndarray) -> np.ndarray:
    """The positions of `pool` the clean pool may be drawn from: those whose label the files
    verify (`RawSource.clean_candidates`), or all of `pool` when they say nothing."""
    if src.clean_candidates is None:
        return pool
    return np.intersect1d(pool, src.clean_candidates)


def clean_request(ds: DictConfig, num_classes: int) -> tuple[int, bool]:
    """(size, balanced) of the clean pool: `clean_per_class` per class, or `clean_size`."""
    if ds.clean_per_class is not None:
        return ds.clean_per_class * num_classes, True
    return ds.clean_size, ds.clean_balanced


def _split(src: RawSource, pos: np.ndarray, observed: np.ndarray, true: np.ndarray) -> Split:
    return Split(
        x=src.x[torch.as_tensor(pos, dtype=torch.long)],
        y=torch.as_tensor(observed, dtype=torch.long),
        y_true=torch.as_tensor(true, dtype=torch.long),
        index=pos,
    )


def noise_options(cfg: DictConfig) -> dict[str, Any]:
    """The noise.* settings passed to the noise process (name and rate aside; null = unset)."""
    return {k: v for k, v in cfg.noise.items() if k not in ("name", "rate") and v is not None}


def _load(cfg: DictConfig) -> tuple[RawSource, RawSource, RawSource | None]:
    """Training and test sources; toy2d brings its own fixed validation split."""
    name = cfg.dataset.name
    if name == "toy2d":
        options = cfg.dataset.options
        parts = toy2d_splits(int(options["seed"]), float(options["std"]))
        return tuple(RawSource(x, y, 2, ["0", "1"]) for x, y in parts.values())  # train, test, val
    kwargs = source_kwargs(cfg)
    root = kwargs.pop("root")
    return (
        load_source(name, root, train=True, **kwargs),
        load_source(name, root, train=False, **kwargs),
        None,
    )


def build_data(cfg: DictConfig) -> DataBundle:
    """All splits for a run, deterministic in `cfg.seed`."""
    ds = cfg.dataset
    rng = np.random.default_rng(derive_seed(cfg.seed, DATA))
    train_src, test_src, fixed_val = _load(cfg)
    labels, k = train_src.y, train_src.num_classes
    if ds.num_classes != k:
        raise ConfigError(
            f"dataset.num_classes={ds.num_classes} but the {ds.name} files hold {k} classes."
        )

    pool = np.arange(len(labels))
    if ds.train_subset:
        pool = _take(rng, pool, ds.train_subset, "training subset (dataset.train_subset)")
    test_pos = np.arange(len(test_src.y))
    if ds.test_subset:
        test_pos = _take(rng, test_pos, ds.test_subset, "test subset (dataset.test_subset)")

    hv_src, hv_pos = train_src, pool[:0]
    if fixed_val is not None:
        hv_src, hv_pos = fixed_val, np.arange(len(fixed_val.y))
    elif ds.hyper_val_from == "train":
        hv_pos = _take(rng, pool, ds.hyper_val_size, "hyper-validation set")
        pool = np.setdiff1d(pool, hv_pos)
    else:
        hv_src = test_src
        hv_pos = _take(rng, test_pos, ds.hyper_val_size, "hyper-validation set")
        test_pos = np.setdiff1d(test_pos, hv_pos)

    if not ds.clean_from_budget:
        candidates = _clean_candidates(train_src, pool)
        clean_pos = _take_clean(rng, candidates, labels, *clean_request(ds, k), k)
        pool = np.setdiff1d(pool, clean_pos)
    imb_opts = {key: v for key, v in cfg.imbalance.items() if key != "name" and v is not None}
    imb = apply_imbalance(cfg.imbalance.name, labels[pool], k, rng, **imb_opts)
    pool = np.sort(pool[imb.index])
    remap = _remapper(imb.label_map)
    mapped = remap(labels)
    if ds.clean_from_budget:
        n_clean, balanced = clean_request(ds, imb.num_classes)
        candidates = _clean_candidates(train_src, pool)
        clean_pos = _take_clean(rng, candidates, mapped, n_clean, balanced, imb.num_classes)
        pool = np.setdiff1d(pool, clean_pos)
    elif imb.label_map is not None:
        clean_pos = clean_pos[np.isin(labels[clean_pos], list(imb.label_map))]

    source_labels = {}
    if OmegaConf.get_type(cfg.noise).reads_source_labels:
        observed = train_src.y_observed
        source_labels["observed"] = None if observed is None else remap(observed)
    elif train_src.y_observed is not None:
        log.warning(
            "dataset=%s gives noisy training labels beside its true ones; noise=%s ignores them "
            "and starts from the true labels (noise=source trains on the noisy ones).",
            ds.name,
            cfg.noise.name,
        )
    if (
        not train_src.truth_known
        and train_src.clean_candidates is None
        and cfg.selector.name != "none"
    ):
        log.warning(
            "dataset=%s gives one label per training example, taken as true: the meta samples "
            "selector=%s picks are 'cleaned' to those same labels. To clean them for real, give "
            "the true labels (dataset=arrays: y_train_clean).",
            ds.name,
            cfg.selector.name,
        )
    noise = noise_process(
        cfg.noise.name,
        imb.num_classes,
        float(cfg.noise.rate),
        rng,
        **noise_options(cfg),
        **source_labels,
    )
    train_true = mapped[pool]
    train_obs = noise(train_true, rng, source_index=pool)

    if imb.label_map is not None:
        keep = list(imb.label_map)
        hv_pos = hv_pos[np.isin(hv_src.y[hv_pos], keep)]
        test_pos = test_pos[np.isin(test_src.y[test_pos], keep)]
    hv_true = remap(hv_src.y[hv_pos])
    hv_obs = hv_true
    if ds.hyper_val_noisy and hv_src is train_src:
        # "We also corrupt the hyper-validation set with the same noise type": the same drawn
        # process (class, permutation, label file) as the training set.
        hv_obs = noise(hv_true, rng, source_index=hv_pos)
    test_true = remap(test_src.y[test_pos])

    bundle = DataBundle(
        train=_split(train_src, pool, train_obs, train_true),
        clean=_split(train_src, clean_pos, mapped[clean_pos], mapped[clean_pos]),
        hyper_val=_split(hv_src, hv_pos, hv_obs, hv_true),
        test=_split(test_src, test_pos, test_true, test_true),
        num_classes=imb.num_classes,
        cleanable=train_src.clean_candidates,
    )
    bundle.facts = data_facts(bundle, {"name": noise.name, "rate": noise.rate, **noise.params})
    # False: the files give one label set, taken as true (dataset=folder, or arrays without
    # y_train_clean), so realized noise and cleaning are relative to it.
    bundle.facts["truth_known"] = train_src.truth_known
    return bundle


def _remapper(label_map: dict[int, int] | None):
    if label_map is None:
        return lambda y: np.asarray(y, dtype=np.int64)
    table = np.full(max(label_map) + 1, -1, dtype=np.int64)
    for old, new in label_map.items():
        table[old] = new

    def remap(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.int64)
        inside = y < len(table)
        out = np.full_like(y, -1)
        out[inside] = table[y[inside]]
        return out

    return remap


def data_facts(bundle: DataBundle, noise: dict[str, Any]) -> dict[str, Any]:
    """Sizes, class counts and realized noise of `bundle`: what a record states about its data.
    `noise` names the noise process (name, rate and what was drawn)."""
    train = bundle.train
    k = bundle.num_classes
    flipped = (train.y != train.y_true).double()
    return {
        "num_classes": k,
        "sizes": {s: len(getattr(bundle, s)) for s in ("train", "clean", "hyper_val", "test")},
        "class_counts": torch.bincount(train.y_true, minlength=k).tolist(),
        "class_counts_observed": torch.bincount(train.y, minlength=k).tolist(),
        "clean_class_counts": torch.bincount(bundle.clean.y_true, minlength=k).tolist(),
        "noise": {
            **noise,
            "realized_rate": float(flipped.mean()) if len(train) else 0.0,
        },
    }
