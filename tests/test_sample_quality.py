"""Sample-quality math against closed forms, brute-force references and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from vaejax.evaluation import sample_quality


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A well-conditioned symmetric positive-definite [dim, dim] matrix (eigenvalues >= 0.5)."""
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.5 * np.eye(dim)


def _sqrtm_trace(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Reference tr((cov1 cov2)^{1/2}) by scipy's general matrix square root, real part."""
    return float(np.trace(scipy.linalg.sqrtm(cov1 @ cov2)).real)


def _correlated_features(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """[n, dim] Gaussian features with a random non-diagonal covariance and a non-zero mean."""
    mixing = rng.normal(size=(dim, dim))
    return rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim)


def _brute_force_is(probabilities: np.ndarray) -> float:
    """exp(mean_x sum_y p(y|x) log(p(y|x) / p(y))) by explicit loops, skipping p(y|x) = 0."""
    n, c = probabilities.shape
    marginal = [sum(probabilities[i, y] for i in range(n)) / n for y in range(c)]
    total = 0.0
    for i in range(n):
        for y in range(c):
            p = probabilities[i, y]
            if p > 0:
                total += p * np.log(p / marginal[y])
    return float(np.exp(total / n))


# --- gaussian_fit ---


def test_gaussian_fit_matches_numpy():
    features = _correlated_features(np.random.default_rng(0), 50, 6)
    mean, cov = sample_quality.gaussian_fit(features)
    np.testing.assert_allclose(mean, np.mean(features, axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(features, rowvar=False), rtol=1e-10, atol=1e-12)
    assert mean.dtype == cov.dtype == np.float64
    assert mean.shape == (6,) and cov.shape == (6, 6)


def test_gaussian_fit_is_unbiased_on_two_points():
    # x = (0, 2): mean 1, sum of squared deviations 2, divided by N - 1 = 1 -> variance 2
    mean, cov = sample_quality.gaussian_fit([[0.0], [2.0]])
    assert mean.tolist() == [1.0] and cov.tolist() == [[2.0]]


def test_gaussian_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_quality.gaussian_fit(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        sample_quality.gaussian_fit(np.zeros(5))
    with pytest.raises(ValueError, match="2-D"):
        sample_quality.gaussian_fit(np.zeros((3, 2, 2)))


# --- trace_sqrt_product / frechet_distance ---


@pytest.mark.parametrize("dim", [2, 5, 16])
@pytest.mark.parametrize("seed", range(3))
def test_trace_sqrt_product_matches_scipy_sqrtm(dim, seed):
    rng = np.random.default_rng(100 * dim + seed)
    cov1, cov2 = _random_spd(rng, dim), _random_spd(rng, dim)
    expected = _sqrtm_trace(cov1, cov2)
    assert sample_quality.trace_sqrt_product(cov1, cov2) == pytest.approx(expected, rel=1e-6)
    # the product is not symmetric, but the trace of its square root is
    assert sample_quality.trace_sqrt_product(cov2, cov1) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dim", [2, 5, 16])
@pytest.mark.parametrize("seed", range(3))
def test_frechet_distance_matches_scipy_sqrtm(dim, seed):
    rng = np.random.default_rng(1000 + 100 * dim + seed)
    cov1, cov2 = _random_spd(rng, dim), _random_spd(rng, dim)
    mean1, mean2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = (
        np.sum((mean1 - mean2) ** 2)
        + np.trace(cov1)
        + np.trace(cov2)
        - 2.0 * _sqrtm_trace(cov1, cov2)
    )
    assert expected > 0.1  # a case far from the clipping at 0
    assert sample_quality.frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(
        expected, rel=1e-6
    )


def test_frechet_distance_of_diagonal_covariances_is_closed_form():
    rng = np.random.default_rng(3)
    s1, s2 = rng.uniform(0.1, 4.0, size=(2, 7))
    mean1, mean2 = rng.normal(size=(2, 7))
    # tr((S1 S2)^{1/2}) = sum sqrt(s1 s2), so the distance is sum (sqrt s1 - sqrt s2)^2 + |dmu|^2
    expected = np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2) + np.sum((mean1 - mean2) ** 2)
    value = sample_quality.frechet_distance(mean1, np.diag(s1), mean2, np.diag(s2))
    assert value == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_with_equal_covariances_is_mean_distance():
    rng = np.random.default_rng(4)
    cov = _random_spd(rng, 12)
    mean1, mean2 = rng.normal(size=(2, 12))
    value = sample_quality.frechet_distance(mean1, cov, mean2, cov)
    assert value == pytest.approx(np.sum((mean1 - mean2) ** 2), abs=1e-9)
    assert sample_quality.frechet_distance(mean1, cov, mean1, cov) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n, dim", [(500, 8), (10, 32)])
def test_fid_of_a_set_with_itself_is_zero(n, dim):
    # (10, 32): N < D, so the covariance has rank 9 of 32; scipy's sqrtm of cov @ cov is
    # inaccurate there (it even returns a complex matrix), while the eigh route stays >= 0 and
    # within round-off of 0
    features = _correlated_features(np.random.default_rng(5), n, dim)
    _, cov = sample_quality.gaussian_fit(features)
    value = sample_quality.fid(features, features)
    assert 0.0 <= value < 1e-6 * np.trace(cov)


def test_trace_sqrt_product_of_singular_covariance_with_itself_is_its_trace():
    features = _correlated_features(np.random.default_rng(6), 10, 32)
    _, cov = sample_quality.gaussian_fit(features)
    assert np.linalg.matrix_rank(cov) == 9
    # (cov cov)^{1/2} = cov for a PSD cov
    assert sample_quality.trace_sqrt_product(cov, cov) == pytest.approx(np.trace(cov), rel=1e-6)


def test_fid_is_symmetric():
    rng = np.random.default_rng(7)
    a = _correlated_features(rng, 300, 10)
    b = _correlated_features(rng, 200, 10)
    forward, backward = sample_quality.fid(a, b), sample_quality.fid(b, a)
    assert forward > 1.0
    assert forward == pytest.approx(backward, rel=1e-8)


def test_fid_grows_with_added_noise():
    rng = np.random.default_rng(8)
    mixing = 0.1 * rng.normal(size=(8, 8))  # feature scale ~0.3, so noise of std 0.1 is visible
    a = rng.normal(size=(5000, 8)) @ mixing
    b = rng.normal(size=(5000, 8)) @ mixing
    values = [
        sample_quality.fid(a, b + std * rng.normal(size=b.shape)) for std in (0.0, 0.1, 0.3, 1.0)
    ]
    assert all(low < high for low, high in zip(values, values[1:])), values
    # same distribution: only sampling error, far below what noise of std 0.1 adds
    assert values[0] < 0.2 * values[1]


def test_fid_grows_with_mean_shift():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(2000, 4))
    b = rng.normal(size=(2000, 4))
    values = [sample_quality.fid(a, b + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert all(low < high for low, high in zip(values, values[1:])), values
    # a shift of s in each of 4 dimensions adds 4 s^2 to the mean term
    assert values[3] == pytest.approx(16.0, rel=0.05)


def test_frechet_distance_rejects_mismatched_shapes():
    cov = np.eye(3)
    with pytest.raises(ValueError, match="same dimension"):
        sample_quality.frechet_distance(np.zeros(3), cov, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="means"):
        sample_quality.frechet_distance(np.zeros(3), cov, np.zeros(4), cov)
    with pytest.raises(ValueError, match="square"):
        sample_quality.frechet_distance(np.zeros(3), np.zeros((3, 2)), np.zeros(3), cov)
    with pytest.raises(ValueError, match="same dimension"):
        sample_quality.fid(np.zeros((5, 3)), np.zeros((5, 4)))


# --- inception_score ---


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = sample_quality.inception_score(np.full((12, 5), 0.2))
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == 0.0


@pytest.mark.parametrize("num_classes", [2, 7, 10])
def test_inception_score_of_confident_balanced_predictions_is_num_classes(num_classes):
    # 3 one-hot rows per class: KL = log C for every row, so the score is C
    probabilities = np.eye(num_classes)[np.repeat(np.arange(num_classes), 3)]
    mean, std = sample_quality.inception_score(probabilities)
    assert mean == pytest.approx(num_classes, rel=1e-12)
    assert std == 0.0


def test_inception_score_of_collapsed_confident_predictions_is_one():
    probabilities = np.tile(np.eye(4)[2], (8, 1))  # every sample confidently class 2
    assert sample_quality.inception_score(probabilities)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_inception_score_matches_double_loop(seed):
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(4, 0.5), size=6)
    probabilities[0] = [0.0, 0.3, 0.0, 0.7]  # exact zeros exercise 0 log 0 = 0
    probabilities[1] = [0.0, 0.0, 1.0, 0.0]
    mean, std = sample_quality.inception_score(probabilities)
    assert mean == pytest.approx(_brute_force_is(probabilities), rel=1e-12)
    assert std == 0.0


def test_inception_score_splits_match_per_part_double_loop():
    probabilities = np.random.default_rng(10).dirichlet(np.full(5, 0.3), size=10)
    parts = [probabilities[:4], probabilities[4:7], probabilities[7:]]  # np.array_split of 10 / 3
    per_part = [_brute_force_is(part) for part in parts]
    mean, std = sample_quality.inception_score(probabilities, splits=3)
    assert mean == pytest.approx(np.mean(per_part), rel=1e-12)
    assert std == pytest.approx(np.std(per_part), rel=1e-9)
    assert std > 0.0


def test_inception_score_of_two_identical_halves():
    half = np.random.default_rng(11).dirichlet(np.full(6, 0.4), size=9)
    both = np.concatenate([half, half])
    one_split = sample_quality.inception_score(both, splits=1)
    mean, std = sample_quality.inception_score(both, splits=2)
    assert std == pytest.approx(0.0, abs=1e-12)
    assert mean == pytest.approx(one_split[0], rel=1e-12)
    assert mean == pytest.approx(sample_quality.inception_score(half)[0], rel=1e-12)


def test_inception_score_rejects_bad_input():
    good = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        sample_quality.inception_score(np.full((4, 2), 0.4))
    with pytest.raises(ValueError, match="2-D"):
        sample_quality.inception_score(np.full(4, 0.25))
    with pytest.raises(ValueError, match="non-negative"):
        sample_quality.inception_score([[1.5, -0.5], [0.5, 0.5]])
    for splits in (0, 5, 1.5):
        with pytest.raises(ValueError, match="splits"):
            sample_quality.inception_score(good, splits=splits)
    # within the 1e-3 tolerance is accepted
    assert sample_quality.inception_score(np.full((4, 2), 0.5004))[0] == pytest.approx(
        1.0, abs=1e-12
    )


# --- mode_coverage ---


def test_mode_coverage_hand_case():
    labels = [0, 3, 0, 0, 3, 0, 3, 0, 3, 0]  # six 0s and four 3s out of 10 classes
    result = sample_quality.mode_coverage(labels, num_classes=10)
    assert result["histogram"] == [6, 0, 0, 4, 0, 0, 0, 0, 0, 0]
    assert result["fractions"] == pytest.approx([0.6, 0, 0, 0.4, 0, 0, 0, 0, 0, 0])
    assert result["classes_covered"] == 2
    assert result["largest_class_fraction"] == pytest.approx(0.6)
    assert result["num_classes"] == 10 and result["min_fraction"] == 0.1


def test_mode_coverage_balanced_and_collapsed():
    balanced = sample_quality.mode_coverage(np.repeat(np.arange(5), 4), num_classes=5)
    assert balanced["classes_covered"] == 5
    assert balanced["largest_class_fraction"] == pytest.approx(0.2)
    collapsed = sample_quality.mode_coverage(np.full(20, 4), num_classes=5)
    assert collapsed["classes_covered"] == 1
    assert collapsed["largest_class_fraction"] == 1.0


def test_mode_coverage_threshold_boundary():
    # N = 100 over 10 classes: a uniform share is 10, a tenth of it is 1 sample
    labels = np.array([0] * 97 + [1] * 2 + [2] * 1)
    assert (
        sample_quality.mode_coverage(labels, 10)["classes_covered"] == 3
    )  # count 1 >= 1: on the boundary
    # min_fraction 0.2 -> threshold 2: class 1 (2 samples) still counts, class 2 (1) does not
    assert sample_quality.mode_coverage(labels, 10, min_fraction=0.2)["classes_covered"] == 2
    # just above 2: only class 0
    assert sample_quality.mode_coverage(labels, 10, min_fraction=0.21)["classes_covered"] == 1


def test_mode_coverage_accepts_integer_valued_floats():
    result = sample_quality.mode_coverage(np.array([1.0, 1.0, 2.0]), num_classes=3)
    assert result["histogram"] == [0, 2, 1]


def test_mode_coverage_rejects_bad_input():
    for labels in ([0, 1, 10], [-1, 0, 1]):
        with pytest.raises(ValueError, match=r"\[0, 10\)"):
            sample_quality.mode_coverage(labels, num_classes=10)
    with pytest.raises(ValueError, match="non-empty"):
        sample_quality.mode_coverage([], num_classes=10)
    with pytest.raises(ValueError, match="integer"):
        sample_quality.mode_coverage([0.5, 1.0], num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        sample_quality.mode_coverage([0], num_classes=0)
    with pytest.raises(ValueError, match="min_fraction"):
        sample_quality.mode_coverage([0], num_classes=2, min_fraction=0.0)
