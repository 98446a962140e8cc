"""Cross-field checks run before any work: each failure is one paragraph naming the key."""

from omegaconf import DictConfig, OmegaConf

from l2rw.config.options import check_options, choice, require
from l2rw.data.batches import META_STREAMS

CHOICES = {
    "scale": ("full", "cpu"),
    "train.unit": ("steps", "epochs"),
    "train.meta_sampling": tuple(META_STREAMS),
    "dataset.normalize": ("unit", "symmetric", "standard", "per_image", "none"),
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
    require(
        list(cfg.model.input_shape) == list(cfg.dataset.input_shape),
        f"model={cfg.model.name} expects inputs of shape {list(cfg.model.input_shape)} but "
        f"dataset={cfg.dataset.name} gives {list(cfg.dataset.input_shape)}. Pick a matching "
        f"model (lenet for 28x28 digits, resnet32 / wrn28_10 / resnet34 for 32x32 colour "
        f"images, mlp for toy2d).",
    )
    _validate_sizes(cfg)


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
