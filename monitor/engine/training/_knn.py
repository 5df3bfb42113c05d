"""k-nearest-neighbour classification on frozen features: the `knn` strategy (no training).

As in DINO's k-NN evaluation (Caron et al., 2021): features are L2-normalised, each test image's
`k` most similar training images by cosine similarity s vote for their class with weight
exp(s / T), T = 0.07, and the class with the largest total wins. The temperature sharpens the
vote towards the closest neighbours; ties between classes go to the lower class index (argmax).
Nothing here is random: every seed of a knn cell gets the same result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._keys import KNN_TEMPERATURE

__all__ = ["knn_predict"]

# Test rows per similarity block: [rows, N_train] floats stay small for any train split.
_ROWS = 1024


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float = KNN_TEMPERATURE,
) -> torch.Tensor:
    """Predicted class [N_test] of each test feature, by the weighted vote of its k neighbours."""
    train = F.normalize(train_features.double(), dim=1)
    test = F.normalize(test_features.double(), dim=1)
    k = min(k, train.shape[0])  # a tiny train split: every training image votes
    predictions = []
    for begin in range(0, test.shape[0], _ROWS):
        similarity = test[begin : begin + _ROWS] @ train.T  # [rows, N_train]
        top, index = similarity.topk(k, dim=1)  # sorted, most similar first
        weights = (top / temperature).exp()
        votes = torch.zeros(top.shape[0], num_classes, dtype=torch.float64, device=top.device)
        votes.scatter_add_(1, train_labels[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)
