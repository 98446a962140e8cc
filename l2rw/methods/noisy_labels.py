"""The noisy-label baselines of the L2RW paper (Sec. 4.2): WEIGHTED, REED, S-MODEL, CLEAN ONLY.

- WEIGHTED: "the model knows the oracle noise ratio for each class and reweights the training loss
  proportional to the percentage of clean images of that label class": w_i is the fraction of
  clean labels among the training examples labelled y_i, normalised over the batch.
- REED (Reed et al. 2014): cross-entropy against the target beta * t + (1 - beta) * q, with q the
  prediction (soft) or its one-hot argmax (hard). In the soft form the gradient also flows through
  q, as in Reed et al.'s loss, which they note amounts to an entropy regulariser.
- S-MODEL (Goldberger & Ben-Reuven 2017): the model's softmax p(true class | x) is followed by a
  learned transition theta = softmax(W) (rows: true class, columns: observed label), and
  -log (p @ theta)[y] is trained on the observed labels; evaluation reads the model's own logits.
  W is a parameter attached to the model (`noise_transition`), so the optimizer, checkpoints and
  snapshots carry it.
- CLEAN ONLY: uniform weights on the clean pool, which the stage runner trains on instead of the
  noisy set (`trains_on_clean`).
"""

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from l2rw.config.options import MethodConf, choice, needs_meta_set, require
from l2rw.errors import UserError
from l2rw.meta import normalize_weights
from l2rw.methods import METHODS
from l2rw.methods.context import RunContext
from l2rw.methods.loop import Batch, StepRule
from l2rw.methods.reweighting import UniformRule, uniform_weights, weighted_step
from l2rw.tracking.record import RECORD_NAME, RunRecord, read_record, setting_of

log = logging.getLogger(__name__)
TRANSITION = "noise_transition"


def clean_fractions(y: Tensor, y_true: Tensor, num_classes: int) -> Tensor:
    """Per observed class c: the fraction of examples labelled c whose true label is c
    (1 for a class no example is labelled with)."""
    labelled = torch.bincount(y, minlength=num_classes).double()
    clean = torch.bincount(y[y == y_true], minlength=num_classes).double()
    return torch.where(labelled > 0, clean / labelled.clamp(min=1), torch.ones_like(labelled))


@METHODS.register("weighted", schema=MethodConf)
def weighted(ctx: RunContext) -> StepRule:
    """The WEIGHTED oracle: weights proportional to the clean fraction of each example's label
    class in the training set, normalised per batch."""
    train = ctx.data.train
    fractions = clean_fractions(train.y, train.y_true, ctx.data.num_classes).float()

    def weigh(losses: Tensor, batch: Batch) -> Tensor:
        return normalize_weights(fractions.to(batch.y.device)[batch.y])

    return lambda m, o, b: weighted_step(m, o, b, weigh)


def bootstrap_targets(logits: Tensor, y: Tensor, beta: float, bootstrap: str) -> Tensor:
    """Reed et al.'s target beta * one_hot(y) + (1 - beta) * q: q = softmax(logits) ("soft",
    differentiable) or one_hot(argmax) ("hard")."""
    k = logits.shape[1]
    if bootstrap == "soft":
        q = logits.softmax(1)
    elif bootstrap == "hard":
        q = F.one_hot(logits.argmax(1), k).to(logits.dtype)
    else:
        raise ValueError(f"unknown bootstrap {bootstrap!r}: use soft or hard")
    return beta * F.one_hot(y, k).to(logits.dtype) + (1.0 - beta) * q


def bootstrap_loss(logits: Tensor, y: Tensor, beta: float, bootstrap: str) -> Tensor:
    """Per-example -sum_k target_k log softmax(logits)_k."""
    target = bootstrap_targets(logits, y, beta, bootstrap)
    return -(target * logits.log_softmax(1)).sum(1)


@dataclass
class ReedConf(MethodConf):
    """REED soft bootstrapping (Reed et al. 2014): the target is beta * label + (1 - beta) *
    prediction, with the paper's beta = 0.95."""

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
class ReedHardConf(ReedConf):
    """REED hard bootstrapping: the one-hot predicted class, with the paper's beta = 0.8."""

    bootstrap: str = "hard"
    beta: float = 0.8


@METHODS.register("reed_soft", schema=ReedConf)
@METHODS.register("reed_hard", schema=ReedHardConf)
def reed(ctx: RunContext) -> StepRule:
    beta, bootstrap = ctx.cfg.method.beta, ctx.cfg.method.bootstrap

    def loss(logits: Tensor, y: Tensor) -> Tensor:
        return bootstrap_loss(logits, y, beta, bootstrap)

    return lambda m, o, b: weighted_step(m, o, b, uniform_weights, loss)


def smoothed_identity(num_classes: int, smoothing: float) -> Tensor:
    """(1 - s) on the diagonal, s spread evenly over the other entries of each row."""
    off = smoothing / max(num_classes - 1, 1)
    return torch.full((num_classes, num_classes), off).fill_diagonal_(1.0 - smoothing)


def transition_from_confusion(confusion: Tensor, smoothing: float) -> Tensor:
    """theta[i, j] ~ P(observed label j | predicted class i) from a confusion matrix of counts
    (rows: observed label, columns: prediction), mixed with the uniform distribution by
    `smoothing`; a class never predicted gets a uniform row."""
    counts = confusion.double().T
    k = counts.shape[0]
    totals = counts.sum(1, keepdim=True)
    rows = torch.where(totals > 0, counts / totals.clamp(min=1), torch.full_like(counts, 1.0 / k))
    return ((1.0 - smoothing) * rows + smoothing / k).float()


def noisy_log_probs(model: nn.Module, logits: Tensor) -> Tensor:
    """log p(observed label | x) = log(softmax(logits) @ softmax(W)) of an S-Model."""
    theta = getattr(model, TRANSITION).softmax(1)
    return (logits.softmax(1) @ theta).clamp(min=1e-12).log()


class SModelRule:
    """S-Model training: attaches the transition W = log(theta0) to the model at construction."""

    def __init__(self, ctx: RunContext, theta0: Tensor) -> None:
        w = theta0.log().to(next(ctx.model.parameters()).device)
        ctx.model.register_parameter(TRANSITION, nn.Parameter(w))

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch):
        def loss(logits: Tensor, y: Tensor) -> Tensor:
            return F.nll_loss(noisy_log_probs(model, logits), y, reduction="none")

        return weighted_step(model, optimizer, batch, uniform_weights, loss)


@dataclass
class SModelConf(MethodConf):
    """S-Model (Goldberger & Ben-Reuven 2017): a softmax noise-adaptation layer after the
    classifier models p(observed label | true class); trained on the noisy labels, dropped at
    test time. Initialised with a smoothed identity (the L2RW paper does not give the
    smoothing)."""

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
class SModelConfusionConf(SModelConf):
    """S-MODEL +CONF: the layer starts from the confusion matrix of a trained baseline (observed
    label against its prediction on the noisy hyper-validation set): by default the baseline run
    of the same cell in this sweep's folder, or, when it is not there (yet), a baseline trained
    first inside this job; method.confusion_from=PATH names a result.json."""

    init: str = "confusion"
    smoothing: float = 0.01


@METHODS.register("s_model", schema=SModelConf)
@METHODS.register("s_model_conf", schema=SModelConfusionConf)
def s_model(ctx: RunContext) -> StepRule:
    m, k = ctx.cfg.method, ctx.data.num_classes
    if m.init == "identity":
        theta0 = smoothed_identity(k, m.smoothing)
    else:
        theta0 = transition_from_confusion(baseline_confusion(ctx), m.smoothing)
    return SModelRule(ctx, theta0)


class _CleanOnly(UniformRule):
    """Uniform weights; the stage runner trains it on the clean pool instead of the noisy set."""

    trains_on_clean = True


@dataclass
class CleanOnlyConf(MethodConf):
    """CLEAN ONLY (L2RW Tables 1-2): plain SGD on the clean pool alone, from scratch. The
    authors' code runs 2,000 steps at a constant learning rate (optimizer.lr); set method.length to
    change it."""

    length: int | None = 2000
    milestones: list[int] | None = field(default_factory=list)

    @staticmethod
    def check(cfg: DictConfig) -> None:
        MethodConf.check(cfg)
        needs_meta_set(cfg)
        require(
            cfg.selector.name == "none",
            "method=clean_only trains on the dataset's clean pool; it takes no selector.",
        )


@METHODS.register("clean_only", schema=CleanOnlyConf)
def clean_only(ctx: RunContext) -> StepRule:
    return _CleanOnly()


def baseline_confusion(ctx: RunContext) -> Tensor:
    """The noisy hyper-validation confusion (observed label x prediction) of a trained baseline
    of the same setting, at the model that setting reports (final, or early-stopped)."""
    key = "val_confusion_es" if ctx.cfg.stop.name == "early" else "val_confusion"
    source = ctx.cfg.method.confusion_from
    record = _read_record(Path(source)) if source else _sibling_baseline(ctx)
    if record is not None:
        confusion = record.metrics.get(key)
        if confusion is None:
            raise UserError(
                f"The baseline record {record.output_dir} has no metrics.{key}: it was "
                "made without a hyper-validation set or by an older version. Re-run the baseline "
                "with dataset.hyper_val_size > 0, or leave method.confusion_from=null to train "
                "one inside this job."
            )
        log.info("S-Model +CONF: confusion of the baseline in %s.", record.output_dir)
        return torch.tensor(confusion)
    return _pretrained_confusion(ctx, key)


def _read_record(path: Path) -> RunRecord:
    folder = path if path.is_dir() else path.parent
    record = read_record(folder) if (folder / RECORD_NAME).exists() else None
    if record is None:
        raise UserError(
            f"method.confusion_from={path}: no such record. Give the result.json (or the run "
            "folder) of a completed baseline run, or leave it null."
        )
    if record.status != "completed" or record.method != "baseline":
        raise UserError(
            f"method.confusion_from={path} is a {record.status} run of method "
            f"{record.method}: +CONF needs a completed baseline run."
        )
    return record


def _setting(config: dict[str, Any]) -> dict[str, Any]:
    """What a baseline shares with this run: the resolved config but the method."""
    return setting_of(config, ignore=("method", "report"))


def _sibling_baseline(ctx: RunContext) -> RunRecord | None:
    """A completed baseline record beside this job (same sweep folder) with the same setting."""
    mine = _setting(OmegaConf.to_container(ctx.cfg, resolve=True))  # type: ignore[arg-type]
    for path in sorted(Path(ctx.run_dir).parent.glob(f"*/{RECORD_NAME}")):
        try:
            record = read_record(path.parent)
        except (OSError, json.JSONDecodeError):
            continue
        if (
            record is not None
            and record.status == "completed"
            and record.method == "baseline"
            and _setting(record.config) == mine
        ):
            return record
    return None


def _pretrained_confusion(ctx: RunContext, key: str) -> Tensor:
    """Train the baseline inside this job (phase `pretrain`, in its own folder) and read its
    confusion; a finished pretrain is reused on resume."""
    from l2rw.methods.loop import plan_phase, train_loop
    from l2rw.methods.phases import fresh_model, run_phase
    from l2rw.tracking.sinks import Tracker

    folder = Path(ctx.run_dir) / "pretrain"
    folder.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.merge(ctx.cfg, {"method": {"name": "baseline"}})
    pre_ctx = replace(ctx, cfg=cfg, run_dir=folder, tracker=Tracker(folder))
    phase = plan_phase(pre_ctx, "pretrain", folder=folder)
    log.info("S-Model +CONF: no baseline record of this setting; training one first in %s.", folder)
    done = run_phase(
        phase,
        lambda: train_loop(replace(pre_ctx, model=fresh_model(pre_ctx, 1)), UniformRule(), phase),
    )
    return torch.tensor(done.out.metrics[key])
