"""Selectors: which training examples to clean and add to the meta set in one round.

A selector reads models and data and returns indices into the candidate pool; it never trains
(the pipeline in `l2rw.methods.selection` does). Each is one registered function taking a
`Candidates` and the number of examples to pick; its options come from `selector.*`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from l2rw.config.options import SelectionConf, SelectorConf, choice, require
from l2rw.registry import Registry
from l2rw.seeding import SELECTION, derive_seed, generator
from l2rw.selection.craig import craig_features, craig_select
from l2rw.selection.features import gbc_features, rbc_features, snapshot_features
from l2rw.selection.kmeans import drop_nearest, kmeans, nearest_to_centroids, weighted_kmeans
from l2rw.selection.ta_vaal import TAVAALOptions, ta_vaal_select
from l2rw.selection.theorems import last_layer_products, row_products, theorem_summary

SELECTORS = Registry("selector", group="selector")
SELECTORS.option("none", SelectorConf)


@dataclass
class WarmupConf(SelectionConf):
    """The warm-up alone: meta re-weighting with the M0 random meta samples, no selection round
    (the RBC paper's "Base model" row). It shares the cached warm-up of the other selectors."""

    budget: int = "${dataset.clean_size}"  # type: ignore[assignment]


SELECTORS.option("warmup", WarmupConf)


@dataclass
class Candidates:
    """What a round's selector sees.

    `x` are the training examples (preprocessed without augmentation) with their observed labels
    `y`; `meta_x`, `meta_y` the meta set so far (clean labels); `models` the K snapshots in eval
    mode, the best-validation model first. `label_free` drops the label-dependent part of the
    gradient features (noisy labels). `seed` and `round` fix every random choice. `y_true`, the
    candidates' true labels, is read only by the diagnostics of `selector.theorem_checks` (a
    pick's label once cleaned), never to select.
    """

    x: Tensor
    y: Tensor
    meta_x: Tensor
    meta_y: Tensor
    models: list[nn.Module]
    label_free: bool
    seed: int
    round: int
    options: DictConfig
    y_true: Tensor | None = None


@dataclass
class Selection:
    """Picked indices into the candidates, and what a figure of the clustering needs."""

    indices: Tensor
    # Features that were clustered (rows of the kept candidates) and the picked rows among them.
    features: Tensor | None = None
    feature_index: Tensor | None = None
    # The candidate each feature row belongs to (None: row i is candidate i).
    feature_rows: Tensor | None = None
    # JSON-ready values for the run's metrics (selector.theorem_checks: Tables 4 and 5).
    diagnostics: dict[str, Any] = field(default_factory=dict)


def _generator(c: Candidates) -> torch.Generator:
    return generator(c.seed, SELECTION, c.round)


@dataclass
class FinetuneSelectionConf(SelectionConf):
    """Fine-tuning: examples selected at random, then the warm-up model trained further on the
    meta set alone (the RBC paper's "Fine-tuning" row; the L2RW tables' +FT)."""

    round_training: str = "finetune"


@SELECTORS.register("random", schema=SelectionConf)
@SELECTORS.register("finetune", schema=FinetuneSelectionConf)
def random_selection(c: Candidates, k: int) -> Selection:
    """Uniformly at random (the `finetune` selector picks the same way, then fine-tunes)."""
    return Selection(torch.randperm(len(c.y), generator=_generator(c))[:k].to(c.y.device))


@torch.no_grad()
def predictive_entropy(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """H(softmax(f(x))) per example, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(x), batch_size):
            logp = torch.log_softmax(model(x[start : start + batch_size]), dim=1)
            out.append(-(logp.exp() * logp).sum(1))
        return torch.cat(out)
    finally:
        model.train(was_training)


@SELECTORS.register("uncertain", schema=SelectionConf)
def uncertain(c: Candidates, k: int) -> Selection:
    """The k examples of highest predictive entropy under the best-validation model."""
    return Selection(predictive_entropy(c.models[0], c.x).topk(k).indices)


@SELECTORS.register("certain", schema=SelectionConf)
def certain(c: Candidates, k: int) -> Selection:
    """The k examples of lowest predictive entropy under the best-validation model."""
    return Selection(predictive_entropy(c.models[0], c.x).topk(k, largest=False).indices)


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


@SELECTORS.register("ta_vaal", schema=TAVAALConf)
def ta_vaal(c: Candidates, k: int) -> Selection:
    """TA-VAAL: the k examples of a random subset that a discriminator, trained against the meta
    set on a ranker-conditioned VAE's latent codes, judges most likely unlabelled
    (`l2rw.selection.ta_vaal`)."""
    seed = derive_seed(c.seed, SELECTION, c.round)
    opts = TAVAALOptions.from_conf(c.options)
    return Selection(ta_vaal_select(c.x, c.meta_x, c.meta_y, c.models[0], k, opts, seed))


def _features(c: Candidates, fn: Callable[..., Tensor], **kw) -> tuple[Tensor, Tensor]:
    """Features of the candidates and of the meta set, from one call so that both share GBC's
    layer draw and projection (the meta set's labels are clean; both label-free if asked)."""
    x = torch.cat([c.x, c.meta_x])
    y = None if c.label_free else torch.cat([c.y, c.meta_y])
    feats = snapshot_features(fn, c.models, x, y, **kw)
    return feats[: len(c.x)], feats[len(c.x) :]


def _theorem_checks(c: Candidates, feats: Tensor, keep: Tensor, picked: Tensor) -> dict[str, Any]:
    """With selector.theorem_checks, the statistics of RBC Tables 4 and 5 for this round
    (`l2rw.selection.theorems`): over the clustered candidates `keep`, the round's picks as the
    meta samples, last-layer gradients with the candidates' observed labels and the picks' true
    ones (label-aware), and the clustered RBC features `feats` (label-free) or, when those carry
    labels, label-free ones computed here. Adds the seconds it took."""
    if not c.options.get("theorem_checks", False):
        return {}
    start = time.perf_counter()
    clean = c.y if c.y_true is None else c.y_true
    x, pick_x = c.x[keep], c.x[picked]
    aware = last_layer_products(c.models, x, c.y[keep], pick_x, clean[picked])
    if c.label_free:
        free = row_products(feats, keep, picked)
    else:
        free = last_layer_products(c.models, x, None, pick_x, None)
    out = theorem_summary(aware, free)
    out["theorem_checks_s"] = round(time.perf_counter() - start, 3)
    return out


def _cluster_and_pick(c: Candidates, k: int, feats: Tensor, meta_feats: Tensor) -> Selection:
    """Algorithm 2: drop the candidates nearest the meta set, weighted K-means, nearest to each
    centroid (no duplicates)."""
    keep = drop_nearest(feats, meta_feats, c.options.drop_fraction).sort().values
    centroids, _ = weighted_kmeans(feats[keep], k, c.seed, max_iter=c.options.kmeans_iters)
    picked = nearest_to_centroids(feats, centroids, candidates=keep)
    return Selection(picked, feats[keep], torch.searchsorted(keep, picked), keep)


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


@SELECTORS.register("rbc", schema=RBCConf)
def rbc(c: Candidates, k: int) -> Selection:
    """RBC: last-layer gradient features (Eq. 11-12) over the snapshots, weighted K-means
    (with selector.theorem_checks, the diagnostics of RBC Tables 4 and 5)."""
    feats, meta_feats = _features(c, rbc_features)
    selection = _cluster_and_pick(c, k, feats, meta_feats)
    selection.diagnostics = _theorem_checks(c, feats, selection.feature_rows, selection.indices)
    return selection


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


@SELECTORS.register("gbc", schema=GBCConf)
def gbc(c: Candidates, k: int) -> Selection:
    """GBC: importance-sampled, projected per-example layer gradients (Eq. 13-14)."""
    o = c.options
    dims = tuple(o.proj_dims)
    exact = not all(dims)
    feats = _features(
        c,
        gbc_features,
        seed=derive_seed(c.seed, SELECTION, c.round),
        layers=o.layers,
        proj_dims=(1, 1) if exact else dims,
        exact=exact,
        batch_size=o.batch_size,
    )
    return _cluster_and_pick(c, k, *feats)


@SELECTORS.register("craig", schema=SelectionConf)
def craig(c: Candidates, k: int) -> Selection:
    """CRAIG (the RBC paper's baseline): greedy facility location over last-layer gradients at the
    best-validation model's predicted labels, within each predicted class (`l2rw.selection.craig`).
    The observed labels and the meta set are not used."""
    feats, labels = craig_features(c.models[0], c.x)
    picked = craig_select(feats, labels, k)
    return Selection(picked, feats, picked)


@SELECTORS.register("kmeans", schema=RBCConf)
def rbc_kmeans(c: Candidates, k: int) -> Selection:
    """RBC-K: RBC's features clustered by ordinary K-means; the candidate nearest (Euclidean) to
    each centroid, no duplicates. selector.theorem_checks as RBC (the stable examples are still
    judged by |<G_j, G_meta,i>|, not by the Euclidean distance RBC-K clusters with)."""
    feats, meta_feats = _features(c, rbc_features)
    keep = drop_nearest(feats, meta_feats, c.options.drop_fraction).sort().values
    centroids, _ = kmeans(feats[keep], k, c.seed, max_iter=c.options.kmeans_iters)
    dist = torch.cdist(centroids, feats[keep])
    picked: list[int] = []
    for row in dist:
        order = row.argsort()
        picked.append(int(next(int(j) for j in order if int(j) not in picked)))
    local = torch.tensor(picked, device=keep.device)
    diagnostics = _theorem_checks(c, feats, keep, keep[local])
    return Selection(keep[local], feats[keep], local, keep, diagnostics)
