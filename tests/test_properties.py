"""Property-based tests (hypothesis) of the objectives: inequalities and identities that must
hold for every input, not only for hand-picked ones.

Shapes are fixed per test so that JAX compiles each function once, not once per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import special, stats

from vaejax import models, objectives

SETTINGS = settings(max_examples=50, deadline=None)
EPS64 = np.finfo(np.float64).eps


def _floats(low: float, high: float, width: int = 64, allow_subnormal: bool | None = None):
    return st.floats(
        low,
        high,
        allow_nan=False,
        allow_infinity=False,
        width=width,
        allow_subnormal=allow_subnormal,
    )


# --- KL(N(mean, exp(log_var)) || N(0, I)) ---------------------------------------------------

# Rows of [4, 3]; elements are often exactly 0 (the prior's value) or tiny, to probe the minimum.
_KL_SHAPE = (4, 3)
_kl_elements = st.one_of(st.just(0.0), _floats(-1e-3, 1e-3), _floats(-10.0, 10.0))


@SETTINGS
@given(
    mean=arrays(np.float64, _KL_SHAPE, elements=_kl_elements),
    log_var=arrays(np.float64, _KL_SHAPE, elements=_kl_elements),
    zero_row=st.integers(0, _KL_SHAPE[0] - 1),
)
def test_kl_is_nonnegative_and_zero_only_at_the_prior(mean, log_var, zero_row):
    mean[zero_row] = 0.0
    log_var[zero_row] = 0.0
    with jax.enable_x64(True):
        kl = np.asarray(objectives.kl_to_standard_normal(jnp.asarray(mean), jnp.asarray(log_var)))
    assert kl.dtype == np.float64 and kl.shape == (_KL_SHAPE[0],)
    # exactly >= 0: computed as expm1(lv) - lv + m^2, never exp(lv) - 1 - lv, whose rounding
    # goes negative for tiny lv (exp(lv) rounds to 1, leaving -lv)
    assert np.all(kl >= 0.0), kl
    scale = np.sum(np.exp(log_var) + mean**2 + 1.0 + np.abs(log_var), axis=-1)
    assert kl[zero_row] == 0.0
    clear = np.any((np.abs(mean) >= 1e-2) | (np.abs(log_var) >= 1e-2), axis=-1)
    assert np.all(kl[clear] > 0.0), (kl, clear)
    # Each coordinate's term is >= 0, so the sum is at least the largest m^2 / 2 among them.
    assert np.all(kl >= 0.5 * np.max(mean**2, axis=-1) * (1 - 1e-12) - 8 * EPS64 * scale)


def test_kl_is_exactly_zero_at_the_prior_in_float32_too():
    kl = objectives.kl_to_standard_normal(jnp.zeros((2, 5)), jnp.zeros((2, 5)))
    assert kl.dtype == jnp.float32
    np.testing.assert_array_equal(kl, np.zeros(2))


# --- Bernoulli log-likelihood ---------------------------------------------------------------

_IMAGE_SHAPE = (3, 4, 4, 1)


@SETTINGS
@given(
    x=arrays(
        np.float32,
        _IMAGE_SHAPE,
        elements=st.one_of(st.sampled_from([0.0, 1.0]), _floats(0.0, 1.0, width=32)),
    ),
    logits=arrays(
        np.float32,
        _IMAGE_SHAPE,
        elements=st.one_of(
            _floats(-30.0, 30.0, width=32), _floats(-(2.0**100), 2.0**100, width=32)
        ),
    ),
)
def test_bernoulli_log_likelihood_is_nonpositive_on_the_unit_interval(x, logits):
    # x * l - softplus(l) <= 0 for x in [0, 1]: it is linear in x, and at x = 0 and x = 1 it is
    # log(1 - sigmoid(l)) and log(sigmoid(l)). In float32, with grey values and huge logits.
    value = np.asarray(objectives.bernoulli_log_likelihood(jnp.asarray(x), jnp.asarray(logits)))
    assert value.shape == (_IMAGE_SHAPE[0],)
    assert not np.any(np.isnan(value))
    assert np.all(value <= 0.0), value


# --- The reparameterization trick -----------------------------------------------------------

_NUM_DRAWS = 20_000
_LATENT = 3


@jax.jit
def _sample_moments(seed, mean, log_var):
    keys = jax.random.split(jax.random.key(seed), _NUM_DRAWS)
    z = jax.vmap(lambda k: models.reparameterize(k, mean, log_var))(keys)
    return z.mean(0), z.var(0)


@jax.jit
def _reparameterize_jacobians(seed, mean, log_var):
    key = jax.random.key(seed)
    z = models.reparameterize(key, mean, log_var)
    d_mean = jax.jacfwd(lambda m: models.reparameterize(key, m, log_var))(mean)
    d_log_var = jax.jacfwd(lambda v: models.reparameterize(key, mean, v))(log_var)
    return z, d_mean, d_log_var


@SETTINGS
@given(
    mean=arrays(np.float32, _LATENT, elements=_floats(-5.0, 5.0, width=32)),
    log_var=arrays(np.float32, _LATENT, elements=_floats(-4.0, 4.0, width=32)),
    seed=st.integers(0, 2**31 - 1),
)
def test_reparameterized_samples_have_the_moments_of_q(mean, log_var, seed):
    sample_mean, sample_var = map(np.asarray, _sample_moments(seed, mean, log_var))
    var = np.exp(log_var.astype(np.float64))
    n = _NUM_DRAWS
    # 5 standard errors: of the mean, sigma / sqrt(n); of the sample variance,
    # sigma^2 sqrt(2 / (n - 1)).
    np.testing.assert_array_less(np.abs(sample_mean - mean), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(sample_var - var), 5 * var * np.sqrt(2 / (n - 1)))


@SETTINGS
@given(
    mean=arrays(np.float32, _LATENT, elements=_floats(-5.0, 5.0, width=32)),
    log_var=arrays(np.float32, _LATENT, elements=_floats(-4.0, 4.0, width=32)),
    seed=st.integers(0, 2**31 - 1),
)
def test_reparameterized_samples_are_differentiable(mean, log_var, seed):
    z, d_mean, d_log_var = map(np.asarray, _reparameterize_jacobians(seed, mean, log_var))
    np.testing.assert_array_equal(d_mean, np.eye(_LATENT))  # dz/dmean = 1, coordinate-wise
    # dz/dlog_var = exp(log_var / 2) eps / 2 = (z - mean) / 2, diagonal.
    np.testing.assert_allclose(np.diag(d_log_var), 0.5 * (z - mean), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(d_log_var - np.diag(np.diag(d_log_var)), 0.0)


# --- The importance-weighted bound (Burda et al. 2016) --------------------------------------

_BATCH = 4


@SETTINGS
@given(num_samples=st.sampled_from([1, 2, 5, 64]), data=st.data())
def test_iwae_bound_lies_between_the_elbo_and_the_best_weight(num_samples, data):
    log_weights = data.draw(
        arrays(
            np.float64,
            (num_samples, _BATCH),
            elements=st.one_of(_floats(-30.0, 30.0), _floats(-1e4, 1e4)),
        )
    )
    with jax.enable_x64(True):
        bound = np.asarray(objectives.iwae_bound(jnp.asarray(log_weights)))
    assert bound.shape == (_BATCH,) and bound.dtype == np.float64
    elbo = log_weights.mean(0)  # the K-sample ELBO estimate
    top = log_weights.max(0)
    tol = 1e-12 * (1.0 + np.abs(log_weights).max(0))
    assert np.all(bound >= elbo - tol), (bound, elbo)  # Jensen: log mean exp >= mean log
    assert np.all(bound <= top + tol)  # the mean of the w_k is at most the largest
    assert np.all(bound >= top - np.log(num_samples) - tol)  # and at least the largest / K
    want = special.logsumexp(log_weights, axis=0) - np.log(num_samples)  # scipy's, in float64
    np.testing.assert_allclose(bound, want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(
    num_samples=st.sampled_from([1, 2, 5, 64]),
    values=arrays(np.float64, _BATCH, elements=_floats(-1e4, 1e4)),
)
def test_iwae_bound_equals_the_elbo_when_the_weights_are_equal(num_samples, values):
    log_weights = np.broadcast_to(values, (num_samples, _BATCH))
    with jax.enable_x64(True):
        bound = np.asarray(objectives.iwae_bound(jnp.asarray(log_weights)))
    np.testing.assert_allclose(bound, values, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(bound, log_weights.mean(0), rtol=1e-13, atol=1e-12)


@SETTINGS
# No subnormals: XLA on CPU flushes them to zero (1e-45 comes back as 0.0).
@given(
    log_weights=arrays(
        np.float32, (1, _BATCH), elements=_floats(-1e4, 1e4, width=32, allow_subnormal=False)
    )
)
def test_iwae_bound_with_one_sample_is_the_log_weight(log_weights):
    bound = objectives.iwae_bound(jnp.asarray(log_weights))
    assert bound.dtype == jnp.float32
    np.testing.assert_array_equal(bound, log_weights[0])


def test_iwae_bound_is_stable_where_the_weights_underflow():
    # exp(-5000) is 0 in any float: a naive log(mean(exp)) gives -inf; logsumexp does not.
    log_weights = jnp.full((1000, 2), -5000.0).at[0, 1].set(-4990.0)
    bound = np.asarray(objectives.iwae_bound(log_weights))
    assert bound.dtype == np.float32
    np.testing.assert_allclose(bound[0], -5000.0, rtol=1e-6)
    want = -4990.0 + np.log1p(999 * np.exp(-10.0)) - np.log(1000)
    np.testing.assert_allclose(bound[1], want, rtol=1e-6)


def test_log_importance_weights_of_a_vae_average_to_the_elbo():
    # q(z|x) is N(mean, exp(log_var)); E_q[log p(z) - log q(z|x)] = -KL, so with the same z the
    # log weights minus the single-sample ELBO terms (analytic KL) average to 0 over z ~ q.
    model = models.mlp_vae(4, (32,), (28, 28, 1))
    x = jnp.asarray(np.random.default_rng(0).random((3, 28, 28, 1)) < 0.3, jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), x, jax.random.key(1))["params"]  # compiled once
    keys = jax.random.split(jax.random.key(2), 4000)

    def one_sample(key):
        logits, mean, log_var = model.apply({"params": params}, x, key)
        z = models.reparameterize(key, mean, log_var)  # the z the model decoded
        terms = objectives.negative_elbo(x, logits, mean, log_var)
        log_w = objectives.log_importance_weights(x, logits, z, mean, log_var)
        decoded = model.apply({"params": params}, z, method="decode")
        return log_w, terms["negative_elbo"], z, logits, decoded, mean, log_var

    log_w, nelbo, z, logits, decoded, mean, log_var = map(
        np.asarray, jax.jit(jax.vmap(one_sample))(keys)
    )
    np.testing.assert_allclose(decoded, logits, rtol=1e-5, atol=1e-5)  # same z as in the model
    mean, log_var = mean[0], log_var[0]

    # The densities, against scipy, in float64: log w = log p(x|z) + log N(z; 0, I) - log q(z|x).
    log_px = -nelbo + np.asarray(objectives.kl_to_standard_normal(mean, log_var))
    want = (
        log_px
        + stats.norm.logpdf(z).sum(-1)
        - stats.norm.logpdf(z, mean, np.exp(0.5 * log_var.astype(np.float64))).sum(-1)
    )
    np.testing.assert_allclose(log_w, want, rtol=1e-5, atol=1e-3)

    # The mean log weight estimates -negative_elbo: paired on the same z, log p(x|z) cancels
    # and the standard error is that of log p(z) - log q(z|x) alone.
    difference = log_w + nelbo  # [K, B], = log p(z) - log q(z|x) + KL: mean 0
    standard_error = difference.std(0, ddof=1) / np.sqrt(len(keys))
    assert np.all(standard_error > 0)
    np.testing.assert_array_less(np.abs(difference.mean(0)), 5 * standard_error)
    # The IWAE bound over these K samples is above their ELBO estimate, by Jensen.
    assert np.all(np.asarray(objectives.iwae_bound(jnp.asarray(log_w))) >= log_w.mean(0))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_importance_weights_at_the_prior(likelihood):
    # With q = N(0, I) the Gaussian terms cancel exactly: log w = log p(x | z).
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((2, 5, 5, 1)), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(2, 5, 5, 1)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    zeros = jnp.zeros((2, 3))
    got = objectives.log_importance_weights(x, logits, z, zeros, zeros, likelihood, variance=0.3)
    np.testing.assert_allclose(
        got, objectives.log_likelihood(x, logits, likelihood, 0.3), rtol=1e-6
    )
