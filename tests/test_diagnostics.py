"""Weight diagnostics: the boundary distance is exact for a linear model; the AUCs match
scikit-learn on all examples and on the ones nearest the boundary."""

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from l2rw.methods.diagnostics import boundary_distance, weights_auc


def test_boundary_distance_is_exact_for_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.randn(50, 5)
    z = model(x)
    top2 = z.topk(2, dim=1)
    w, b = model.weight.detach(), model.bias.detach()
    i, j = top2.indices[:, 0], top2.indices[:, 1]
    # The hyperplane where classes i and j tie: (w_i - w_j) x + (b_i - b_j) = 0.
    normal = w[i] - w[j]
    exact = ((normal * x).sum(1) + b[i] - b[j]) / normal.norm(dim=1)
    torch.testing.assert_close(boundary_distance(model, x, batch_size=16), exact)
    assert model.training  # mode restored


def test_weights_auc_all_and_nearest():
    torch.manual_seed(1)
    clean = torch.rand(300) < 0.4
    weights = torch.rand(300) + clean.float() * 0.3
    distance = torch.rand(300)
    out = weights_auc(weights, clean, distance, nearest=100)
    assert out["weights_auc"] == pytest.approx(roc_auc_score(clean.numpy(), weights.numpy()))
    near = distance.argsort()[:100]
    expected = roc_auc_score(clean[near].numpy(), weights[near].numpy())
    assert out["weights_auc_boundary"] == pytest.approx(expected)
    assert weights_auc(weights, torch.ones(300, dtype=torch.bool))["weights_auc"] is None
