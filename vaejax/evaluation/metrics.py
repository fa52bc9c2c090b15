"""Evaluation metrics: anomaly-score ranking (ROC AUC, average precision, thresholds) and PSNR.

Everything here is numpy in float64 on the host; inputs are anything ``np.asarray`` accepts. The
ranking metrics are scikit-learn's, behind checks that turn bad input into one clear error;
PSNR, which scikit-learn lacks, is computed here.

Ranking metrics take ``scores`` [N] (higher = more likely positive, e.g. an anomaly score such as
the negative ELBO) and ``is_positive`` [N] (bool, or 0/1). PSNR takes image batches whose leading
axis is the batch axis, with pixel values in [0, max_value].
"""

from __future__ import annotations

import numpy as np


def _scores_and_labels(scores, is_positive) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies: scores [N] float64 (no NaN) and labels [N] bool."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(is_positive)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"scores and is_positive must be 1-D, got shapes {scores.shape} and "
            f"{labels.shape}: flatten them with np.ravel"
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores has {scores.size} entries but is_positive has {labels.size}: "
            "pass one label per score"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: drop or replace those entries before ranking")
    if labels.dtype != np.bool_:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("is_positive must be bool or 0/1: convert labels with (y == positive)")
        labels = labels.astype(bool)
    return scores, labels


def _require_both_classes(labels: np.ndarray, metric: str) -> None:
    """ValueError if there are no positives or no negatives."""
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{metric} needs both classes, got {n_pos} positives and {n_neg} "
            "negatives: evaluate on a set containing both"
        )


def roc_auc(scores, is_positive) -> float:
    """Area under the ROC curve of ``scores`` [N] for labels ``is_positive`` [N], in [0, 1].

    Higher score = more positive. Equals P(score of a random positive > score of a random
    negative) + 1/2 P(equal), the Mann-Whitney U statistic / (n_pos * n_neg):
    ``sklearn.metrics.roc_auc_score``, whose trapezoids count ties as halves. ValueError if only
    one class is present.
    """
    from sklearn.metrics import roc_auc_score

    scores, labels = _scores_and_labels(scores, is_positive)
    _require_both_classes(labels, "roc_auc")
    return float(roc_auc_score(labels, scores))


def average_precision(scores, is_positive) -> float:
    """Average precision of ``scores`` [N] for labels ``is_positive`` [N], in (0, 1].

    The step-wise sum over distinct score thresholds, highest first, of
    (recall_k - recall_{k-1}) * precision_k, where threshold k predicts positive every score >=
    the k-th distinct value, so tied scores enter together; no interpolation
    (``sklearn.metrics.average_precision_score``). ValueError if there are no positives or no
    negatives.
    """
    from sklearn.metrics import average_precision_score

    scores, labels = _scores_and_labels(scores, is_positive)
    _require_both_classes(labels, "average_precision")
    return float(average_precision_score(labels, scores))


def precision_recall_at(scores, is_positive, threshold: float) -> tuple[float, float]:
    """(precision, recall) of predicting positive where ``scores`` [N] > ``threshold``.

    precision = TP / predicted positives, defined as 1.0 when nothing is predicted positive (no
    false alarms were raised); recall = TP / positives. ValueError if there are no positives.
    """
    from sklearn.metrics import precision_score, recall_score

    scores, labels = _scores_and_labels(scores, is_positive)
    if not labels.any():
        raise ValueError("recall needs at least one positive: evaluate on a set containing some")
    predicted = scores > float(threshold)
    precision = precision_score(labels, predicted, zero_division=1.0)
    return float(precision), float(recall_score(labels, predicted))


def percentile_threshold(reference_scores, percentile: float) -> float:
    """``np.percentile`` (linear interpolation) of ``reference_scores`` (e.g. training scores).

    ``percentile`` in [0, 100]: 95 flags the top 5% of the reference as positive when used with
    :func:`precision_recall_at`.
    """
    reference = np.asarray(reference_scores, dtype=np.float64).ravel()
    if reference.size == 0:
        raise ValueError("reference_scores is empty: pass the scores of the reference set")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}: 95 is the top 5%")
    return float(np.percentile(reference, percentile))


def _squared_errors(clean, other, max_value: float) -> np.ndarray:
    """(clean - other)^2 in float64, after checking shapes and max_value."""
    clean = np.asarray(clean, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    if clean.shape != other.shape:
        raise ValueError(
            f"clean has shape {clean.shape} but other has {other.shape}: "
            "compare images of the same shape"
        )
    if clean.ndim < 2 or clean.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty batch [N, ...], got shape {clean.shape}: "
            "add a batch axis with x[None]"
        )
    if not max_value > 0:
        raise ValueError(f"max_value must be > 0, got {max_value}: 1.0 for [0, 1], 255 for uint8")
    return np.square(clean - other)


def _psnr_of_mse(mse, max_value: float):
    with np.errstate(divide="ignore"):  # mse 0 -> +inf dB, on purpose
        return 10.0 * np.log10(max_value**2 / mse)


def psnr(clean, other, max_value: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image, in dB: [N], for batches [N, ...] in [0, max_value].

    10 log10(max_value^2 / MSE) with MSE the mean over all non-batch axes. Identical images give
    inf; average with :func:`mean_psnr`, not with the mean of this array.
    """
    errors = _squared_errors(clean, other, max_value)
    mse = errors.reshape(errors.shape[0], -1).mean(axis=1)
    return _psnr_of_mse(mse, float(max_value))


def mean_psnr(clean, other, max_value: float = 1.0) -> float:
    """PSNR in dB of the mean squared error over all images and pixels of [N, ...] batches.

    10 log10(max_value^2 / overall MSE): the number tables report. Finite unless every image is
    reproduced exactly (then inf), unlike the mean of :func:`psnr`.
    """
    errors = _squared_errors(clean, other, max_value)
    return float(_psnr_of_mse(errors.mean(), float(max_value)))
