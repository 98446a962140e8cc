"""What the option schemas share: the base schema of each option group and the rules' helpers.

Each option's own schema sits beside the function it configures and is registered with it
(`l2rw.registry`), so a knob given to an option that does not have it fails at compose time
(`method=baseline method.engine=reference`: "Key 'engine' not in 'MethodConf'"). Rules that need
the rest of the config are the schema's `check(cfg)`, found from the node's type by
`check_options`.
"""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig, OmegaConf

from l2rw.errors import ConfigError


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    require(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}.")


def check_milestones(cfg: DictConfig, key: str) -> None:
    """A schedule's milestones (in train.unit): positive and increasing."""
    values = list(OmegaConf.select(cfg, key) or [])
    require(
        values == sorted(values) and all(v > 0 for v in values),
        f"{key}={values} must be positive and increasing (in train.unit).",
    )


@dataclass
class MethodConf:
    """A method with no knobs of its own (baseline, weighted, resample)."""

    # The method reads a clean meta set every step, so a selector may choose it.
    meta_set: ClassVar[bool] = False

    name: str = MISSING
    # Training batch size for this method, when it differs from train.batch_size.
    batch_size: int | None = None
    # This method's own schedule (in train.unit), when it differs from train.length /
    # schedule.milestones (clean-only's short run).
    length: int | None = None
    milestones: list[int] | None = None

    @staticmethod
    def check(cfg: DictConfig) -> None:
        m = cfg.method
        require(
            m.batch_size is None or m.batch_size > 0,
            f"method.batch_size={m.batch_size} must be positive.",
        )
        require(m.length is None or m.length > 0, f"method.length={m.length} must be positive.")


def needs_meta_set(cfg: DictConfig) -> None:
    """A method that reads clean examples needs a clean pool, or a selector that builds one."""
    ds = cfg.dataset
    require(
        ds.clean_size > 0 or ds.clean_per_class is not None or cfg.selector.name != "none",
        f"method={cfg.method.name} needs a clean (meta) set: set dataset.clean_size > 0 "
        "(e.g. dataset.clean_size=10 for the MNIST imbalance task) or dataset.clean_per_class, "
        "or choose one with selector=... (e.g. selector=rbc).",
    )


@dataclass
class DatasetOptions:
    """A dataset loader's options: each dataset's options subclass it."""

    # Fetch missing files with torchvision where the dataset can be downloaded (false: refuse,
    # naming them); a dataset that cannot (ImageNet-10, the synthetic toy2d) ignores it.
    download: bool = True


@dataclass
class DatasetConf:
    """The base of every dataset option's schema: the data protocol's values, and `options`,
    the loader's keyword arguments (a dataclass per dataset)."""

    name: str = MISSING
    num_classes: int = MISSING
    input_shape: list[int] = MISSING
    # Pixel scaling: "unit" -> [0, 1], "symmetric" -> [-1, 1], "standard" -> (x - mean) / std,
    # "per_image": each image by its own mean and std (tf.image.per_image_standardization).
    normalize: str = "unit"
    mean: list[float] | None = None
    std: list[float] | None = None
    # Training-time augmentation done on the device: "none" or "crop_flip".
    augment: str = "none"
    crop_padding: int = 4
    # Clean pool with true labels, carved out of the training images (the meta / validation set).
    clean_size: int = 0
    clean_balanced: bool = True
    # Or this many clean images of each class (L2RW BackgroundFlip: "10 clean images per label
    # class"); null: use clean_size. Setting both is an error.
    clean_per_class: int | None = None
    # True: carve the clean pool out of the (imbalanced) training budget (L2RW MNIST);
    # False: carve it from the full training split before imbalance is applied (MW-Net long tail).
    clean_from_budget: bool = True
    # Hyper-validation set for monitoring and early stopping.
    hyper_val_size: int = 0
    hyper_val_from: str = "train"  # "train" (L2RW: corrupted like training) or "test" (RBC)
    hyper_val_noisy: bool = True
    # RBC / GBC labelling budget (meta samples in all, the warm-up's random ones included) and
    # the warm-up's random meta samples M0 (Wu et al. 2023, Experiments).
    rbc_budget: int | None = None
    rbc_warmup: int | None = None
    # L2RW BackgroundFlip's background class for trials 1-5 (seeds 0-4), per dataset.
    background_trial_classes: list[int] | None = None
    # Limit the training pool (before imbalance / clean split) for cheap runs; null = all.
    train_subset: int | None = None
    test_subset: int | None = None
    options: Any = field(default_factory=DatasetOptions)


@dataclass
class OwnDataConf(DatasetConf):
    """The base schema of a dataset read from a user's files (`dataset=folder`, `dataset=arrays`):
    class count, input shape and the inputs' mean and std come from the files, unless given."""

    num_classes: int = "${dataset_info:num_classes}"  # type: ignore[assignment]
    input_shape: list[int] = "${dataset_info:input_shape}"  # type: ignore[assignment]
    normalize: str = "standard"
    mean: list[float] | None = "${dataset_info:mean}"  # type: ignore[assignment]
    std: list[float] | None = "${dataset_info:std}"  # type: ignore[assignment]
    # A clean (meta) set of 100 random training examples; no hyper-validation set unless asked
    # (then drawn from the test images, noise-free). Set them to what your question needs.
    clean_size: int = 100
    clean_balanced: bool = False
    hyper_val_size: int = 0
    hyper_val_from: str = "test"
    hyper_val_noisy: bool = False
    # RBC / GBC: 100 meta samples in all (as many as the clean set above), 50 of them drawn at
    # random for the warm-up.
    rbc_budget: int | None = 100
    rbc_warmup: int | None = 50


@dataclass
class ModelOptions:
    """A model's builder options (none here): each model's options subclass it."""


@dataclass
class ModelConf:
    """The base of every model option's schema: its `options` are the builder's keyword
    arguments, a dataclass per model (`model.options.dropout=0.5`)."""

    name: str = MISSING
    # The input the model expects (C, H, W) or (D,); checked against the dataset's.
    input_shape: list[int] = MISSING
    options: Any = field(default_factory=ModelOptions)


@dataclass
class ImbalanceConf:
    """Every example kept (`imbalance=none`); the base of every imbalance option's schema."""

    name: str = MISSING

    @staticmethod
    def check(cfg: DictConfig) -> None:
        pass


@dataclass
class NoiseConf:
    """Clean labels (`noise=none`); the base of every noise option's schema."""

    # The process reads the noisy labels the dataset's files give (`RawSource.y_observed`).
    reads_source_labels: ClassVar[bool] = False

    name: str = MISSING
    # Fraction of the training labels the process corrupts.
    rate: float = 0.0

    @staticmethod
    def check(cfg: DictConfig) -> None:
        rate = cfg.noise.rate
        require(
            0.0 <= rate <= 1.0,
            f"noise.rate={rate} is outside [0, 1]. A noise rate is the fraction of training "
            "labels corrupted: pass e.g. noise.rate=0.4.",
        )


@dataclass
class OptimizerConf:
    """What every optimizer has: its (base) learning rate and weight decay."""

    name: str = MISSING
    lr: float = 0.001
    # L2 penalty in the gradient (SGD, Adam, RMSprop, Adagrad); AdamW's is decoupled.
    weight_decay: float = 0.0

    @staticmethod
    def check(cfg: DictConfig) -> None:
        opt = cfg.optimizer
        require(opt.lr > 0, f"optimizer.lr={opt.lr} must be positive.")
        require(opt.weight_decay >= 0, f"optimizer.weight_decay={opt.weight_decay} must be >= 0.")


@dataclass
class ScheduleConf:
    """A constant rate (`schedule=constant`); the base of every schedule's schema."""

    name: str = MISSING

    @staticmethod
    def check(cfg: DictConfig) -> None:
        pass


@dataclass
class StopConf:
    """Which model of the training stage a run reports (`stop=final|early`): the final one, or
    (`early`, the L2RW tables' +ES, Sec. 4.2) the one of best hyper-validation accuracy, that set
    corrupted like training; the table configs give +ES the paper's shorter schedule."""

    name: str = "final"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        choice(cfg, "stop.name", ("final", "early"))
        require(
            cfg.stop.name == "final" or cfg.selector.name == "none",
            f"stop=early with selector={cfg.selector.name}: a selection pipeline already reports "
            "each phase's model of best validation accuracy; leave stop=final.",
        )
        require(
            cfg.stop.name == "final" or cfg.dataset.hyper_val_size > 0,
            "stop=early picks the model of best hyper-validation accuracy: set "
            "dataset.hyper_val_size > 0.",
        )


@dataclass
class NoFinetuneConf:
    """No stage after training."""

    name: str = "none"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        pass


@dataclass
class SelectorConf:
    """No selection: the clean pool of the dataset config is the meta set."""

    name: str = "none"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        pass


@dataclass
class SelectionConf(SelectorConf):
    """Algorithm 2 of Wu et al. (2023): a warm-up of meta re-weighting with the dataset's clean
    pool (`dataset.clean_size` random training examples, cleaned) as the meta set, then rounds
    that select, clean and add examples and re-run the re-weighting, until `budget`."""

    name: str = MISSING
    # Meta samples in all, the warm-up's included.
    budget: int = "${dataset.rbc_budget}"  # type: ignore[assignment]
    # Examples added per round (null: the rest of the budget in one round).
    per_round: int | None = None
    # K snapshots: the best-validation model t* and K - 1 of the models kept every
    # `snapshot_every` `snapshot_unit`s ("epochs" or "steps") after it, evenly spaced when more
    # were kept.
    snapshots: int = 6
    snapshot_every: int = 20
    snapshot_unit: str = "epochs"
    # Fraction of candidates nearest the existing meta set dropped before clustering.
    drop_fraction: float = 0.5
    kmeans_iters: int = 200
    # Features without the label-dependent part (noisy labels); null: label-free when the
    # config has label noise, the full gradient otherwise (class imbalance).
    label_free: bool | None = None
    # After each selection: "reweight" (meta re-weighting with the grown meta set) or
    # "finetune" (the previous model trained further on the meta set alone).
    round_training: str = "reweight"
    # Where a "reweight" round's model starts: "previous", the previous phase's best-validation
    # model (the paper's pre-training; the authors' --use_pretrained_model), or "scratch", a new
    # initialisation. Either way the weights are drawn afresh and the optimiser and schedule
    # start over.
    round_init: str = "previous"
    # Where the warm-up's model starts: "scratch", or "plain", the best-validation model of the
    # authors' Stage A (plain training on the noisy data, run once per warm-up and cached with
    # it). With pretrain=false the warm-up is that plain training, so "plain" adds nothing.
    warmup_init: str = "scratch"
    # Epochs of a "finetune" round, and its constant learning rate (null: optimizer.lr, the
    # re-weighting phases' optimiser, as the authors' code does).
    finetune_epochs: int = 10
    finetune_lr: float | None = None
    # Reuse the warm-up of the same (data, noise, model, method, seed) across selectors.
    cache_warmup: bool = True
    # The pre-training phase (RBC Table 10): true, the warm-up is meta re-weighting with the
    # dataset's random clean pool; false, it is plain training on the noisy data with no meta
    # samples (dataset.clean_size=0), and the whole budget is selected in one round.
    pretrain: bool = True

    @staticmethod
    def check(cfg: DictConfig) -> None:
        sel, ds = cfg.selector, cfg.dataset
        choice(cfg, "selector.round_training", ("reweight", "finetune"))
        choice(cfg, "selector.round_init", ("previous", "scratch"))
        choice(cfg, "selector.warmup_init", ("scratch", "plain"))
        if sel.pretrain:
            require(
                sel.budget is not None and sel.budget >= ds.clean_size > 0,
                f"selector={sel.name} needs 0 < dataset.clean_size (the warm-up's random meta "
                f"samples, {ds.clean_size}) <= selector.budget ({sel.budget}); the protocol=rbc "
                "config sets both from the dataset (dataset.rbc_warmup, dataset.rbc_budget).",
            )
        else:
            require(
                ds.clean_size == 0 and sel.budget is not None and sel.budget > 0,
                "selector.pretrain=false selects the whole budget in one round from a model "
                f"trained without meta samples, so dataset.clean_size must be 0 (it is "
                f"{ds.clean_size}) and selector.budget positive ({sel.budget}); "
                "+pretraining=without sets both.",
            )
        require(
            ds.clean_per_class is None and not ds.clean_balanced,
            "Selection draws the warm-up meta samples uniformly: set dataset.clean_balanced=false "
            "and dataset.clean_per_class=null (protocol=rbc does).",
        )
        require(
            sel.per_round is None or sel.per_round > 0,
            f"selector.per_round={sel.per_round} must be positive (or null).",
        )
        require(sel.snapshots >= 1, f"selector.snapshots={sel.snapshots} must be >= 1.")
        require(
            sel.finetune_lr is None or sel.finetune_lr > 0,
            f"selector.finetune_lr={sel.finetune_lr} must be positive (or null: optimizer.lr).",
        )
        require(
            sel.snapshot_every >= 1, f"selector.snapshot_every={sel.snapshot_every} must be >= 1."
        )
        choice(cfg, "selector.snapshot_unit", ("epochs", "steps"))
        require(
            0 <= sel.drop_fraction < 1,
            f"selector.drop_fraction={sel.drop_fraction} must be in [0, 1).",
        )
        require(
            OmegaConf.get_type(cfg.method).meta_set,
            f"selector={sel.name} selects the meta set of a meta re-weighting method: use "
            f"method=meta_reweight (the paper's), l2rw or mwnet, not method={cfg.method.name}.",
        )


# The option groups whose choice a schema checks, in the order the checks run: the stages'
# before the selector's, whose pipeline they cannot join.
CHECKED_GROUPS = (
    "noise",
    "imbalance",
    "optimizer",
    "schedule",
    "method",
    "stop",
    "finetune",
    "selector",
)


def check_options(cfg: DictConfig) -> None:
    """Run the `check` of the schema behind each option group's choice."""
    for group in CHECKED_GROUPS:
        schema = OmegaConf.get_type(cfg[group])
        check = getattr(schema, "check", None)
        require(
            check is not None,
            f"{group}={cfg[group].name}: its config does not start from a schema; begin "
            f"conf/{group}/<file>.yaml with `defaults: [<registered option>, _self_]`.",
        )
        check(cfg)
