"""LogME: how well a backbone's features explain the labels, without training (You et al., ICML 2021).

    score = logme(features, labels)                       # (N, D) float, (N,) class ids
    score = logme(features, targets, multilabel=True)     # (N, C) 0/1: the mean over labels

For each class c, the one-vs-rest target y_c is modelled as a Bayesian linear regression on the
features, y = f w + noise, with prior w ~ N(0, 1/alpha) and noise precision beta. LogME is the log
of the maximized marginal likelihood (evidence) per example, averaged over the classes: larger
means the features fit the labels more simply. alpha and beta are found by the MacKay fixed point
of the authors' later paper ("Ranking and Tuning Pre-trained Models", arXiv 2110.10545), which is
what their reference implementation computes: with the SVD f = U diag(s) V^T, sigma = s^2,
x = U^T y and t = alpha / beta,

    gamma = sum sigma / (sigma + t)                          effective number of parameters
    m2    = sum sigma x^2 / (sigma + t)^2                     |w|^2 of the posterior mean
    res2  = sum x^2 / (1 + sigma / t)^2 + |y|^2 - |x|^2      the residual |y - f w|^2
    alpha = gamma / m2,  beta = (N - gamma) / res2           (1e-5 added to each denominator)

iterated (11 times at most) until t changes by less than 0.1%; then

    evidence = (D log alpha + N log beta - sum log(alpha + beta sigma) - beta res2 - alpha m2
                - N log 2 pi) / (2 N)

All classes iterate together (a mask keeps each one's values from the step it converged at), in
float64. The test checks this against values computed with the authors' code.
"""

from __future__ import annotations

import numpy as np

MAX_ITER = 11
TOL = 1e-3
EPS = 1e-5


def logme(features: np.ndarray, labels: np.ndarray, multilabel: bool = False) -> float:
    """The LogME score of ``features`` (N, D) for ``labels``: class ids (N,), or (N, C) 0/1 targets."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
    y = _targets(labels, multilabel, len(f))
    n, d = f.shape
    u, s = _left_singular(f)
    sigma = (s ** 2)[:, None]  # (k, 1)
    x = u.T @ y  # (k, C)
    x2 = x ** 2
    res_x2 = (y ** 2).sum(0) - x2.sum(0)  # the part of |y|^2 outside the features' span
    alpha = np.ones(y.shape[1])
    beta = np.ones(y.shape[1])
    m2 = res2 = np.zeros(y.shape[1])
    active = np.ones(y.shape[1], dtype=bool)
    for _ in range(MAX_ITER):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        new_m2 = (sigma * x2 / (t + sigma) ** 2).sum(0)
        new_res2 = (x2 / (1 + sigma / t) ** 2).sum(0) + res_x2
        new_alpha = gamma / (new_m2 + EPS)
        new_beta = (n - gamma) / (new_res2 + EPS)
        m2, res2 = np.where(active, new_m2, m2), np.where(active, new_res2, res2)
        alpha, beta = np.where(active, new_alpha, alpha), np.where(active, new_beta, beta)
        active &= np.abs(new_alpha / new_beta - t) / t > TOL
        if not active.any():
            break
    evidence = (d * np.log(alpha) + n * np.log(beta) - np.log(alpha + beta * sigma).sum(0) - beta * res2
                - alpha * m2 - n * np.log(2 * np.pi)) / (2 * n)
    return float(evidence.mean())


def _targets(labels: np.ndarray, multilabel: bool, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} feature rows")
    if multilabel:
        if y.ndim != 2:
            raise ValueError(f"multi-label targets must be (N, C) 0/1, got shape {y.shape}")
        return y.astype(np.float64)
    if y.ndim != 1:
        raise ValueError(f"labels must be class ids of shape (N,), got shape {y.shape}")
    y = y.astype(np.int64)
    return (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)


def _left_singular(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U (N, k) and the singular values s (k,) of ``f``, k its numerical rank. With more rows than
    columns, from the eigenvectors of the small D x D Gram matrix (as the reference does)."""
    n, d = f.shape
    if n > d:
        _, s2, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s2)
        k = int((s > 1e-10).sum())
        return (f @ vh[:k].T) / s[:k], s[:k]
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return u, s
