"""TA-VAAL selector: each network learns on tiny data, the discriminator separates a labelled-like
group from a distinct one and the picks come from the distinct one, picks are reproducible, and
the options are checked."""

from dataclasses import replace

import pytest
import torch
from conftest import compose_cfg
from nets import DEVICES
from omegaconf import OmegaConf
from torch import nn

from l2rw.config.validate import validate
from l2rw.errors import ConfigError
from l2rw.selection.selectors import SELECTORS, Candidates, TAVAALConf
from l2rw.selection.ta_vaal import (
    Ranker,
    TAVAALOptions,
    build_networks,
    labelled_logits,
    ta_vaal_select,
    task_features,
    train_adversarial,
    train_ranker,
    vae_loss,
)

DEFAULTS = TAVAALOptions.from_conf(OmegaConf.structured(TAVAALConf))
SMALL = replace(DEFAULTS, epochs=20, batch_size=32, ranker_steps=50)
SHAPES = [(1, 8, 8), (2,)]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def group(shape, n, side, seed):
    """n examples of one of two distinguishable groups: images bright on the left (side=1) or
    the right (side=-1) half, or 2-D points around (2, 2) or (-2, -2)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, *shape, generator=g)
    if len(shape) == 3:
        x[..., : shape[2] // 2] += side
        x[..., shape[2] // 2 :] -= side
    else:
        x += 2 * side
    return x


def task_model(shape):
    """A small untrained classifier ending in an nn.Linear, as the pipeline's models do."""
    d = torch.Size(shape).numel()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def two_groups(shape):
    """16 labelled examples of group A; an unlabelled pool of 100 A then 100 B."""
    meta_x = group(shape, 16, 1.0, seed=1)
    x = torch.cat([group(shape, 100, 1.0, seed=2), group(shape, 100, -1.0, seed=3)])
    return meta_x, torch.arange(16) % 3, x


def test_ranker_learns_the_order_of_the_losses():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, 8, generator=g)
    loss = h @ torch.randn(8, generator=g)
    ranker, _, _ = build_networks((2,), 8, 4, seed=0, like=h)
    history = train_ranker(ranker, h, loss, steps=200, lr=DEFAULTS.lr)
    assert history[-20:].mean() < 0.5 * history[:20].mean()
    with torch.no_grad():
        pred = ranker(h)
    i, j = torch.triu_indices(40, 40, offset=1)
    assert ((pred[i] > pred[j]) == (loss[i] > loss[j])).float().mean() > 0.9


def test_ranker_stays_untrained_when_there_is_nothing_to_rank():
    ranker = Ranker(3)
    before = [p.clone() for p in ranker.parameters()]
    assert len(train_ranker(ranker, torch.randn(5, 3), torch.ones(5), steps=10, lr=0.1)) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, ranker.parameters(), strict=True))


def test_task_features_are_the_last_linear_input_and_the_loss():
    model = task_model((2,))
    x, y = torch.randn(10, 2), torch.arange(10) % 3
    h, loss = task_features(model, x, y, batch_size=4)
    assert torch.allclose(h, model[:3](x))
    assert torch.allclose(loss, nn.functional.cross_entropy(model(x), y, reduction="none"))


def test_vae_loss_sums_or_averages_over_dimensions():
    x, recon = torch.zeros(3, 1, 4, 5), torch.ones(3, 1, 4, 5)
    mu, logvar = torch.ones(3, 2), torch.zeros(3, 2)  # KL = 1/2 per latent dimension
    assert vae_loss(x, recon, mu, logvar, 2.0, "sum") == 20 + 2.0 * 1.0
    assert vae_loss(x, recon, mu, logvar, 2.0, "mean") == 1 + 2.0 * 0.5


def train_on_groups(shape, **options):
    """VAE and discriminator trained with group A labelled, group B unlabelled; the loss
    history and the discriminator's logits on A (16) then B (100)."""
    meta_x, _, x = two_groups(shape)
    _, vae, disc = build_networks(shape, 8, SMALL.latent_dim, seed=0, like=x)
    r_meta, r = torch.full((16,), 0.5), torch.full((100,), 0.5)
    order, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    opts = replace(SMALL, lr=2e-3, **options)
    history = train_adversarial(vae, disc, (meta_x, r_meta), (x[100:], r), opts, order, noise)
    assert history.shape == ((16 + 100) * opts.epochs // opts.batch_size, 3)
    both = torch.cat([meta_x, x[100:]])
    return history, labelled_logits(vae, disc, both, torch.full((116,), 0.5))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_vae_and_discriminator_learn_and_the_adversary_hides_the_groups(shape):
    history, logits = train_on_groups(shape, adversary_weight=0.0)
    first, last = history[:10].mean(0), history[-10:].mean(0)
    assert last[0] < 0.5 * first[0]  # reconstruction + KL
    assert last[2] < 0.1 * first[2]  # discriminator, from about 2 log 2 (chance)
    assert logits[:16].min() > logits[16:].max()
    # With the adversarial term the VAE's codes fool the discriminator more.
    adversarial, _ = train_on_groups(shape)
    assert adversarial[-10:, 1].mean() < 0.7 * last[1]


def candidates(x, meta_x, meta_y, model, seed=0, round=1, options=SMALL):
    conf = OmegaConf.create({"name": "ta_vaal", **vars(options)})
    y = torch.zeros(len(x), dtype=torch.long, device=x.device)
    return Candidates(x, y, meta_x, meta_y, [model], False, seed, round, conf)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_selector_picks_from_the_group_unlike_the_meta_set(shape, device):
    meta_x, meta_y, x = two_groups(shape)
    model = task_model(shape).to(device)
    c = candidates(x.to(device), meta_x.to(device), meta_y.to(device), model)
    picked = SELECTORS.get("ta_vaal")(c, 10).indices
    assert picked.device == x.to(device).device
    assert len(set(picked.tolist())) == 10
    assert set(picked.tolist()) <= set(range(100, 200))


def test_picks_are_distinct_and_reproducible_for_a_seed_and_round():
    shape = (1, 8, 8)
    x = group(shape, 300, 0.0, seed=4)  # one group: the picks depend on the random draws
    meta_x, meta_y = group(shape, 6, 0.0, seed=5), torch.arange(6) % 3
    model = task_model(shape)
    opts = replace(SMALL, epochs=2, subset=120)
    state = torch.get_rng_state()

    def pick(seed, round):
        c = candidates(x, meta_x, meta_y, model, seed, round, opts)
        return SELECTORS.get("ta_vaal")(c, 8).indices.tolist()

    first = pick(0, 1)
    assert len(set(first)) == 8 and all(0 <= i < 300 for i in first)
    assert pick(0, 1) == first
    assert pick(0, 2) != first and pick(1, 1) != first
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not used


def test_subset_is_raised_to_k_and_capped_at_the_pool():
    shape = (2,)
    meta_x, meta_y, x = two_groups(shape)
    model = task_model(shape)
    opts = replace(SMALL, epochs=1, subset=3, ranker_steps=0)
    assert len(set(ta_vaal_select(x, meta_x, meta_y, model, 5, opts, seed=0).tolist())) == 5
    picked = ta_vaal_select(x, meta_x, meta_y, model, 200, replace(opts, subset=10**6), seed=0)
    assert sorted(picked.tolist()) == list(range(200))


TOY = ["dataset=toy2d", "model=mlp", "protocol=rbc", "method=meta_reweight", "selector=ta_vaal"]


def test_default_options_validate():
    cfg = compose_cfg(TOY)
    validate(cfg)
    assert TAVAALOptions.from_conf(cfg.selector) == DEFAULTS
    assert DEFAULTS.lr == 5e-4 and DEFAULTS.subset == 10000 and DEFAULTS.epochs == 10


@pytest.mark.parametrize(
    "override,needle",
    [
        ("selector.epochs=0", "selector.epochs=0"),
        ("selector.subset=0", "selector.subset=0"),
        ("selector.latent_dim=0", "selector.latent_dim=0"),
        ("selector.batch_size=-1", "selector.batch_size=-1"),
        ("selector.lr=0", "selector.lr=0.0"),
        ("selector.beta=-1", "selector.beta=-1.0"),
        ("selector.adversary_weight=-0.5", "selector.adversary_weight=-0.5"),
        ("selector.ranker_steps=-1", "selector.ranker_steps=-1"),
        ("selector.vae_reduction=max", "selector.vae_reduction='max'"),
    ],
)
def test_bad_options_fail_naming_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg([*TOY, override]))
    assert needle in str(err.value)
