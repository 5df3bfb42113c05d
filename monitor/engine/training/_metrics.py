"""Classification metrics on predicted labels, batched over heads, computed on the device.

Definitions follow scikit-learn's: `balanced_accuracy` is the mean recall over the classes present
in the test labels; `macro_f1` is the unweighted mean F1 over the classes present in the labels or
the predictions, with F1 = 2·TP / (2·TP + FP + FN) (0 where a class is never right).
"""

from __future__ import annotations

import numpy as np
import torch

from ...types import Predictions

__all__ = ["METRICS", "predictions_of", "score_predictions"]

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def score_predictions(
    metric: str, predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Score predictions of shape [H, N] (H heads) against labels [N]; returns [H] float64."""
    if predictions.ndim == 1:
        return score_predictions(metric, predictions[None], labels, num_classes)[0]
    heads = predictions.shape[0]
    correct = predictions == labels[None]
    if metric == "accuracy":
        return correct.double().mean(dim=1)
    # Confusion counts per head: index = head * C * C + true * C + predicted.
    offsets = torch.arange(heads, device=predictions.device)[:, None] * num_classes * num_classes
    flat = offsets + labels[None] * num_classes + predictions
    confusion = torch.bincount(flat.reshape(-1), minlength=heads * num_classes * num_classes)
    confusion = confusion.reshape(heads, num_classes, num_classes).double()
    tp = confusion.diagonal(dim1=1, dim2=2)
    true_count = confusion.sum(dim=2)  # per true class
    pred_count = confusion.sum(dim=1)  # per predicted class
    if metric == "balanced_accuracy":
        present = true_count > 0
        recall = torch.where(present, tp / true_count.clamp(min=1), torch.zeros_like(tp))
        return recall.sum(dim=1) / present.sum(dim=1).clamp(min=1)
    if metric == "macro_f1":
        present = (true_count > 0) | (pred_count > 0)
        denominator = true_count + pred_count  # = 2·TP + FP + FN
        f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp))
        return (f1 * present).sum(dim=1) / present.sum(dim=1).clamp(min=1)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def predictions_of(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[Predictions]:
    """Each head's predicted labels [H, N] (or one head's [N]) beside the true ones, for the store.

    One CPU-GPU transfer for all heads; 16-bit class indices (a task has at most 65 535 classes).
    """
    if num_classes > 2**16 - 1:
        raise ValueError(f"{num_classes} classes: predictions are kept as 16-bit class indices")
    rows = predicted[None] if predicted.ndim == 1 else predicted
    truth = labels.detach().cpu().numpy().astype("<u2").tobytes()
    return [
        Predictions(truth, row.astype("<u2").tobytes(), num_classes)
        for row in np.asarray(rows.detach().cpu().numpy())
    ]
