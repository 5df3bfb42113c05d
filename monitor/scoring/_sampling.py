"""Test-sampling noise: how far a score would move with another test sample of the same data.

A score is a function of the test examples, so it is linearised in them (the delta method):
each example i of a trial gets an influence φ_i, and under a resampling of the test split the
score moves by Σ φ_i to first order. The test split holds a fixed number of examples per class
(the compact protocol's `test_per_class`), so a new snapshot is a new sample *within* each class
(stratified sampling), and the variance of a sum of influences x_i is

    V(x) = Σ_k n_k · s_k²(x)         s_k² the sample variance (ddof 1) of x over the n_k examples of class k

Influences (c_i = 1 when example i is predicted right; K the classes the metric averages over):

    accuracy            φ_i = c_i / N                                   (exact: a mean)
    balanced_accuracy   φ_i = c_i / (K · n_k(i))                        (exact for fixed class counts)
    macro_f1            φ_i = (2 c_i − F1_p(i)) / (K · (n_p(i) + P_p(i)))  (first order; p(i) the
                        predicted class, P_p its predicted count, F1_k = 2 TP_k / (n_k + P_k))

For accuracy V is Σ_k (n_k/N)² · p_k(1 − p_k)/(n_k − 1): the familiar p(1 − p)/N, less the part
due to classes differing in accuracy, which a class-stratified test split does not have. A test
checks every metric against a brute-force stratified bootstrap.

Cells of one dataset are scored on the same test examples, so their noise is correlated: the
dataset's contribution D_j = Σ_c w_c · mean_s score_{c,s} is linearised as a whole, x_i =
Σ_c (w_c / n_c) Σ_s φ_{c,s,i}, and V_j = V(x) counts every covariance between its cells and seeds.

The seeds of a cell share its test sample, and their spread s_c² (the seed noise) already holds
the part of the test noise in which they differ (which examples each seed gets right). What is
left for the test sample is the part they share, so the dataset's test noise is

    test_j = V_j − Σ_c w_c² · (mean_s V(φ_{c,s}) − V(φ̄_c)) / (n_c − 1)      (floored at 0)

(per-seed noise minus the noise of the seed mean estimates that seed-specific part times
(n_c − 1)/n_c). Then Var(P) = Σ_j (seeds_j + test_j) counts each source once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import Predictions

__all__ = ["dataset_test_noise", "influences", "stratified_variance"]


def _decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u2").astype(np.int64)


def stratified_variance(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Σ_k n_k · s_k²(values) along the last axis, classes given by `labels` (ddof 1; a class
    with one example has no variance to estimate and adds 0)."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, ordered.size])
    v = values[..., order]
    s1 = np.add.reduceat(v, starts, axis=-1)
    s2 = np.add.reduceat(v * v, starts, axis=-1)
    keep = counts > 1
    within = (s2 - s1 * s1 / counts)[..., keep] * (counts[keep] / (counts[keep] - 1))
    return np.maximum(within.sum(axis=-1), 0.0)


def influences(metric: str, predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """φ [T, N] for T trials' predictions [T, N] of one test split with true `labels` [N]."""
    n = labels.size
    correct = (predicted == labels[None]).astype(np.float64)
    if metric == "accuracy":
        return correct / n
    true_count = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if metric == "balanced_accuracy":
        present = np.count_nonzero(true_count)
        return correct / (present * true_count[labels])[None]
    if metric == "macro_f1":
        trials = predicted.shape[0]
        offsets = np.arange(trials)[:, None] * num_classes
        pred_count = np.bincount((offsets + predicted).ravel(), minlength=trials * num_classes)
        pred_count = pred_count.reshape(trials, num_classes).astype(np.float64)
        hits = np.bincount(
            (offsets + predicted).ravel(), weights=correct.ravel(), minlength=trials * num_classes
        )
        tp = hits.reshape(trials, num_classes)
        denominator = true_count[None] + pred_count  # 2·TP + FP + FN
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        present = ((true_count[None] > 0) | (pred_count > 0)).sum(axis=1, keepdims=True)
        f1_of = np.take_along_axis(f1, predicted, axis=1)
        denominator_of = np.take_along_axis(denominator, predicted, axis=1)
        return (2 * correct - f1_of) / (present * denominator_of)
    raise ValueError(f"unknown metric {metric!r}")


def dataset_test_noise(metric: str, cells: Sequence[tuple[float, Sequence[Predictions]]]) -> float:
    """test_j for one dataset: `cells` are (weight in P(M), the seeds' predictions) of its cells.

    Every trial must have been scored on the same test examples (same labels, same order): a
    dataset's cells share one snapshot and task. ValueError otherwise.
    """
    cells = [(w, seeds) for w, seeds in cells if seeds]
    if not cells:
        return 0.0
    first = cells[0][1][0]
    if any(
        p.labels != first.labels or p.num_classes != first.num_classes for _, seeds in cells for p in seeds
    ):
        raise ValueError("the cells of one dataset were scored on different test examples")
    labels = _decode(first.labels)
    # One stratified variance over all rows at once: each seed, each cell's seed mean, the dataset.
    rows: list[np.ndarray] = []
    means: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    for _, seeds in cells:
        predicted = np.stack([_decode(p.predicted) for p in seeds])
        phi = influences(metric, predicted, labels, first.num_classes)
        spans.append((len(rows), len(seeds)))
        rows.extend(phi)
        means.append(phi.mean(axis=0))
    weights = np.array([w for w, _ in cells])
    combined = weights @ np.stack(means)
    variances = stratified_variance(np.stack([*rows, *means, combined]), labels)
    per_seed, of_mean, total = variances[: len(rows)], variances[len(rows) : -1], float(variances[-1])
    double_counted = 0.0
    for (start, count), weight, mean_var in zip(spans, weights, of_mean, strict=True):
        if count > 1:
            each = float(per_seed[start : start + count].mean())
            double_counted += float(weight) ** 2 * (each - float(mean_var)) / (count - 1)
    return max(total - double_counted, 0.0)
