"""The GAN pieces: layouts, batch normalization, the losses and their gradients, the gradient
penalty against known gradient norms, and the two-player update (slicing, 8 devices = 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.helpers import run_on_devices
from vaejax import models, objectives, training
from vaejax.training import gan as gan_training
from vaejax.training.ema import EMAState, with_ema


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize(
    "size, expected",
    [
        (28, (7, 2)),
        (32, (4, 3)),
        (64, (4, 4)),
        (8, (4, 1)),
        (14, (7, 1)),
        (56, (7, 3)),
        (128, (4, 5)),
    ],
)
def test_layout(size, expected):
    assert models.layout(size) == expected


@pytest.mark.parametrize("size", [27, 30, 48, 4, 7, 0])
def test_layout_rejects_other_sizes(size):
    with pytest.raises(ValueError, match=r"is not 7 \* 2\^k"):
        models.layout(size)


@pytest.mark.parametrize("size, channels, critic", [(28, 1, False), (32, 3, True)])
def test_shapes_and_ranges(size, channels, critic):
    model = models.dcgan(size, channels, width=8, noise_dim=16, critic=critic)
    params = model.init(jax.random.key(0))
    generate, critic_of = jax.jit(model.generate), jax.jit(model.critic)  # one compile each
    images = generate(params["generator"], jax.random.normal(jax.random.key(1), (5, 16)))
    assert images.shape == (5, size, size, channels)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    assert critic_of(params["discriminator"], images).shape == (5,)
    samples = jax.jit(model.sample, static_argnums=2)(params["generator"], jax.random.key(2), 4)
    assert samples.shape == (4, size, size, channels)
    assert 0.0 <= float(samples.min()) and float(samples.max()) <= 1.0
    has_norm = any("BatchNorm" in k for k in params["discriminator"])
    assert has_norm is not critic


def test_batch_norm_uses_the_batch_statistics_per_channel():
    x = jax.random.normal(jax.random.key(0), (6, 3, 4, 2)) * jnp.array([2.0, 0.5]) + 3.0
    norm = models.BatchNorm()
    params = norm.init(jax.random.key(1), x)
    params = jax.tree_util.tree_map(jnp.ones_like, params)  # scale 1, shift 1
    y = np.asarray(norm.apply(params, x))
    xs = np.asarray(x)
    expected = (xs - xs.mean(axis=(0, 1, 2))) / np.sqrt(xs.var(axis=(0, 1, 2)) + 1e-5) + 1.0
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_bce_losses_against_their_definitions():
    real = np.array([2.0, -1.0, 0.3])
    fake = np.array([-3.0, 0.5])
    d_real, d_fake = _sigmoid(real), _sigmoid(fake)
    expected = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
    assert float(objectives.discriminator_bce(jnp.array(real), jnp.array(fake))) == pytest.approx(
        expected, rel=1e-6
    )
    assert float(objectives.generator_non_saturating(jnp.array(fake))) == pytest.approx(
        -np.mean(np.log(d_fake)), rel=1e-6
    )
    assert float(objectives.generator_minimax(jnp.array(fake))) == pytest.approx(
        np.mean(np.log(1 - d_fake)), rel=1e-6
    )


def test_minimax_gradient_vanishes_where_the_discriminator_rejects_the_fakes():
    """At logit -10 (D(G(z)) = 4.5e-5) the minimax loss's gradient is -sigmoid(-10), the
    non-saturating loss's -(1 - sigmoid(-10)): a factor of 22,000 apart."""
    logits = jnp.full((4,), -10.0)
    minimax = jax.grad(objectives.generator_minimax)(logits)
    saturating = jax.grad(objectives.generator_non_saturating)(logits)
    np.testing.assert_allclose(minimax, -_sigmoid(-10.0) / 4, rtol=1e-5)
    np.testing.assert_allclose(saturating, -(1 - _sigmoid(-10.0)) / 4, rtol=1e-5)
    assert float(jnp.abs(saturating[0] / minimax[0])) > 2e4
    # both push the logit up: the same fixed point, different strength
    assert float(minimax[0]) < 0 and float(saturating[0]) < 0


def test_interpolates_lie_on_the_segments():
    real, fake = jnp.ones((500, 2, 2, 1)), jnp.zeros((500, 2, 2, 1))
    x_hat = np.asarray(objectives.interpolates(jax.random.key(0), real, fake))
    u = x_hat[:, 0, 0, 0]
    assert np.all(x_hat == u[:, None, None, None])  # one u per image
    assert 0.0 <= u.min() and u.max() <= 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.05) and u.std() == pytest.approx(
        np.sqrt(1 / 12), abs=0.03
    )


def test_gradient_penalty_of_a_linear_critic_is_known():
    """f(x) = <w, x> has gradient w everywhere: every norm is ||w||, the penalty (||w|| - 1)^2,
    and its gradient with respect to w (through jax.grad twice) 2 (||w|| - 1) w / ||w||."""
    w = jax.random.normal(jax.random.key(0), (3, 3, 1)) * 0.7
    x_hat = jax.random.normal(jax.random.key(1), (5, 3, 3, 1))
    critic = lambda w: lambda x: jnp.sum(x * w, axis=(1, 2, 3))
    penalty, norms = objectives.gradient_penalty(critic(w), x_hat)
    norm_w = float(jnp.linalg.norm(w))
    np.testing.assert_allclose(norms, np.full(5, norm_w), rtol=1e-5)
    assert float(penalty) == pytest.approx((norm_w - 1) ** 2, rel=1e-5)
    grad = jax.grad(lambda w: objectives.gradient_penalty(critic(w), x_hat)[0])(w)
    np.testing.assert_allclose(grad, 2 * (norm_w - 1) * w / norm_w, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_of_a_quadratic_critic_uses_each_images_own_gradient():
    """f(x) = ||x||^2 / 2 has gradient x: the norms are the images' own norms."""
    x_hat = (
        jax.random.normal(jax.random.key(2), (4, 2, 2, 1))
        * jnp.arange(1.0, 5.0)[:, None, None, None]
    )
    penalty, norms = objectives.gradient_penalty(
        lambda x: 0.5 * jnp.sum(x**2, axis=(1, 2, 3)), x_hat
    )
    expected = np.linalg.norm(np.asarray(x_hat).reshape(4, -1), axis=1)
    np.testing.assert_allclose(norms, expected, rtol=1e-5)
    assert float(penalty) == pytest.approx(np.mean((expected - 1) ** 2), rel=1e-5)


def test_gradient_penalty_is_finite_at_a_zero_gradient():
    penalty, norms = objectives.gradient_penalty(lambda x: jnp.zeros(x.shape[0]), jnp.ones((2, 2)))
    assert float(penalty) == pytest.approx(1.0, rel=1e-5)
    grad = jax.grad(
        lambda s: objectives.gradient_penalty(lambda x: s * jnp.sum(x, 1), jnp.ones((2, 2)))[0]
    )(0.0)
    assert np.isfinite(float(grad))


def _tiny(loss, n_critic=1):
    model = models.dcgan(8, 1, width=4, noise_dim=6, critic=loss == "wgan-gp")
    opt = optax.sgd(0.1)
    update = gan_training.make_gan_update(
        model, loss=loss, generator_optimizer=opt, discriminator_optimizer=opt, n_critic=n_critic
    )
    state = gan_training.create_gan_state(model.init(jax.random.key(0)), opt, opt)
    return model, opt, update, state


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_update_is_critic_steps_on_interleaved_slices_then_a_generator_step(loss):
    """The update against the same two gradient updates done by hand: critic step j sees real
    rows j, n + j, 2n + j, ... and its own key, then the generator step sees the new critic."""
    n_critic, batch = 3, 4
    model, opt, update, state = _tiny(loss, n_critic)
    real = jax.random.uniform(jax.random.key(1), (n_critic * batch, 8, 8, 1), minval=-1, maxval=1)
    key = jax.random.key(7)
    new_state, metrics = jax.jit(update)(state, real, key)

    d_state, g_state = state.discriminator, state.generator
    d_keys = jax.random.split(jax.random.fold_in(key, 0), n_critic)
    d_step = jax.jit(  # the reference, compiled once (eagerly it compiles op by op)
        training.gradient_update(lambda p, b, k: _discriminator_loss(model, loss, p, b, k), opt)
    )
    for j in range(n_critic):
        rows = real[j::n_critic]
        d_state, _ = d_step(d_state, (rows, g_state.params), d_keys[j])
    g_step = jax.jit(  # the batch size is a shape: closed over, not traced
        training.gradient_update(
            lambda p, d, k: _generator_loss(model, loss, p, (d, batch), k), opt
        )
    )
    g_state, _ = g_step(g_state, d_state.params, jax.random.fold_in(key, 1))
    for got, want in (
        (new_state.discriminator.params, d_state.params),
        (new_state.generator.params, g_state.params),
    ):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    expected = {"d_loss", "d_grad_norm", "g_loss", "g_grad_norm"} | (
        {"d_real", "d_fake"} if loss == "bce" else {"d_wasserstein", "d_gradient_penalty"}
    )
    assert set(metrics) == expected


def _discriminator_loss(model, loss, d_params, batch, key):
    """The critic's loss written out from the definitions (the reference of the update test)."""
    real, g_params = batch
    noise_key, mix_key = jax.random.split(key)
    fake = model.generate(g_params, jax.random.normal(noise_key, (real.shape[0], model.noise_dim)))
    fake = jax.lax.stop_gradient(fake)
    r, f = model.critic(d_params, real), model.critic(d_params, fake)
    if loss == "bce":
        return -jnp.mean(jnp.log(jax.nn.sigmoid(r))) - jnp.mean(jnp.log(1 - jax.nn.sigmoid(f))), {}
    x_hat = objectives.interpolates(mix_key, real, fake)
    grads = jax.vmap(jax.grad(lambda x: model.critic(d_params, x[None])[0]))(x_hat)
    norms = jnp.sqrt(jnp.sum(grads.reshape(len(grads), -1) ** 2, axis=1))
    return jnp.mean(f) - jnp.mean(r) + 10.0 * jnp.mean((norms - 1) ** 2), {}


def _generator_loss(model, loss, g_params, batch, key):
    d_params, n = batch
    f = model.critic(
        d_params, model.generate(g_params, jax.random.normal(key, (n, model.noise_dim)))
    )
    if loss == "bce":
        return -jnp.mean(jnp.log(jax.nn.sigmoid(f))), {}
    return -jnp.mean(f), {}


def test_bce_game_trains_in_the_epoch_runner():
    """A few epochs of the shared runner on a toy set of two constant images: the
    discriminator first learns to tell them from the generator's noise (D(x) > D(G(z)))."""
    model, opt, update, state = _tiny("bce")
    images = jnp.concatenate([jnp.full((32, 8, 8, 1), 0.8), jnp.full((32, 8, 8, 1), -0.8)])
    runner = training.make_epoch_runner(update, None, batch_size=16, num_examples=64)
    state, metrics = runner(state, images, jax.random.key(1), jax.random.key(2), 0)
    assert int(state.generator.step) == int(state.discriminator.step) == 4
    assert bool(np.all(np.asarray(metrics["finite"])))
    assert float(metrics["d_real"][-1]) > float(metrics["d_fake"][-1])


@pytest.mark.parametrize("decay", [0.0, 0.6])
def test_generator_average_follows_the_generator_by_its_own_steps(decay):
    """The generator's EMA against the average written out over the raw update's steps: the
    rate min(decay, (1 + s) / (10 + s)) by the generator's step s (one per n_critic critic
    steps), the critic untouched; decay 0 keeps the trained weights exactly."""
    n_critic, batch = 2, 4
    model, opt, update, state = _tiny("wgan-gp", n_critic)
    averaged = jax.jit(with_ema(update, decay, lambda game: game.generator))
    raw = jax.jit(update)
    ema_state = EMAState(state, state.generator.params)
    reference = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), state.generator.params)
    for i in range(5):
        real = jax.random.uniform(jax.random.key(i), (n_critic * batch, 8, 8, 1), minval=-1)
        ema_state, _ = averaged(ema_state, real, jax.random.key(100 + i))
        state, _ = raw(state, real, jax.random.key(100 + i))
        s = int(state.generator.step)
        rate = min(decay, (1 + s) / (10 + s))
        reference = jax.tree_util.tree_map(
            lambda e, p, r=rate: r * e + (1 - r) * np.asarray(p, np.float64),
            reference,
            state.generator.params,
        )
    assert int(ema_state.train.generator.step) == 5
    assert int(ema_state.train.discriminator.step) == 5 * n_critic
    for got, want in (
        (ema_state.ema_params, reference),
        (ema_state.train.generator.params, state.generator.params),
        (ema_state.train.discriminator.params, state.discriminator.params),
    ):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(
            jax.tree_util.tree_leaves(ema_state.ema_params),
            jax.tree_util.tree_leaves(state.generator.params),
        )
    ]
    if decay == 0:
        assert max(moved) == 0.0
    else:
        assert max(moved) > 1e-4  # the average lags the weights


MULTI_DEVICE_GAN = r"""
import json, sys
import jax, numpy as np, optax
from vaejax import models, sharding, training
from vaejax.training import gan as gan_training
mesh = sharding.data_mesh()
out = {"devices": jax.device_count()}
for loss, n_critic in (("bce", 1), ("wgan-gp", 2)):
    model = models.dcgan(8, 1, width=4, noise_dim=6, critic=loss == "wgan-gp")
    opt = optax.sgd(0.05)
    update = gan_training.make_gan_update(model, loss=loss, generator_optimizer=opt,
                                 discriminator_optimizer=opt, n_critic=n_critic)
    images = np.random.default_rng(0).uniform(-1, 1, (128, 8, 8, 1)).astype(np.float32)
    runner = training.make_epoch_runner(update, None, batch_size=16 * n_critic,
                                        num_examples=128, mesh=mesh)
    start = gan_training.create_gan_state(model.init(jax.random.key(0)), opt, opt)
    state = sharding.put_replicated(start, mesh)
    state, metrics = runner(state, sharding.put_replicated(images, mesh), jax.random.key(1),
                            jax.random.key(2), 0)
    out[loss] = {"d_loss": np.asarray(metrics["d_loss"]).tolist(),
                 "params": [np.asarray(p).ravel().tolist() for p in jax.tree_util.tree_leaves(state)
                            if np.issubdtype(np.asarray(p).dtype, np.floating)]}
print(json.dumps(out))
"""


def test_eight_devices_match_one_for_both_games():
    """Batch normalization takes its statistics over the whole (sharded) batch, the penalty is
    per image: 8 devices take the same steps as 1."""
    results = {count: run_on_devices(MULTI_DEVICE_GAN, count) for count in (1, 8)}
    assert results[1]["devices"] == 1 and results[8]["devices"] == 8
    for loss in ("bce", "wgan-gp"):
        np.testing.assert_allclose(
            results[8][loss]["d_loss"], results[1][loss]["d_loss"], rtol=1e-4, atol=1e-5
        )
        for a, b in zip(results[8][loss]["params"], results[1][loss]["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
