"""TA-VAAL (Kim et al., CVPR 2021) as a meta-sample selector: the RBC paper's baseline row.

Roles. The meta set so far is TA-VAAL's labelled pool, the training examples its unlabelled
pool. A round draws a random subset of `subset` training examples (TA-VAAL's SUBSET), trains
the networks below, and picks the k examples of the subset that the discriminator judges most
likely unlabelled. The task model is the round's best-validation model, frozen: the pipeline
trains it, the selector never does.

Networks.
* Ranker (the loss-prediction module of Yoo & Kweon 2019): an MLP on the task model's
  penultimate features h (the input of its last nn.Linear) whose output l_hat orders examples
  by their loss; r = sigmoid(l_hat) is the "ranking" the VAE and the discriminator read.
* VAE, q(z | x) = N(mu, diag(exp(logvar))) and a decoder p(x | z, r) reading [z; r]: two
  stride-2 convolutions each way for images, an MLP for flat inputs (the 2-D toy data).
* Discriminator D(mu, r): an MLP [latent + 1 -> 512 -> 512 -> 1] (TA-VAAL's), the logit of
  "labelled".

Losses, on a batch of labelled x_l and one of unlabelled x_u (BCE on D's logits):
    VAE:    rec(x_l) + rec(x_u) + beta (KL_l + KL_u)
            + adversary_weight [BCE(D(mu_l, r_l), 1) + BCE(D(mu_u, r_u), 1)]
    D:      BCE(D(mu_l, r_l), 1) + BCE(D(mu_u, r_u), 0), mu from the VAE after its step
    ranker: mean over pairs (i, j) of meta examples with l_i != l_j of
            BCE(sigmoid(l_hat_i - l_hat_j), 1[l_i > l_j])
rec is the squared reconstruction error and KL = KL(q(z | x) || N(0, I)), each averaged over
the batch. The adversarial term pushes the VAE to encode unlabelled examples like labelled ones;
D learns to tell them apart. Each iteration is one VAE step then one D step (Adam), for
floor((m + n) epochs / batch_size) iterations, m the meta set's size and n the subset's
(TA-VAAL's schedule); labelled and unlabelled batches are drawn from their own reshuffled
passes, so the small meta set is cycled through many times.

Our choices where the paper leaves room, or where we differ from the released code:
* The ranker is trained (`ranker_steps` full-batch Adam steps) to rank the meta set's
  per-example cross-entropy losses under the best-validation model. That is TA-VAAL's
  loss-prediction module trained on the labelled pool; there it learns jointly with the task
  model, here the task model is fixed, so its features are detached (TA-VAAL detaches them
  after epoch 120 too). The RBC authors' run never trains it (its only cycle selects before any
  task training): `ranker_steps=0` reproduces that. A meta set whose losses are all equal
  leaves the ranker untrained.
* One feature level (the penultimate) instead of TA-VAAL's four ResNet blocks: the repository's
  models differ, and every one of them ends in an nn.Linear.
* `vae_reduction="sum"` (default): rec summed over the input's features and KL over the latent
  dimensions, the ELBO of a Gaussian decoder that VAAL and TA-VAAL write (beta = 1). "mean":
  both averaged over their dimensions, as in TA-VAAL's code, which for MNIST weighs the KL
  D / latent_dim = 24.5 times more and puts the reconstruction and the adversarial term on the
  same scale. In our MNIST trials with a 10-example meta set, "mean" let the adversary win:
  every code collapsed onto one point (spread 0.04), the discriminator stayed at chance and the
  picks spread over the classes like random ones; with "sum" the VAE reconstructs and the
  discriminator separates the meta set from the pool.
* The ranking loss is the released code's (the sigmoid of differences against their order, all
  pairs of the meta set rather than mirrored pairs of a batch); LL4AL's is a hinge of margin 1.
* r = sigmoid(l_hat) goes to the decoder and the discriminator; the code gives the
  discriminator l_hat itself, and r ~ U(0, 1) at its first iteration (not reproduced).
* The networks are much smaller than TA-VAAL's (128-1024 channels, BatchNorm), so a round runs
  on a CPU; with no BatchNorm an example's score does not depend on its batch.
* The subset is max(subset, k) examples, all of them when the pool is smaller.
"""

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from l2rw.seeding import derive_seed
from l2rw.selection.features import last_linear

# Streams of the round's seed: subset and batch order, reparameterisation noise, initial weights.
_ORDER, _NOISE, _INIT = range(3)
_HIDDEN = 128
_DISCRIMINATOR_HIDDEN = 512
_CHANNELS = (16, 32)


@dataclass(frozen=True)
class TAVAALOptions:
    """The selector's knobs (`TAVAALConf` documents them and holds the defaults)."""

    epochs: int
    subset: int
    latent_dim: int
    batch_size: int
    lr: float
    beta: float
    adversary_weight: float
    ranker_steps: int
    vae_reduction: str

    @classmethod
    def from_conf(cls, conf: DictConfig) -> "TAVAALOptions":
        return cls(**{f.name: conf[f.name] for f in fields(cls)})


class Ranker(nn.Module):
    """Loss-prediction module: a score per example whose order should follow its loss."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, _HIDDEN), nn.ReLU(), nn.Linear(_HIDDEN, 1))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h).squeeze(1)


def _half(n: int) -> int:
    """Size after a 3x3 convolution of stride 2 and padding 1."""
    return (n + 1) // 2


class VAE(nn.Module):
    """Encoder x -> (mu, logvar) and decoder [z; r] -> x for inputs of `shape` (C, H, W) or (D,)."""

    def __init__(self, shape: tuple[int, ...], latent_dim: int) -> None:
        super().__init__()
        self.shape = shape
        if len(shape) == 3:
            c, h, w = shape
            c1, c2 = _CHANNELS
            small = (c2, _half(_half(h)), _half(_half(w)))
            width = small[0] * small[1] * small[2]
            self.encoder = nn.Sequential(
                nn.Conv2d(c, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU()
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim + 1, width),
                nn.ReLU(),
                nn.Unflatten(1, small),
                nn.ConvTranspose2d(c2, c1, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(c1, c, 4, 2, 1),
            )
        elif len(shape) == 1:
            width = _HIDDEN
            self.encoder = nn.Sequential(
                nn.Linear(shape[0], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
            )
            self.decoder = nn.Sequential(
                nn.Linear(latent_dim + 1, width),
                nn.ReLU(),
                nn.Linear(width, width),
                nn.ReLU(),
                nn.Linear(width, shape[0]),
            )
        else:
            raise ValueError(f"TA-VAAL takes inputs of shape (C, H, W) or (D,), not {shape}")
        self.mu = nn.Linear(width, latent_dim)
        self.logvar = nn.Linear(width, latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.encoder(x).flatten(1)
        return self.mu(e), self.logvar(e)

    def decode(self, z: Tensor, r: Tensor) -> Tensor:
        out = self.decoder(torch.cat([z, r[:, None]], 1))
        # Transposed convolutions double the size: crop to odd sizes.
        return out[:, :, : self.shape[1], : self.shape[2]] if len(self.shape) == 3 else out

    def forward(
        self, x: Tensor, r: Tensor, noise: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction from a reparameterised draw of z, mu and logvar."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=noise, device=mu.device, dtype=mu.dtype)
        return self.decode(mu + eps * (0.5 * logvar).exp(), r), mu, logvar


class Discriminator(nn.Module):
    """D(mu, r): the logit that an example belongs to the labelled (meta) set."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim + 1, _DISCRIMINATOR_HIDDEN),
            nn.ReLU(),
            nn.Linear(_DISCRIMINATOR_HIDDEN, _DISCRIMINATOR_HIDDEN),
            nn.ReLU(),
            nn.Linear(_DISCRIMINATOR_HIDDEN, 1),
        )

    def forward(self, mu: Tensor, r: Tensor) -> Tensor:
        return self.net(torch.cat([mu, r[:, None]], 1)).squeeze(1)


@torch.no_grad()
def task_features(
    model: nn.Module, x: Tensor, y: Tensor | None = None, batch_size: int = 1024
) -> tuple[Tensor, Tensor | None]:
    """The input of the model's last nn.Linear per example (the ranker's input) and, with
    labels, the example's cross-entropy loss (the ranker's target), in the model's mode."""
    seen: dict[str, Tensor] = {}
    handle = last_linear(model).register_forward_pre_hook(lambda _, args: seen.update(h=args[0]))
    feats, losses = [], []
    try:
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            feats.append(seen["h"].flatten(1))
            if y is not None:
                losses.append(
                    F.cross_entropy(logits, y[start : start + batch_size], reduction="none")
                )
    finally:
        handle.remove()
    return torch.cat(feats), torch.cat(losses) if y is not None else None


def ranking_loss(pred: Tensor, loss: Tensor) -> Tensor:
    """Pairwise ranking loss over the pairs of different loss: BCE(sigmoid(pred_i - pred_j),
    1[loss_i > loss_j])."""
    i, j = torch.triu_indices(len(pred), len(pred), offset=1, device=pred.device)
    keep = loss[i] != loss[j]
    i, j = i[keep], j[keep]
    target = (loss[i] > loss[j]).to(pred.dtype)
    return F.binary_cross_entropy_with_logits(pred[i] - pred[j], target)


def train_ranker(ranker: Ranker, h: Tensor, loss: Tensor, steps: int, lr: float) -> Tensor:
    """Full-batch Adam steps on the ranking loss; the loss before each step (none when all the
    losses are equal: nothing to rank)."""
    if loss.unique().numel() < 2:
        return loss.new_empty(0)
    opt = torch.optim.Adam(ranker.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        value = ranking_loss(ranker(h), loss)
        opt.zero_grad()
        value.backward()
        opt.step()
        history.append(value.detach())
    return torch.stack(history) if history else loss.new_empty(0)


def vae_loss(
    x: Tensor, recon: Tensor, mu: Tensor, logvar: Tensor, beta: float, reduction: str
) -> Tensor:
    """Squared error + beta KL(q(z|x) || N(0, I)), each summed over its dimensions ("sum") or
    averaged over them ("mean"), then averaged over the batch."""
    rec = (recon - x).pow(2).flatten(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "sum":
        return rec.sum(1).mean() + beta * kl.sum(1).mean()
    return rec.mean() + beta * kl.mean()


def _bce(logits: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def _batches(n: int, size: int, order: torch.Generator) -> Iterator[Tensor]:
    """Index batches of at most `size` from reshuffled passes over range(n), without end."""
    while True:
        yield from torch.randperm(n, generator=order).split(size)


def train_adversarial(
    vae: VAE,
    discriminator: Discriminator,
    labelled: tuple[Tensor, Tensor],
    unlabelled: tuple[Tensor, Tensor],
    opts: TAVAALOptions,
    order: torch.Generator,
    noise: torch.Generator,
) -> Tensor:
    """TA-VAAL's alternating VAE / discriminator training on (x, r) pairs of the labelled and
    the unlabelled pool; per iteration, the VAE's reconstruction + beta KL, its adversarial
    term (unweighted) and the discriminator's loss, as rows of an [iterations, 3] tensor."""
    (xl, rl), (xu, ru) = labelled, unlabelled
    iterations = max(1, (len(xl) + len(xu)) * opts.epochs // opts.batch_size)
    opt_vae = torch.optim.Adam(vae.parameters(), lr=opts.lr)
    opt_disc = torch.optim.Adam(discriminator.parameters(), lr=opts.lr)
    lab, unl = _batches(len(xl), opts.batch_size, order), _batches(len(xu), opts.batch_size, order)
    history = []
    for _ in range(iterations):
        il, iu = next(lab).to(xl.device), next(unl).to(xu.device)
        x, r, nl = torch.cat([xl[il], xu[iu]]), torch.cat([rl[il], ru[iu]]), len(il)
        recon, mu, logvar = vae(x, r, noise)
        fit = sum(
            vae_loss(x[s], recon[s], mu[s], logvar[s], opts.beta, opts.vae_reduction)
            for s in (slice(None, nl), slice(nl, None))
        )
        logits = discriminator(mu, r)
        fool = _bce(logits[:nl], 1.0) + _bce(logits[nl:], 1.0)
        opt_vae.zero_grad()
        (fit + opts.adversary_weight * fool).backward()
        opt_vae.step()

        with torch.no_grad():
            mu = vae.encode(x)[0]
        logits = discriminator(mu, r)
        loss_disc = _bce(logits[:nl], 1.0) + _bce(logits[nl:], 0.0)
        opt_disc.zero_grad()
        loss_disc.backward()
        opt_disc.step()
        history.append(torch.stack([fit, fool, loss_disc]).detach())
    return torch.stack(history)


@torch.no_grad()
def labelled_logits(
    vae: VAE, discriminator: Discriminator, x: Tensor, r: Tensor, batch_size: int = 1024
) -> Tensor:
    """D(mu(x), r) per example: low means the discriminator takes it for unlabelled."""
    return torch.cat(
        [
            discriminator(vae.encode(x[s : s + batch_size])[0], r[s : s + batch_size])
            for s in range(0, len(x), batch_size)
        ]
    )


def build_networks(
    shape: tuple[int, ...], features: int, latent_dim: int, seed: int, like: Tensor
) -> tuple[Ranker, VAE, Discriminator]:
    """Ranker, VAE and discriminator initialised from `seed` (the global generator is left as it
    was), on the device and in the dtype of `like`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = Ranker(features), VAE(shape, latent_dim), Discriminator(latent_dim)
    ranker, vae, disc = (n.to(device=like.device, dtype=like.dtype) for n in nets)
    return ranker, vae, disc


def ta_vaal_select(
    x: Tensor,
    meta_x: Tensor,
    meta_y: Tensor,
    model: nn.Module,
    k: int,
    opts: TAVAALOptions,
    seed: int,
) -> Tensor:
    """The k indices into x, from a random subset, that TA-VAAL's discriminator judges most
    likely unlabelled after training against the meta set (meta_x, meta_y); every random choice
    comes from `seed`."""
    if len(meta_x) == 0:
        raise ValueError("TA-VAAL needs a labelled (meta) set to train its discriminator against")
    order = torch.Generator().manual_seed(derive_seed(seed, _ORDER))
    noise = torch.Generator(device=x.device).manual_seed(derive_seed(seed, _NOISE))
    n = min(len(x), max(opts.subset, k))
    pool = torch.randperm(len(x), generator=order)[:n].to(x.device)
    xu = x[pool]
    h_meta, loss_meta = task_features(model, meta_x, meta_y)
    h_pool, _ = task_features(model, xu)
    ranker, vae, disc = build_networks(
        tuple(x.shape[1:]), h_meta.shape[1], opts.latent_dim, derive_seed(seed, _INIT), x
    )
    train_ranker(ranker, h_meta, loss_meta, opts.ranker_steps, opts.lr)
    with torch.no_grad():
        r_meta, r_pool = torch.sigmoid(ranker(h_meta)), torch.sigmoid(ranker(h_pool))
    train_adversarial(vae, disc, (meta_x, r_meta), (xu, r_pool), opts, order, noise)
    return pool[labelled_logits(vae, disc, xu, r_pool).topk(k, largest=False).indices]
