"""Latent-space tools: grids and samples of codes, interpolation, attribute vectors, PCA, k-NN.

PCA and the neighbour search of k-NN are scikit-learn's.

Codes are arrays [N, D] (D = latent size). Functions whose output feeds the decoder on the device
(:func:`normal_quantile_grid`, :func:`sample_box`, :func:`p_values`) use ``jax.numpy``; the rest
are numpy in float64 on the host. Each docstring says which.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

# slerp falls back to lerp when the angle between z0 and z1 is within this many radians of 0 or
# pi: there sin(angle) ~ 0, and near pi the great circle is not unique
SLERP_MIN_ANGLE = 1e-6


def _require_positive_int(value: int, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _codes(z, name: str = "z") -> np.ndarray:
    """``z`` as float64 [N, D] with N >= 1."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty [N, D] array, got shape {z.shape}: "
            "reshape single codes with z[None]"
        )
    if not np.isfinite(z).all():
        raise ValueError(f"{name} contains NaN or inf: drop those rows first")
    return z


def normal_quantile_grid(n: int) -> jax.Array:
    """An n x n grid of 2-D codes at the (i + 1/2)/n quantiles of N(0, 1) on each axis: [n*n, 2].

    jax.numpy. Row-major like an image of the plane: z2 decreases down the rows (row 0 has the
    largest z2, as a plot's y axis), z1 increases along a row. Decode and reshape to [n, n, ...]
    to tile the decoded images in the same layout.
    """
    n = _require_positive_int(n, "n")
    quantiles = norm.ppf((jnp.arange(n) + 0.5) / n)
    z1, z2 = jnp.meshgrid(quantiles, quantiles[::-1])
    return jnp.stack([z1.ravel(), z2.ravel()], axis=-1)


def box_grid(low, high, n: int) -> np.ndarray:
    """An n x n grid of evenly spaced 2-D codes in the box [low[0], high[0]] x [low[1], high[1]].

    numpy float64, [n*n, 2]. Points sit at the (i + 1/2)/n fractions of each side (cell centres),
    in the layout of :func:`normal_quantile_grid` (z2 decreasing down the rows).
    """
    n = _require_positive_int(n, "n")
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    if low.shape != (2,) or high.shape != (2,):
        raise ValueError(f"low and high must have shape (2,), got {low.shape} and {high.shape}")
    if np.any(low > high):
        raise ValueError(f"low {low} exceeds high {high}: pass the box's lower corner first")
    fractions = (np.arange(n) + 0.5) / n
    z1_values = low[0] + fractions * (high[0] - low[0])
    z2_values = low[1] + fractions * (high[1] - low[1])
    z1, z2 = np.meshgrid(z1_values, z2_values[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=-1)


def bounding_box(z) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (min [D], max [D]) of codes ``z`` [N, D]. numpy float64."""
    z = _codes(z)
    return z.min(axis=0), z.max(axis=0)


def sample_box(key: jax.Array, low, high, n: int) -> jax.Array:
    """``n`` codes drawn uniformly from the box with corners ``low`` [D] and ``high`` [D]: [n, D].

    jax.numpy (jax.random.uniform, default float dtype).
    """
    n = _require_positive_int(n, "n")
    low = jnp.asarray(low, dtype=jnp.result_type(float))
    high = jnp.asarray(high, dtype=low.dtype)
    if low.ndim != 1 or low.shape != high.shape:
        raise ValueError(
            f"low and high must be [D] of equal shape, got {low.shape} and "
            f"{high.shape}: pass the output of bounding_box"
        )
    return jax.random.uniform(key, (n, low.shape[0]), dtype=low.dtype, minval=low, maxval=high)


def p_values(z_mean) -> jax.Array:
    """The standard normal CDF Phi(z) of each coordinate of ``z_mean``, same shape, in [0, 1].

    jax.numpy. Maps codes under the N(0, I) prior to uniform coordinates: z = 0 -> 0.5.
    """
    return norm.cdf(jnp.asarray(z_mean))


def _endpoints(z0, z1, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z0 [D], z1 [D], t [steps]) in float64 after checks; t = linspace(0, 1, steps)."""
    z0 = np.asarray(z0, dtype=np.float64)
    z1 = np.asarray(z1, dtype=np.float64)
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must be [D] of equal shape, got {z0.shape} and {z1.shape}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both endpoints), got {steps!r}")
    return z0, z1, np.linspace(0.0, 1.0, int(steps))


def lerp(z0, z1, steps: int) -> np.ndarray:
    """The straight line from ``z0`` [D] to ``z1`` [D] at ``steps`` evenly spaced t: [steps, D].

    numpy float64. Row 0 is z0 and row -1 is z1 exactly.
    """
    z0, z1, t = _endpoints(z0, z1, steps)
    return (1.0 - t)[:, None] * z0 + t[:, None] * z1


def slerp(z0, z1, steps: int) -> np.ndarray:
    """Spherical interpolation from ``z0`` [D] to ``z1`` [D] at ``steps`` evenly spaced t.

    numpy float64, [steps, D]. The direction moves along the great circle between z0/|z0| and
    z1/|z1| (sin weights, angle from their dot product clipped to [-1, 1]) while the norm goes
    linearly from |z0| to |z1|. Under N(0, I) in many dimensions nearly all mass lies on a thin
    shell of radius ~sqrt(D); a straight line cuts inside it, this path stays on it. Falls back
    to :func:`lerp` when either vector is 0 or the angle is within ``SLERP_MIN_ANGLE`` (1e-6 rad)
    of 0 or pi. Row 0 is z0 and row -1 is z1 exactly.
    """
    z0, z1, t = _endpoints(z0, z1, steps)
    norm0, norm1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if norm0 == 0.0 or norm1 == 0.0:
        return lerp(z0, z1, steps)
    unit0, unit1 = z0 / norm0, z1 / norm1
    angle = np.arccos(np.clip(unit0 @ unit1, -1.0, 1.0))
    if angle < SLERP_MIN_ANGLE or np.pi - angle < SLERP_MIN_ANGLE:
        return lerp(z0, z1, steps)
    weight0 = np.sin((1.0 - t) * angle) / np.sin(angle)
    weight1 = np.sin(t * angle) / np.sin(angle)
    directions = weight0[:, None] * unit0 + weight1[:, None] * unit1
    norms = (1.0 - t) * norm0 + t * norm1
    path = norms[:, None] * directions
    path[0], path[-1] = z0, z1  # exact endpoints, not z / |z| * |z|
    return path


def _mask(mask, n: int, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (n,):
        raise ValueError(f"{name} must be a boolean mask of shape ({n},), got {mask.shape}")
    if mask.dtype != np.bool_:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), not indices: use labels == value")
        mask = mask.astype(bool)
    if not mask.any():
        raise ValueError(f"{name} selects no rows: the attribute needs examples in both groups")
    return mask


def attribute_vector(z, in_a, in_b) -> np.ndarray:
    """mean of ``z`` [N, D] over rows where ``in_a`` [N] minus the mean where ``in_b`` [N]: [D].

    numpy float64. Adding it to a code of group b moves it towards group a (e.g. a = "smiling").
    """
    z = _codes(z)
    in_a = _mask(in_a, z.shape[0], "in_a")
    in_b = _mask(in_b, z.shape[0], "in_b")
    return z[in_a].mean(axis=0) - z[in_b].mean(axis=0)


def add_attribute(z, vector, strengths) -> np.ndarray:
    """``z`` [N, D] + s * ``vector`` [D] for each s in ``strengths`` [S]: [S, N, D].

    numpy float64.
    """
    z = _codes(z)
    vector = np.asarray(vector, dtype=np.float64)
    strengths = np.asarray(strengths, dtype=np.float64)
    if vector.shape != (z.shape[1],):
        raise ValueError(f"vector must have shape ({z.shape[1]},) to match z, got {vector.shape}")
    if strengths.ndim != 1:
        raise ValueError(f"strengths must be 1-D, got shape {strengths.shape}: use np.ravel")
    return z[None, :, :] + strengths[:, None, None] * vector


def ink(images, threshold: float = 0.5) -> np.ndarray:
    """Stroke-thickness proxy: the number of pixels > ``threshold`` per image: [N] int64.

    numpy. ``images`` [N, H, W, C] or [N, H, W] with values in [0, 1]; channels count as pixels.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    return np.sum(images.reshape(images.shape[0], -1) > threshold, axis=1, dtype=np.int64)


def pca_fit(x, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of ``x`` [N, D]: (mean [D], components [k, D], explained_variance [k]).

    numpy float64, from ``sklearn.decomposition.PCA`` (full SVD of the centred data). components
    are orthonormal rows, by decreasing variance; explained_variance are the matching eigenvalues
    of the sample covariance (ddof 1). Signs are fixed here, whatever scikit-learn's version
    does, so that each component's largest-magnitude entry is positive.
    """
    from sklearn.decomposition import PCA

    x = _codes(x, "x")
    k = _require_positive_int(k, "k")
    n, d = x.shape
    if n < 2:
        raise ValueError("pca_fit needs at least 2 rows to estimate a variance")
    if k > min(n, d):
        raise ValueError(f"k = {k} exceeds min(N, D) = {min(n, d)}: ask for fewer components")
    pca = PCA(n_components=k, svd_solver="full").fit(x)
    components = pca.components_
    largest = np.argmax(np.abs(components), axis=1)
    components = components * np.sign(components[np.arange(k), largest])[:, None]
    return pca.mean_, components, pca.explained_variance_


def pca_transform(x, mean, components) -> np.ndarray:
    """Coordinates of ``x`` [N, D] along ``components`` [k, D] about ``mean`` [D]: [N, k].

    numpy float64.
    """
    x = _codes(x, "x")
    mean = np.asarray(mean, dtype=np.float64)
    components = np.asarray(components, dtype=np.float64)
    if mean.shape != (x.shape[1],) or components.ndim != 2 or components.shape[1] != x.shape[1]:
        raise ValueError(
            f"mean {mean.shape} and components {components.shape} do not match "
            f"x {x.shape}: pass the output of pca_fit on data of the same D"
        )
    return (x - mean) @ components.T


def _majority_vote(neighbour_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """The most common class in each row of [B, k] class ids (nearest first): [B].

    Ties go to the tied class whose member is nearest, i.e. comes first in the row.
    """
    batch = neighbour_classes.shape[0]
    flat = (np.arange(batch)[:, None] * n_classes + neighbour_classes).ravel()
    counts = np.bincount(flat, minlength=batch * n_classes).reshape(batch, n_classes)
    is_top = counts == counts.max(axis=1, keepdims=True)
    neighbour_is_top = np.take_along_axis(is_top, neighbour_classes, axis=1)
    first_top = np.argmax(neighbour_is_top, axis=1)
    return neighbour_classes[np.arange(batch), first_top]


def knn_accuracy(
    train_codes, train_labels, test_codes, test_labels, k: int = 5, batch_size: int = 1000
) -> float:
    """Accuracy in [0, 1] of k-nearest-neighbour classification of test codes by train codes.

    numpy float64. ``train_codes`` [M, D] with ``train_labels`` [M], ``test_codes`` [N, D] with
    ``test_labels`` [N] (any integer labels). Each test code gets the majority label of its k
    nearest train codes (Euclidean, found by ``sklearn.neighbors.NearestNeighbors``); a tie in
    the vote goes to the tied label whose neighbour is nearest; neighbours at exactly equal
    distances are taken in no fixed order. (scikit-learn's ``KNeighborsClassifier`` would give
    a tied vote to the smallest label, favouring class 0, so the vote is counted here.) Test
    codes go ``batch_size`` at a time.
    """
    train = _codes(train_codes, "train_codes")
    test = _codes(test_codes, "test_codes")
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    k = _require_positive_int(k, "k")
    batch_size = _require_positive_int(batch_size, "batch_size")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train codes have D = {train.shape[1]} but test codes D = "
            f"{test.shape[1]}: encode both with the same model"
        )
    if train_labels.shape != (train.shape[0],) or test_labels.shape != (test.shape[0],):
        raise ValueError(
            f"labels {train_labels.shape}, {test_labels.shape} do not match codes "
            f"{train.shape}, {test.shape}: pass one label per code"
        )
    if k > train.shape[0]:
        raise ValueError(f"k = {k} exceeds the {train.shape[0]} train codes: use a smaller k")
    from sklearn.neighbors import NearestNeighbors

    classes, train_classes = np.unique(train_labels, return_inverse=True)
    search = NearestNeighbors(n_neighbors=k).fit(train)
    n_correct = 0
    for start in range(0, test.shape[0], batch_size):
        nearest = search.kneighbors(test[start : start + batch_size], return_distance=False)
        predicted = classes[_majority_vote(train_classes[nearest], classes.size)]
        n_correct += int(np.sum(predicted == test_labels[start : start + batch_size]))
    return n_correct / test.shape[0]
