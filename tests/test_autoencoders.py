"""The autoencoder family's pieces: losses on pairs and labels, corruptions, anomaly scores."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import data, models, objectives
from vaejax.errors import ConfigError
from vaejax.runs import anomaly as anomaly_run
from vaejax.runs import autoencoders as autoencoders_run
from vaejax.runs import conditional as conditional_run
from vaejax.runs import denoising as denoising_run

KEY = jax.random.key(0)


def _trained(kind: str, latent: int = 3) -> autoencoders_run.TrainedModel:
    """An untrained (randomly initialized) dense family member: scores need no training."""
    module = models.mlp_autoencoder(latent) if kind == "ae" else models.mlp_vae(latent, (32,))
    x = jnp.zeros((1, 28, 28, 1))
    params = module.init(KEY, x)["params"] if kind == "ae" else module.init(KEY, x, KEY)["params"]
    return autoencoders_run.TrainedModel(params=params, kind=kind, module=module, image_size=28)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_denoising_loss_scores_the_clean_target():
    model = models.mlp_autoencoder(4)
    noisy, clean = jax.random.uniform(KEY, (2, 5, 28, 28, 1))
    params = model.init(KEY, noisy)["params"]
    for kind in ("bce", "mse"):
        per_example = objectives.autoencoder_per_example(model, kind)
        logits, _ = model.apply({"params": params}, noisy)
        got = per_example(params, (noisy, clean), None)["loss"]
        np.testing.assert_allclose(
            got, objectives.reconstruction_loss(clean, logits, kind), rtol=1e-6
        )
        # a plain batch is its own target
        plain = per_example(params, clean, None)["loss"]
        logits_clean, _ = model.apply({"params": params}, clean)
        np.testing.assert_allclose(
            plain, objectives.reconstruction_loss(clean, logits_clean, kind), rtol=1e-6
        )
    with pytest.raises(ValueError, match="choose bce or mse"):
        objectives.autoencoder_per_example(model, "l1")


def test_cvae_loss_is_the_conditional_negative_elbo():
    model = models.mlp_cvae(2, (16,), num_classes=10)
    x = jax.random.uniform(KEY, (4, 28, 28, 1))
    labels = jnp.array([1, 2, 3, 4])
    params = model.init(KEY, x, labels, KEY)["params"]
    terms = objectives.cvae_per_example(model)(params, (x, labels), jax.random.key(5))
    logits, mean, log_var = model.apply({"params": params}, x, labels, jax.random.key(5))
    want = objectives.negative_elbo(x, logits, mean, log_var)
    for name in ("loss", "reconstruction", "kl", "negative_elbo"):
        np.testing.assert_allclose(terms[name], want[name], rtol=1e-6)


def test_with_labels_passes_labels_through():
    pre = data.with_labels(lambda images, key: images.astype(jnp.float32) / 255.0)
    x, y = pre((jnp.full((2, 28, 28, 1), 255, jnp.uint8), jnp.array([3, 4])), None)
    assert float(x.max()) == 1.0 and y.tolist() == [3, 4]


def test_class_grid_rows_are_classes_and_columns_share_z():
    model = models.mlp_cvae(2, (16,), num_classes=10)
    params = model.init(KEY, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,), jnp.int32), KEY)["params"]
    z = jax.random.normal(KEY, (3, 2))
    grid = conditional_run.class_grid(model, params, z, 10)
    assert grid.shape == (30, 28, 28, 1)
    # row 7 column 2 is z[2] decoded as a 7
    want = jax.nn.sigmoid(model.apply({"params": params}, z[2:3], jnp.array([7]), method="decode"))
    np.testing.assert_allclose(grid[7 * 3 + 2], want[0], rtol=1e-5, atol=1e-6)
    restyled = conditional_run.restyle(
        model, params, jnp.zeros((2, 28, 28, 1)), jnp.array([0, 1]), 10
    )
    assert restyled.shape == (2 * 11, 28, 28, 1)
    assert float(jnp.abs(restyled[0]).max()) == 0.0  # each row starts with the input image


def test_gaussian_noise_has_the_given_std_and_stays_in_range():
    x = jnp.full((200, 28, 28, 1), 0.5)
    noisy = data.gaussian_noise(KEY, x, 0.1)  # 5 std from the edges: clipping is negligible
    assert float((noisy - x).std()) == pytest.approx(0.1, rel=0.01)
    assert abs(float((noisy - x).mean())) < 1e-3
    wide = data.gaussian_noise(KEY, x, 3.0)
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.0
    np.testing.assert_array_equal(data.gaussian_noise(KEY, x, 0.0), x)


def test_salt_and_pepper_hits_the_given_fraction_with_black_and_white():
    x = jnp.full((200, 28, 28, 1), 0.5)
    noisy = np.asarray(data.salt_and_pepper(KEY, x, 0.3))
    hit = noisy != 0.5
    assert hit.mean() == pytest.approx(0.3, abs=0.005)
    assert set(np.unique(noisy[hit]).tolist()) == {0.0, 1.0}
    assert (noisy[hit] == 1.0).mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(data.salt_and_pepper(KEY, x, 0.0), x)


def test_denoising_preprocessor_returns_corrupted_and_clean():
    pre = data.make_denoising_preprocessor(32, "salt_pepper", 1.0)
    noisy, clean = pre(jnp.full((3, 28, 28, 1), 128, jnp.uint8), KEY)
    assert noisy.shape == clean.shape == (3, 32, 32, 1)
    assert float(clean[0, 16, 16, 0]) == pytest.approx(128 / 255)
    assert set(np.unique(np.asarray(noisy)).tolist()) <= {0.0, 1.0}  # rate 1: every pixel hit
    with pytest.raises(ValueError, match="unknown noise"):
        data.corrupt("speckle", KEY, clean, 0.1)


def test_denoise_does_not_depend_on_the_batch_size():
    model = _trained("ae")
    images = _images(10)
    a = denoising_run.denoise(model, images, "gaussian", 0.3, KEY, batch_size=5)
    b = denoising_run.denoise(model, images, "gaussian", 0.3, KEY, batch_size=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[2], images / 255.0, rtol=1e-6)
    assert not np.allclose(a[0], a[2])


def test_autoencoder_scores_are_the_reconstruction_losses():
    model = _trained("ae")
    images = _images(7)
    scores = anomaly_run.autoencoder_scores(model, images, "mse", batch_size=3)
    x = model.prepare(images)
    logits, _ = model.module.apply({"params": model.params}, x)
    np.testing.assert_allclose(scores, objectives.reconstruction_loss(x, logits, "mse"), rtol=1e-5)


def test_vae_scores_average_negative_elbo_draws_independently_of_batching():
    model = _trained("vae")
    images = _images(6)
    scores = anomaly_run.vae_scores(model, images, KEY, samples=4, batch_size=4)
    np.testing.assert_allclose(
        anomaly_run.vae_scores(model, images, KEY, samples=4, batch_size=6), scores, rtol=1e-5
    )
    # brute force: the mean over draws s of -ELBO with the key of (s, image index)
    per_example = objectives.vae_per_example(model.module)
    x = model.prepare(images)
    want = [
        np.mean(
            [
                float(
                    per_example(
                        model.params,
                        x[i : i + 1],
                        jax.random.fold_in(jax.random.fold_in(KEY, s), i),
                    )["negative_elbo"][0]
                )
                for s in range(4)
            ]
        )
        for i in range(6)
    ]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    one = anomaly_run.vae_scores(model, images, KEY, samples=1)
    assert not np.allclose(one, scores)  # more draws are a different (averaged) estimate


def test_detection_metrics_on_a_known_case():
    # anomalies score 5..9, normals 0..4: perfect ranking; training scores 0..99 -> p95 = 94.05
    test_scores = np.arange(10.0)
    is_anomaly = test_scores >= 5
    result = anomaly_run.detection_metrics(test_scores, is_anomaly, np.arange(100.0), 95)
    assert result["roc_auc"] == 1.0 and result["average_precision"] == 1.0
    assert result["threshold"] == pytest.approx(94.05)
    assert result["precision"] == 1.0 and result["recall"] == 0.0  # nothing above 94.05
    flipped = anomaly_run.detection_metrics(-test_scores, is_anomaly, -np.arange(100.0), 50)
    assert flipped["roc_auc"] == 0.0
    # threshold at the 3rd percentile of 0..99 (2.97): flags 3..9, of which 5..9 are anomalies
    low = anomaly_run.detection_metrics(test_scores, is_anomaly, np.arange(100.0), 3)
    assert low["precision"] == pytest.approx(5 / 7) and low["recall"] == 1.0


def test_held_out_classes_parse_or_fail_in_one_line():
    config = anomaly_run.AnomalyConfig()
    assert anomaly_run.held_out_classes(config) == tuple(range(10))
    assert anomaly_run.held_out_classes(anomaly_run.AnomalyConfig(classes=(3, 0))) == (3, 0)
    for bad in ((10,), (1, 1), (-1,), ()):
        with pytest.raises(ConfigError, match=r"--classes must be distinct labels in 0\.\.9 "):
            anomaly_run.held_out_classes(anomaly_run.AnomalyConfig(classes=bad))


def test_anomaly_table_has_a_row_per_class_and_the_mean():
    row = lambda c, auc: {
        "class": c,
        "class_name": str(c),
        **{
            m: {
                "roc_auc": auc,
                "average_precision": 0.5,
                "threshold": 1.0,
                "precision": 0.25,
                "recall": 0.75,
            }
            for m in ("ae", "vae")
        },
    }
    table = anomaly_run.format_table([row(0, 0.9), row(1, 0.5)], 95)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[-1].startswith("| mean | 0.700 | 0.700 |")
    assert "P / R AE (p95)" in lines[0] and "0.25 / 0.75" in lines[2]


def test_eval_levels_are_checked_against_the_noise():
    config = denoising_run.DenoisingConfig(noise="salt_pepper", eval_levels=(0.1, 0.5))
    denoising_run.validate(config, 1)
    with pytest.raises(
        ConfigError,
        match=r"--eval_levels must lie in \[0, 1\] for salt_pepper "
        r"noise, got 0.1,2.0",
    ):
        denoising_run.validate(dataclasses.replace(config, eval_levels=(0.1, 2.0)), 1)
    with pytest.raises(ConfigError, match="--eval_levels needs at least one level"):
        denoising_run.validate(dataclasses.replace(config, eval_levels=()), 1)
