"""Latent-space tools against hand-made cases, closed forms and brute-force references."""

from __future__ import annotations

from statistics import NormalDist

import jax
import numpy as np
import pytest

from vaejax.evaluation import latent


def test_p_values():
    assert float(latent.p_values(0.0)) == 0.5
    assert float(latent.p_values(1.959964)) == pytest.approx(0.975, abs=1e-6)
    assert float(latent.p_values(-1.959964)) == pytest.approx(0.025, abs=1e-6)
    codes = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, -3.0]])
    values = np.asarray(latent.p_values(codes))
    assert values.shape == codes.shape
    np.testing.assert_allclose(values, np.vectorize(NormalDist().cdf)(codes), atol=1e-6)


def test_normal_quantile_grid_layout():
    n = 5
    grid = np.asarray(latent.normal_quantile_grid(n))
    assert grid.shape == (n * n, 2)
    quantiles = [NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)]
    rows = grid.reshape(n, n, 2)
    # z1 increases along every row; z2 is constant along a row and decreases down the rows
    for row in rows:
        np.testing.assert_allclose(row[:, 0], quantiles, atol=1e-5)
    np.testing.assert_allclose(
        rows[:, :, 1], np.repeat(quantiles[::-1], n).reshape(n, n), atol=1e-5
    )
    assert rows[0, 0, 1] == grid[:, 1].max()
    np.testing.assert_allclose(rows[n // 2, n // 2], [0.0, 0.0], atol=1e-6)


def test_box_grid_cell_centres():
    grid = latent.box_grid([0.0, -1.0], [4.0, 1.0], 4)
    assert grid.shape == (16, 2)
    # cells are 1 wide in z1 and 0.5 tall in z2: the top-left centre is (0.5, 0.75)
    np.testing.assert_allclose(grid[0], [0.5, 0.75], atol=1e-12)
    np.testing.assert_allclose(grid[3], [3.5, 0.75], atol=1e-12)
    np.testing.assert_allclose(grid[-1], [3.5, -0.75], atol=1e-12)
    np.testing.assert_allclose(np.unique(grid[:, 0]), [0.5, 1.5, 2.5, 3.5], atol=1e-12)
    np.testing.assert_allclose(np.unique(grid[:, 1]), [-0.75, -0.25, 0.25, 0.75], atol=1e-12)
    with pytest.raises(ValueError, match="lower corner"):
        latent.box_grid([1.0, 0.0], [0.0, 1.0], 3)


def test_bounding_box():
    low, high = latent.bounding_box([[1.0, -2.0, 5.0], [0.0, 3.0, 5.0], [2.0, 0.0, 5.0]])
    np.testing.assert_array_equal(low, [0.0, -2.0, 5.0])
    np.testing.assert_array_equal(high, [2.0, 3.0, 5.0])


def test_sample_box_within_bounds_and_uniform():
    low, high = np.array([-1.0, 2.0, 10.0]), np.array([1.0, 3.0, 20.0])
    n = 20_000
    samples = np.asarray(latent.sample_box(jax.random.key(0), low, high, n))
    assert samples.shape == (n, 3)
    assert np.all(samples >= low) and np.all(samples <= high)
    # the mean of n uniforms has standard deviation width / sqrt(12 n)
    tolerance = 5 * (high - low) / np.sqrt(12 * n)
    assert np.all(np.abs(samples.mean(axis=0) - (low + high) / 2) < tolerance)
    np.testing.assert_allclose(samples.var(axis=0), (high - low) ** 2 / 12, rtol=0.05)


def test_lerp():
    z0, z1 = np.array([1.0, -2.0, 0.5]), np.array([3.0, 4.0, -0.5])
    path = latent.lerp(z0, z1, 5)
    assert path.shape == (5, 3)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)
    np.testing.assert_allclose(path[2], (z0 + z1) / 2, atol=1e-12)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((z1 - z0) / 4, (4, 1)), atol=1e-12)


def test_slerp_of_orthogonal_unit_vectors():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    path = latent.slerp(a, b, 9)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.ones(9), atol=1e-12)
    np.testing.assert_allclose(path[4], (a + b) / np.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    # constant angular speed: a quarter turn in 8 equal steps
    np.testing.assert_allclose(
        np.arctan2(path[:, 1], path[:, 0]), np.linspace(0, np.pi / 2, 9), atol=1e-12
    )


def test_slerp_general_endpoints_norms_and_angles():
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(size=16), 2.0 * rng.normal(size=16)
    path = latent.slerp(z0, z1, 11)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    # the norm goes linearly from |z0| to |z1|
    np.testing.assert_allclose(
        np.linalg.norm(path, axis=1),
        np.linspace(np.linalg.norm(z0), np.linalg.norm(z1), 11),
        rtol=1e-12,
    )
    # and the direction turns by equal angles in the plane of z0 and z1
    units = path / np.linalg.norm(path, axis=1, keepdims=True)
    step_angles = np.arccos(np.clip(np.sum(units[1:] * units[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(step_angles, np.full(10, step_angles.mean()), rtol=1e-6)
    total = np.arccos(units[0] @ units[-1])
    assert step_angles.sum() == pytest.approx(total, rel=1e-6)


@pytest.mark.parametrize("z1_of_z0", [lambda z: 3.0 * z, lambda z: -2.0 * z, lambda z: 0 * z])
def test_slerp_falls_back_to_lerp(z1_of_z0):
    z0 = np.array([0.5, -1.0, 2.0])
    z1 = z1_of_z0(z0)
    np.testing.assert_allclose(latent.slerp(z0, z1, 7), latent.lerp(z0, z1, 7), atol=1e-12)


def test_interpolation_rejects_bad_input():
    with pytest.raises(ValueError, match="steps"):
        latent.lerp([0.0, 1.0], [1.0, 0.0], 1)
    with pytest.raises(ValueError, match="equal shape"):
        latent.slerp([0.0, 1.0], [1.0, 0.0, 0.0], 5)


def test_attribute_vector():
    z = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0], [20.0, 30.0], [99.0, 99.0]])
    in_a = np.array([True, True, False, False, False])
    in_b = np.array([False, False, True, True, False])
    # mean a = (2, 3), mean b = (15, 20); row 4 is in neither group
    np.testing.assert_allclose(latent.attribute_vector(z, in_a, in_b), [-13.0, -17.0])
    np.testing.assert_allclose(latent.attribute_vector(z, in_a.astype(int), in_b), [-13.0, -17.0])
    with pytest.raises(ValueError, match="selects no rows"):
        latent.attribute_vector(z, in_a, np.zeros(5, bool))
    with pytest.raises(ValueError, match="shape"):
        latent.attribute_vector(z, [0, 1], in_b)


def test_attribute_vector_recovers_a_planted_offset():
    rng = np.random.default_rng(0)
    offset = np.array([0.5, -1.0, 2.0])
    base = rng.normal(size=(50, 3))
    z = np.concatenate([base + offset, base])  # the same points, shifted, in group a
    in_a = np.arange(100) < 50
    np.testing.assert_allclose(latent.attribute_vector(z, in_a, ~in_a), offset, atol=1e-12)


def test_add_attribute():
    z = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    vector = np.array([1.0, -1.0])
    moved = latent.add_attribute(z, vector, [-1.0, 0.0, 2.5])
    assert moved.shape == (3, 3, 2)
    np.testing.assert_array_equal(moved[1], z)
    np.testing.assert_array_equal(moved[0], z - vector)
    np.testing.assert_array_equal(moved[2], z + [2.5, -2.5])
    with pytest.raises(ValueError, match="shape"):
        latent.add_attribute(z, [1.0, 2.0, 3.0], [1.0])


def test_ink_counts_pixels_above_threshold():
    images = np.zeros((3, 3, 3))
    images[0, 1, :] = 1.0  # a horizontal stroke: 3 pixels
    images[1] = 0.9  # a full image: 9 pixels
    images[2, 0, 0] = 0.5  # exactly at the threshold: not counted
    images[2, 2, 2] = 0.51
    np.testing.assert_array_equal(latent.ink(images), [3, 9, 1])
    np.testing.assert_array_equal(latent.ink(images[..., None]), [3, 9, 1])
    np.testing.assert_array_equal(latent.ink(images, threshold=0.95), [3, 0, 0])
    with pytest.raises(ValueError, match="N, H, W"):
        latent.ink(np.zeros((3, 3)))


def test_pca_recovers_rank_one_direction():
    rng = np.random.default_rng(0)
    direction = np.array([1.0, -3.0, 2.0]) / np.sqrt(14)
    x = rng.normal(size=(500, 1)) * 4.0 * direction + 1e-6 * rng.normal(size=(500, 3)) + 7.0
    mean, components, variance = latent.pca_fit(x, 1)
    # the sign convention makes the largest-magnitude entry (-3) positive
    np.testing.assert_allclose(components[0], -direction, atol=1e-6)
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-12)
    assert variance[0] == pytest.approx(np.var(x @ direction, ddof=1), rel=1e-6)


def test_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    mean, components, variance = latent.pca_fit(x, 5)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))
    np.testing.assert_allclose(variance, eigenvalues[::-1], rtol=1e-8)
    np.testing.assert_allclose(components @ components.T, np.eye(5), atol=1e-12)
    # the same directions as the eigenvectors, up to sign
    np.testing.assert_allclose(np.abs(components @ eigenvectors[:, ::-1]), np.eye(5), atol=1e-8)
    largest = np.argmax(np.abs(components), axis=1)
    assert np.all(components[np.arange(5), largest] > 0)
    # deterministic signs: -x has the same components
    np.testing.assert_allclose(latent.pca_fit(-x, 5)[1], components, atol=1e-10)


def test_pca_transform():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 4)) * [3.0, 2.0, 1.0, 0.5]
    mean, components, variance = latent.pca_fit(x, 2)
    np.testing.assert_allclose(
        latent.pca_transform(mean[None], mean, components), [[0.0, 0.0]], atol=1e-12
    )
    projected = latent.pca_transform(x, mean, components)
    assert projected.shape == (100, 2)
    np.testing.assert_allclose(projected.var(axis=0, ddof=1), variance, rtol=1e-10)
    with pytest.raises(ValueError, match="k = 5"):
        latent.pca_fit(x[:, :4], 5)


def _brute_force_knn_predictions(train, train_labels, test, k):
    """Per test point: sort all train points by distance, vote among the first k, ties to the
    tied label that appears first."""
    distances = np.linalg.norm(test[:, None, :] - train[None, :, :], axis=-1)
    predictions = []
    for row in distances:
        neighbour_labels = train_labels[np.argsort(row, kind="stable")[:k]]
        labels, counts = np.unique(neighbour_labels, return_counts=True)
        tied = set(labels[counts == counts.max()].tolist())
        predictions.append(next(label for label in neighbour_labels if label in tied))
    return np.array(predictions)


def _overlapping_clusters(seed, n_train, n_test, dim=3, labels=(3, 7, 11, 20)):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(labels), dim))
    train_labels = rng.choice(labels, n_train)
    test_labels = rng.choice(labels, n_test)

    def codes(label_array):
        return centres[np.searchsorted(labels, label_array)] + rng.normal(
            size=(label_array.size, dim)
        )

    return codes(train_labels), np.asarray(train_labels), codes(test_labels), test_labels


# 2000 train codes form 32 candidate groups: k < 32 takes the group search, k = 40 the full one
@pytest.mark.parametrize("k", [1, 2, 4, 5, 10, 40])
def test_knn_matches_brute_force(k):
    train, train_labels, test, test_labels = _overlapping_clusters(k, 2000, 300)
    expected = _brute_force_knn_predictions(train, train_labels, test, k)
    # labelling the test set with the reference's predictions makes any disagreement visible
    assert latent.knn_accuracy(train, train_labels, test, expected, k=k, batch_size=64) == 1.0
    accuracy = latent.knn_accuracy(train, train_labels, test, test_labels, k=k, batch_size=64)
    assert accuracy == pytest.approx(np.mean(expected == test_labels), abs=1e-15)
    assert 0.3 < accuracy < 0.95  # the clusters overlap: the case is not trivial


@pytest.mark.parametrize("n_train", [7, 64, 65, 130])
def test_knn_small_and_ragged_train_sets(n_train):
    train, train_labels, test, _ = _overlapping_clusters(0, n_train, 50)
    for k in sorted({1, 3, n_train}):
        expected = _brute_force_knn_predictions(train, train_labels, test, k)
        assert latent.knn_accuracy(train, train_labels, test, expected, k=k, batch_size=16) == 1.0


def test_knn_perfect_on_separated_clusters():
    rng = np.random.default_rng(3)
    centres = 100.0 * np.eye(5)
    train_labels, test_labels = rng.integers(0, 5, 1000), rng.integers(0, 5, 200)
    train = centres[train_labels] + rng.normal(size=(1000, 5))
    test = centres[test_labels] + rng.normal(size=(200, 5))
    assert latent.knn_accuracy(train, train_labels, test, test_labels, k=5) == 1.0
    assert latent.knn_accuracy(train, train_labels, test, (test_labels + 1) % 5, k=5) == 0.0


def test_knn_one_neighbour_on_its_own_training_set():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(3000, 2))
    labels = rng.integers(0, 10, 3000)  # random labels: only the point itself predicts them
    assert latent.knn_accuracy(train, labels, train, labels, k=1, batch_size=500) == 1.0


def test_knn_rejects_bad_input():
    train, labels = np.zeros((10, 2)), np.zeros(10, int)
    with pytest.raises(ValueError, match="k = 11"):
        latent.knn_accuracy(train, labels, train, labels, k=11)
    with pytest.raises(ValueError, match="k must"):
        latent.knn_accuracy(train, labels, train, labels, k=0)
    with pytest.raises(ValueError, match="same model"):
        latent.knn_accuracy(train, labels, np.zeros((3, 4)), labels[:3])
    with pytest.raises(ValueError, match="one label per code"):
        latent.knn_accuracy(train, labels[:5], train, labels)
    with pytest.raises(ValueError, match="NaN"):
        latent.knn_accuracy(np.full((10, 2), np.nan), labels, train, labels)
