"""Test-sampling noise of cells and of P(M): the delta method against brute-force bootstraps and
values computed by hand."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from monitor.scoring import score_model
from monitor.scoring._sampling import dataset_test_noise, influences, stratified_variance
from monitor.types import CellResult, Predictions

METRICS = {
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy_score,
    "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
}


def pack(values) -> bytes:
    return struct.pack(f"<{len(values)}H", *[int(v) for v in values])


def predictions(labels, predicted, classes: int) -> Predictions:
    return Predictions(pack(labels), pack(predicted), classes)


def noisy_predictions(rng, labels, classes: int, accuracy: float) -> np.ndarray:
    wrong = rng.random(labels.size) > accuracy
    return np.where(wrong, (labels + rng.integers(1, classes, labels.size)) % classes, labels)


def score_many(metric: str, labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """The metric of each row of `predicted` [R, N] against `labels` [R, N], as scikit-learn
    defines it (checked against it below), vectorised for the bootstrap."""
    correct = (predicted == labels).astype(float)
    if metric == "accuracy":
        return correct.mean(axis=1)
    rows = np.arange(labels.shape[0])[:, None] * classes
    true = np.bincount((rows + labels).ravel(), minlength=labels.shape[0] * classes).reshape(-1, classes)
    pred = np.bincount((rows + predicted).ravel(), minlength=labels.shape[0] * classes).reshape(-1, classes)
    tp = np.bincount((rows + labels).ravel(), weights=correct.ravel(), minlength=labels.shape[0] * classes)
    tp = tp.reshape(-1, classes)
    if metric == "balanced_accuracy":
        recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
        return recall.sum(axis=1) / (true > 0).sum(axis=1)
    f1 = np.divide(2 * tp, true + pred, out=np.zeros_like(tp), where=(true + pred) > 0)
    return f1.sum(axis=1) / ((true > 0) | (pred > 0)).sum(axis=1)


def stratified_bootstrap(rng, metric, labels, rows, classes: int, resamples: int) -> np.ndarray:
    """Brute force: resample the test examples within each class, rescore every row [B, rows]."""
    by_class = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    pick = np.concatenate([idx[rng.integers(0, idx.size, (resamples, idx.size))] for idx in by_class], axis=1)
    return np.stack([score_many(metric, labels[pick], row[pick], classes) for row in rows], axis=1)


def test_stratified_variance_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    values = np.array([1.0, 2.0, 6.0, 4.0, 4.0, 9.0])
    # class 0: n 3, s² = 7; class 1: n 2, s² = 0; class 2: one example, no variance
    assert stratified_variance(values, labels) == pytest.approx(3 * 7.0)
    # accuracy's influence c_i / N gives Σ (n_k / N)² p_k (1 − p_k) / (n_k − 1)
    correct = np.array([1, 1, 0, 1, 0, 1])
    expected = (3 / 6) ** 2 * (2 / 3) * (1 / 3) / 2 + (2 / 6) ** 2 * 0.25 / 1
    assert stratified_variance(correct / 6, labels) == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_the_delta_method_matches_a_brute_force_bootstrap(metric):
    rng = np.random.default_rng(1)
    classes = 5
    labels = np.repeat(np.arange(classes), [30, 20, 25, 15, 30])
    rows = [noisy_predictions(rng, labels, classes, accuracy) for accuracy in (0.6, 0.8, 0.9)]
    for row in rows:  # the bootstrap's own metric is scikit-learn's
        assert score_many(metric, labels[None], row[None], classes)[0] == pytest.approx(
            METRICS[metric](labels, row)
        )
    phi = influences(metric, np.stack(rows), labels, classes)
    delta = stratified_variance(phi, labels)
    boot = stratified_bootstrap(rng, metric, labels, rows, classes, 20000).var(axis=0, ddof=1)
    # The bootstrap divides within-class sums of squares by n_k, the estimate by n_k − 1
    # (15–30 examples a class: 3–7 %), and 20 000 resamples estimate a variance to about ±1 %.
    assert delta == pytest.approx(boot, rel=0.08), (delta, boot)


def test_a_dataset_counts_the_covariance_of_its_cells_and_seeds():
    """Cells scored on one test split move together: the joint noise of D = Σ w_c · mean_s score
    is that of a bootstrap of D, far above the sum of the cells' separate noises."""
    rng = np.random.default_rng(2)
    classes = 4
    labels = np.repeat(np.arange(classes), 40)
    hard = rng.random(labels.size) < 0.25  # examples every model tends to get wrong
    cells = []
    for weight in (0.5, 0.3, 0.2):
        seeds = []
        for _ in range(2):
            wrong = np.where(hard, rng.random(labels.size) < 0.8, rng.random(labels.size) < 0.05)
            seeds.append(np.where(wrong, (labels + 1) % classes, labels))
        cells.append((weight, seeds))
    joint = dataset_test_noise(
        "accuracy", [(w, [predictions(labels, p, classes) for p in s]) for w, s in cells]
    )

    rows = [p for _, seeds in cells for p in seeds]
    boot = stratified_bootstrap(rng, "accuracy", labels, rows, classes, 20000)
    d = sum(w * boot[:, 2 * c : 2 * c + 2].mean(axis=1) for c, (w, _) in enumerate(cells))
    per_seed = [boot[:, 2 * c : 2 * c + 2].var(axis=0, ddof=1).mean() for c in range(len(cells))]
    of_mean = [boot[:, 2 * c : 2 * c + 2].mean(axis=1).var(ddof=1) for c in range(len(cells))]
    # what the seed spread already holds, per cell: (per-seed noise − noise of the mean) / (n − 1)
    shared = d.var(ddof=1) - sum(
        w**2 * (a - b) for (w, _), a, b in zip(cells, per_seed, of_mean, strict=True)
    )
    assert joint == pytest.approx(shared, rel=0.08)
    independent = sum(w**2 * b for (w, _), b in zip(cells, of_mean, strict=True))
    assert joint > 1.5 * independent


def test_cells_of_one_dataset_must_share_their_test_examples():
    a = predictions([0, 1, 1], [0, 1, 0], 2)
    b = predictions([1, 1, 0], [0, 1, 0], 2)
    with pytest.raises(ValueError, match="different test examples"):
        dataset_test_noise("accuracy", [(0.5, [a]), (0.5, [b])])


def _cell(task, dataset, strategy, seeds: list[list[int]], labels: list[int], classes: int) -> CellResult:
    preds = tuple(predictions(labels, p, classes) for p in seeds)
    scores = tuple(float(np.mean(np.array(p) == np.array(labels))) for p in seeds)
    return CellResult(
        "m", task, dataset, "s1", strategy, "ok", float(np.mean(scores)), scores, 1.0, predictions=preds
    )


def test_stderr_of_pm_by_hand_seeds_plus_shared_test_noise():
    """One task, two datasets, one strategy, two seeds whose predictions agree: no seed-specific
    test noise, so each dataset's test noise is that of accuracy on its four test images."""
    labels = [0, 0, 1, 1]
    a = _cell("t", "a", "s", [[0, 0, 1, 0], [0, 0, 1, 0]], labels, 2)  # 0.75, 0.75
    b = _cell("t", "b", "s", [[0, 1, 1, 1], [0, 0, 1, 1]], labels, 2)  # 0.75, 1.0: seeds differ
    score = score_model("m", "v", [a, b], [("t", "a", "s"), ("t", "b", "s")], {"t": "accuracy"})
    # the noise of each dataset's score (one strategy: the cell's score)
    # a: seeds agree, s² = 0; test Σ_k (n_k/N)² p_k(1 − p_k)/(n_k − 1) = (1/2)² · (1 · 0 + 1/2 · 1/2) = 1/16
    seeds_a, test_a = 0.0, 1 / 16
    # b: s² = 1/32, seeds s²/2; per-seed test noise 1/16 and 0, that of the seed mean (correct 1,
    # 1/2 | 1, 1) 1/64: the seeds hold (1/32 − 1/64)/(2 − 1) of it, which leaves 0 for the test sample
    seeds_b = (1 / 32) / 2
    mean_b = np.array([1.0, 0.5, 1.0, 1.0]) / 4
    test_b = max(stratified_variance(mean_b, np.array(labels)) - (1 / 32 - 1 / 64), 0.0)
    assert score.noise["t"]["a"].seeds == pytest.approx(seeds_a)
    assert score.noise["t"]["a"].test == pytest.approx(test_a)
    assert score.noise["t"]["b"].seeds == pytest.approx(seeds_b)
    assert score.noise["t"]["b"].test == pytest.approx(test_b)
    w = 0.5  # each dataset's weight in P(M)
    assert score.stderr_seeds == pytest.approx(math.sqrt(w**2 * (seeds_a + seeds_b)))
    assert score.stderr == pytest.approx(math.sqrt(w**2 * (seeds_a + seeds_b + test_a + test_b)))
    assert score.noise["t"]["a"].snapshot == "s1"


def test_without_predictions_or_a_metric_only_the_seeds_count():
    labels = [0, 1, 1, 0]
    cell = _cell("t", "a", "s", [[0, 1, 1, 1], [0, 1, 1, 0]], labels, 2)  # 0.75 and 1.0: s² = 1/32
    seeds_only = score_model("m", "v", [cell], [("t", "a", "s")])
    assert seeds_only.stderr == seeds_only.stderr_seeds == pytest.approx(math.sqrt(1 / 32 / 2))
    assert seeds_only.noise["t"]["a"].test is None
    bare = CellResult("m", "t", "a", "s1", "s", "ok", 0.75, (0.75, 0.75), 1.0)
    assert score_model("m", "v", [bare], [("t", "a", "s")], {"t": "accuracy"}).noise["t"]["a"].test is None
