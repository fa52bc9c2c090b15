"""Metrics against hand-computed cases and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from vaejax.evaluation import metrics

# the hand case used below: positives score 0.35 and 0.8, negatives 0.1 and 0.4
HAND_SCORES = [0.1, 0.4, 0.35, 0.8]
HAND_LABELS = [0, 0, 1, 1]


def _pairwise_auc(scores, labels) -> float:
    """P(positive > negative) + 1/2 P(tie) over all positive-negative pairs, O(n_pos * n_neg)."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    total = 0.0
    for positive in scores[labels]:
        for negative in scores[~labels]:
            total += 1.0 if positive > negative else 0.5 if positive == negative else 0.0
    return total / (labels.sum() * (~labels).sum())


def _threshold_walk_ap(scores, labels) -> float:
    """AP by predicting 'score >= v' for each distinct v, highest first, and summing
    (recall gain) * precision."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    ap, previous_recall = 0.0, 0.0
    for value in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= value
        true_positives = np.sum(predicted & labels)
        recall = true_positives / labels.sum()
        ap += (recall - previous_recall) * true_positives / predicted.sum()
        previous_recall = recall
    return float(ap)


def _tied_random_case(seed: int, n: int = 300):
    """Scores on a coarse grid (many ties), labels correlated with them."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + labels, 1)
    return scores, labels


def test_roc_auc_extremes():
    labels = np.array([0, 0, 0, 1, 1])
    assert metrics.roc_auc([1, 2, 3, 4, 5], labels) == 1.0
    assert metrics.roc_auc([5, 4, 3, 2, 1], labels) == 0.0
    assert metrics.roc_auc([7, 7, 7, 7, 7], labels) == 0.5


def test_roc_auc_hand_case():
    # pairs (positive, negative): 0.8 > 0.1, 0.8 > 0.4, 0.35 > 0.1, 0.35 < 0.4 -> 3 of 4 = 0.75
    assert metrics.roc_auc(HAND_SCORES, HAND_LABELS) == pytest.approx(0.75, abs=1e-15)
    # a tie counts 1/2: positive 0.4 vs negative 0.4 -> (1 + 1 + 1 + 0.5) / 4 = 0.875
    assert metrics.roc_auc([0.1, 0.4, 0.4, 0.8], HAND_LABELS) == pytest.approx(0.875, abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    scores, labels = _tied_random_case(seed)
    assert len(np.unique(scores)) < len(scores) / 3  # the case really has many ties
    assert metrics.roc_auc(scores, labels) == pytest.approx(
        _pairwise_auc(scores, labels), abs=1e-12
    )


def test_roc_auc_accepts_bool_or_int_labels_and_is_rank_based():
    scores, labels = _tied_random_case(7)
    from_bool = metrics.roc_auc(scores, labels)
    assert metrics.roc_auc(scores, labels.astype(int)) == from_bool
    assert metrics.roc_auc(np.exp(scores), labels) == pytest.approx(from_bool, abs=1e-12)
    assert metrics.roc_auc(-scores, labels) == pytest.approx(1 - from_bool, abs=1e-12)


def test_average_precision_perfect_and_hand_case():
    assert metrics.average_precision([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    # descending: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg)
    # threshold 0.8: P = 1/1, R = 1/2 -> 0.5 * 1; threshold 0.4: R unchanged -> 0;
    # threshold 0.35: P = 2/3, R = 1 -> 0.5 * 2/3; threshold 0.1: R unchanged -> 0
    # AP = 0.5 + 1/3 = 0.8333...
    assert metrics.average_precision(HAND_SCORES, HAND_LABELS) == pytest.approx(5 / 6, abs=1e-15)


def test_average_precision_ties_form_one_threshold():
    # all tied: one threshold with P = 2/4 and R = 1 -> 0.5 (not 1 or 0 from an arbitrary order)
    assert metrics.average_precision([3, 3, 3, 3], [1, 0, 1, 0]) == 0.5
    assert metrics.average_precision([3, 3, 3, 3], [0, 1, 0, 1]) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_threshold_walk(seed):
    scores, labels = _tied_random_case(seed)
    assert metrics.average_precision(scores, labels) == pytest.approx(
        _threshold_walk_ap(scores, labels), abs=1e-12
    )


def test_average_precision_of_random_scores_is_positive_rate():
    rng = np.random.default_rng(0)
    labels = rng.random(20_000) < 0.2
    ap = metrics.average_precision(rng.random(20_000), labels)
    assert ap == pytest.approx(labels.mean(), abs=0.02)


def test_precision_recall_at_hand_case():
    # > 0.3 predicts 0.4 (neg), 0.35 (pos), 0.8 (pos): precision 2/3, recall 2/2
    precision, recall = metrics.precision_recall_at(HAND_SCORES, HAND_LABELS, 0.3)
    assert (precision, recall) == pytest.approx((2 / 3, 1.0))
    # strictly greater: 0.35 itself is not predicted -> only 0.4 and 0.8: 1/2, 1/2
    assert metrics.precision_recall_at(HAND_SCORES, HAND_LABELS, 0.35) == (0.5, 0.5)


def test_precision_is_one_when_nothing_is_predicted():
    assert metrics.precision_recall_at(HAND_SCORES, HAND_LABELS, 0.8) == (1.0, 0.0)


def test_percentile_threshold():
    reference = np.arange(101.0)
    assert metrics.percentile_threshold(reference, 95) == 95.0
    assert metrics.percentile_threshold(reference, 0) == 0.0
    assert metrics.percentile_threshold([1.0, 2.0], 50) == 1.5
    for bad in (-1, 100.5):
        with pytest.raises(ValueError, match=r"\[0, 100\]"):
            metrics.percentile_threshold(reference, bad)


@pytest.mark.parametrize("metric", [metrics.roc_auc, metrics.average_precision])
def test_ranking_metrics_reject_bad_input(metric):
    with pytest.raises(ValueError, match="one label per score"):
        metric([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        metric([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="both classes"):
        metric([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="both classes"):
        metric([0.1, 0.2, 0.3], [False, False, False])
    with pytest.raises(ValueError, match="NaN"):
        metric([0.1, np.nan, 0.3], [0, 1, 1])


def test_precision_recall_rejects_no_positives():
    with pytest.raises(ValueError, match="positive"):
        metrics.precision_recall_at([0.1, 0.2], [0, 0], 0.5)


def test_psnr_identical_images_are_inf():
    images = np.random.default_rng(0).random((3, 4, 4, 1))
    np.testing.assert_array_equal(metrics.psnr(images, images), np.full(3, np.inf))
    assert metrics.mean_psnr(images, images) == np.inf


def test_psnr_of_constant_error():
    clean = np.full((2, 5, 5), 0.5)
    # MSE = e^2 -> 10 log10(1 / e^2) = -20 log10(e): e = 0.1 -> 20 dB, e = 0.01 -> 40 dB
    np.testing.assert_allclose(metrics.psnr(clean, clean + 0.1), [20.0, 20.0], rtol=1e-12)
    np.testing.assert_allclose(metrics.psnr(clean, clean - 0.01), [40.0, 40.0], rtol=1e-12)


def test_psnr_max_value_scaling():
    rng = np.random.default_rng(1)
    clean, noisy = rng.random((2, 4, 8, 8, 3))
    unit = metrics.psnr(clean, noisy)
    np.testing.assert_allclose(
        metrics.psnr(255 * clean, 255 * noisy, max_value=255), unit, rtol=1e-12
    )
    # the same images called [0, 255] with max 1 read 20 log10(255) = 48.13 dB worse
    np.testing.assert_allclose(
        metrics.psnr(255 * clean, 255 * noisy), unit - 20 * np.log10(255), rtol=1e-12
    )


def test_psnr_is_per_image_over_non_batch_axes():
    clean = np.zeros((2, 2, 2))
    other = clean.copy()
    other[0, 0, 0] = 0.2  # image 0: MSE = 0.04 / 4 = 0.01 -> 20 dB; image 1 exact -> inf
    np.testing.assert_allclose(metrics.psnr(clean, other), [20.0, np.inf], rtol=1e-12)


def test_mean_psnr_is_psnr_of_pooled_mse():
    clean = np.zeros((2, 2, 2))
    other = clean.copy()
    other[0, 0, 0] = 0.2  # pooled MSE = 0.04 / 8 = 0.005 -> 10 log10(200) = 23.01 dB
    assert metrics.mean_psnr(clean, other) == pytest.approx(10 * np.log10(200), rel=1e-12)
    rng = np.random.default_rng(2)
    clean, noisy = rng.random((2, 5, 6, 6))
    pooled_mse = np.mean((clean - noisy) ** 2)
    assert metrics.mean_psnr(clean, noisy, max_value=2.0) == pytest.approx(
        10 * np.log10(4.0 / pooled_mse), rel=1e-12
    )


def test_psnr_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="batch"):
        metrics.psnr(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="max_value"):
        metrics.mean_psnr(np.zeros((1, 3)), np.zeros((1, 3)), max_value=0)
