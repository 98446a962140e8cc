"""One schema per method and selector option, with the rules that check it.

Each `conf/method/NAME.yaml` / `conf/selector/NAME.yaml` starts from its schema (stored in the
ConfigStore as `base_NAME`), so a knob given to an option that does not have it fails at compose
time (`method=baseline method.engine=reference`: "Key 'engine' not in 'MethodConf'"). Rules that
need the rest of the config are the schema's `check(cfg)`, found from the node's type by
`check_options`.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from l2rw.errors import ConfigError

ENGINES = ("fast", "reference")


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    require(value in allowed, f"{key}={value!r} is not one of {', '.join(allowed)}.")


@dataclass
class MethodConf:
    """A method with no knobs of its own (baseline, resample, hard_mining)."""

    name: str = MISSING
    # Training batch size for this method, when it differs from train.batch_size.
    batch_size: int | None = None
    # This method's own schedule (in train.unit), when it differs from train.length /
    # train.milestones (clean-only's short run).
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


@dataclass
class ProportionConf(MethodConf):
    # Inverse-frequency weights summing to 1 in "expected" value over batches, normalised per
    # "batch", or the L2RW authors' unnormalised p / 1 - p.
    weighting: str = "expected"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        choice(cfg, "method.weighting", ("expected", "batch", "authors"))


@dataclass
class RandomConf(MethodConf):
    # Std of the Gaussian before rectification (L2RW Eq. 16).
    random_std: float = 1.0

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        std = cfg.method.random_std
        require(std > 0, f"method.random_std={std} must be positive.")


def _needs_meta_set(cfg: DictConfig) -> None:
    """A method that reads clean examples needs a clean pool, or a selector that builds one."""
    ds = cfg.dataset
    require(
        ds.clean_size > 0 or ds.clean_per_class is not None or cfg.selector.name != "none",
        f"method={cfg.method.name} needs a clean (meta) set: set dataset.clean_size > 0 "
        "(e.g. dataset.clean_size=10 for the MNIST imbalance task) or dataset.clean_per_class, "
        "or choose one with selector=... (e.g. selector=rbc).",
    )


@dataclass
class L2RWConf(MethodConf):
    # fast: forward-mode JVP sharing the forward with the real update; reference: look-ahead
    # model plus a second-order backward.
    engine: str = "fast"
    # Add weight_decay * theta to the validation gradient (the authors' CIFAR code).
    val_weight_decay: bool = False

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        choice(cfg, "method.engine", ENGINES)
        _needs_meta_set(cfg)


@dataclass
class MetaReweightConf(MethodConf):
    """Persistent per-example weights (Wu et al. 2023, Eq. 2-4)."""

    engine: str = "fast"
    # Step size of the weight update w <- clip(w - meta_lr * dL_meta/dw, clamp_min, clamp_max).
    meta_lr: float = 0.1
    # "none": meta_lr as is; "batch": meta_lr per unit of batch-mean gradient, the step being
    # meta_lr * B (dL_meta/dw_i carries the look-ahead's 1/B, so one value moves a weight by
    # the same amount per visit at any batch size).
    meta_lr_scale: str = "none"
    clamp_min: float = 0.0
    clamp_max: float = 1.0
    # Initial weights: "uniform" U[0, 1) drawn from the seed (the authors' code), "ones", or
    # "rectified_gaussian" (relu(N(0, 1)) scaled to mean 1, the authors' other option).
    init: str = "uniform"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        m = cfg.method
        choice(cfg, "method.engine", ENGINES)
        from l2rw.methods.reweighting import META_LR_SCALES, WEIGHT_INITS

        choice(cfg, "method.init", tuple(WEIGHT_INITS))
        choice(cfg, "method.meta_lr_scale", tuple(META_LR_SCALES))
        require(m.meta_lr > 0, f"method.meta_lr={m.meta_lr} must be positive.")
        require(
            0 <= m.clamp_min < m.clamp_max,
            f"method.clamp_min={m.clamp_min} and clamp_max={m.clamp_max} must satisfy "
            "0 <= clamp_min < clamp_max.",
        )
        _needs_meta_set(cfg)


@dataclass
class CleanOnlyConf(MethodConf):
    """Plain SGD on the clean images alone (the L2RW tables' CLEAN ONLY)."""

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        _needs_meta_set(cfg)
        require(
            cfg.selector.name == "none",
            "method=clean_only trains on the dataset's clean pool; it takes no selector.",
        )


@dataclass
class ReedConf(MethodConf):
    """Bootstrapping (Reed et al. 2014): the target is beta * label + (1 - beta) * prediction."""

    # "soft": the predicted distribution; "hard": its argmax as a one-hot vector.
    bootstrap: str = "soft"
    beta: float = 0.95

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        choice(cfg, "method.bootstrap", ("soft", "hard"))
        beta = cfg.method.beta
        require(0.0 <= beta <= 1.0, f"method.beta={beta} must be in [0, 1].")


@dataclass
class SModelConf(MethodConf):
    """S-Model (Goldberger & Ben-Reuven 2017): a softmax noise-adaptation layer after the
    classifier, trained on the noisy labels and dropped at test time."""

    # "identity": a smoothed identity; "confusion" (+CONF): a trained baseline's confusion of
    # observed labels against its predictions on the noisy hyper-validation set.
    init: str = "identity"
    # Off-diagonal mass of each row of the initial transition matrix (identity), or the weight of
    # the uniform distribution mixed into the confusion's rows (no transition starts at 0).
    smoothing: float = 0.1
    # +CONF: the baseline's result.json (or its run folder); null: the baseline run of the same
    # cell in this sweep's folder when it is complete, else a baseline trained first in this job.
    confusion_from: str | None = None

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        m = cfg.method
        choice(cfg, "method.init", ("identity", "confusion"))
        require(
            0.0 < m.smoothing < 1.0,
            f"method.smoothing={m.smoothing} must be in (0, 1): every transition starts at a "
            "positive probability (its logarithm is the layer's initial weight).",
        )
        require(
            m.init != "confusion" or cfg.dataset.hyper_val_size > 0,
            "method.init=confusion estimates the noise from a baseline's predictions on the noisy "
            "hyper-validation set: set dataset.hyper_val_size > 0 (protocol=l2rw_background does).",
        )


@dataclass
class StopConf:
    """Which model of the training stage a run reports: the final one, or (`early`, the L2RW
    tables' +ES) the one of best (noisy) hyper-validation accuracy."""

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
class FinetuneConf(NoFinetuneConf):
    """+FT: after the method's training, train its reported model (final, or the early-stopped
    one with stop=early) further on the clean pool alone, plain SGD with uniform weights (L2RW
    Sec. 4.2: "extra 5K steps of training on the limited clean data")."""

    name: str = "clean"
    steps: int = 5000
    # Constant learning rate; null: the training stage's last one (lr * gamma^#milestones,
    # the authors' 1e-3).
    lr: float | None = None
    batch_size: int = 100
    eval_every: int = 500

    @staticmethod
    def check(cfg: DictConfig) -> None:
        ft = cfg.finetune
        for key in ("steps", "batch_size", "eval_every"):
            require(ft[key] > 0, f"finetune.{key}={ft[key]} must be positive.")
        require(ft.lr is None or ft.lr > 0, f"finetune.lr={ft.lr} must be positive (or null).")
        require(
            cfg.selector.name == "none",
            "finetune=clean follows a method's training; a selection pipeline has its own "
            "fine-tuning rounds (selector=finetune).",
        )
        _needs_meta_set(cfg)


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
    # Epochs of a "finetune" round, and its constant learning rate (null: train.lr, the
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
            f"selector.finetune_lr={sel.finetune_lr} must be positive (or null: train.lr).",
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
            cfg.method.name in ("meta_reweight", "l2rw"),
            f"selector={sel.name} selects the meta set of a meta re-weighting method: use "
            f"method=meta_reweight (the paper's) or method=l2rw, not method={cfg.method.name}.",
        )


@dataclass
class RBCConf(SelectionConf):
    """RBC and RBC-K: the last-layer gradient features of Eq. 11-12 (`l2rw.selection.features`)."""

    # Record the RBC paper's checks of its theorems for each round (Tables 4 and 5,
    # `l2rw.selection.theorems`): D_j's minimum, 5% quantile and share of inf
    # (metrics.theorem1_d_*; an infinite one is the string "inf"), the stable examples among
    # the clustered (metrics.theorem2_*), the last round's in `metrics`, each round's in
    # `selection.rounds`, and the seconds taken (theorem_checks_s). Costs one more pass of
    # last-layer features over the clustered half of the candidates per snapshot (two without
    # label noise). Measured on MNIST with LeNet-5, 6 snapshots, one CPU thread: +1.3 s on a
    # 3.3 s selection of 5,000 candidates, +22 s on 65 s for 60,000 (about +35-40% of RBC's
    # selection, small beside a round's training), hence off by default.
    theorem_checks: bool = False


@dataclass
class GBCConf(SelectionConf):
    # Layers drawn with replacement, with probability A(l)/A, per snapshot.
    layers: int = 5
    # Random projection of each drawn layer's per-example gradient: rows for the output
    # gradient and for the input activation (a 0: no projection, exact gradients via torch.func,
    # for small models only).
    proj_dims: list[int] = field(default_factory=lambda: [8, 32])
    # Examples per batched forward and backward of the features. Memory grows with it (the
    # CIFAR ResNet-34 needs several GB at 512); on a GPU a small model is bound by kernel
    # launches, and larger batches dispatch fewer (scripts/bench_selection.py --count-ops).
    batch_size: int = 512

    @staticmethod
    def check(cfg: DictConfig) -> None:
        SelectionConf.check(cfg)
        require(
            cfg.selector.batch_size >= 1,
            f"selector.batch_size={cfg.selector.batch_size} must be >= 1.",
        )


@dataclass
class TAVAALConf(SelectionConf):
    """TA-VAAL (Kim et al. 2021): a VAE and a discriminator trained adversarially on the meta set
    (labelled) against a random subset of the training set (unlabelled), conditioned on a
    loss-prediction ranker; picks the examples most likely unlabelled."""

    # Passes over (meta set + subset) of VAE / discriminator training (the RBC authors' EPOCHV).
    epochs: int = 10
    # Random training examples scored per round (TA-VAAL's SUBSET; raised to the round's k).
    subset: int = 10000
    # Dimension of the VAE's latent space (TA-VAAL's z_dim).
    latent_dim: int = 32
    # Labelled and unlabelled examples per training batch, each (TA-VAAL's BATCH).
    batch_size: int = 128
    # Adam learning rate of the VAE, the discriminator and the ranker (TA-VAAL's 5e-4).
    lr: float = 5e-4
    # Weight of the VAE's KL term.
    beta: float = 1.0
    # Weight of the VAE's term for fooling the discriminator.
    adversary_weight: float = 1.0
    # Full-batch steps training the ranker on the meta set's losses (0: untrained, as the RBC
    # authors' run).
    ranker_steps: int = 200
    # VAE's reconstruction and KL summed over their dimensions ("sum", the papers' ELBO) or
    # averaged ("mean", TA-VAAL's code).
    vae_reduction: str = "sum"

    @staticmethod
    def check(cfg: DictConfig) -> None:
        SelectionConf.check(cfg)
        choice(cfg, "selector.vae_reduction", ("sum", "mean"))
        sel = cfg.selector
        for key in ("epochs", "subset", "latent_dim", "batch_size"):
            require(
                sel[key] > 0,
                f"selector.{key}={sel[key]} must be positive: TA-VAAL trains its VAE and "
                "discriminator for selector.epochs passes over the meta set and a random subset "
                "of selector.subset training examples, in batches of selector.batch_size, with a "
                "selector.latent_dim-dimensional latent space.",
            )
        require(
            sel.lr > 0,
            f"selector.lr={sel.lr} must be positive: it is the Adam learning rate of TA-VAAL's "
            "VAE, discriminator and ranker (the authors' 5e-4).",
        )
        for key in ("beta", "adversary_weight", "ranker_steps"):
            require(
                sel[key] >= 0,
                f"selector.{key}={sel[key]} must be >= 0: selector.beta and "
                "selector.adversary_weight weigh the VAE's KL and adversarial terms (0 drops the "
                "term), selector.ranker_steps counts the ranker's training steps (0: untrained).",
            )


METHOD_SCHEMAS: dict[str, type] = {
    "baseline": MethodConf,
    "weighted": MethodConf,
    "clean_only": CleanOnlyConf,
    "reed_soft": ReedConf,
    "reed_hard": ReedConf,
    "s_model": SModelConf,
    "s_model_conf": SModelConf,
    "resample": MethodConf,
    "hard_mining": MethodConf,
    "proportion": ProportionConf,
    "random": RandomConf,
    "l2rw": L2RWConf,
    "meta_reweight": MetaReweightConf,
}
SELECTOR_SCHEMAS: dict[str, type] = {
    "none": SelectorConf,
    "warmup": SelectionConf,
    "random": SelectionConf,
    "certain": SelectionConf,
    "uncertain": SelectionConf,
    "kmeans": RBCConf,
    "rbc": RBCConf,
    "gbc": GBCConf,
    "ta_vaal": TAVAALConf,
    "craig": SelectionConf,
    "finetune": SelectionConf,
}
STOP_SCHEMAS: dict[str, type] = {"final": StopConf, "early": StopConf}
FINETUNE_SCHEMAS: dict[str, type] = {"none": NoFinetuneConf, "clean": FinetuneConf}
# In the order their checks run: the stages' before the selector's, whose pipeline they
# cannot join.
GROUPS: dict[str, dict[str, type]] = {
    "method": METHOD_SCHEMAS,
    "stop": STOP_SCHEMAS,
    "finetune": FINETUNE_SCHEMAS,
    "selector": SELECTOR_SCHEMAS,
}


def store_options(cs: ConfigStore) -> None:
    for group, schemas in GROUPS.items():
        for name, schema in schemas.items():
            cs.store(group=group, name=f"base_{name}", node=schema)


def check_options(cfg: DictConfig) -> None:
    """Run the `check` of the schema behind each option group's choice."""
    for group in GROUPS:
        schema = OmegaConf.get_type(cfg[group])
        check = getattr(schema, "check", None)
        require(
            check is not None,
            f"{group}={cfg[group].name}: its config does not start from a schema; begin "
            f"conf/{group}/{cfg[group].name}.yaml with `defaults: [base_<option>, _self_]`.",
        )
        check(cfg)
