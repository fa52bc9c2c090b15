"""The PyTorch reference models compute what vaejax computes: same weights, same batch, same
noise -> same loss and gradients (to float32 tolerance). Needs torch (the bench extra); without
it these tests skip, except under CI=true, where they fail."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("torch is not installed (pip install -e '.[bench]')", allow_module_level=True)

from experiments.benchmarking import torch_dcgan, torch_reference
from vaejax import models, objectives


def _batch(n=32):
    rng = np.random.default_rng(0)
    return (rng.random((n, 28, 28, 1)) ** 3).astype(np.float32)  # grey pixels, many near 0


def test_torch_example_vae_matches_vaejax_loss_and_gradients():
    model = models.mlp_vae()
    key, noise_key = jax.random.split(jax.random.key(0))
    params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)["params"]
    x = _batch()

    loss_fn = objectives.batch_mean(objectives.vae_per_example(model))
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, jnp.asarray(x), noise_key
    )
    # vaejax draws the reparameterization noise with reparameterize(key, ...): the same eps
    eps = np.array(jax.random.normal(noise_key, (len(x), 20)))  # a writable copy for torch

    reference = torch_reference.load_flax_params(torch_reference.ExampleMLPVAE(), params)
    assert sum(p.numel() for p in reference.parameters()) == models.count_params(params)
    probs, mean, log_var = reference(torch.from_numpy(x), torch.from_numpy(eps))
    torch_loss = torch_reference.example_loss(probs, torch.from_numpy(x), mean, log_var) / len(x)
    torch_loss.backward()

    assert float(torch_loss.detach()) == pytest.approx(float(loss), rel=1e-5)
    assert float(loss) == pytest.approx(float(terms["reconstruction"] + terms["kl"]), rel=1e-6)
    torch_grads = torch_reference.flax_gradients(reference)
    for (path, g), t in zip(
        jax.tree_util.tree_leaves_with_path(grads),
        jax.tree_util.tree_leaves(torch_grads),
        strict=True,
    ):
        scale = np.abs(np.asarray(g)).max()
        np.testing.assert_allclose(
            t, g, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path)
        )


def test_torch_initialization_matches_the_flax_scheme():
    """Both draw every weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    torch.manual_seed(0)
    reference = torch_reference.ExampleMLPVAE()
    model = models.mlp_vae()
    key = jax.random.key(0)
    params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)["params"]
    for name, (part, layer) in torch_reference._LAYERS.items():
        linear = getattr(reference, name)
        bound = 1 / np.sqrt(linear.in_features)
        flax_kernel = np.asarray(params[part][layer]["Dense_0"]["kernel"])
        for values in (linear.weight.detach().numpy(), flax_kernel):
            assert np.abs(values).max() <= bound
            assert np.abs(values).max() > 0.95 * bound
            assert np.std(values) == pytest.approx(bound / np.sqrt(3), rel=0.1)


def test_torch_conv_vae_matches_vaejax_loss_and_gradients():
    """Foster's model: same weights, batch and noise give the same Foster loss (beta 2.048 on
    the summed ELBO) and the same gradients through every conv and transposed conv."""
    model = models.conv_vae(conv_implementation="xla")
    key, noise_key = jax.random.split(jax.random.key(1))
    params = model.init(key, jnp.zeros((1, 32, 32, 1)), key)["params"]
    x = np.pad(_batch(8), ((0, 0), (2, 2), (2, 2), (0, 0)))
    beta = objectives.foster_beta(32 * 32)
    loss_fn = objectives.batch_mean(objectives.vae_per_example(model, beta=beta))
    loss, grads = jax.value_and_grad(lambda p: loss_fn(p, jnp.asarray(x), noise_key)[0])(params)
    eps = np.array(jax.random.normal(noise_key, (len(x), 2)))

    reference = torch_reference.load_flax_conv_params(torch_reference.FosterConvVAE(), params)
    assert sum(p.numel() for p in reference.parameters()) == models.count_params(params)
    x_nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    logits, mean, log_var = reference(x_nchw, torch.from_numpy(eps))
    torch_loss = torch_reference.foster_loss(logits, x_nchw, mean, log_var, beta) / len(x)
    torch_loss.backward()
    assert float(torch_loss.detach()) == pytest.approx(float(loss), rel=1e-5)

    def torch_grad(module, conv_transpose=False, dense=False):
        w = module.weight.grad.numpy()
        if dense:
            return w.T
        if conv_transpose:
            return w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
        return w.transpose(2, 3, 1, 0)

    pairs = [
        (grads["encoder"][f"Conv2D_{i}"]["kernel"], torch_grad(c))
        for i, c in enumerate(reference.encoder_convs)
    ]
    pairs += [
        (grads["encoder"]["z_mean"]["kernel"], torch_grad(reference.z_mean, dense=True)),
        (grads["decoder"]["Dense_0"]["kernel"], torch_grad(reference.dense, dense=True)),
        (grads["decoder"]["Conv2D_0"]["kernel"], torch_grad(reference.output_conv)),
    ]
    pairs += [
        (grads["decoder"][f"ConvTranspose2D_{i}"]["kernel"], torch_grad(c, True))
        for i, c in enumerate(reference.decoder_convs)
    ]
    for flax_grad, reference_grad in pairs:
        flax_grad = np.asarray(flax_grad)
        np.testing.assert_allclose(
            reference_grad, flax_grad, rtol=1e-3, atol=1e-4 * np.abs(flax_grad).max()
        )


def test_torch_conv_initialization_is_keras_glorot():
    torch.manual_seed(0)
    reference = torch_reference.FosterConvVAE()
    for module in (reference.encoder_convs[1], reference.decoder_convs[1], reference.z_mean):
        w = module.weight.detach().numpy()
        if w.ndim == 4:  # conv [out, in, k, k] or transposed conv [in, out, k, k]
            fans = w.shape[0] * w.shape[2] * w.shape[3] + w.shape[1] * w.shape[2] * w.shape[3]
        else:
            fans = sum(w.shape)
        bound = np.sqrt(6 / fans)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
        assert not module.bias.detach().numpy().any()


# ---------------------------------------------------------------------------------------------
# DCGAN (pytorch/examples dcgan/main.py)


def _torch_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flax_counts(image_size, channels, width=64, critic=False):
    shapes = jax.eval_shape(
        models.dcgan(image_size, channels, width, critic=critic).init, jax.random.key(0)
    )
    return models.count_params(shapes["generator"]), models.count_params(shapes["discriminator"])


def test_dcgan_parameter_counts_are_pytorch_examples():
    """64 x 64 x 3 is pytorch/examples' network (its published 3,576,704 / 2,765,568); every
    size has the same count in both frameworks, with and without the discriminator's BN."""
    generator = torch_dcgan.DCGANGenerator(64, 3)
    discriminator = torch_dcgan.DCGANDiscriminator(64, 3)
    assert (_torch_count(generator), _torch_count(discriminator)) == (3_576_704, 2_765_568)
    assert _flax_counts(64, 3) == (3_576_704, 2_765_568)
    # without batch norm: the 128 + 256 + 512 scales and shifts go
    assert _flax_counts(64, 3, critic=True)[1] == 2_765_568 - 2 * (128 + 256 + 512)
    for size, channels, width in ((28, 1, 64), (32, 1, 64), (32, 3, 16), (28, 1, 8)):
        for critic in (False, True):
            torch_counts = (
                _torch_count(torch_dcgan.DCGANGenerator(size, channels, width)),
                _torch_count(
                    torch_dcgan.DCGANDiscriminator(size, channels, width, batch_norm=not critic)
                ),
            )
            assert _flax_counts(size, channels, width, critic) == torch_counts, (size, critic)


def test_torch_dcgan_initialization_is_pytorch_examples():
    torch.manual_seed(0)
    generator = torch_dcgan.DCGANGenerator(32)
    weights = np.concatenate(
        [
            m.weight.detach().numpy().ravel()
            for m in generator.modules()
            if isinstance(m, torch.nn.ConvTranspose2d)
        ]
    )
    assert np.mean(weights) == pytest.approx(0, abs=1e-3)
    assert np.std(weights) == pytest.approx(0.02, rel=0.02)
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    scales = np.concatenate([m.weight.detach().numpy() for m in norms])
    assert np.mean(scales) == pytest.approx(1, abs=3e-3)
    assert np.std(scales) == pytest.approx(0.02, rel=0.15)
    assert not np.concatenate([m.bias.detach().numpy() for m in norms]).any()
    # vaejax's kernels come from the same N(0, 0.02)
    kernel = np.asarray(models.dcgan_init(jax.random.key(0), (4, 4, 256, 128)))
    assert np.mean(kernel) == pytest.approx(0, abs=1e-3)
    assert np.std(kernel) == pytest.approx(0.02, rel=0.02)


def _random_gan_params(model, seed):
    """A parameter tree of ``model``'s shapes with random values (no compiled init, which costs
    seconds of XLA compilation): kernels N(0, 0.02) as initialized, batch-norm scales N(1, 0.2)
    and shifts N(0, 0.2) (not 1 and 0: a scale/shift mix-up shows).

    Larger kernels saturate the generator's tanh, where both frameworks' float32 gradients lose
    digits to 1 - tanh^2 and XLA's tanh (2 ulp; PyTorch's 0.3) leaves 1e-3 relative errors."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        loc, scale = (1.0, 0.2) if "scale" in name else (0.0, 0.2 if "bias" in name else 0.02)
        return (loc + scale * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _gan_pair(image_size, critic, seed=0, width=64):
    model = models.dcgan(image_size, 1, width, critic=critic)
    params = _random_gan_params(model, seed)
    generator, discriminator = torch_dcgan.load_flax_gan_params(
        torch_dcgan.DCGANGenerator(image_size, 1, width),
        torch_dcgan.DCGANDiscriminator(image_size, 1, width, batch_norm=not critic),
        params,
    )
    return model, params, generator.train(), discriminator.train()


def _nchw(images):
    return torch.from_numpy(np.array(np.asarray(images).transpose(0, 3, 1, 2)))  # a writable copy


def _gan_inputs(image_size, batch=8, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, 100)).astype(np.float32)
    real = (rng.random((batch, image_size, image_size, 1)) * 2 - 1).astype(np.float32)
    return z, real


@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("critic", [False, True])
def test_torch_dcgan_matches_vaejax_outputs(image_size, critic):
    """Same weights and z: the same images; same images: the same logits (batch norm on the
    batch's statistics in both, torch in train mode)."""
    model, params, generator, discriminator = _gan_pair(image_size, critic)
    z, real = _gan_inputs(image_size)
    fake = np.asarray(model.generate(params["generator"], jnp.asarray(z)))
    assert fake.shape == (8, image_size, image_size, 1)
    with torch.no_grad():
        torch_fake = generator(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(torch_fake.transpose(0, 2, 3, 1), fake, atol=1e-5)
        assert fake.std() > 0.01  # not all tanh(0)
        for images in (real, fake):
            logits = np.asarray(model.critic(params["discriminator"], jnp.asarray(images)))
            torch_logits = discriminator(_nchw(images)).numpy()
            assert logits.shape == torch_logits.shape == (8,)
            np.testing.assert_allclose(
                torch_logits, logits, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(logits).max())
            )


def test_torch_dcgan_matches_vaejax_loss_gradients():
    """The BCE discriminator loss (real images vs detached fakes) and the non-saturating
    generator loss: same values, same gradients for every parameter of the player trained."""
    model, params, generator, discriminator = _gan_pair(28, critic=False, seed=3)
    # A pre-activation within float32 rounding of a ReLU / LeakyReLU kink can take the other
    # branch in the other framework and change one channel's gradient by percents; in this draw
    # none is closer than 5e-7 (rounding here is about 1e-8).
    z, real = _gan_inputs(28, batch=8, seed=5)
    g_params, d_params = params["generator"], params["discriminator"]
    fake = model.generate(g_params, jnp.asarray(z))

    def d_loss(d):
        return objectives.discriminator_bce(
            model.critic(d, jnp.asarray(real)), model.critic(d, fake)
        )

    def g_loss(g):
        fake_logits = model.critic(d_params, model.generate(g, jnp.asarray(z)))
        return objectives.generator_non_saturating(fake_logits)

    d_value, d_grads = jax.jit(jax.value_and_grad(d_loss))(d_params)
    g_value, g_grads = jax.jit(jax.value_and_grad(g_loss))(g_params)

    torch_fake = generator(torch.from_numpy(z))
    torch_d = torch_dcgan.dcgan_discriminator_loss(
        discriminator(_nchw(real)), discriminator(torch_fake.detach())
    )
    torch_d.backward()
    assert generator.main[0].weight.grad is None
    torch_d_grads = torch_dcgan.flax_gan_gradients(generator, discriminator)
    discriminator.zero_grad(set_to_none=True)
    torch_g = torch_dcgan.dcgan_generator_loss(discriminator(generator(torch.from_numpy(z))))
    torch_g.backward(inputs=list(generator.parameters()))
    assert discriminator.main[0].weight.grad is None
    torch_g_grads = torch_dcgan.flax_gan_gradients(generator, discriminator)

    assert float(torch_d.detach()) == pytest.approx(float(d_value), rel=1e-5)
    assert float(torch_g.detach()) == pytest.approx(float(g_value), rel=1e-5)
    for grads, reference in (
        (d_grads, torch_d_grads["discriminator"]),
        (g_grads, torch_g_grads["generator"]),
    ):
        assert set(reference) == set(grads)
        for (path, g), t in zip(
            jax.tree_util.tree_leaves_with_path(grads),
            jax.tree_util.tree_leaves(reference),
            strict=True,
        ):
            g = np.asarray(g)
            np.testing.assert_allclose(
                t, g, rtol=1e-3, atol=1e-4 * np.abs(g).max(), err_msg=jax.tree_util.keystr(path)
            )


def test_torch_unet_twin_matches_vaejax_outputs_and_gradients():
    shape, multipliers = (8, 8, 3), (1, 2)  # colour, one level down and up, 1x1 skip convs
    from experiments.benchmarking import torch_unet
    from vaejax.models.unet import UNet

    unet = UNet(channels=8, multipliers=multipliers, groups=4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, *shape)).astype(np.float32)
    t = np.array([0, 17, 999], np.int32)
    # random weights throughout (the zero-initialized output conv would hide every other
    # gradient); only the shapes come from init, which eval_shape finds without running it
    shapes = jax.eval_shape(unet.init, jax.random.key(2), jnp.asarray(x), jnp.asarray(t))
    params = jax.tree_util.tree_map(
        lambda s: (0.3 * rng.normal(size=s.shape)).astype(np.float32), shapes["params"]
    )
    target = rng.normal(size=x.shape).astype(np.float32)
    loss = lambda p: jnp.mean(
        (unet.apply({"params": p}, jnp.asarray(x), jnp.asarray(t)) - target) ** 2
    )
    value, grads = jax.jit(jax.value_and_grad(loss))(params)

    twin = torch_unet.TorchUNet(shape[-1], 8, multipliers, groups=4)
    torch_unet.load_flax_unet_params(twin, params)
    assert sum(p.numel() for p in twin.parameters()) == models.count_params(params)
    nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
    out = twin(nchw(x), torch.from_numpy(t))
    torch_value = torch.mean((out - nchw(target)) ** 2)
    torch_value.backward()
    assert float(torch_value.detach()) == pytest.approx(float(value), rel=1e-5)
    torch_grads = torch_unet.flax_unet_gradients(twin)
    flat = dict(jax.tree_util.tree_leaves_with_path(torch_grads))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        scale = np.abs(np.asarray(g)).max()
        np.testing.assert_allclose(
            flat[path], g, rtol=1e-4, atol=1e-4 * scale, err_msg=jax.tree_util.keystr(path)
        )
    assert len(flat) == len(jax.tree_util.tree_leaves(grads))
