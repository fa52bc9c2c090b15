"""Sample-quality numbers from a classifier: Frechet distance of features, Inception Score, modes.

These are the formulas of FID (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016),
applied to the features and softmax outputs of the project's own small classifier, because no
Inception weights can be downloaded here. The numbers are therefore comparable only to each other
(same classifier, same data set, same sample count), never to the Inception-based FID / IS values
reported in papers.

Everything here is numpy / scipy in float64 on the host; inputs are anything ``np.asarray``
accepts. Features are [N, D] (N samples, D feature dimensions, in the classifier's feature units);
probabilities are [N, C] softmax rows; labels are [N] ints in [0, C).
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of ``features`` [N, D], in float64.

    The covariance is the unbiased estimate (divides by N - 1), as ``np.cov(rowvar=False)``.
    ValueError unless features is 2-D with N >= 2 finite rows.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(
            f"features must be 2-D [N, D], got shape {features.shape}: "
            "flatten each sample's features with x.reshape(len(x), -1)"
        )
    if features.shape[0] < 2:
        raise ValueError(
            f"a covariance needs at least 2 samples, got {features.shape[0]}: "
            "pass more samples (FID is biased upward for small N anyway)"
        )
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or inf: check the classifier's outputs")
    mean = features.mean(axis=0)
    centered = features - mean
    covariance = centered.T @ centered / (features.shape[0] - 1)
    return mean, covariance


def _check_covariances(cov1, cov2) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of two square covariances of the same shape [D, D]; ValueError otherwise."""
    cov1 = np.asarray(cov1, dtype=np.float64)
    cov2 = np.asarray(cov2, dtype=np.float64)
    if cov1.ndim != 2 or cov1.shape[0] != cov1.shape[1]:
        raise ValueError(f"cov1 must be a square [D, D] matrix, got shape {cov1.shape}")
    if cov1.shape != cov2.shape:
        raise ValueError(
            f"cov1 has shape {cov1.shape} but cov2 has {cov2.shape}: "
            "compare features of the same dimension"
        )
    return cov1, cov2


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root [D, D] of a symmetric PSD ``matrix``, negative round-off clipped."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def trace_sqrt_product(cov1, cov2) -> float:
    """tr((cov1 @ cov2)^{1/2}) for symmetric PSD ``cov1``, ``cov2`` [D, D] (may be singular).

    cov1 @ cov2 is not symmetric, and ``scipy.linalg.sqrtm`` of it can return complex values or
    large errors when the covariances are near-singular (e.g. fewer samples than dimensions). Its
    eigenvalues equal those of the symmetric PSD matrix s1 @ cov2 @ s1 with s1 = cov1^{1/2}
    (similar matrices), so the trace of the square root is the sum of the square roots of those
    eigenvalues, found with ``np.linalg.eigh`` and negative round-off clipped to 0.
    """
    cov1, cov2 = _check_covariances(cov1, cov2)
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2).

    ||mean1 - mean2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^{1/2}), in squared feature units,
    >= 0 (tiny negative round-off is clipped to 0). means [D], covariances [D, D].
    """
    cov1, cov2 = _check_covariances(cov1, cov2)
    mean1 = np.asarray(mean1, dtype=np.float64)
    mean2 = np.asarray(mean2, dtype=np.float64)
    if mean1.shape != (cov1.shape[0],) or mean2.shape != mean1.shape:
        raise ValueError(
            f"means must both have shape ({cov1.shape[0]},) to match the "
            f"covariances, got {mean1.shape} and {mean2.shape}"
        )
    mean_term = float(np.sum(np.square(mean1 - mean2)))
    value = mean_term + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
    return max(float(value), 0.0)


def fid(features1, features2) -> float:
    """Frechet distance between Gaussian fits of ``features1`` [N1, D] and ``features2`` [N2, D].

    FID-style, but on this project's classifier features: see the module docstring.
    """
    mean1, cov1 = gaussian_fit(features1)
    mean2, cov2 = gaussian_fit(features2)
    return frechet_distance(mean1, cov1, mean2, cov2)


def _check_probabilities(probabilities, splits: int) -> np.ndarray:
    """float64 copy of softmax rows [N, C]; ValueError unless valid and 1 <= splits <= N."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(
            f"probabilities must be non-empty 2-D [N, C], got shape "
            f"{probabilities.shape}: pass the classifier's softmax per sample"
        )
    if not np.isfinite(probabilities).all() or (probabilities < 0).any():
        raise ValueError(
            "probabilities must be finite and non-negative: pass softmax outputs, not logits"
        )
    if not np.allclose(probabilities.sum(axis=1), 1.0, rtol=0.0, atol=1e-3):
        raise ValueError(
            "each row of probabilities must sum to 1 (within 1e-3): apply softmax "
            "to the logits first"
        )
    n = probabilities.shape[0]
    if isinstance(splits, bool) or int(splits) != splits or not 1 <= splits <= n:
        raise ValueError(f"splits must be an integer in [1, N={n}], got {splits}")
    return probabilities


def _split_score(probabilities: np.ndarray) -> float:
    """exp(mean over rows of KL(p(y|x) || p(y))) for one split [n, C], 0 log 0 = 0."""
    marginal = probabilities.mean(axis=0, keepdims=True)
    # where p(y|x) > 0, p(y) > 0 too (it is a mean including that row), so the KL is finite
    kl = np.sum(xlogy(probabilities, probabilities) - xlogy(probabilities, marginal), axis=1)
    return float(np.exp(kl.mean()))


def inception_score(probabilities, splits: int = 1) -> tuple[float, float]:
    """(mean, std) of the Inception Score of softmax rows ``probabilities`` [N, C].

    The rows are cut into ``splits`` consecutive parts (``np.array_split``); each part scores
    exp(mean over its rows of KL(p(y|x) || p(y))) with p(y) that part's mean row, a number in
    [1, C]: 1 when every prediction is the same, C for confident predictions spread evenly over C
    classes. Returns the mean and the population std (ddof 0) over parts; std is 0.0 for one
    part. Uses this project's classifier: see the module docstring.
    """
    probabilities = _check_probabilities(probabilities, splits)
    scores = [_split_score(part) for part in np.array_split(probabilities, int(splits))]
    return float(np.mean(scores)), float(np.std(scores))


def _check_labels(labels, num_classes: int) -> np.ndarray:
    """int64 copy of 1-D ``labels`` [N] in [0, num_classes); ValueError otherwise."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array [N], got shape {labels.shape}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or (labels != np.round(labels)).any():
            raise ValueError(
                "labels must be integer class indices: take argmax of the probabilities"
            )
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got values from {labels.min()} "
            f"to {labels.max()}"
        )
    return labels


def mode_coverage(labels, num_classes: int, min_fraction: float = 0.1) -> dict:
    """How many of ``num_classes`` classes the predicted ``labels`` [N] of samples cover.

    A class is covered when its count is at least ``min_fraction`` * N / num_classes, i.e. at least
    a tenth of a uniform share by default (the comparison allows 1e-12 relative round-off, so a
    count exactly on the boundary counts). Returns a dict with ``histogram`` (list of int counts,
    length num_classes), ``fractions`` (list of floats, count / N), ``classes_covered`` (int),
    ``num_classes``, ``min_fraction`` and ``largest_class_fraction`` (float; 1 / num_classes when
    perfectly balanced, 1.0 when collapsed onto one class).
    """
    labels = _check_labels(labels, num_classes)
    if not min_fraction > 0:
        raise ValueError(
            f"min_fraction must be > 0, got {min_fraction}: 0.1 means a tenth of a uniform share"
        )
    counts = np.bincount(labels, minlength=int(num_classes))
    n = labels.size
    threshold = float(min_fraction) * n / int(num_classes)
    covered = counts >= threshold * (1.0 - 1e-12)
    fractions = counts / n
    return {
        "histogram": [int(count) for count in counts],
        "fractions": [float(fraction) for fraction in fractions],
        "classes_covered": int(covered.sum()),
        "num_classes": int(num_classes),
        "min_fraction": float(min_fraction),
        "largest_class_fraction": float(fractions.max()),
    }
