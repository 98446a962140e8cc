"""CRAIG (Mirzasoleiman, Bilmes & Leskovec, ICML 2020) as the RBC paper's baseline selector.

Facility location. For a similarity sim [n, n] >= 0 and a set S of columns,
    F(S) = sum_i max_{j in S} sim(i, j),  F(empty) = 0.
With c_i(S) = max_{j in S} sim(i, j) (0 for the empty set), the marginal gain of a column j is
    gain(j | S) = F(S + j) - F(S) = sum_i max(0, sim(i, j) - c_i(S)).
c_i(S) only grows with S, so gain(j | S) >= gain(j | T) for S a subset of T: F is monotone
submodular, and the greedy choice (the largest gain, k times) is within 1 - 1/e of the best
k-subset (Nemhauser, Wolsey & Fisher 1978).

Lazy greedy (Minoux 1978). By submodularity a gain computed at an earlier step is an upper bound
on the gain now. Keep every candidate in a priority queue keyed by (bound, index): pop the top,
recompute its gain, and if that is still ahead of the next key (larger, or equal with a lower
index) it is the greedy choice, since every other candidate's true gain is at most its bound.
Otherwise push it back with the fresh gain as its bound. The picks are the plain greedy's, ties
going to the lowest index, with far fewer gain evaluations.

CRAIG as in the authors' code (DISTIL's `CRAIGActive` with `selection_type="Supervised"`): the
best-validation model's predicted ("hypothesized") labels y_j; g_j the gradient of CE(z_j, y_j)
with respect to the last linear layer (`rbc_features` at y: with a bias, its coordinates are
those of the code's [dCE/dz, dCE/dz (x) h], permuted, so distances are the same); within each
predicted class c, sim(i, j) = max_c d - d(i, j) with d(i, j) = ||g_i - g_j||^2 and max_c d the
largest d in the class, and 0 between classes. One greedy over that block-diagonal similarity
picks k examples.

Split of k across classes. F is a sum over the classes of each class's own facility location,
so the gain of a member of class c depends only on the picks in c: the greedy over the whole pool
is each class's greedy sequence merged by gain (at every step the class whose next pick gains
most, ties to the lowest index). That is how it is computed here, holding one class's similarity
block at a time (MNIST: about 6,000 x 6,000 floats) instead of the N x N matrix. So a class gets
as many picks as its gains earn, not a share fixed in advance (CRAIG's paper splits k in
proportion to the class sizes). A first pick j in class c gains n_c (max_c d - mean_i d(i, j)),
a later pick at most the sum of the distances it shortens, so as a rule every predicted class
gets one pick before any gets two; a class of one example has similarity 0 and comes last.
The counts sum to k.
"""

import heapq
from itertools import islice

import torch
from torch import Tensor, nn

from l2rw.selection.features import eval_mode, rbc_features, slices


def _greedy(columns: Tensor, k: int) -> tuple[list[int], list[float]]:
    """Lazy greedy facility location over the similarity whose column j is `columns[j]` (so
    that each gain reads contiguous memory): the picks and their gains, in pick order. Gains are
    summed in float64, so the bulk first bounds and the one-by-one gains agree."""
    m = columns.shape[0]
    if not 0 <= k <= m:
        raise ValueError(f"cannot pick k={k} of {m} columns")
    if columns.numel() and columns.min() < 0:
        raise ValueError("facility location needs a nonnegative similarity")
    cover = columns.new_zeros(columns.shape[1])

    def gain(j: int) -> float:
        return float((columns[j] - cover).clamp_min_(0).double().sum())

    bounds = torch.cat([columns[s].double().sum(1) for s in slices(m, 1024)]).tolist()
    queue = [(-b, j) for j, b in enumerate(bounds)]
    heapq.heapify(queue)
    picks: list[int] = []
    gains: list[float] = []
    while len(picks) < k:
        _, j = heapq.heappop(queue)
        fresh = (-gain(j), j)
        if queue and fresh > queue[0]:
            heapq.heappush(queue, fresh)
            continue
        picks.append(j)
        gains.append(-fresh[0])
        torch.maximum(cover, columns[j], out=cover)
    return picks, gains


def facility_location_greedy(similarity: Tensor, k: int) -> Tensor:
    """The k columns of `similarity` [n, m] (>= 0) chosen by lazy greedy facility location, in
    pick order: exactly the plain greedy's choices, ties to the lowest index (module docstring).
    Computed on the similarity's device."""
    picks, _ = _greedy(similarity.T.contiguous(), k)
    return torch.tensor(picks, dtype=torch.long, device=similarity.device)


def squared_distances(features: Tensor, chunk: int = 2048) -> Tensor:
    """||f_i - f_j||^2 [n, n], `chunk` rows at a time on the features' device."""
    sq = features.square().sum(1)
    out = features.new_empty(features.shape[0], features.shape[0])
    for s in slices(features.shape[0], chunk):
        torch.addmm(sq[None, :], features[s], features.T, alpha=-2, out=out[s])
        out[s].add_(sq[s, None]).clamp_min_(0)
    return out


def class_similarity(features: Tensor) -> Tensor:
    """CRAIG's similarity within one class: max d - d, d the squared distances [n, n]."""
    d = squared_distances(features)
    top = d.max()
    return d.neg_().add_(top)


def craig_select(features: Tensor, labels: Tensor, k: int) -> Tensor:
    """k indices into `features` [N, D] by greedy facility location over the block-diagonal
    similarity of the classes in `labels` [N], in the greedy's pick order (module docstring)."""
    if not 0 <= k <= len(labels):
        raise ValueError(f"cannot pick k={k} of {len(labels)} examples")
    sequences = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        # The similarity is symmetric: its rows are its columns.
        picks, gains = _greedy(class_similarity(features[members]), min(k, len(members)))
        chosen = members[picks].tolist()
        sequences.append([(-g, j) for g, j in zip(gains, chosen, strict=True)])
    # heapq.merge takes the smallest head of the sequences at each step: the global greedy.
    merged = [j for _, j in islice(heapq.merge(*sequences), k)]
    return torch.tensor(merged, dtype=torch.long, device=labels.device)


@torch.no_grad()
def hypothesized_labels(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """The model's predicted class for each example, in eval mode."""
    with eval_mode(model):
        return torch.cat([model(x[s]).argmax(1) for s in slices(x.shape[0], batch_size)])


def craig_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(last-layer CE gradients at the hypothesized labels [N, D], those labels [N])."""
    labels = hypothesized_labels(model, x)
    return rbc_features(model, x, labels), labels
