"""The RBC paper's checks of its own theorems (Wu et al. 2023, Appendix "Empirical evaluations of
Theorem 1 / Theorem 2", Tables 4 and 5) as diagnostics of one selection round.

Notation: G_j is training example j's per-example gradient with respect to the last linear layer,
concatenated over the K model snapshots (Eq. 8 and 11), so <G_j, G_i> = sum_k <G_j^k, G_i^k>;
G~_j is its label-free part (softmax(z_j) in place of softmax(z_j) - onehot(y_j), Eq. S15).
`l2rw.selection.features.rbc_features` gives one snapshot's block of either.

Theorem 1 (Table 4). MSSO (Eq. 8) is sum_j |sum_{i=1}^M <G_j, G_meta,i>| and MCO (Eq. 9)
sum_j sum_i |<G_j, C_i>|. For one example j split the innermost sum's terms t_i by sign,
P_j = sum_{t_i > 0} t_i and N_j = -sum_{t_i < 0} t_i; then (proof of Theorem 1, Eq. S8)
    |sum_i t_i| / sum_i |t_i| = |P_j - N_j| / (P_j + N_j) = (D_j - 1) / (D_j + 1),
    D_j = max(P_j, N_j) / min(P_j, N_j),
the ratio of the dominant part to the other one, and D = min_j D_j bounds MSSO / MCO from below by
(D - 1) / (D + 1). D_j is inf when every nonzero term has the same sign (the paper prints inf)
and undefined (NaN, left out of the statistics) when every term is 0. `dominance_ratios`
computes D_j from the matrix of terms; `dominance_summary` gives the table's minimum and 5%
quantile (linear interpolation, inf where it touches an inf).

Our reading of Eq. (8), where the text leaves room:
- the sign split is over the meta samples i only: the snapshots (iterations) and the parameters
  are summed inside each inner product, since Eq. (8) concatenates them into G_j;
- the terms are the real gradients' inner products, as Eq. (8) and the re-weighting (Eq. 3) use
  them: G_j with example j's observed (possibly noisy) label, G_meta,i with meta sample i's clean
  label (what it gets when cleaned). With the label-free features RBC clusters under label noise
  every term is >= 0 (softmax > 0, the last layer's input of a ReLU network >= 0, and the 1 of
  the bias), so D_j = inf for every example and the paper's finite minima (1.70, 1.01) could not
  arise;
- i runs over the round's M = k picks, one per centroid: the theorem writes the centroids C_i,
  MSSO the meta samples G_meta,i, and the pick nearest to centroid i is the meta sample that
  stands for C_i (the warm-up's meta samples are not among the i: the round clusters and picks
  only its own k);
- j runs over the clustered candidates, those the pre-filter kept (the paper's "out of 25k" in
  Table 5; MCO is solved over them).

Theorem 2 (Table 5). Clustering uses the label-free similarity |<G~_j, G~_meta,i>|; the theorem
asks when example j stays closest to the same cluster under the label-aware similarity
|<G_j, G_meta,i>|. Example j is *stable* when argmax_i |<G~_j, G~_meta,i>| equals
argmax_i |<G_j, G_meta,i>| over the round's picks i (ties to the lowest i), with the same
labels as above (observed for j, clean for the picks); `stable_examples` counts them over the
clustered candidates. The label-free argmax is the S1 rule of the weighted K-means (Eq. S1,
||C_i|| |cos(G_j, C_i)|, argmax over i unchanged by ||G_j||) with the picks as centroids, so
the count isolates the effect of the labels from that of replacing centroids by picks.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from l2rw.selection.features import rbc_features
from l2rw.tracking.record import json_number

# Rows of last-layer features materialised at a time by `last_layer_products` (times their width).
_CHUNK_ELEMENTS = 1 << 24


def dominance_ratios(terms: Tensor) -> Tensor:
    """D_j for each row j of `terms` [N, M] (terms[j, i] = <G_j, G_meta,i>): the sum of the
    terms of the dominant sign over the absolute sum of the others, float64 [N]; inf when all
    nonzero terms share a sign, NaN when every term is 0."""
    if terms.ndim != 2:
        raise ValueError(f"terms must be [N, M], got shape {tuple(terms.shape)}")
    t = terms.double()
    positive = t.clamp(min=0).sum(1)
    negative = (-t).clamp(min=0).sum(1)
    return torch.maximum(positive, negative) / torch.minimum(positive, negative)


def quantile(values: Tensor, q: float) -> float:
    """The q-quantile of `values` (no NaN) with linear interpolation between order statistics
    (numpy's default), inf where it interpolates towards an inf."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    v = values.double().flatten().sort().values
    if len(v) == 0:
        return math.nan
    position = q * (len(v) - 1)
    lo = math.floor(position)
    frac = position - lo
    low = float(v[lo])
    if frac == 0:
        return low
    high = float(v[lo + 1])
    return math.inf if math.isinf(high) else low + frac * (high - low)


def stable_examples(free: Tensor, aware: Tensor) -> Tensor:
    """Which rows j [N] keep their most similar meta sample, argmax_i |free[j, i]|, when the
    similarity becomes |aware[j, i]| (both [N, M]; ties to the lowest i)."""
    if free.shape != aware.shape or free.ndim != 2:
        raise ValueError(
            f"free and aware must both be [N, M], got {tuple(free.shape)}, {tuple(aware.shape)}"
        )
    return free.abs().argmax(1) == aware.abs().argmax(1)


def last_layer_products(
    models: Sequence[nn.Module],
    x: Tensor,
    y: Tensor | None,
    ref_x: Tensor,
    ref_y: Tensor | None,
    *,
    batch_size: int = 1024,
) -> Tensor:
    """<G_j, G_i> [N, M] (float64) for the rows x [N] and ref_x [M], with G the RBC features
    (`rbc_features`: last-layer gradients with labels y / ref_y, label-free where None)
    concatenated over `models`: the sum over snapshots of each one's products. The rows' features
    are computed a chunk at a time, so memory stays O(chunk x feature width + N M)."""
    out = torch.zeros(x.shape[0], ref_x.shape[0], dtype=torch.float64, device=x.device)
    for model in models:
        ref = rbc_features(model, ref_x, ref_y, batch_size=batch_size).double()
        rows = max(1, _CHUNK_ELEMENTS // max(ref.shape[1], 1))
        for start in range(0, x.shape[0], rows):
            s = slice(start, start + rows)
            feats = rbc_features(model, x[s], None if y is None else y[s], batch_size=batch_size)
            out[s] += feats.double() @ ref.T
    return out


def row_products(G: Tensor, rows: Tensor, ref_rows: Tensor) -> Tensor:
    """<G_j, G_i> [len(rows), len(ref_rows)] (float64) for j in `rows`, i in `ref_rows` of the
    feature matrix G, a chunk of rows at a time (no copy of G[rows] at once)."""
    ref = G[ref_rows].double()
    step = max(1, _CHUNK_ELEMENTS // max(G.shape[1], 1))
    return torch.cat(
        [G[rows[s : s + step]].double() @ ref.T for s in range(0, len(rows), step)]
        or [ref.new_zeros(0, len(ref_rows))]
    )


def dominance_summary(d: Tensor) -> dict[str, Any]:
    """Table 4's statistics of D_j (NaN entries left out): minimum, 5% quantile, the fraction of
    examples with D_j = inf, and how many examples have a D_j. Infinite values are the string
    "inf" (result.json stays valid JSON), none at all None."""
    defined = d[~d.isnan()]
    if len(defined) == 0:
        return {
            "theorem1_d_min": None,
            "theorem1_d_q05": None,
            "theorem1_d_inf_fraction": None,
            "theorem1_examples": 0,
        }
    return {
        "theorem1_d_min": json_number(float(defined.min())),
        "theorem1_d_q05": json_number(quantile(defined, 0.05)),
        "theorem1_d_inf_fraction": float(defined.isinf().double().mean()),
        "theorem1_examples": len(defined),
    }


def stability_summary(stable: Tensor) -> dict[str, Any]:
    """Table 5's count of stable examples, out of how many were clustered, and the fraction."""
    n = len(stable)
    count = int(stable.sum())
    return {
        "theorem2_stable": count,
        "theorem2_clustered": n,
        "theorem2_stable_fraction": count / n if n else None,
    }


def theorem_summary(aware: Tensor, free: Tensor) -> dict[str, Any]:
    """Both tables' statistics from the label-aware and label-free products [N, M] of the
    clustered candidates with the round's picks (see the module docstring)."""
    return {
        **dominance_summary(dominance_ratios(aware)),
        **stability_summary(stable_examples(free, aware)),
    }
