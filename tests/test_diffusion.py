"""DDPM: schedules and the forward process against iterated steps and brute force, the loss and
samplers against an oracle denoiser, DDIM(eta = 1) = DDPM, a toy mixture learned, 8 devices = 1,
and experiments.ddpm_mnist end to end."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from tests.helpers import grid_size, run_on_devices, run_python
from vaejax import models, objectives, training
from vaejax.cli import main
from vaejax.runs import ddpm as ddpm_run
from vaejax.runs.load import load_run

SCHEDULES = {"linear": objectives.linear_schedule(1000), "cosine": objectives.cosine_schedule(1000)}


# ---------------------------------------------------------------------------------------------
# Schedules and the forward process


def test_linear_schedule_is_ho_et_al():
    schedule = SCHEDULES["linear"]
    betas = np.asarray(schedule.betas)
    assert schedule.timesteps == 1000
    np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-3)
    np.testing.assert_allclose(
        schedule.alpha_bars, np.cumprod(1 - betas.astype(np.float64)), rtol=1e-5
    )


def test_the_linear_schedule_of_other_step_counts_still_ends_in_noise():
    np.testing.assert_array_equal(
        objectives.make_schedule("linear", 1000).betas, SCHEDULES["linear"].betas
    )
    for steps in (4, 50, 100, 250):
        schedule = objectives.make_schedule("linear", steps)
        betas = np.asarray(schedule.betas, np.float64)
        assert schedule.timesteps == steps and betas.max() <= 0.999 + 1e-6  # float32
        want = np.minimum(np.linspace(0.1 / steps, 20.0 / steps, steps), 0.999)
        np.testing.assert_allclose(betas, want, rtol=1e-6)
        assert float(schedule.alpha_bars[-1]) < 1e-4, steps  # x_T ~ N(0, I)
    unscaled = objectives.linear_schedule(100)  # Ho et al.'s ends at T = 100 would not get there
    assert float(unscaled.alpha_bars[-1]) > 0.3


def test_cosine_schedule_follows_its_cosine():
    schedule = SCHEDULES["cosine"]
    t = np.arange(1, 1001) / 1000
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = f(t) / f(0)
    unclipped = np.asarray(schedule.betas) < 0.999
    assert unclipped[:990].all() and 0 < np.asarray(schedule.betas).min()
    np.testing.assert_allclose(
        np.asarray(schedule.alpha_bars)[unclipped][:990],
        expected[unclipped][:990],
        rtol=1e-4,
        atol=1e-7,
    )
    assert np.asarray(schedule.betas).max() <= 0.999 + 1e-7


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_closed_form_marginal_matches_iterated_steps(name):
    """x_t from t + 1 one-step draws has the mean sqrt(alpha_bar_t) x_0 and the variance
    1 - alpha_bar_t of the closed form (20,000 chains per x_0, 5-sigma sampling tolerance)."""
    schedule = SCHEDULES[name]
    x0 = jnp.repeat(jnp.array([-1.0, 0.0, 0.5, 1.0]), 20000)
    checkpoints = np.array([0, 9, 99, 499, 999])

    def step(x, inputs):
        t, key = inputs
        x = objectives.q_step(schedule, x, jnp.full(x.shape, t), jax.random.normal(key, x.shape))
        return x, x

    _, path = jax.lax.scan(step, x0, (jnp.arange(1000), jax.random.split(jax.random.key(0), 1000)))
    path = np.asarray(path[checkpoints]).reshape(len(checkpoints), 4, 20000)
    for row, t in zip(path, checkpoints):
        scale, variance = map(np.asarray, objectives.marginal_moments(schedule, jnp.asarray(t)))
        mean_tolerance = 5 * np.sqrt(variance / 20000)
        np.testing.assert_allclose(
            row.mean(axis=1), scale * np.array([-1, 0, 0.5, 1]), atol=mean_tolerance
        )
        np.testing.assert_allclose(
            row.var(axis=1), variance, atol=5 * variance * np.sqrt(2 / 20000)
        )
        closed = np.asarray(
            objectives.q_sample(schedule, jnp.array([0.5]), jnp.array([t]), jnp.array([0.3]))
        )
        np.testing.assert_allclose(closed, scale * 0.5 + np.sqrt(variance) * 0.3, rtol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_x_T_is_close_to_standard_normal(name):
    schedule = SCHEDULES[name]
    scale, variance = map(float, objectives.marginal_moments(schedule, jnp.asarray(999)))
    # KL(q(x_T | x_0) || N(0, 1)) per dimension for the worst pixel |x_0| = 1
    kl = 0.5 * (scale**2 + variance - 1 - np.log(variance))
    assert kl < 1e-4 and scale < 0.01
    x0 = jnp.ones((50000, 4))
    x_T = np.asarray(
        objectives.q_sample(
            schedule, x0, jnp.full((50000,), 999), jax.random.normal(jax.random.key(1), x0.shape)
        )
    )
    assert abs(x_T.mean()) < 0.015 and abs(x_T.var() - 1) < 0.015
    correlation = np.corrcoef(x_T.T)
    assert np.abs(correlation - np.eye(4)).max() < 0.02


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 2, 10, 500, 999])
@pytest.mark.parametrize("x0, x_t", [(0.7, -0.2), (-1.0, 1.3)])
def test_posterior_matches_brute_force(name, t, x0, x_t):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_{t-1} | x_0) q(x_t | x_{t-1}) on a fine grid (float64)."""
    schedule = SCHEDULES[name]
    betas = np.asarray(schedule.betas, np.float64)
    alpha_bar_before = np.prod(1 - betas[:t])  # index t - 1, the paper's step t
    beta = betas[t]
    prior_mean, prior_sd = np.sqrt(alpha_bar_before) * x0, np.sqrt(1 - alpha_bar_before)
    center, sd = x_t / np.sqrt(1 - beta), np.sqrt(beta / (1 - beta))  # of the likelihood
    # the posterior lies between the two and is narrower than either
    grid = np.linspace(
        min(prior_mean - 12 * prior_sd, center - 12 * sd),
        max(prior_mean + 12 * prior_sd, center + 12 * sd),
        400001,
    )
    log_density = -((grid - prior_mean) ** 2) / (2 * prior_sd**2) - (
        x_t - np.sqrt(1 - beta) * grid
    ) ** 2 / (2 * beta)
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    mean = (weights * grid).sum()
    variance = (weights * (grid - mean) ** 2).sum()
    got_mean, got_variance = objectives.posterior(
        schedule, jnp.array([x0]), jnp.array([x_t]), jnp.array([t])
    )
    np.testing.assert_allclose(float(got_mean[0]), mean, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(float(got_variance[0]), variance, rtol=2e-3)


def test_posterior_at_the_first_step_is_x0():
    schedule = SCHEDULES["linear"]
    mean, variance = objectives.posterior(
        schedule, jnp.array([[0.3, -0.4]]), jnp.array([[1.0, 2.0]]), jnp.array([0])
    )
    np.testing.assert_allclose(mean, [[0.3, -0.4]], atol=1e-6)
    np.testing.assert_allclose(variance, [[0.0]], atol=1e-12)


def test_predict_x0_inverts_q_sample():
    schedule = SCHEDULES["cosine"]
    x0 = jax.random.uniform(jax.random.key(0), (6, 3, 3, 1), minval=-1, maxval=1)
    noise = jax.random.normal(jax.random.key(1), x0.shape)
    t = jnp.array([0, 1, 100, 500, 900, 980])
    x_t = objectives.q_sample(schedule, x0, t, noise)
    np.testing.assert_allclose(objectives.predict_x0(schedule, x_t, t, noise), x0, atol=2e-3)


def test_timestep_embedding_known_values():
    embedding = np.asarray(models.timestep_embedding(jnp.array([0, 1, 250]), 4))
    np.testing.assert_allclose(embedding[0], [0, 0, 1, 1], atol=1e-7)
    np.testing.assert_allclose(
        embedding[1], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)], rtol=1e-6
    )
    np.testing.assert_allclose(
        embedding[2], [np.sin(250), np.sin(2.5), np.cos(250), np.cos(2.5)], rtol=1e-4, atol=1e-5
    )


def test_ddim_timesteps():
    times = objectives.ddim_timesteps(1000, 50)
    assert len(times) == 50 and times[0] == 0 and times[-1] == 999
    assert (np.diff(times) > 0).all()
    np.testing.assert_array_equal(objectives.ddim_timesteps(10, 10), np.arange(10))
    with pytest.raises(ValueError, match="1..1000"):
        objectives.ddim_timesteps(1000, 1001)


# ---------------------------------------------------------------------------------------------
# Networks


@pytest.mark.parametrize(
    "size, multipliers",  # the default U-Net (28 -> 14 -> 7); (1, 2) trains in the smoke suite
    [(28, (1, 2, 2)), pytest.param(32, (1, 2), marks=pytest.mark.slow)],
)
def test_unet_maps_images_to_noise_of_the_same_shape(size, multipliers):
    model = objectives.Diffusion(models.UNet(8, multipliers), SCHEDULES["linear"])
    params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), (size, size, 1))
    x = jax.random.normal(jax.random.key(1), (3, size, size, 1))
    t = jnp.array([0, 10, 999])
    predict = jax.jit(model.predict_noise)  # op by op, a U-Net compiles for a minute
    out = predict(params, x, t)
    assert out.shape == x.shape
    assert not np.asarray(out).any()  # the output conv starts at zero: eps_hat = 0
    params = jax.tree_util.tree_map(lambda p: p + 0.05, params)
    out = np.asarray(predict(params, x, t))
    same_x = np.asarray(predict(params, jnp.repeat(x[:1], 3, axis=0), t))
    assert np.isfinite(out).all()
    assert np.abs(same_x[0] - same_x[1]).max() > 1e-4  # t enters


# ---------------------------------------------------------------------------------------------
# Loss and samplers, with an oracle for one data point


class _Oracle(nn.Module):
    """The exact noise predictor when the data is the single point ``target``: eps = (x_t -
    sqrt(alpha_bar_t) target) / sqrt(1 - alpha_bar_t)."""

    alpha_bars: tuple
    target: float

    @nn.compact
    def __call__(self, x, t):
        unused = self.param("unused", nn.initializers.zeros, ())
        alpha_bar = jnp.asarray(self.alpha_bars)[t].reshape(t.shape + (1,) * (x.ndim - 1))
        return (x - jnp.sqrt(alpha_bar) * self.target) / jnp.sqrt(1 - alpha_bar) + unused


def _oracle(name: str, target: float) -> objectives.Diffusion:
    schedule = SCHEDULES[name]
    return objectives.Diffusion(
        _Oracle(tuple(np.asarray(schedule.alpha_bars).tolist()), target), schedule
    )


def test_loss_is_zero_for_the_oracle_and_one_for_a_zero_predictor():
    model = _oracle("linear", 0.4)
    loss = objectives.noise_prediction_loss(model)
    params = model.init(jax.random.key(0), (8, 8, 1))
    x0 = jnp.full((64, 8, 8, 1), 0.4)
    terms = loss(params, x0, jax.random.key(3))
    assert terms["loss"].shape == (64,)
    assert float(terms["loss"].max()) < 1e-6
    zero = objectives.Diffusion(models.UNet(8, (1,)), SCHEDULES["linear"])  # starts at eps = 0
    terms = jax.jit(objectives.noise_prediction_loss(zero))(
        zero.init(jax.random.key(0), (8, 8, 1)), x0, jax.random.key(3)
    )
    np.testing.assert_allclose(float(terms["loss"].mean()), 1.0, atol=0.03)  # E eps^2


@pytest.mark.parametrize("sampler, steps", [("ddpm", 0), ("ddim", 20), ("ddim", 1)])
def test_samplers_return_the_data_point_under_the_oracle(sampler, steps):
    model = _oracle("cosine", -0.3)
    params = model.init(jax.random.key(0), (2,))
    sample = objectives.make_sampler(model, (2,), sampler=sampler, steps=steps)
    x = np.asarray(sample(params, jax.random.key(5), 16))
    np.testing.assert_allclose(x, -0.3, atol=1e-3)


@pytest.mark.parametrize(
    "sampler, steps, chunk", [("ddpm", 0, 7), ("ddim", 12, 5), ("ddim", 12, 50)]
)
def test_a_sampler_run_in_chunks_draws_what_one_scan_draws(sampler, steps, chunk):
    """The reverse process as compiled calls of ``chunk`` steps (a last shorter one where the
    steps do not divide) gives the samples of one lax.scan over every step, bit for bit."""
    model = objectives.Diffusion(models.MLPDenoiser(16, 2), objectives.linear_schedule(30))
    params = model.init(jax.random.key(0), (2,))
    chunked = objectives.make_sampler(
        model, (2,), sampler=sampler, steps=steps, clip=1.0, chunk_steps=chunk
    )

    @jax.jit
    def one_scan(params, key):
        start_key, loop_key = jax.random.split(key)
        x_T = jax.random.normal(start_key, (8, 2))
        return objectives.sample_loop(
            model, params, loop_key, x_T, sampler=sampler, steps=steps, clip=1.0
        )

    key = jax.random.key(4)
    a, b = np.asarray(chunked(params, key, 8)), np.asarray(one_scan(params, key))
    assert np.abs(a).max() > 0.1  # not a trivial draw
    np.testing.assert_array_equal(a, b)
    total = 30 if sampler == "ddpm" else steps
    sizes = [len(t) for t, _ in chunked.chunks]
    assert sizes == [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])
    times = np.concatenate([t for t, _ in chunked.chunks])
    assert (np.diff(times) < 0).all() and times[-1] == 0
    compiled = chunked.compile(params, key, 8)  # ahead of time, as the sampling rate is timed
    np.testing.assert_array_equal(np.asarray(compiled(params, key)), a)


def test_ddim_with_eta_one_over_all_steps_is_ddpm():
    """Song et al.: eta = 1 gives DDPM's posterior variance; same noise, same samples."""
    model = objectives.Diffusion(models.MLPDenoiser(16, 2), objectives.linear_schedule(200))
    params = model.init(jax.random.key(0), (2,))
    ddpm = objectives.make_sampler(model, (2,), sampler="ddpm")
    ddim = objectives.make_sampler(model, (2,), sampler="ddim", steps=200, eta=1.0)
    a, b = (np.asarray(s(params, jax.random.key(7), 32)) for s in (ddpm, ddim))
    np.testing.assert_allclose(a, b, atol=2e-4)
    deterministic = objectives.make_sampler(model, (2,), sampler="ddim", steps=200)
    assert np.abs(np.asarray(deterministic(params, jax.random.key(7), 32)) - a).max() > 0.05


def test_sampling_clips_the_predicted_x0():
    model = _oracle("linear", 3.0)  # data outside [-1, 1]: clipping pulls every x0_hat to 1
    params = model.init(jax.random.key(0), (2,))
    sample = objectives.make_sampler(model, (2,), sampler="ddim", steps=10, clip=1.0)
    np.testing.assert_allclose(np.asarray(sample(params, jax.random.key(1), 8)), 1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# A tiny model learns a mixture of 8 Gaussians

RADIUS, SPREAD = 2.0, 0.1
CENTERS = RADIUS * np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1
).astype(np.float32)


def _mixture(key, n):
    which, noise = jax.random.split(key)
    return jnp.asarray(CENTERS)[jax.random.randint(which, (n,), 0, 8)] + SPREAD * jax.random.normal(
        noise, (n, 2)
    )


@pytest.fixture(scope="module")
def toy_model():
    model = objectives.Diffusion(models.MLPDenoiser(128, 3), objectives.linear_schedule(1000))
    steps = 6000
    tx = optax.adam(optax.cosine_decay_schedule(2e-3, steps))
    update = training.gradient_update(
        objectives.batch_mean(objectives.noise_prediction_loss(model)), tx
    )

    @jax.jit
    def train(state, key):
        def body(state, key):
            data_key, step_key = jax.random.split(key)
            return update(state, _mixture(data_key, 512), step_key)[0], None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    state = train(
        training.create_train_state(model.init(jax.random.key(0), (2,)), tx), jax.random.key(1)
    )
    return model, state.params


@pytest.mark.xdist_group("toy_model")  # one pytest-xdist worker trains the fixture once
@pytest.mark.parametrize("sampler, steps", [("ddpm", 0), ("ddim", 50)])
def test_tiny_model_learns_the_mixture_of_eight_gaussians(toy_model, sampler, steps):
    model, params = toy_model
    x = np.asarray(
        objectives.make_sampler(model, (2,), sampler=sampler, steps=steps)(
            params, jax.random.key(2), 4000
        )
    )
    distances = np.linalg.norm(x[:, None] - CENTERS[None], axis=-1)
    assignment = distances.argmin(axis=1)
    near = distances.min(axis=1) < 4 * SPREAD
    weights = np.bincount(assignment, minlength=8) / len(x)
    assert near.mean() > 0.9, near.mean()
    np.testing.assert_allclose(weights, 1 / 8, atol=0.04)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.15)
    # mixture covariance: (R^2 / 2 + s^2) I
    np.testing.assert_allclose(np.cov(x.T), (RADIUS**2 / 2 + SPREAD**2) * np.eye(2), atol=0.25)
    # within a mode the spread is the component's
    spread = np.sqrt(((x[near] - CENTERS[assignment[near]]) ** 2).mean())
    assert 0.5 * SPREAD < spread < 2 * SPREAD, spread


# ---------------------------------------------------------------------------------------------
# 8 devices = 1

EIGHT_DEVICES = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from vaejax import models, objectives, sharding, training
model = objectives.Diffusion(models.MLPDenoiser(32, 2), objectives.linear_schedule(50))
params = model.init(jax.random.key(0), (3,))
mesh = sharding.data_mesh()
out = {"devices": mesh.size}
for sampler in ("ddpm", "ddim"):
    sample = objectives.make_sampler(model, (3,), sampler=sampler, steps=7, mesh=mesh)
    x = sample(params, jax.random.key(3), 16)
    out[sampler] = np.asarray(x).tolist()
    out[sampler + "_shards"] = len(x.addressable_shards)
tx = optax.adam(1e-2)
update = training.gradient_update(objectives.batch_mean(objectives.noise_prediction_loss(model)),
                                  tx)
runner = training.make_epoch_runner(update, None, batch_size=16, num_examples=64, mesh=mesh)
points = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
state, points = sharding.put_replicated((training.create_train_state(params, tx), points), mesh)
state, metrics = runner(state, points, jax.random.key(4), jax.random.key(5), 0)
out["loss"] = np.asarray(metrics["loss"]).tolist()
out["params"] = [np.asarray(p).ravel().tolist() for p in jax.tree_util.tree_leaves(state.params)]
print(json.dumps(out))
"""


def test_eight_devices_sample_and_train_as_one():
    results = {count: run_on_devices(EIGHT_DEVICES, count) for count in (1, 8)}
    assert results[8]["devices"] == 8 and results[8]["ddpm_shards"] == 8
    for sampler in ("ddpm", "ddim"):
        np.testing.assert_allclose(results[8][sampler], results[1][sampler], atol=2e-5)
    np.testing.assert_allclose(results[8]["loss"], results[1]["loss"], rtol=1e-5)
    for a, b in zip(results[8]["params"], results[1]["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# experiments.ddpm_mnist

TINY = [
    "--train_examples",
    "256",
    "--test_examples",
    "1000",
    "--batch_size",
    "64",
    "--eval_batch_size",
    "500",
    "--channels",
    "8",
    "--multipliers",
    "1,2",
    "--timesteps",
    "40",
    "--sampling_steps",
    "4",
    "--eval_samples",
    "0",
    "--final_samples",
    "64",
    "--warmup_steps",
    "0",
]


@pytest.mark.slow  # 70-100 s on 2 cores; the DDPM run itself: test_colour's ddpm_32
def test_ddpm_experiment_end_to_end(tmp_path, mnist_raw_dir, mnist_tfds_dir):
    """Two epochs of a tiny U-Net on 256 images: every output file (resuming is the shared
    loop's, tested with the VAE and the GAN)."""
    workdir = tmp_path / "ddpm"
    done = run_python(
        [
            "-m",
            "experiments.ddpm_mnist",
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--data_dir",
            str(mnist_tfds_dir),
            "--workdir",
            str(workdir),
            *TINY,
            "--epochs",
            "2",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "epoch   1  train noise MSE" in out and "epoch   2  train noise MSE" in out
    assert "ddpm sampling, 40 steps: 64 images" in out and "ddim sampling, 4 steps" in out
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]  # 8 steps of Adam 1e-3 help
    for name, rows, columns in [
        ("samples_1.png", 8, 8),
        ("samples_2.png", 8, 8),
        ("samples_ddpm.png", 8, 8),
        ("samples_ddim.png", 8, 8),
        ("noising.png", 1, 11),
        ("denoising.png", 1, 11),
    ]:
        assert Image.open(workdir / name).size == grid_size(rows, columns), name
    speed = json.loads((workdir / "sampling_speed.json").read_text())
    assert speed["ddpm"]["samples_per_second"] > 0 and speed["samples"] == 64
    noising = np.asarray(Image.open(workdir / "noising.png").convert("L"), np.float32)
    frames = [noising[4:60, 4 + 60 * i : 60 + 60 * i] for i in range(11)]  # 2x scale, 2 px gaps
    assert frames[0].mean() < 80 and frames[0].std() > 60  # a digit: mostly black
    change = [np.abs(frame - frames[0]).mean() for frame in frames[1:]]  # x_t against x_0
    assert change[0] < 5 and change[-1] > 30  # t = 0: beta_1 = 1e-4; t = T - 1 of 40 steps
    assert all(b > a - 1 for a, b in zip(change, change[1:]))  # the noise grows with t

    trained = load_run(workdir, sampler="ddim", steps=4)  # what experiments.sample_quality scores
    assert trained.kind == "ddpm" and trained.config.timesteps == 40
    images = trained.sample(jax.random.key(0), 64)
    assert images.shape == (64, 28, 28, 1) and 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--multipliers", "1,x"],
            "error: argument --multipliers: invalid value: '1,x'; expected "
            "comma-separated integers, e.g. --multipliers 1,2,2",
        ),
        (
            ["--multipliers", "1,0"],
            "error: --multipliers must be positive integers, one per U-Net "
            "level, e.g. 1,2,2, got 1,0",
        ),
        (["--sampling_steps", "50", "--timesteps", "40"], "--sampling_steps 50 exceeds"),
        (["--channels", "12"], "--channels must be a multiple of 8"),
        (["--multipliers", "1,2,2,2"], "use fewer --multipliers"),
        (["--ema_decay", "1"], "--ema_decay must lie in [0, 1)"),
        (["--schedule", "quadratic"], "invalid choice"),
    ],
)
def test_ddpm_experiment_rejects_bad_flags_in_one_line(tmp_path, capsys, flags, message):
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), *TINY, *flags]
    try:
        status = main(ddpm_run.DDPMConfig(), argv=argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not workdir.exists()
