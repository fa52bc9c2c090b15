"""Objectives against closed forms, brute-force references and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import models, objectives


def _kl_by_quadrature(mean: float, log_var: float) -> float:
    """KL(N(m, s^2) || N(0, 1)) = integral of q log(q / p), on a fine grid."""
    s = np.exp(0.5 * log_var)
    z = np.linspace(mean - 12 * s, mean + 12 * s, 200_001)
    log_q = -0.5 * ((z - mean) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    log_p = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
    return float(np.trapezoid(np.exp(log_q) * (log_q - log_p), z))


def test_kl_matches_quadrature():
    means = np.array([[0.0, 1.5, -2.0], [0.3, 0.0, 0.7]])
    log_vars = np.array([[0.0, -1.0, 0.8], [-3.0, 1.2, 0.0]])
    got = np.asarray(objectives.kl_to_standard_normal(jnp.asarray(means), jnp.asarray(log_vars)))
    want = [sum(_kl_by_quadrature(m, v) for m, v in zip(mr, vr)) for mr, vr in zip(means, log_vars)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(objectives.kl_to_standard_normal(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


def test_bernoulli_log_likelihood_matches_the_naive_formula():
    key1, key2 = jax.random.split(jax.random.key(0))
    logits = 4 * jax.random.normal(key1, (3, 28, 28, 1))
    x = jax.random.uniform(key2, (3, 28, 28, 1))
    p = np.asarray(jax.nn.sigmoid(logits), np.float64)
    xn = np.asarray(x, np.float64)
    naive = (xn * np.log(p) + (1 - xn) * np.log1p(-p)).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(
        objectives.bernoulli_log_likelihood(x, logits), naive, rtol=1e-4
    )  # float32 sums


def test_bernoulli_log_likelihood_is_stable_for_extreme_logits():
    logits = jnp.array([[100.0, -100.0, 100.0, -100.0]])
    x = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    value = float(objectives.bernoulli_log_likelihood(x, logits)[0])
    assert value == pytest.approx(-200.0, rel=1e-6)  # the two wrong pixels cost 100 nats each
    grad = jax.grad(lambda z: objectives.bernoulli_log_likelihood(x, z).sum())(logits)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0.0, 0.0, -1.0, 1.0]], atol=1e-6)


def test_gaussian_log_likelihood_matches_the_density():
    rng = np.random.default_rng(0)
    x, mean = rng.random((2, 6)), rng.random((2, 6))
    for variance in (1.0, 0.05):
        density = np.exp(-((x - mean) ** 2) / (2 * variance)) / np.sqrt(2 * np.pi * variance)
        got = objectives.gaussian_log_likelihood(jnp.asarray(x), jnp.asarray(mean), variance)
        np.testing.assert_allclose(got, np.log(density.prod(-1)), rtol=1e-5)
    logits = jnp.asarray(rng.normal(size=(2, 6)))
    via_logits = objectives.log_likelihood(jnp.asarray(x), logits, "gaussian", 0.5)
    direct = objectives.gaussian_log_likelihood(jnp.asarray(x), jax.nn.sigmoid(logits), 0.5)
    np.testing.assert_allclose(via_logits, direct, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown likelihood"):
        objectives.log_likelihood(jnp.asarray(x), logits, "poisson")


def test_reparameterize_moments_and_gradients():
    mean = jnp.array([1.0, -2.0, 0.5])
    log_var = jnp.array([0.0, -1.0, 1.5])
    keys = jax.random.split(jax.random.key(7), 200_000)
    z = jax.vmap(lambda k: models.reparameterize(k, mean, log_var))(keys)
    np.testing.assert_allclose(z.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(z.var(0), jnp.exp(log_var), rtol=0.01)
    key = jax.random.key(3)
    eps = jax.random.normal(key, mean.shape)
    d_mean = jax.grad(lambda m: models.reparameterize(key, m, log_var).sum())(mean)
    d_log_var = jax.grad(lambda v: models.reparameterize(key, mean, v).sum())(log_var)
    np.testing.assert_allclose(d_mean, jnp.ones(3))
    np.testing.assert_allclose(d_log_var, 0.5 * jnp.exp(0.5 * log_var) * eps, rtol=1e-6)


def test_negative_elbo_terms_and_beta():
    key = jax.random.key(0)
    x = jax.random.bernoulli(key, 0.3, (4, 28, 28, 1)).astype(jnp.float32)
    logits = jax.random.normal(key, (4, 28, 28, 1))
    mean, log_var = jnp.ones((4, 5)), -jnp.ones((4, 5))
    terms = objectives.negative_elbo(x, logits, mean, log_var)
    np.testing.assert_allclose(
        terms["reconstruction"], -objectives.bernoulli_log_likelihood(x, logits)
    )
    np.testing.assert_allclose(terms["kl"], objectives.kl_to_standard_normal(mean, log_var))
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + terms["kl"], rtol=1e-6)
    np.testing.assert_allclose(terms["negative_elbo"], terms["loss"], rtol=1e-6)
    weighted = objectives.negative_elbo(x, logits, mean, log_var, beta=0.25)
    np.testing.assert_allclose(
        weighted["loss"], terms["reconstruction"] + 0.25 * terms["kl"], rtol=1e-6
    )
    np.testing.assert_allclose(weighted["negative_elbo"], terms["negative_elbo"], rtol=1e-6)


def test_foster_loss_is_a_scaled_beta_elbo():
    """500 * mean-over-pixels BCE + summed KL == (500 / 1024) * -ELBO with beta = 1024 / 500."""
    key1, key2, key3 = jax.random.split(jax.random.key(1), 3)
    x = jax.random.uniform(key1, (6, 32, 32, 1))
    logits = jax.random.normal(key2, (6, 32, 32, 1))
    mean, log_var = jax.random.normal(key3, (2, 6, 2))
    probs = np.asarray(jax.nn.sigmoid(logits), np.float64)
    xn = np.asarray(x, np.float64)
    bce = -(xn * np.log(probs) + (1 - xn) * np.log1p(-probs))
    kl = np.asarray(objectives.kl_to_standard_normal(mean, log_var), np.float64)
    foster = 500 * bce.reshape(6, -1).mean(-1) + kl
    ours = objectives.negative_elbo(x, logits, mean, log_var, beta=objectives.foster_beta(1024))
    assert objectives.foster_beta(1024) == pytest.approx(2.048)
    np.testing.assert_allclose(500 / 1024 * np.asarray(ours["loss"]), foster, rtol=1e-5)


def test_reconstruction_losses():
    key = jax.random.key(2)
    x = jax.random.uniform(key, (3, 4, 4, 1))
    logits = jax.random.normal(jax.random.key(3), (3, 4, 4, 1))
    np.testing.assert_allclose(
        objectives.reconstruction_loss(x, logits, "bce"),
        -objectives.bernoulli_log_likelihood(x, logits),
    )
    se = ((np.asarray(x) - np.asarray(jax.nn.sigmoid(logits))) ** 2).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(objectives.reconstruction_loss(x, logits, "mse"), se, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        objectives.reconstruction_loss(x, logits, "l1")


def test_vae_loss_gradient_matches_finite_differences():
    """Directional derivatives of the batch loss (float64): autodiff vs central differences
    (``jax.test_util.check_grads``: random directions, reverse mode)."""
    from jax.test_util import check_grads

    model = models.mlp_vae(latent_dim=3, hidden_dims=(16,), image_shape=(4, 4, 1))
    with jax.enable_x64(True):
        key = jax.random.key(0)
        x = jax.random.uniform(key, (8, 4, 4, 1), jnp.float64)
        params = jax.tree_util.tree_map(
            lambda p: p.astype(jnp.float64), jax.jit(model.init)(key, x, key)["params"]
        )
        loss_fn = objectives.batch_mean(objectives.vae_per_example(model))
        loss = jax.jit(lambda p: loss_fn(p, x, jax.random.key(5))[0])  # op by op: 20 s
        grads = jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params))
        assert np.sqrt(sum(float(jnp.sum(g**2)) for g in grads)) > 1e-2  # not flat
        check_grads(loss, (params,), order=1, modes=["rev"], eps=1e-5, atol=1e-8, rtol=1e-6)


def test_batch_mean_averages_every_term():
    per_example = lambda params, x, key: {"loss": params * x, "other": x}
    loss, metrics = objectives.batch_mean(per_example)(2.0, jnp.array([1.0, 2.0, 6.0]), None)
    assert float(loss) == 6.0
    assert metrics == {"loss": loss, "other": pytest.approx(3.0)}


def test_bits_per_dim_of_binarized_and_of_dequantized_8_bit_images():
    nats = jnp.array([100.0, 200.0])
    per_example = lambda params, x, key: {"negative_elbo": nats, "loss": nats}
    binarized = objectives.with_bits_per_dim(per_example, 784, dequantized=False)
    np.testing.assert_allclose(
        binarized(None, None, None)["bits_per_dim"], nats / (784 * np.log(2))
    )
    eight_bit = objectives.with_bits_per_dim(per_example, 784, dequantized=True)
    # a uniform density on [0, 1)^D (0 nats) is 8 bits per dimension for the discrete image
    uniform = objectives.with_bits_per_dim(
        lambda p, x, k: {"negative_elbo": jnp.zeros(1)}, 784, dequantized=True
    )
    np.testing.assert_allclose(uniform(None, None, None)["bits_per_dim"], [8.0], rtol=1e-6)
    np.testing.assert_allclose(
        eight_bit(None, None, None)["bits_per_dim"], 8.0 + nats / (784 * np.log(2)), rtol=1e-6
    )
    iwae = objectives.with_bits_per_dim(
        lambda p, x, k: {"negative_elbo": nats, "negative_iwae_bound": nats - 10}, 10, False
    )
    np.testing.assert_allclose(
        iwae(None, None, None)["bits_per_dim"], (nats - 10) / (10 * np.log(2)), rtol=1e-6
    )


def test_dequantization_fills_each_bin_uniformly():
    from vaejax import data

    images = jnp.array([0, 17, 255], jnp.uint8).repeat(20000).reshape(3, 20000)
    x = data.preprocess.dequantize(jax.random.key(0), images)
    for value, row in zip((0, 17, 255), np.asarray(x)):
        assert row.min() >= value / 256 and row.max() < (value + 1) / 256
        assert abs(row.mean() - (value + 0.5) / 256) < 1e-4  # uniform within the bin
