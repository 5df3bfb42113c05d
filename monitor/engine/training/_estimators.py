"""Transferability estimates on frozen features: how well a model's features suit a labelled
dataset, without training anything (`early_warning.estimators`).

LogME (You, Liu, Wang, Long; "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021). For each class c, a Bayesian linear model of the one-hot target y_c on
the features F [n, D]: w ~ N(0, a^-1 I), y_c = F w + e, e ~ N(0, b^-1 I). Its log evidence

    L(a, b) = D/2 log a + n/2 log b - n/2 log 2pi - b/2 ||F m - y||^2 - a/2 ||m||^2 - 1/2 log|A|
    A = a I + b F^T F,   m = b A^-1 F^T y

is maximised over (a, b) by MacKay's fixed point (gamma = sum b s_i / (a + b s_i) over the
eigenvalues s_i of F^T F; a <- gamma / ||m||^2, b <- (n - gamma) / ||F m - y||^2), computed in
the eigenbasis of F^T F from one eigendecomposition. LogME is the maximum divided by n, averaged
over the classes. The paper's code stops after 11 iterations; here the iteration runs to a
relative change below 1e-7 (at most 200 steps), so the value is the maximum itself. Features are
used as the backbone gives them (the paper does not centre or scale them).

H-score (Bao, Li, Huang, Wang, Zheng; "An Information-Theoretic Approach to Transferability in
Task Transfer Learning", ICIP 2019): tr(cov(f)^+ cov(E[f | y])), with the population
covariances (1/n) of the features and of each example's class mean, and the Moore-Penrose
pseudo-inverse (eigenvalues below 1e-10 of the largest count as zero). Higher is better for both.

Both run in float64 on the training split's features (the split a fine-tune learns from).

The standard error of an estimate is its spread over bootstrap resamples of the training
examples (30 resamples drawn from a fixed seed: the same features always give the same figure).
It is what `estimate_drop` weighs a drop against: with 50 training images the LogME of one
snapshot can differ from the next one's by 0.1 from sampling alone.
"""

from __future__ import annotations

import math

import torch

__all__ = ["ESTIMATORS", "estimate", "estimate_with_stderr", "h_score", "logme"]

ESTIMATORS = ("logme", "hscore")

_MAX_STEPS = 200
_TOLERANCE = 1e-7
_RESAMPLES = 30


@torch.no_grad()
def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """LogME of `features` [n, D] for integer `labels` [n] (classes 0..num_classes-1)."""
    f = features.double().cpu()
    y = torch.nn.functional.one_hot(labels.long().cpu(), num_classes).double()  # [n, C]
    n, dim = f.shape
    # Eigenbasis of F^T F (D x D) or of F F^T (n x n), whichever is smaller; both give the same
    # non-zero eigenvalues, and z = projections of y onto the left singular vectors.
    if n >= dim:
        sigma, v = torch.linalg.eigh(f.T @ f)  # [D], [D, D]
        sigma = sigma.clamp(min=0.0)
        s = sigma.sqrt()
        keep = s > s.max() * 1e-10 if s.numel() else s > 0
        u = (f @ v[:, keep]) / s[keep]  # [n, r] left singular vectors
        sigma_r = sigma[keep]
    else:
        sigma_n, u_all = torch.linalg.eigh(f @ f.T)  # [n], [n, n]
        sigma_n = sigma_n.clamp(min=0.0)
        keep = sigma_n > sigma_n.max() * 1e-20 if sigma_n.numel() else sigma_n > 0
        u, sigma_r = u_all[:, keep], sigma_n[keep]
    zero_dims = dim - sigma_r.numel()  # eigenvalues of F^T F that are exactly 0
    z = u.T @ y  # [r, C]
    outside = (y * y).sum(dim=0) - (z * z).sum(dim=0)  # ||y||^2 outside the span of F, per class
    evidences = [
        _evidence(sigma_r, z[:, c], float(outside[c].clamp(min=0.0)), n, dim, zero_dims)
        for c in range(num_classes)
    ]
    return math.fsum(evidences) / num_classes


def _evidence(
    sigma: torch.Tensor, z: torch.Tensor, outside: float, n: int, dim: int, zero_dims: int
) -> float:
    """max over (a, b) of L(a, b) / n for one class, by MacKay's fixed point."""
    z2 = z * z
    a, b = 1.0, 1.0
    for _ in range(_MAX_STEPS):
        denominator = a + b * sigma
        gamma = float((b * sigma / denominator).sum())
        m2 = float((b * b * sigma * z2 / denominator**2).sum())  # ||m||^2
        residual = float((a * a * z2 / denominator**2).sum()) + outside  # ||F m - y||^2
        a_new = gamma / max(m2, 1e-300)
        b_new = (n - gamma) / max(residual, 1e-300)
        done = abs(a_new / b_new - a / b) <= _TOLERANCE * (a / b)
        a, b = a_new, b_new
        if done:
            break
    denominator = a + b * sigma
    m2 = float((b * b * sigma * z2 / denominator**2).sum())
    residual = float((a * a * z2 / denominator**2).sum()) + outside
    log_det = float(torch.log(denominator).sum()) + zero_dims * math.log(a)
    evidence = (
        dim / 2 * math.log(a)
        + n / 2 * math.log(b)
        - n / 2 * math.log(2 * math.pi)
        - b / 2 * residual
        - a / 2 * m2
        - log_det / 2
    )
    return evidence / n


@torch.no_grad()
def h_score(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """H-score of `features` [n, D] for integer `labels` [n]."""
    f = features.double().cpu()
    y = labels.long().cpu()
    n = f.shape[0]
    centred = f - f.mean(dim=0, keepdim=True)
    cov_f = centred.T @ centred / n
    one_hot = torch.nn.functional.one_hot(y, num_classes).double()  # [n, C]
    counts = one_hot.sum(dim=0).clamp(min=1)
    class_means = (one_hot.T @ centred) / counts[:, None]  # [C, D] (centred)
    g = class_means[y]  # each example's class mean
    cov_g = g.T @ g / n
    eigenvalues, vectors = torch.linalg.eigh(cov_f)
    keep = eigenvalues > eigenvalues.max().clamp(min=0) * 1e-10
    inverse = (vectors[:, keep] / eigenvalues[keep]) @ vectors[:, keep].T
    return float(torch.trace(inverse @ cov_g))


def estimate(estimator: str, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """The value of `estimator` (one of ESTIMATORS) on the features of the training split."""
    if estimator == "logme":
        return logme(features, labels, num_classes)
    if estimator == "hscore":
        return h_score(features, labels, num_classes)
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")


def estimate_with_stderr(
    estimator: str, features: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[float, float | None]:
    """The estimate and its bootstrap standard error (None for fewer than 4 training images)."""
    value = estimate(estimator, features, labels, num_classes)
    n = features.shape[0]
    if n < 4:
        return value, None
    features, labels = features.double().cpu(), labels.cpu()
    generator = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(_RESAMPLES):
        pick = torch.randint(n, (n,), generator=generator)
        drawn = estimate(estimator, features[pick], labels[pick], num_classes)
        if math.isfinite(drawn):
            draws.append(drawn)
    if len(draws) < 2:
        return value, None
    mean = math.fsum(draws) / len(draws)
    return value, math.sqrt(math.fsum((d - mean) ** 2 for d in draws) / (len(draws) - 1))
