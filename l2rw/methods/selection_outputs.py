"""What the selection pipeline records beside Algorithm 2: how well the last phase's learned
weights separate clean from mislabelled examples (RBC Table 3), and the figures' artifacts, the
clustered features of the last round (`features.npz`, the t-SNE of RBC Figure 4) and, for 2-D
data, the final model's decision boundary (`toy_boundary.npz`, RBC Figure 1)."""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2rw.data.splits import DataBundle
from l2rw.methods.context import RunContext
from l2rw.methods.diagnostics import boundary_distance, weights_auc
from l2rw.methods.phases import PhaseResult, snapshot_model
from l2rw.selection.selectors import Selection

FEATURES_MAX_ROWS = 2000


def weight_diagnostics(ctx: RunContext, last: PhaseResult, data: DataBundle) -> dict[str, Any]:
    """AUC of the last phase's learned per-example weights against label cleanliness, on all
    training examples and the 1,000 nearest the final model's boundary (RBC Table 3); empty
    when the method keeps no weight table or the last phase did not train on `data.train`."""
    state = last.store.rule_state(ctx.device)
    if state is None or "weights" not in state or len(state["weights"]) != len(data.train):
        return {}
    model = snapshot_model(ctx, last.store, "final")
    distance = boundary_distance(model, ctx.preprocess(data.train.x))
    return weights_auc(state["weights"], data.train.y == data.train.y_true, distance)


def write_selection_artifacts(
    ctx: RunContext,
    selection: Selection | None,
    candidate_classes: torch.Tensor,
    last: PhaseResult,
    data: DataBundle,
) -> None:
    """The last round's clustered features, when its selector clustered any, and the boundary
    of the last phase's best model, when the data are 2-D points."""
    if selection is not None and selection.features is not None:
        write_features(ctx.run_dir, selection, candidate_classes)
    if data.train.x.ndim == 2 and data.train.x.shape[1] == 2:
        write_toy_boundary(ctx, last, data)


def write_features(run_dir: Path, selection: Selection, classes: torch.Tensor) -> None:
    """features.npz for the t-SNE figure: (at most 2,000 of) the clustered rows, the picked rows
    among them, and each row's true class (`classes`: of the round's candidates)."""
    feats = selection.features.float().cpu()
    picked = selection.feature_index.cpu()
    owners = selection.feature_rows
    row_classes = (classes if owners is None else classes[owners.to(classes.device)]).cpu()
    rng = np.random.default_rng(0)
    others = np.setdiff1d(np.arange(len(feats)), picked.numpy())
    rows = np.concatenate(
        [picked.numpy(), rng.permutation(others)[: FEATURES_MAX_ROWS - len(picked)]]
    )
    np.savez_compressed(
        run_dir / "features.npz",
        features=feats[rows].half().numpy(),  # half precision: enough for a t-SNE, half the size
        labels=row_classes[rows].numpy(),
        centroid_indices=np.arange(len(picked)),
    )


def write_toy_boundary(ctx: RunContext, last: PhaseResult, data: DataBundle) -> None:
    """toy_boundary.npz for 2-D data: the final best model's P(class 1) on a grid, the training
    points as trained on, and the meta samples (RBC Figure 1)."""
    model = snapshot_model(ctx, last.store, "best").eval()
    x = torch.cat([data.train.x, data.clean.x]).float()
    y = torch.cat([data.train.y, data.clean.y])
    lo, hi = x.min(0).values - 0.5, x.max(0).values + 0.5
    xx, yy = torch.meshgrid(
        torch.linspace(float(lo[0]), float(hi[0]), 120),
        torch.linspace(float(lo[1]), float(hi[1]), 120),
        indexing="xy",
    )
    grid = torch.stack([xx.flatten(), yy.flatten()], 1).to(ctx.device)
    with torch.no_grad():
        prob = torch.softmax(model(ctx.preprocess(grid)), 1)[:, 1].reshape(xx.shape)
    np.savez_compressed(
        ctx.run_dir / "toy_boundary.npz",
        xx=xx.numpy(),
        yy=yy.numpy(),
        prob=prob.cpu().numpy(),
        x_train=x.cpu().numpy(),
        y_train=y.cpu().numpy(),
        selected=np.arange(len(data.train), len(x)),
    )
