"""How well learned example weights separate clean from mislabelled examples (RBC Table 3).

`weights_auc` is the ROC AUC of the weights as a score for "the label is clean", over all
training examples and over the ones nearest the model's decision boundary. The paper cites
Elsayed et al. (2018) for that distance; we use their first-order approximation: for the top
class i and the runner-up j, d(x) = (z_i - z_j) / ||grad_x (z_i - z_j)||_2, exact for a linear
model and computed per example in eval mode (examples are independent there).
"""

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

BOUNDARY_EXAMPLES = 1000


def boundary_distance(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """First-order distance of each example to the boundary between its top two classes."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].detach().requires_grad_(True)
            top2 = model(xb).topk(2, dim=1).values
            gap = top2[:, 0] - top2[:, 1]
            (grad,) = torch.autograd.grad(gap.sum(), xb)
            out.append((gap / grad.flatten(1).norm(dim=1).clamp_min(1e-12)).detach())
    finally:
        model.train(was_training)
    return torch.cat(out)


def weights_auc(
    weights: Tensor, clean: Tensor, distance: Tensor | None = None, nearest: int = BOUNDARY_EXAMPLES
) -> dict[str, float | None]:
    """AUC of `weights` for `clean` over all examples and, given `distance`, over the `nearest`
    examples closest to the boundary; None where only one kind of example is present."""

    def auc(w: Tensor, c: Tensor) -> float | None:
        c = c.cpu().numpy()
        return float(roc_auc_score(c, w.cpu().numpy())) if 0 < c.sum() < len(c) else None

    out = {"weights_auc": auc(weights, clean), "weights_auc_boundary": None}
    if distance is not None:
        near = distance.argsort()[: min(nearest, len(distance))]
        out["weights_auc_boundary"] = auc(weights[near], clean[near])
    return out
