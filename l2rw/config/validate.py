"""Cross-field checks run before any work: each failure is one paragraph naming the key."""

import inspect

from omegaconf import DictConfig, OmegaConf

from l2rw.config.options import check_options, choice, require
from l2rw.data.batches import META_STREAMS

# The arguments every registered noise process takes; the rest are its noise.* options.
NOISE_ARGS = {"num_classes", "rate", "rng"}
CHOICES = {
    "scale": ("full", "cpu"),
    "train.unit": ("steps", "epochs"),
    "train.meta_sampling": tuple(META_STREAMS),
    "dataset.normalize": ("unit", "symmetric", "standard", "none"),
    "dataset.augment": ("none", "crop_flip"),
    "dataset.hyper_val_from": ("train", "test"),
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for settings that compose but cannot work together."""
    from l2rw.data.imbalance import IMBALANCES
    from l2rw.data.noise import NOISES
    from l2rw.data.sources import SOURCES
    from l2rw.methods import METHODS
    from l2rw.models import MODELS

    for key, allowed in CHOICES.items():
        choice(cfg, key, allowed)
    for registry, key in (
        (SOURCES, "dataset.name"),
        (NOISES, "noise.name"),
        (IMBALANCES, "imbalance.name"),
        (MODELS, "model.name"),
        (METHODS, "method.name"),
    ):
        registry.get(OmegaConf.select(cfg, key))
    check_options(cfg)

    rate = cfg.noise.rate
    require(
        0.0 <= rate <= 1.0,
        f"noise.rate={rate} is outside [0, 1]. A noise rate is the fraction of training labels "
        f"corrupted: pass e.g. noise.rate=0.4.",
    )
    require(
        list(cfg.model.input_shape) == list(cfg.dataset.input_shape),
        f"model={cfg.model.name} expects inputs of shape {list(cfg.model.input_shape)} but "
        f"dataset={cfg.dataset.name} gives {list(cfg.dataset.input_shape)}. Pick a matching "
        f"model (lenet for 28x28 digits, resnet32 / wrn28_10 / resnet34 for 32x32 colour "
        f"images, mlp for toy2d).",
    )
    _validate_noise_options(cfg)
    _validate_imbalance(cfg)
    _validate_sizes(cfg)


def _validate_noise_options(cfg: DictConfig) -> None:
    """Each noise option that is set must be one the chosen noise process takes."""
    from l2rw.data.noise import NOISES
    from l2rw.data.splits import noise_options

    takes = set(inspect.signature(NOISES.get(cfg.noise.name)).parameters) - NOISE_ARGS
    extra = sorted(set(noise_options(cfg)) - takes)
    require(
        not extra,
        f"noise={cfg.noise.name} does not take {', '.join(f'noise.{k}' for k in extra)} (its "
        f"options: {', '.join(f'noise.{k}' for k in sorted(takes)) or 'none'}). Drop the "
        "setting, or set it to null where a table sets it for another noise.",
    )


def _validate_imbalance(cfg: DictConfig) -> None:
    imb, k = cfg.imbalance, cfg.dataset.num_classes
    if imb.name == "binary":
        classes = list(imb.classes or [])
        require(
            len(classes) == 2 and len(set(classes)) == 2 and all(0 <= c < k for c in classes),
            f"imbalance.classes={classes} must name two different classes in [0, {k}).",
        )
        p, total = imb.majority_fraction, imb.total
        require(
            p is not None and total is not None and total > 0,
            "imbalance=binary needs imbalance.total and imbalance.majority_fraction.",
        )
        n_major = round(total * p)
        require(
            0 < n_major < total,
            f"imbalance.majority_fraction={p} with imbalance.total={total} leaves a class empty "
            f"({n_major} majority, {total - n_major} minority). Use a fraction in (0, 1) that "
            f"keeps at least one image of each class.",
        )
    if imb.name == "longtail":
        require(
            imb.factor is not None and imb.factor >= 1,
            f"imbalance.factor={imb.factor} must be >= 1 (n_max / n_min).",
        )
        if imb.n_max is not None:
            require(
                int(imb.n_max / imb.factor) >= 1,
                f"imbalance.n_max={imb.n_max} with factor={imb.factor} leaves the tail class "
                f"empty; raise n_max or lower factor.",
            )


def _validate_sizes(cfg: DictConfig) -> None:
    ds, train = cfg.dataset, cfg.train
    for key in ("clean_size", "hyper_val_size"):
        require(ds[key] >= 0, f"dataset.{key}={ds[key]} must be >= 0.")
    if ds.clean_per_class is not None:
        require(
            ds.clean_per_class > 0 and ds.clean_size == 0,
            f"dataset.clean_per_class={ds.clean_per_class} with dataset.clean_size="
            f"{ds.clean_size}: give the clean pool one size, either clean_per_class > 0 with "
            f"dataset.clean_size=0, or clean_size with dataset.clean_per_class=null.",
        )
    require(train.length > 0, f"train.length={train.length} must be positive.")
    require(train.batch_size > 0, f"train.batch_size={train.batch_size} must be positive.")
    require(
        train.max_steps is None or train.max_steps > 0,
        f"train.max_steps={train.max_steps} must be positive (or null for the full schedule).",
    )
