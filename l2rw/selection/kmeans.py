"""The weighted K-means of Wu et al. (2023), Appendix B, and the helpers of Algorithm 2.

MCO (Eq. 10) is max_C sum_j ||G_j|| sum_i ||C_i|| |cos(G_j, C_i)|. Algorithm 1 solves it like
K-means with two rules:

* assignment (Eq. S1): example j joins argmax_i ||C_i|| |cos(G_j, C_i)| = |<G_j / ||G_j||, C_i>|;
* update (Eq. S2): C_i = sum_{j in i} G_j / sum_{j in i} ||G_j||, the ||G_j||-weighted mean of the
  unit rows G_j / ||G_j||.

`weighted_kmeans` alternates them from a seeded farthest-first initialisation until the assignment
no longer changes, so the returned pair is a fixed point of both rules. Unlike Euclidean K-means
these two rules share no objective that both steps improve, so convergence is not guaranteed:
after `max_iter` updates a RuntimeWarning is issued and the returned assignment is the S1 rule
for the returned centroids (the centroids are S2 for the previous assignment). The authors' stop
on a small centroid shift is not used, because it can stop before a fixed point.

A cluster is empty when the examples assigned to it have zero total norm (the S2 denominator).
As soon as an update finds empty clusters, Algorithm 1 restarts with M - M_empty clusters
(Appendix B): the initial centroids of the empty clusters are dropped and the others are kept,
which for the farthest-first start is the same traversal with fewer centres. This repeats until
no cluster is empty.

Zero rows have similarity 0 to every centroid, so they go to cluster 0 (ties go to the lowest
index), add nothing to S2, and are never picked as initial centres. All similarities are computed
on G's device in chunks of rows, so memory is O(N D + chunk k) and never N x N.

`kmeans` is ordinary Euclidean K-means (the paper's RBC-K row) with the same conventions.
"""

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 22  # default chunk: about 4M entries of G (16 MB in float32)

Assign = Callable[[Tensor], Tensor]
Update = Callable[[Tensor, int], tuple[Tensor, Tensor]]


def _check_features(G: Tensor, name: str = "G") -> None:
    if G.ndim != 2 or not G.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating-point tensor, got {G.dtype} {G.shape}")


def _chunks(n: int, d: int, chunk_size: int | None) -> list[slice]:
    size = chunk_size or max(1, _CHUNK_ELEMENTS // max(d, 1))
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _inverse_norms(G: Tensor) -> Tensor:
    """1 / ||G_j||, and 0 for zero rows (so they have similarity 0 to everything)."""
    norms = torch.linalg.vector_norm(G, dim=1)
    return torch.where(norms > 0, norms.reciprocal(), torch.zeros_like(norms))


def _s1(G: Tensor, inv_norms: Tensor, centroids: Tensor) -> Tensor:
    """Eq. S1, ||C_i|| |cos(G_j, C_i)| = |<G_j, C_i>| / ||G_j||, for the rows of G: [n, k]."""
    return (G @ centroids.T).abs_().mul_(inv_norms[:, None])


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cluster_sums(G: Tensor, labels: Tensor, k: int, weights: Tensor, chunks) -> tuple:
    """sum_{j in i} G_j and sum_{j in i} weights_j per cluster, chunked one-hot products (these are
    deterministic on CUDA, unlike index_add_)."""
    sums = G.new_zeros(k, G.shape[1])
    mass = G.new_zeros(k)
    for s in chunks:
        onehot = F.one_hot(labels[s], k).to(G.dtype)
        sums += onehot.T @ G[s]
        mass += onehot.T @ weights[s]
    return sums, mass


def _lloyd(init: Tensor, assign: Assign, update: Update, max_iter: int) -> tuple[Tensor, Tensor]:
    """Alternate assign and update until the assignment is stable, restarting without the initial
    centres of clusters that become empty."""
    while True:
        centroids = init
        labels = assign(centroids)
        for _ in range(max_iter):
            new_centroids, mass = update(labels, len(centroids))
            empty = mass == 0
            if empty.any():
                init = init[~empty]
                break
            centroids = new_centroids
            new_labels = assign(centroids)
            if torch.equal(new_labels, labels):
                return centroids, labels
            labels = new_labels
        else:
            warnings.warn(
                f"K-means did not converge in {max_iter} iterations; the assignment is the rule "
                "for the returned centroids, which are not yet the update of that assignment.",
                RuntimeWarning,
                stacklevel=3,
            )
            return centroids, labels


def _start(G: Tensor, k: int, init: Tensor | None, alive: Tensor) -> int:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not alive.any():
        raise ValueError("every row of G is zero: nothing to cluster")
    if init is not None:
        if init.shape != (k, G.shape[1]):
            raise ValueError(f"init must have shape {(k, G.shape[1])}, got {tuple(init.shape)}")
        return k
    return min(k, int(alive.sum()))


def _farthest_first(
    G: Tensor, k: int, seed: int, alive: Tensor, distance: Callable[[Tensor], Tensor]
) -> Tensor:
    """Indices of k centres: a seeded random first centre among `alive` rows, then repeatedly the
    alive row farthest from its nearest centre (`distance(centre_row)` gives every row's distance
    to one centre). Deterministic given the seed, as in the authors' `kmeans_init`."""
    candidates = alive.nonzero().squeeze(1)
    first = candidates[torch.randint(len(candidates), (1,), generator=_generator(seed))]
    centres = [int(first)]
    nearest = torch.full((G.shape[0],), torch.inf, dtype=G.dtype, device=G.device)
    for _ in range(k - 1):
        nearest = torch.minimum(nearest, distance(G[centres[-1]]))
        centres.append(int(torch.where(alive, nearest, -torch.inf).argmax()))
    return torch.tensor(centres, device=G.device)


def weighted_kmeans(
    G: Tensor,
    k: int,
    seed: int,
    *,
    max_iter: int = 200,
    chunk_size: int | None = None,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on the rows of G [N, D]: returns (centroids [k', D], assignment [N] int64).

    Initialisation (unless `init` [k, D] is given): farthest-first traversal under S1, as in the
    authors' code: the first centre is a random non-zero row drawn from `seed`, each next one the
    row whose largest |cos| to the centres so far is smallest. The initial centroids are the unit
    rows G_c / ||G_c||, i.e. Eq. S2 for the singleton clusters {c}. k is capped at the number of
    non-zero rows; k' <= k after the empty-cluster restarts described in the module docstring.
    `chunk_size` rows are processed at a time (default: about 4M entries of G).
    """
    _check_features(G)
    inv = _inverse_norms(G)
    alive = inv > 0
    k = _start(G, k, init, alive)
    chunks = _chunks(G.shape[0], G.shape[1], chunk_size)
    norms = torch.linalg.vector_norm(G, dim=1)

    def assign(centroids: Tensor) -> Tensor:
        return torch.cat([_s1(G[s], inv[s], centroids).argmax(1) for s in chunks])

    def update(labels: Tensor, m: int) -> tuple[Tensor, Tensor]:
        sums, mass = _cluster_sums(G, labels, m, norms, chunks)
        return sums / torch.where(mass > 0, mass, 1)[:, None], mass

    if init is None:

        def dissimilarity(row: Tensor) -> Tensor:
            return -_s1(G, inv, row[None] / row.norm())[:, 0]

        centres = _farthest_first(G, k, seed, alive, dissimilarity)
        init = G[centres] * inv[centres, None]
    return _lloyd(init, assign, update, max_iter)


def kmeans(
    G: Tensor,
    k: int,
    seed: int,
    *,
    max_iter: int = 200,
    chunk_size: int | None = None,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Euclidean K-means (Lloyd) on the rows of G [N, D]: (centroids [k', D], assignment [N]).

    Assignment: nearest centroid in Euclidean distance (ties to the lowest index); update: the mean
    of the members. Initialisation (unless `init` [k, D] is given): farthest-first traversal
    from a random first row drawn from `seed`, with the rows themselves as centres. Stops when
    the assignment is stable (a fixed point of both rules); empty clusters restart the algorithm
    without their initial centres, as in `weighted_kmeans`. k is capped at N.
    """
    _check_features(G)
    alive = torch.ones(G.shape[0], dtype=torch.bool, device=G.device)
    k = _start(G, k, init, alive)
    chunks = _chunks(G.shape[0], G.shape[1], chunk_size)
    sq_norms = (G * G).sum(1)

    def assign(centroids: Tensor) -> Tensor:
        # argmin_i ||G_j - C_i||^2 = argmin_i ||C_i||^2 - 2 <G_j, C_i>
        c_sq = (centroids * centroids).sum(1)
        return torch.cat([(c_sq - 2 * G[s] @ centroids.T).argmin(1) for s in chunks])

    def update(labels: Tensor, m: int) -> tuple[Tensor, Tensor]:
        sums, count = _cluster_sums(G, labels, m, torch.ones_like(sq_norms), chunks)
        return sums / torch.where(count > 0, count, 1)[:, None], count

    if init is None:

        def sq_distance(row: Tensor) -> Tensor:
            return (sq_norms - 2 * G @ row + row @ row).clamp_(min=0)

        init = G[_farthest_first(G, k, seed, alive, sq_distance)]
    return _lloyd(init, assign, update, max_iter)


def nearest_to_centroids(
    G: Tensor,
    centroids: Tensor,
    candidates: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """For each centroid, in order, the row of G [N, D] with the highest S1 similarity to it
    (Algorithm 2: "add the closest training sample to this centroid"), among `candidates` (row
    indices) when given. Returns [k] distinct row indices of G: when a centroid's best row is
    already taken by an earlier centroid it takes its next best unused row (the authors' code
    could return duplicates)."""
    _check_features(G)
    _check_features(centroids, "centroids")
    rows = torch.arange(G.shape[0], device=G.device) if candidates is None else candidates.unique()
    k = centroids.shape[0]
    if len(rows) < k:
        raise ValueError(f"{k} centroids need at least {k} candidates, got {len(rows)}")
    inv = _inverse_norms(G)
    # Running top-k per centroid over chunks of candidates: k are enough for the greedy pass.
    top_sim = G.new_empty(k, 0)
    top_row = rows.new_empty(k, 0)
    for s in _chunks(len(rows), G.shape[1], chunk_size):
        chunk = rows[s]
        sim = torch.cat([top_sim, _s1(G[chunk], inv[chunk], centroids).T], 1)
        idx = torch.cat([top_row, chunk.expand(k, -1)], 1)
        top_sim, pos = sim.topk(min(k, sim.shape[1]), dim=1)
        top_row = idx.gather(1, pos)
    picked: list[int] = []
    for ranked in top_row.tolist():
        picked.append(next(r for r in ranked if r not in picked))
    return torch.tensor(picked, device=G.device)


def drop_nearest(
    G: Tensor, meta_G: Tensor, fraction: float = 0.5, *, chunk_size: int | None = None
) -> Tensor:
    """Algorithm 2's filter: indices (ascending) of the rows of G to KEEP after removing the
    floor(fraction N) rows closest to the existing meta samples.

    Closeness of row j is max_m ||M_m|| |cos(G_j, M_m)| = max_m |<G_j / ||G_j||, M_m>|, i.e. S1 with
    the meta samples' feature rows M = meta_G as centroids (the authors' pre-filter). Among equal
    closeness the lower index is dropped first; zero rows have closeness 0 and are dropped last.
    With no meta samples yet (a selection without pre-training) nothing is near any: all are
    kept."""
    _check_features(G)
    if meta_G.shape[0] == 0:
        return torch.arange(G.shape[0], device=G.device)
    _check_features(meta_G, "meta_G")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    inv = _inverse_norms(G)
    closeness = torch.cat(
        [_s1(G[s], inv[s], meta_G).amax(1) for s in _chunks(*G.shape, chunk_size)]
    )
    order = torch.sort(closeness, descending=True, stable=True).indices
    return order[int(fraction * G.shape[0]) :].sort().values
