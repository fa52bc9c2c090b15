"""FLOPs per image of a training step of each benchmarked model, counted analytically (tests
check the counts against XLA's cost analysis), and the machine's measured matrix-multiply peak.
"""

from __future__ import annotations

import statistics
import time

from experiments.benchmarking.common import SETTINGS


def mlp_vae_train_flops(pixels: int = 784, hidden: int = 400, latent: int = 20) -> int:
    """FLOPs per image of one training step of the MLP VAE (multiply-adds count 2).

    Forward: the five matrix products, M = pixels*hidden + 2*hidden*latent + latent*hidden +
    hidden*pixels multiply-adds. Backward: the gradients of the weights (M) and of each layer's
    input (M, less the first layer's, pixels*hidden, which nothing needs). Elementwise work
    (activations, the loss, Adam) is left out: it is O(parameters + pixels), under 1% here.
    """
    macs = pixels * hidden + 2 * hidden * latent + latent * hidden + hidden * pixels
    return 2 * (3 * macs - pixels * hidden)


def conv_taps(size_in: int, stride: int) -> int:
    """Kernel taps on data along one axis of a 'same' 3x3 convolution from ``size_in`` pixels:
    ``out * 3 - pad`` (``pad`` the taps that fall on zero padding)."""
    out = -(-size_in // stride)
    pad = max((out - 1) * stride + 3 - size_in, 0)
    return out * 3 - pad


def conv_vae_train_flops(size: int = 32, channels=(32, 64, 128), latent: int = 2) -> int:
    """FLOPs per image of one training step of Foster's conv VAE (3x3 kernels, stride 2).

    Counts the multiply-adds that touch data, as XLA's cost analysis does: along each axis a
    'same' conv with ``out`` outputs uses ``out * 3 - pad`` kernel taps (``pad`` the zero
    padding), a stride-2 transposed conv from ``n`` inputs ``3 * n - 1`` (one tap falls on the
    cropped row). Forward M = 13.28 M multiply-adds for the default model (14.54 M counting the
    taps on padding). Backward: 2M, less the first conv's input gradient.
    """

    widths = (1, *channels)
    macs, side, first = 0, size, None
    for c_in, c_out in zip(widths[:-1], widths[1:]):  # encoder convs, stride 2
        layer = conv_taps(side, 2) ** 2 * c_in * c_out
        first = layer if first is None else first
        macs += layer
        side = -(-side // 2)
    flat = side * side * channels[-1]
    macs += 2 * flat * latent + latent * flat  # the two heads, the decoder's dense layer
    back = (channels[-1], *reversed(channels))
    for c_in, c_out in zip(back[:-1], back[1:]):  # transposed convs, stride 2
        macs += (3 * side - 1) ** 2 * c_in * c_out
        side *= 2
    macs += conv_taps(side, 1) ** 2 * channels[0]  # the output conv, stride 1
    return 2 * (3 * macs - first)


def dcgan_forward_macs(
    image_size: int = 28, channels: int = 1, width: int = 64, noise_dim: int = 100
) -> dict[str, int]:
    """Multiply-adds per image of the DCGAN's forward passes, counting the kernel taps that touch
    data (as XLA's cost analysis does; zero padding and the holes of transposed convolutions do
    not count): ``generator``, ``discriminator``, and the two layers whose input gradient no
    training step needs, ``projection`` (z -> the start map) and ``first_conv`` (the image).

    Along each axis a 4x4 stride-2 convolution (padding 1) from ``n`` pixels has 2n - 2 taps on
    data, a 4x4 stride-2 transposed convolution from ``n`` pixels 4n - 2.
    """
    from vaejax.models.gan import layout  # flax: imported only when a DCGAN is counted

    start, layers = layout(image_size)
    generator_widths = [width * 2 ** (layers - 1 - i) for i in range(layers)] + [channels]
    projection = noise_dim * start * start * generator_widths[0]
    generator, side = projection, start
    for c_in, c_out in zip(generator_widths[:-1], generator_widths[1:]):
        generator += (4 * side - 2) ** 2 * c_in * c_out
        side *= 2
    discriminator_widths = [channels] + [width * 2**i for i in range(layers)]
    first_conv, discriminator, side = None, 0, image_size
    for c_in, c_out in zip(discriminator_widths[:-1], discriminator_widths[1:]):
        layer = (2 * side - 2) ** 2 * c_in * c_out
        first_conv = layer if first_conv is None else first_conv
        discriminator += layer
        side //= 2
    discriminator += start * start * discriminator_widths[-1]  # the logit
    return {
        "generator": generator,
        "discriminator": discriminator,
        "projection": projection,
        "first_conv": first_conv,
    }


def dcgan_train_flops(
    image_size: int = 28, channels: int = 1, width: int = 64, noise_dim: int = 100
) -> int:
    """FLOPs per real image of one DCGAN update (a discriminator step and a generator step on
    batches of the same size; multiply-adds count 2), from :func:`dcgan_forward_macs` G, D:

    - discriminator step: G forward for the fakes; D forward on the real and the fake batch,
      and its backward on both: weight gradients (D each) and input gradients (D less the
      first conv's: nothing needs the images' gradient): G + 6D - 2 first_conv;
    - generator step: G and D forward on fresh fakes; D backward for its input gradients only
      (its weights are not trained here), G backward: weight gradients (G) and input gradients
      less the projection's (z needs none): 3G + 2D - projection.

    Elementwise work (batch norm, activations, the losses, Adam) is left out: XLA's cost
    analysis counts 1.2% more at width 64 (0.6% at 128; a test checks). 140.5 MFLOP per real
    image for the default model (28 x 28, width 64), 338.5 M at 32 x 32.
    """
    m = dcgan_forward_macs(image_size, channels, width, noise_dim)
    g, d = m["generator"], m["discriminator"]
    return 2 * (4 * g + 8 * d - 2 * m["first_conv"] - m["projection"])


def unet_train_flops(size: int = 28, width: int = 32, multipliers=(1, 2, 2)) -> int:
    """FLOPs per image of one DDPM training step of :class:`vaejax.models.unet.UNet` on
    ``size`` x ``size`` x 1 images: the multiply-adds of its convolutions (taps on data, as
    :func:`conv_taps` counts them) and dense layers, forward once and backward twice, less the
    input gradients nothing needs (the image's, the timestep embedding's). GroupNorm, swish
    and the loss are left out: XLA's cost analysis of the loss gradient counts 7.7% more at
    width 32 and 9.4% at 16 (a test checks). 632.5 MFLOP per image at width 32."""

    def block(n: int, c_in: int, c_out: int) -> int:  # a residual block at n x n
        skip = n * n * c_in * c_out if c_in != c_out else 0
        return conv_taps(n, 1) ** 2 * (c_in + c_out) * c_out + 4 * width * 2 * c_out + skip

    first = conv_taps(size, 1) ** 2 * width
    embedding_in = width * 4 * width
    macs, n, c, skips = first + embedding_in + 16 * width * width, size, width, []
    for level, multiplier in enumerate(multipliers):
        macs += block(n, c, width * multiplier)
        c = width * multiplier
        skips.append((n, c))
        if level < len(multipliers) - 1:
            macs += conv_taps(n, 2) ** 2 * c * c
            n = -(-n // 2)
    macs += 2 * block(n, c, c)
    for skip_n, skip_c in reversed(skips):
        if skip_n != n:
            n = skip_n
            macs += conv_taps(n, 1) ** 2 * c * skip_c
            c = skip_c
        macs += block(n, c + skip_c, skip_c)
        c = skip_c
    macs += conv_taps(n, 1) ** 2 * c
    return 2 * (3 * macs - first - embedding_in)


def train_flops(model: str, *, image_size: int = 28, width: int = 64) -> int:
    """FLOPs per image of a training step of ``model``; ``image_size`` and ``width`` are the
    DCGAN's, ``width`` the U-Net's too (the VAEs have one size each)."""
    if model == "unet":
        return unet_train_flops(28, width, SETTINGS["unet"]["multipliers"])
    if model == "dcgan":
        return dcgan_train_flops(image_size, 1, width, SETTINGS["dcgan"]["noise_dim"])
    return mlp_vae_train_flops() if model == "mlp" else conv_vae_train_flops()


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """The FLOP/s of a jitted float32 [n, n] @ [n, n] product on the default device (median)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    product = jax.jit(lambda a, b: a @ b)
    product(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)
