"""Models: parameter counts against the published tables, shapes, initialization."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import models

KEY = jax.random.key(0)


def _init(module, *inputs):
    return module.init(KEY, *inputs)["params"]


def test_foster_parameter_counts():
    """Foster, Generative Deep Learning 2nd ed., ch. 3 model summaries (latent 2, 32x32x1)."""
    x = jnp.zeros((1, 32, 32, 1))
    z = jnp.zeros((1, 2))
    assert models.count_params(_init(models.ConvEncoder(2, variational=False), x)) == 96_770
    assert models.count_params(_init(models.ConvEncoder(2, variational=True), x)) == 100_868
    assert models.count_params(_init(models.ConvDecoder(), z)) == 246_273
    vae = _init(models.conv_vae(2), x, KEY)
    assert models.count_params(vae["encoder"]) == 100_868
    assert models.count_params(vae["decoder"]) == 246_273
    ae = _init(models.conv_autoencoder(2), x)
    assert models.count_params(ae["encoder"]) == 96_770


def test_foster_layer_shapes():
    params = _init(models.ConvEncoder(2), jnp.zeros((1, 32, 32, 1)))
    assert [params[f"Conv2D_{i}"]["kernel"].shape for i in range(3)] == [
        (3, 3, 1, 32),
        (3, 3, 32, 64),
        (3, 3, 64, 128),
    ]
    assert params["z_mean"]["kernel"].shape == (2048, 2)
    dec = _init(models.ConvDecoder(), jnp.zeros((1, 2)))
    assert dec["Dense_0"]["kernel"].shape == (2, 2048)
    assert [dec[f"ConvTranspose2D_{i}"]["kernel"].shape for i in range(3)] == [
        (3, 3, 128, 128),
        (3, 3, 128, 64),
        (3, 3, 64, 32),
    ]
    assert dec["Conv2D_0"]["kernel"].shape == (3, 3, 32, 1)


def test_mlp_vae_is_the_pytorch_example():
    """fc1 784->400, fc21/fc22 400->20, fc3 20->400, fc4 400->784, as in pytorch/examples."""
    params = _init(models.mlp_vae(), jnp.zeros((1, 28, 28, 1)), KEY)
    shapes = {
        "fc1": params["encoder"]["TorchDense_0"]["Dense_0"]["kernel"].shape,
        "fc21": params["encoder"]["mean"]["Dense_0"]["kernel"].shape,
        "fc22": params["encoder"]["log_var"]["Dense_0"]["kernel"].shape,
        "fc3": params["decoder"]["TorchDense_0"]["Dense_0"]["kernel"].shape,
        "fc4": params["decoder"]["TorchDense_1"]["Dense_0"]["kernel"].shape,
    }
    assert shapes == {
        "fc1": (784, 400),
        "fc21": (400, 20),
        "fc22": (400, 20),
        "fc3": (20, 400),
        "fc4": (400, 784),
    }
    linear = [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]
    assert models.count_params(params) == sum((i + 1) * o for i, o in linear) == 652_824


def test_torch_linear_initialization():
    params = _init(models.mlp_vae(), jnp.zeros((1, 28, 28, 1)), KEY)
    for layer, fan_in in [
        (params["encoder"]["TorchDense_0"]["Dense_0"], 784),
        (params["decoder"]["TorchDense_1"]["Dense_0"], 400),
    ]:
        bound = 1 / np.sqrt(fan_in)
        for name in ("kernel", "bias"):
            w = np.asarray(layer[name])
            assert np.abs(w).max() <= bound
            assert np.abs(w).max() > 0.95 * bound
        # uniform on [-b, b] has standard deviation b / sqrt(3)
        assert np.asarray(layer["kernel"]).std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_keras_initialization_of_conv_models():
    params = _init(models.ConvEncoder(2), jnp.zeros((1, 32, 32, 1)))
    kernel = np.asarray(params["Conv2D_1"]["kernel"])  # glorot: fan_in 3*3*32, fan_out 3*3*64
    bound = np.sqrt(6 / (9 * 32 + 9 * 64))
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    assert not np.any(np.asarray(params["Conv2D_1"]["bias"]))


@pytest.mark.parametrize(
    "builder,size,latent", [(models.mlp_vae, 28, 20), (models.conv_vae, 32, 2)]
)
def test_vae_shapes_and_explicit_randomness(builder, size, latent):
    model = builder(latent_dim=latent)
    x = jax.random.uniform(KEY, (5, size, size, 1))
    params = _init(model, x, KEY)
    logits, mean, log_var = model.apply({"params": params}, x, jax.random.key(1))
    assert logits.shape == (5, size, size, 1)
    assert mean.shape == log_var.shape == (5, latent)
    again, _, _ = model.apply({"params": params}, x, jax.random.key(1))
    other, _, _ = model.apply({"params": params}, x, jax.random.key(2))
    assert np.array_equal(logits, again)
    assert not np.allclose(logits, other)
    mean_only = model.apply({"params": params}, x, method="encode")[0]
    assert np.allclose(mean_only, mean)
    decoded = model.apply({"params": params}, mean, method="decode")
    assert decoded.shape == logits.shape


def test_autoencoder_shapes():
    model = models.conv_autoencoder(latent_dim=3)
    x = jnp.zeros((4, 32, 32, 1))
    params = _init(model, x)
    logits, z = model.apply({"params": params}, x)
    assert logits.shape == (4, 32, 32, 1) and z.shape == (4, 3)


def test_dense_autoencoder_is_the_lectures_784_256_128():
    """The lectures' PyTorch AE: Linear 784-256-128-latent, mirrored decoder (latent 2)."""
    model = models.mlp_autoencoder(latent_dim=2)
    params = _init(model, jnp.zeros((1, 28, 28, 1)))
    encoder = [
        params["encoder"][name]["Dense_0"]["kernel"].shape
        for name in ("TorchDense_0", "TorchDense_1", "z")
    ]
    decoder = [params["decoder"][f"TorchDense_{i}"]["Dense_0"]["kernel"].shape for i in range(3)]
    assert encoder == [(784, 256), (256, 128), (128, 2)]
    assert decoder == [(2, 128), (128, 256), (256, 784)]
    linear = encoder + decoder
    assert models.count_params(params) == sum((i + 1) * o for i, o in linear) == 469_010
    # its VAE: the same layers, two heads of 2
    vae = _init(models.mlp_vae(2, (256, 128)), jnp.zeros((1, 28, 28, 1)), KEY)
    assert models.count_params(vae) == 469_010 + 129 * 2
    logits, z = model.apply({"params": params}, jnp.zeros((3, 28, 28, 1)))
    assert logits.shape == (3, 28, 28, 1) and z.shape == (3, 2)


def test_conditional_vae_sees_the_label_in_encoder_and_decoder():
    model = models.mlp_cvae(latent_dim=2, hidden_dims=(512,), num_classes=10)
    x = jax.random.uniform(KEY, (4, 28, 28, 1))
    labels = jnp.array([0, 3, 7, 9])
    params = _init(model, x, labels, KEY)
    assert params["encoder"]["TorchDense_0"]["Dense_0"]["kernel"].shape == (784 + 10, 512)
    assert params["decoder"]["TorchDense_0"]["Dense_0"]["kernel"].shape == (2 + 10, 512)
    linear = [(794, 512), (512, 2), (512, 2), (12, 512), (512, 784)]
    assert models.count_params(params) == sum((i + 1) * o for i, o in linear)
    logits, mean, log_var = model.apply({"params": params}, x, labels, KEY)
    assert logits.shape == x.shape and mean.shape == log_var.shape == (4, 2)
    # the label changes both the posterior and the decoded image for the same x and z
    other_mean, _ = model.apply({"params": params}, x, (labels + 1) % 10, method="encode")
    assert not np.allclose(mean, other_mean)
    z = jnp.zeros((4, 2))
    as_labels = model.apply({"params": params}, z, labels, method="decode")
    as_others = model.apply({"params": params}, z, (labels + 1) % 10, method="decode")
    assert not np.allclose(as_labels, as_others)
    # the conditional forward pass is encode -> reparameterize -> decode with the same label
    z_sample = models.reparameterize(KEY, mean, log_var)
    np.testing.assert_allclose(
        logits, model.apply({"params": params}, z_sample, labels, method="decode"), rtol=1e-6
    )
