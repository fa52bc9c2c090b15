"""The importance-weighted bound against an exact log-likelihood: a linear-Gaussian latent model
(probabilistic PCA), where p(x) = N(b, W W^T + s2 I) in closed form."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import errors, io, models, objectives
from vaejax.runs import vae as vae_run

DIM_X, DIM_Z, NOISE_VAR = 6, 2, 0.3


def _ppca(seed: int = 0, n: int = 200):
    """W [6, 2], b [6], images x [n, 6] drawn from the model, exact log p(x) [n] (float64)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DIM_X, DIM_Z))
    b = rng.normal(size=DIM_X)
    z = rng.normal(size=(n, DIM_Z))
    x = z @ w.T + b + np.sqrt(NOISE_VAR) * rng.normal(size=(n, DIM_X))
    cov = w @ w.T + NOISE_VAR * np.eye(DIM_X)
    _, logdet = np.linalg.slogdet(cov)
    centred = x - b
    maha = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
    log_px = -0.5 * (maha + logdet + DIM_X * np.log(2 * np.pi))
    return w, b, x, log_px


def _mismatched_posterior(w, b, x):
    """A diagonal q(z | x) that is deliberately off the exact (full-covariance) posterior: its mean
    shifted by 0.4 and its variances doubled, so the ELBO is well below log p(x)."""
    m = w.T @ w + NOISE_VAR * np.eye(DIM_Z)
    exact_mean = (x - b) @ w @ np.linalg.inv(m).T
    exact_var = np.diag(NOISE_VAR * np.linalg.inv(m))
    mean = exact_mean + 0.4
    log_var = np.broadcast_to(np.log(2 * exact_var), mean.shape)
    return mean, log_var


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _linear_gaussian_bounds(key, x, w, b, mean, log_var, k, chunk_size):
    def log_likelihood_fn(z):  # log N(x; W z + b, s2 I), [B]
        residual = x - (z @ w.T + b)
        return -0.5 * jnp.sum(residual**2 / NOISE_VAR + np.log(2 * np.pi * NOISE_VAR), axis=-1)

    return objectives.importance_weighted_bound(
        key, log_likelihood_fn, mean, log_var, k, chunk_size
    )


def _bounds(k: int, key, chunk_size=100, seed=0, repeat=1):
    """The bounds of the PPCA images (each repeated ``repeat`` times: independent draws) under
    the mismatched q; also the exact log p(x) and the model."""
    w, b, x, log_px = _ppca(seed)
    mean, log_var = _mismatched_posterior(w, b, x)
    tiled = [jnp.asarray(np.tile(a, (repeat, 1)), jnp.float32) for a in (x, mean, log_var)]
    out = _linear_gaussian_bounds(
        key,
        tiled[0],
        jnp.asarray(w, jnp.float32),
        jnp.asarray(b, jnp.float32),
        tiled[1],
        tiled[2],
        k=k,
        chunk_size=chunk_size,
    )
    out = {name: np.asarray(v, np.float64).reshape(repeat, -1) for name, v in out.items()}
    if repeat == 1:
        out = {name: v[0] for name, v in out.items()}
    return out, log_px, (w, b, x, mean, log_var)


def _analytic_elbo(w, b, x, mean, log_var):
    """E_q[log p(x | z) + log p(z) - log q(z)] in closed form for the linear-Gaussian model."""
    var = np.exp(log_var)
    residual = x - (mean @ w.T + b)
    expected_sq = np.sum(residual**2, axis=1) + np.sum((w**2) @ var.T, axis=0)  # + tr(W S W^T)
    log_lik = -0.5 * (expected_sq / NOISE_VAR + DIM_X * np.log(2 * np.pi * NOISE_VAR))
    log_prior = -0.5 * (np.sum(mean**2 + var, axis=1) + DIM_Z * np.log(2 * np.pi))
    entropy = 0.5 * np.sum(log_var + 1 + np.log(2 * np.pi), axis=1)
    return log_lik + log_prior + entropy


def test_one_sample_bound_is_the_elbo():
    out, _, (w, b, x, mean, log_var) = _bounds(1, jax.random.key(0), repeat=200)
    one = out["iwae"]  # [draws, images]
    np.testing.assert_array_equal(one, out["elbo"])  # L_1 is the one log weight
    analytic = _analytic_elbo(w, b, x, mean, log_var)
    # the mean over 200 draws x 200 images of single-sample ELBOs, within 4 standard errors
    error = one.mean() - analytic.mean()
    assert abs(error) < 4 * one.std() / np.sqrt(one.size)


def test_bound_rises_with_k_and_converges_to_the_exact_log_likelihood():
    means = {}
    for k in (1, 10, 100, 5000):
        out, log_px, _ = _bounds(k, jax.random.key(k), chunk_size=128)
        means[k] = out["iwae"].mean()
    # a bound in expectation only (one draw of log w may exceed log p(x)); at K = 5000 the
    # estimate has concentrated: no image's is more than its noise (~0.03 nats) above log p(x)
    assert np.all(out["iwae"] <= log_px + 0.15)
    gap = {k: log_px.mean() - v for k, v in means.items()}
    assert gap[1] > 1.0  # the mismatched q costs more than a nat per image at K = 1
    assert gap[1] > gap[10] > gap[100] > gap[5000]
    assert abs(gap[5000]) < 0.01  # within 0.01 nats of the exact log p(x) per image
    # the K-sample ELBO estimate does not improve with K: it estimates the same ELBO
    elbo_5000 = _bounds(5000, jax.random.key(7))[0]["elbo"].mean()
    assert elbo_5000 == pytest.approx(log_px.mean() - gap[1], abs=0.1)


def test_chunking_does_not_change_the_estimate_beyond_the_draws():
    # the same K drawn in different chunks is another sample of the same estimator: close, not equal
    a = _bounds(1000, jax.random.key(3), chunk_size=1000)[0]["iwae"]
    b = _bounds(1000, jax.random.key(3), chunk_size=64)[0]["iwae"]  # 16 chunks, last one partial
    assert not np.array_equal(a, b) and abs(a.mean() - b.mean()) < 0.02
    # and with one chunk the masked tail changes nothing: K = 64 in chunks of 100 = one chunk of 64
    c = _bounds(64, jax.random.key(4), chunk_size=100)[0]["iwae"]
    d = _bounds(64, jax.random.key(4), chunk_size=64)[0]["iwae"]
    np.testing.assert_allclose(c, d, rtol=1e-6)


def test_vae_bound_and_iwae_objective_on_a_real_vae():
    model = models.mlp_vae(4, (32,))
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (5, 28, 28, 1)).astype(jnp.float32)
    params = model.init(jax.random.key(1), x, jax.random.key(1))["params"]
    bound = objectives.vae_bound(model, params, x, jax.random.key(2), 1)
    # K = 1: one log weight = -(negative ELBO with the same draw)
    mean, log_var = model.apply({"params": params}, x, method="encode")
    eps = jax.random.normal(jax.random.fold_in(jax.random.key(2), 0), (1, *mean.shape))[0]
    z = mean + jnp.exp(0.5 * log_var) * eps
    logits = model.apply({"params": params}, z, method="decode")
    want = objectives.log_importance_weights(x, logits, z, mean, log_var)
    np.testing.assert_allclose(bound["iwae"], want, rtol=1e-5)
    terms = objectives.iwae_per_example(model, 8)(params, x, jax.random.key(3))
    assert terms["loss"].shape == (5,)
    assert np.all(terms["negative_iwae_bound"] <= terms["negative_elbo"] + 1e-4)
    grads = jax.grad(
        lambda p: objectives.iwae_per_example(model, 8)(p, x, jax.random.key(3))["loss"].mean()
    )(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_burda_model_is_784_200_200_50_with_tanh():
    model = models.burda_vae()
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    params = model.init(jax.random.key(1), x, jax.random.key(1))["params"]
    linear = [(784, 200), (200, 200), (200, 50), (200, 50), (50, 200), (200, 200), (200, 784)]
    assert models.count_params(params) == sum((i + 1) * o for i, o in linear) == 425_284
    dense = lambda layer, h: h @ layer["Dense_0"]["kernel"] + layer["Dense_0"]["bias"]
    enc = params["encoder"]
    h = jnp.tanh(dense(enc["TorchDense_1"], jnp.tanh(dense(enc["TorchDense_0"], x.reshape(3, -1)))))
    mean, _ = model.apply({"params": params}, x, method="encode")
    np.testing.assert_allclose(mean, dense(enc["mean"], h), rtol=1e-5, atol=1e-6)


def _dense(layer, h):
    return h @ np.asarray(layer["Dense_0"]["kernel"], np.float64) + np.asarray(
        layer["Dense_0"]["bias"], np.float64
    )


def _tanh_gaussian(params, h):
    """(mean, log_var) of an MLPEncoder with two tanh layers, in float64 NumPy."""
    h = np.tanh(_dense(params["TorchDense_1"], np.tanh(_dense(params["TorchDense_0"], h))))
    return _dense(params["mean"], h), _dense(params["log_var"], h)


def _log_normal(z, mean, log_var):
    return -0.5 * np.sum((z - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi), -1)


def test_two_layer_model_is_burdas_and_its_log_weights_match_numpy():
    model = models.burda_two_layer_vae()
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (2, 28, 28, 1)).astype(jnp.float32)
    params = jax.jit(model.init)(jax.random.key(1), x, jax.random.key(1))["params"]
    linear = [(784, 200), (200, 200), (200, 100), (200, 100)]  # q(z1 | x)
    linear += [(100, 100), (100, 100), (100, 50), (100, 50)]  # q(z2 | z1)
    linear += [(50, 100), (100, 100), (100, 100), (100, 100)]  # p(z1 | z2)
    linear += [(100, 200), (200, 200), (200, 784)]  # p(x | z1)
    assert models.count_params(params) == sum((i + 1) * o for i, o in linear) == 521_084

    key = jax.random.key(2)
    d = jax.jit(lambda p: model.apply({"params": p}, x, key, 3, method="draws"))(params)
    z1, z2 = np.asarray(d["z1"], np.float64), np.asarray(d["z2"], np.float64)
    xs = np.tile(np.asarray(x, np.float64).reshape(2, -1), (3, 1))  # rows (sample, image)
    q1 = _tanh_gaussian(params["q_z1"], xs)
    q2 = _tanh_gaussian(params["q_z2"], z1)
    p1 = _tanh_gaussian(params["p_z1"], z2)
    h = params["p_x"]
    logits = _dense(
        h["TorchDense_2"],
        np.tanh(_dense(h["TorchDense_1"], np.tanh(_dense(h["TorchDense_0"], z1)))),
    )
    for got, want in [(d["q_z1"], q1), (d["q_z2"], q2), (d["p_z1"], p1)]:
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d["logits"].reshape(6, -1), logits, rtol=1e-4, atol=1e-4)
    log_px = np.sum(xs * logits - np.logaddexp(0, logits), -1)
    log_prior = _log_normal(z1, *p1) + _log_normal(z2, 0.0, 0.0)
    log_posterior = _log_normal(z1, *q1) + _log_normal(z2, *q2)
    terms = objectives.two_layer_terms(model, params, x, key, 3, "bernoulli", 1.0)
    np.testing.assert_allclose(terms["log_px"].ravel(), log_px, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].ravel(), log_posterior - log_prior, rtol=1e-4, atol=1e-3)
    # the streamed bound of K = 3 in one chunk: log mean exp of these weights
    bound = objectives.vae_bound(model, params, x, jax.random.key(5), 3)
    chunk = objectives.two_layer_terms(
        model, params, x, jax.random.fold_in(jax.random.key(5), 0), 3, "bernoulli", 1.0
    )
    log_w = np.asarray(chunk["log_px"] - chunk["kl"], np.float64)
    want = np.logaddexp.reduce(log_w, axis=0) - np.log(3)
    np.testing.assert_allclose(bound["iwae"], want, rtol=1e-5)
    np.testing.assert_allclose(bound["elbo"], log_w.mean(0), rtol=1e-5)


def test_two_layer_elbo_and_its_gradient_against_finite_differences():
    model = models.burda_two_layer_vae(latent_dim=5, image_shape=(4, 4, 1))
    x = jax.random.bernoulli(jax.random.key(0), 0.5, (3, 4, 4, 1)).astype(jnp.float32)
    params = model.init(jax.random.key(1), x, jax.random.key(1))["params"]
    per_example = objectives.two_layer_elbo_per_example(model, beta=2.0)
    terms = per_example(params, x, jax.random.key(3))
    np.testing.assert_allclose(terms["negative_elbo"], terms["reconstruction"] + terms["kl"])
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + 2 * terms["kl"])
    loss = jax.jit(lambda p: per_example(p, x, jax.random.key(3))["negative_elbo"].sum())
    grads = jax.grad(loss)(params)

    def with_bias(outer, inner, bias):
        moved = jax.tree_util.tree_map(lambda a: a, params)  # a copy of the dicts
        moved[outer][inner]["Dense_0"]["bias"] = jnp.asarray(bias)
        return float(loss(moved))

    for outer, inner in [("p_x", "TorchDense_2"), ("q_z2", "log_var"), ("p_z1", "mean")]:
        bias = np.asarray(params[outer][inner]["Dense_0"]["bias"])
        for i in range(2):
            step = np.zeros_like(bias)
            step[i] = 1e-2
            numeric = (
                with_bias(outer, inner, bias + step) - with_bias(outer, inner, bias - step)
            ) / 2e-2
            analytic = float(grads[outer][inner]["Dense_0"]["bias"][i])
            assert analytic == pytest.approx(numeric, rel=2e-2, abs=2e-2), (outer, inner, i)


@pytest.mark.slow  # the same commands run in CI in the reproduce smoke suite
def test_iwae_training_and_likelihood_evaluation_end_to_end(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    import json

    from tests.helpers import run_python

    workdir = tmp_path / "iwae"
    proc = run_python(
        [
            "-m",
            "experiments.burda_mnist",
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--data_dir",
            str(mnist_tfds_dir),
            "--workdir",
            str(workdir),
            "--epochs",
            "1",
            "--train_examples",
            "2000",
            "--model",
            "burda2",
            "--latent_dim",
            "10",
            "--lr_schedule",
            "burda",
            "--objective",
            "iwae",
            "--iwae_samples",
            "5",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "burda2 VAE, IWAE bound, k = 5" in proc.stdout and "-L_k" in proc.stdout
    assert "(509,004 parameters)" in proc.stdout  # 784-200-200-[100]-100-100-[10]
    assert "learning rate: Burda et al.'s decay" in proc.stdout

    last = io.read_jsonl(workdir / "metrics.jsonl")[-1]
    assert last["test_negative_iwae_bound"] <= last["test_negative_elbo"]
    assert last["test_loss"] == last["test_negative_iwae_bound"]
    proc = run_python(
        [
            "-m",
            "experiments.evaluate_likelihood",
            "--workdir",
            str(workdir),
            "--samples",
            "200",
            "--test_examples",
            "300",
            "--chunk_size",
            "64",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((workdir / "likelihood_200.json").read_text())
    assert result["binarization"] == "dynamic" and result["test_examples"] == 300
    assert result["objective"] == "iwae" and result["samples"] == 200
    assert result["test_nll"] < result["test_negative_elbo"]  # L_200 > ELBO on average
    assert 0 < result["test_nll_standard_error"] < 5
    assert "test NLL (-L_200)" in proc.stdout and "img/s" in proc.stdout
    # its bad inputs are checked on the smoke suite's run (tests/test_reproduce.py)


def test_iwae_objective_takes_no_beta():

    with pytest.raises(errors.ConfigError, match="--objective iwae bounds the likelihood"):
        vae_run.validate(vae_run.VAEConfig(objective="iwae", beta=2.0), 1)
