"""Selection library: weighted K-means (Algorithm 1, Eq. S1-S2), the helpers of Algorithm 2, and
the RBC / GBC features (Eq. 11-14) against independent computations."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from nets import DEVICES
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from torch import nn

from l2rw.models import build_model
from l2rw.selection import (
    drop_nearest,
    gbc_features,
    kmeans,
    last_linear,
    nearest_to_centroids,
    rbc_features,
    snapshot_features,
    weighted_kmeans,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- independent reference rules


def s1_argmax(G, C):
    """Eq. S1 assignment, written directly: argmax_i ||C_i|| |cos(G_j, C_i)|."""
    cos = F.normalize(G, dim=1) @ F.normalize(C, dim=1).T
    return (C.norm(dim=1) * cos.abs()).argmax(1)


def s2_update(G, labels, k):
    """Eq. S2: C_i = sum_{j in i} G_j / sum_{j in i} ||G_j||."""
    return torch.stack([G[labels == i].sum(0) / G[labels == i].norm(dim=1).sum() for i in range(k)])


def planted(seed=0, k=4, per=50, dim=10, noise=0.05):
    """k clusters of directions in `dim` dimensions, norms varying from 0.2 to 5.2, shuffled."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(k, dim, generator=g, dtype=F64), dim=1)
    truth = torch.arange(k).repeat_interleave(per)
    u = F.normalize(
        dirs[truth] + noise * torch.randn(len(truth), dim, generator=g, dtype=F64), dim=1
    )
    G = u * (0.2 + 5 * torch.rand(len(truth), 1, generator=g, dtype=F64))
    perm = torch.randperm(len(truth), generator=g)
    return G[perm], truth[perm]


# ---------------------------------------------------------------- weighted K-means


@pytest.mark.parametrize("device", DEVICES)
def test_weighted_kmeans_recovers_planted_clusters_at_a_fixed_point(device):
    G, truth = planted()
    G = G.to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged: no RuntimeWarning
        C, labels = weighted_kmeans(G, 4, seed=0)
    assert C.shape == (4, 10) and labels.shape == (200,)
    assert adjusted_rand_score(truth, labels.cpu()) == 1.0
    assert torch.equal(labels, s1_argmax(G, C))
    torch.testing.assert_close(C, s2_update(G, labels, 4))


def test_weighted_kmeans_fixed_point_with_overlap_and_zero_rows():
    g = torch.Generator().manual_seed(3)
    # Non-negative rows (like label-free RBC features) that overlap, plus zero rows.
    G = torch.randn(400, 12, generator=g, dtype=F64).abs() * torch.rand(400, 1, generator=g)
    G[::50] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C, labels = weighted_kmeans(G, 6, seed=1)
    assert torch.isfinite(C).all() and len(C) == 6
    assert (labels[::50] == 0).all()  # zero rows: similarity 0 everywhere, lowest index
    assert torch.equal(labels, s1_argmax(G, C))
    torch.testing.assert_close(C, s2_update(G, labels, len(C)))


def test_weighted_kmeans_restarts_with_fewer_clusters_when_some_are_empty():
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(3, 5, generator=g, dtype=F64)
    truth = torch.arange(3).repeat(6)
    G = distinct[truth]  # 3 distinct points, each 6 times
    C, labels = weighted_kmeans(G, 5, seed=0)
    assert len(C) == 3
    assert adjusted_rand_score(truth, labels) == 1.0
    assert torch.equal(labels, s1_argmax(G, C))
    torch.testing.assert_close(C, s2_update(G, labels, 3))


@pytest.mark.parametrize("fn", [weighted_kmeans, kmeans])
def test_chunked_equals_unchunked(fn):
    G, _ = planted(seed=1, k=5, per=30)
    C, labels = fn(G, 5, seed=2)
    C7, labels7 = fn(G, 5, seed=2, chunk_size=7)
    assert torch.equal(labels, labels7)
    torch.testing.assert_close(C, C7)


def test_every_seed_recovers_planted_clusters_deterministically():
    G, truth = planted(seed=2)
    runs = [weighted_kmeans(G, 4, seed=s)[1] for s in range(3)]
    assert all(adjusted_rand_score(truth, labels) == 1.0 for labels in runs)
    assert torch.equal(weighted_kmeans(G, 4, seed=1)[1], runs[1])


def test_weighted_kmeans_warns_when_it_does_not_converge():
    # Sign-symmetric isotropic data: S1 takes |cos| but S2 sums signed rows, so clusters keep
    # trading members. The assignment returned is still the S1 rule for the returned centroids.
    G = torch.randn(300, 10, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        C, labels = weighted_kmeans(G, 5, seed=0, max_iter=20)
    assert torch.equal(labels, s1_argmax(G, C))


# ---------------------------------------------------------------- Euclidean K-means (RBC-K)


def blobs(seed=0, k=3, per=60, dim=5):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(k, dim, generator=g, dtype=F64)
    return centres.repeat_interleave(per, 0) + torch.randn(k * per, dim, generator=g, dtype=F64)


def sklearn_kmeans(G, init):
    km = KMeans(len(init), init=init.numpy(), n_init=1, tol=0.0, max_iter=300, algorithm="lloyd")
    km.fit(G.numpy())
    return torch.from_numpy(km.cluster_centers_), torch.from_numpy(km.labels_).long()


def test_kmeans_equals_sklearn_from_the_same_initial_centres():
    G = blobs()
    init = G[torch.tensor([0, 1, 2])]  # all from the first blob: several Lloyd steps
    C, labels = kmeans(G, 3, seed=0, init=init)
    C_ref, labels_ref = sklearn_kmeans(G, init)
    assert torch.equal(labels, labels_ref)
    torch.testing.assert_close(C, C_ref)


def test_kmeans_seeded_start_is_a_fixed_point_for_sklearn():
    G = blobs(seed=4, k=4)
    C, labels = kmeans(G, 4, seed=0)
    C_ref, labels_ref = sklearn_kmeans(G, C)
    assert torch.equal(labels, labels_ref)
    torch.testing.assert_close(C, C_ref)
    assert torch.equal(labels, torch.cdist(G, C).argmin(1))


# ---------------------------------------------------------------- Algorithm 2 helpers


def greedy_nearest(G, C, candidates):
    sim = (F.normalize(G, dim=1) @ C.T).abs()
    picked = []
    for i in range(len(C)):
        order = sim[:, i].argsort(descending=True).tolist()
        picked.append(next(j for j in order if j in candidates and j not in picked))
    return picked


def test_nearest_to_centroids_is_distinct_and_respects_candidates():
    g = torch.Generator().manual_seed(0)
    G = torch.randn(40, 6, generator=g, dtype=F64)
    C = torch.stack([2 * G[3], 2 * G[3], G[10], -G[7]])  # the first two share their nearest
    picked = nearest_to_centroids(G, C, chunk_size=4)
    assert picked.tolist() == greedy_nearest(G, C, set(range(40)))
    assert picked[0] == 3 and len(set(picked.tolist())) == 4
    even = torch.arange(0, 40, 2)
    picked = nearest_to_centroids(G, C, candidates=even, chunk_size=3)
    assert picked.tolist() == greedy_nearest(G, C, set(even.tolist()))
    assert all(i % 2 == 0 for i in picked.tolist())
    with pytest.raises(ValueError, match="candidates"):
        nearest_to_centroids(G, C, candidates=even[:3])


@pytest.mark.parametrize("n", [40, 41])
def test_drop_nearest_keeps_the_far_half(n):
    g = torch.Generator().manual_seed(n)
    G = torch.randn(n, 7, generator=g, dtype=F64)
    meta = torch.randn(3, 7, generator=g, dtype=F64)
    closeness = (F.normalize(G, dim=1) @ meta.T).abs().max(1).values  # max_m ||M_m|| |cos|
    expected = closeness.argsort(descending=True)[n // 2 :].sort().values
    assert torch.equal(drop_nearest(G, meta, chunk_size=6), expected)
    assert len(drop_nearest(G, meta, fraction=0.25)) == n - n // 4


# ---------------------------------------------------------------- RBC


def models_and_inputs(name, n=5, k=3):
    torch.manual_seed(0)
    model = build_model(name, k).to(F64)
    shape = {"mlp": (2,), "lenet": (1, 28, 28)}[name]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g, dtype=F64)
    y = torch.randint(0, k, (n,), generator=g)
    return model, x, y


def per_example_loss(z, y):
    return torch.logsumexp(z, 1) if y is None else F.cross_entropy(z, y, reduction="none")


def layer_gradient(model, module, x1, y1):
    """Gradient of one example's loss w.r.t. [W | b] of `module`, row-major."""
    loss = per_example_loss(model(x1), y1).sum()
    params = [p for p in (module.weight, module.bias) if p is not None]
    grads = torch.autograd.grad(loss, params)
    w = grads[0].flatten(1)
    return torch.cat([w, grads[1][:, None]] if len(grads) == 2 else [w], 1).flatten()


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "label_free"])
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_rbc_features_are_last_layer_gradients(name, labels):
    model, x, y = models_and_inputs(name)
    y = y if labels else None
    model.train()
    G = rbc_features(model, x, y, batch_size=2)
    assert model.training and model.classifier.training  # mode restored
    cls = model.classifier
    expected = torch.stack(
        [
            layer_gradient(model, cls, x[i : i + 1], None if y is None else y[i : i + 1])
            for i in range(len(x))
        ]
    )
    assert G.shape == (len(x), cls.out_features * (cls.in_features + 1))
    torch.testing.assert_close(G, expected)


def test_last_linear_finds_the_classifier():
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3, bias=False))
    assert last_linear(seq) is seq[2]
    for name, k in [("lenet", 10), ("mlp", 2), ("resnet32", 10)]:
        model = build_model(name, k)
        assert last_linear(model) is model.classifier
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear(nn.Conv2d(1, 1, 1))
    x = torch.randn(3, 4)
    assert rbc_features(seq, x).shape == (3, 3 * 5)  # no bias: in * C
    with pytest.raises(ValueError, match="last nn.Linear"):
        rbc_features(nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), x)


# ---------------------------------------------------------------- GBC


class TinyConvNet(nn.Module):
    """Strided, dilated, bias-free and biased convolutions, then a linear head."""

    def __init__(self, k=3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(3, 4, 2, dilation=2)
        self.head = nn.Linear(4 * 2 * 2, k)

    def forward(self, x):
        return self.head(torch.tanh(self.conv2(torch.tanh(self.conv1(x)))).flatten(1))


def tiny_conv(n=4, k=3):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 2, 8, 8, generator=g, dtype=F64)
    return TinyConvNet(k).to(F64), x, torch.randint(0, k, (n,), generator=g)


def full_gradients(model, x, y):
    """Per-example gradients of all Linear / Conv2d layers, by layer name: {name: [N, size]}."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    return {
        name: torch.stack(
            [
                layer_gradient(model, m, x[i : i + 1], None if y is None else y[i : i + 1])
                for i in range(len(x))
            ]
        )
        for name, m in layers.items()
    }


def importance(model, x, y):
    """A(l) = ||(1/N) sum_j grad_l f_j||^2 and p_l = A(l) / A, from one mean-loss backward."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    loss = per_example_loss(model(x), y).mean()
    a = {}
    for name, m in layers.items():
        params = [p for p in (m.weight, m.bias) if p is not None]
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        a[name] = sum((g**2).sum() for g in grads)
    total = sum(a.values())
    return {name: float(v / total) for name, v in a.items()}


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "label_free"])
@pytest.mark.parametrize("make", ["mlp", "lenet", "tiny_conv"])
def test_gbc_exact_path_is_scaled_per_example_gradients(make, labels):
    model, x, y = tiny_conv() if make == "tiny_conv" else models_and_inputs(make, n=4)
    y = y if labels else None
    G, draw = gbc_features(model, x, y, seed=5, exact=True, batch_size=3, return_draw=True)
    assert sum(draw.counts) == 5 and len(set(draw.names)) == len(draw.names)
    probs = importance(model, x, y)
    assert draw.probs == pytest.approx([probs[name] for name in draw.names], rel=1e-9)
    grads = full_gradients(model, x, y)
    expected = torch.cat(
        [
            grads[name] * (n / (5 * p)) ** 0.5
            for name, n, p in zip(draw.names, draw.counts, draw.probs, strict=True)
        ],
        1,
    )
    torch.testing.assert_close(G, expected)
    assert draw.widths == tuple(grads[name].shape[1] for name in draw.names)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", ["lenet", "tiny_conv"])
def test_gbc_projection_with_identity_maps_equals_exact(make, device):
    model, x, _ = tiny_conv() if make == "tiny_conv" else models_and_inputs(make, n=3)
    model, x = model.to(device), x.to(device)
    exact = gbc_features(model, x, seed=1, exact=True)
    projected = gbc_features(model, x, seed=1, proj_dims=(10**6, 10**6), batch_size=2)
    torch.testing.assert_close(projected, exact)


def pair_products(G):
    return torch.stack([G[0] @ G[0], G[0] @ G[1], G[1] @ G[2], G[2] @ G[3]])


def assert_unbiased(samples, target):
    """Mean within 4 standard errors of the target, pair by pair."""
    mean, se = samples.mean(0), samples.std(0) / len(samples) ** 0.5
    assert ((mean - target).abs() <= 4 * se + 1e-12).all(), (mean, target, se)


def test_gbc_projected_inner_products_are_unbiased():
    model, x, y = tiny_conv()
    kw = {"seed": 0, "layers": 10, "return_draw": True}  # 10 draws: all three layers
    exact, draw = gbc_features(model, x, y, exact=True, **kw)
    assert draw.names == ("conv1", "conv2", "head")
    samples = []
    for proj_seed in range(1000):
        G, d = gbc_features(model, x, y, proj_dims=(2, 3), proj_seed=proj_seed, **kw)
        assert (d.names, d.counts) == (draw.names, draw.counts)  # only the projection varies
        samples.append(pair_products(G))
    assert d.widths == (2 * 3,) * 3  # every layer really projected (exact: 54, 52 and 51)
    assert_unbiased(torch.stack(samples), pair_products(exact))


def test_gbc_layer_draw_is_unbiased():
    model, x, y = models_and_inputs("mlp", n=4)
    grads = full_gradients(model, x, y)
    target = pair_products(torch.cat(list(grads.values()), 1))
    samples = torch.stack(
        [pair_products(gbc_features(model, x, y, seed=s, exact=True)) for s in range(300)]
    )
    assert_unbiased(samples, target)
    assert samples.std(0).max() > 0  # the draws differ


def test_snapshot_features_concatenates_and_reseeds_each_snapshot():
    calls = []

    def fake(model, x, y, *, seed=None, proj_seed=None, width=1):
        calls.append((model, seed, proj_seed, width))
        return torch.full((len(x), width), float(model))

    x = torch.zeros(3, 2)
    G = snapshot_features(fake, [1, 2, 3], x, seed=7, proj_seed=None, width=2)
    assert torch.equal(G[0], torch.tensor([1.0, 1, 2, 2, 3, 3]))
    seeds = [c[1] for c in calls]
    assert len(set(seeds)) == 3 and all(c[2] is None and c[3] == 2 for c in calls)
    calls.clear()
    snapshot_features(fake, [1, 2, 3], x, seed=7)
    assert [c[1] for c in calls] == seeds  # deterministic
    model, x, y = models_and_inputs("mlp")
    G = snapshot_features(rbc_features, [model, model], x, y)
    torch.testing.assert_close(G, torch.cat([rbc_features(model, x, y)] * 2, 1))
    G = snapshot_features(gbc_features, [model, model], x, y, seed=0)
    assert G.shape[0] == len(x)


def test_drop_nearest_keeps_everything_without_meta_samples():
    G = torch.randn(7, 3)
    assert torch.equal(drop_nearest(G, G[:0]), torch.arange(7))
