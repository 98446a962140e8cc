"""Meta-sample selection of Wu et al. (2023): RBC / GBC features and weighted K-means.

`rbc_features` and `gbc_features` build the per-example vectors G_j (Eq. 11-14) for one model,
`snapshot_features` concatenates them over the cached snapshots (Algorithm 3). `weighted_kmeans`
is Algorithm 1 (Eq. S1-S2), `kmeans` the Euclidean K-means of the RBC-K baseline;
`drop_nearest` and `nearest_to_centroids` are the filter and the pick of Algorithm 2.
"""

from l2rw.selection.features import (
    LayerDraw,
    gbc_features,
    last_linear,
    rbc_features,
    snapshot_features,
)
from l2rw.selection.kmeans import drop_nearest, kmeans, nearest_to_centroids, weighted_kmeans

__all__ = [
    "LayerDraw",
    "drop_nearest",
    "gbc_features",
    "kmeans",
    "last_linear",
    "nearest_to_centroids",
    "rbc_features",
    "snapshot_features",
    "weighted_kmeans",
]
