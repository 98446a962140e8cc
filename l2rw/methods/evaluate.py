"""Accuracy, loss and confusion matrix of a model on a split, in eval mode."""

import torch
import torch.nn.functional as F
from torch import nn

from l2rw.data.splits import Split
from l2rw.data.transforms import Preprocess


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, preprocess: Preprocess, num_classes: int, batch_size: int
) -> dict[str, object]:
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=split.y.device)
    for start in range(0, len(split), batch_size):
        x = preprocess(split.x[start : start + batch_size])
        y = split.y[start : start + batch_size]
        logits = model(x)
        pred = logits.argmax(1)
        correct += int((pred == y).sum())
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).view(
            num_classes, num_classes
        )
    model.train(was_training)
    n = max(len(split), 1)
    return {"acc": correct / n, "loss": loss_sum / n, "confusion": confusion.cpu().tolist()}
