"""The clustering selectors chain Algorithm 2's steps in order: drop the candidates nearest the meta
set, cluster the rest, pick the candidate nearest each centroid. On planted feature clusters each
selector equals the three library functions chained by hand, and picks one candidate of every
cluster left after the drop."""

import pytest
import torch
from omegaconf import OmegaConf

import l2rw.selection.selectors as selectors
from l2rw.selection.features import gbc_features, rbc_features
from l2rw.selection.kmeans import drop_nearest, kmeans, nearest_to_centroids, weighted_kmeans

CLUSTERS, PER_CLUSTER, DIM, META = 4, 20, 8, 2
DROP = 0.25  # the 20 candidates nearest the meta set: the whole of cluster 0
OPTIONS = {"drop_fraction": DROP, "kmeans_iters": 100, "theorem_checks": False}


def planted() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate features in 4 tight clusters along the first 4 axes (candidate i in cluster
    i % 4, so the clusters interleave), their cluster, and meta-set features on cluster 0's axis."""
    gen = torch.Generator().manual_seed(0)
    n = CLUSTERS * PER_CLUSTER
    cluster = torch.arange(n) % CLUSTERS
    centres = 5.0 * torch.eye(DIM)[:CLUSTERS]
    feats = centres[cluster] + 0.3 * torch.randn(n, DIM, generator=gen)
    meta = centres[[0] * META] + 0.3 * torch.randn(META, DIM, generator=gen)
    return feats, cluster, meta


@pytest.fixture
def features(monkeypatch):
    """The selectors' snapshot features replaced by the planted ones; records the calls."""
    feats, cluster, meta = planted()
    calls = []

    def fake(fn, models, x, y=None, **kw):
        calls.append((fn, kw))
        assert len(x) == len(feats) + len(meta)  # candidates, then the meta set
        return torch.cat([feats, meta])

    monkeypatch.setattr(selectors, "snapshot_features", fake)
    return feats, cluster, meta, calls


def candidates(options: dict) -> selectors.Candidates:
    n = CLUSTERS * PER_CLUSTER
    return selectors.Candidates(
        x=torch.zeros(n, 2),
        y=torch.zeros(n, dtype=torch.long),
        meta_x=torch.zeros(META, 2),
        meta_y=torch.zeros(META, dtype=torch.long),
        models=[],
        label_free=False,
        seed=3,
        round=1,
        options=OmegaConf.create({**OPTIONS, **options}),
    )


def by_hand_weighted(feats, meta, k, seed):
    keep = drop_nearest(feats, meta, DROP)
    centroids, _ = weighted_kmeans(feats[keep], k, seed, max_iter=OPTIONS["kmeans_iters"])
    return keep, nearest_to_centroids(feats, centroids, candidates=keep)


def by_hand_euclidean(feats, meta, k, seed):
    keep = drop_nearest(feats, meta, DROP)
    centroids, _ = kmeans(feats[keep], k, seed, max_iter=OPTIONS["kmeans_iters"])
    picked: list[int] = []
    for dist in torch.cdist(centroids, feats[keep]):
        picked.append(next(int(j) for j in dist.argsort() if int(j) not in picked))
    return keep, keep[picked]


@pytest.mark.parametrize(
    "name,options,feature_fn,by_hand",
    [
        ("rbc", {}, rbc_features, by_hand_weighted),
        (
            "gbc",
            {"layers": 2, "proj_dims": [4, 4], "batch_size": 16},
            gbc_features,
            by_hand_weighted,
        ),
        ("kmeans", {}, rbc_features, by_hand_euclidean),
    ],
)
def test_selector_drops_clusters_and_picks_like_the_library_chained_by_hand(
    features, name, options, feature_fn, by_hand
):
    feats, cluster, meta, calls = features
    c = candidates(options)
    k = CLUSTERS - 1
    selection = selectors.SELECTORS.get(name)(c, k)
    assert [fn for fn, _ in calls] == [feature_fn]

    keep, expected = by_hand(feats, meta, k, c.seed)
    assert selection.indices.tolist() == expected.tolist()
    # The planted outcome: cluster 0 (nearest the meta set) is dropped whole, and one candidate
    # of each other cluster is picked.
    assert set(cluster[keep].tolist()) == {1, 2, 3} and len(keep) == 3 * PER_CLUSTER
    assert sorted(cluster[selection.indices].tolist()) == [1, 2, 3]
    # What the figure of the clustering reads: the clustered rows and the picks among them.
    assert selection.feature_rows.tolist() == keep.tolist()
    assert torch.equal(selection.features, feats[keep])
    assert torch.equal(selection.feature_rows[selection.feature_index], selection.indices)
