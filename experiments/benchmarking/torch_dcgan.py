"""The PyTorch twin of :func:`vaejax.models.dcgan`, for the benchmark and the equivalence tests
(optional: needs the ``bench`` extra, i.e. ``torch``).

:class:`DCGANGenerator` and :class:`DCGANDiscriminator` are the networks of pytorch/examples
``dcgan/main.py`` (Radford et al. 2016) for any image size :func:`vaejax.models.dcgan` takes,
with its weight initialization (:func:`dcgan_weights_init`); the discriminator returns logits
and :func:`dcgan_discriminator_loss` / :func:`dcgan_generator_loss` are the example's BCE
losses on them. :func:`load_flax_gan_params` copies a :func:`vaejax.models.dcgan` tree into the
pair, :func:`flax_gan_gradients` reads their ``.grad`` back as one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaejax.models.gan import layout


def dcgan_weights_init(module: nn.Module) -> None:
    """pytorch/examples' ``weights_init``: conv and transposed-conv weights ~ N(0, 0.02), batch
    norm weights ~ N(1, 0.02) and biases 0. Apply with ``model.apply(dcgan_weights_init)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """pytorch/examples' ``Generator``: z [B, noise_dim] -> images [B, channels, S, S] in [-1, 1].

    ``ConvTranspose2d(noise_dim, C, start, 1, 0)`` on z as a [B, noise_dim, 1, 1] map (C = width
    x 2^(layers - 1)), then 4x4 stride-2 transposed convolutions (padding 1) halving the channels,
    ``BatchNorm2d`` and ReLU after each but the last, which goes to ``channels`` and tanh; no
    biases. ``image_size`` 64 with ``channels`` 3 is the example's network (ngf = ``width``),
    3,576,704 parameters. Batch norm uses batch statistics in ``train()`` mode, as the example
    and :class:`vaejax.models.gan.Generator` do."""

    def __init__(
        self, image_size: int = 28, channels: int = 1, width: int = 64, noise_dim: int = 100
    ):
        super().__init__()
        start, layers = layout(image_size)
        widths = [width * 2 ** (layers - 1 - i) for i in range(layers)]
        stack: list[nn.Module] = [
            nn.ConvTranspose2d(noise_dim, widths[0], start, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            stack += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]
        stack += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*stack)
        self.noise_dim = noise_dim
        self.apply(dcgan_weights_init)

    def forward(self, z):
        return self.main(z.reshape(len(z), self.noise_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """pytorch/examples' ``Discriminator``: images [B, channels, S, S] -> **logits** [B].

    4x4 stride-2 convolutions (padding 1) doubling the channels from ``width`` (ndf),
    LeakyReLU 0.2, ``BatchNorm2d`` after all but the first (none with ``batch_norm=False``: the
    WGAN-GP critic), then ``Conv2d(C, 1, start, 1, 0)`` on the ``start`` x ``start`` map; no
    biases. 64 x 64 x 3 images give the example's network, 2,765,568 parameters.

    The example ends in ``nn.Sigmoid`` and trains with ``nn.BCELoss`` on the probabilities; this
    one stops at the logit and the losses use ``binary_cross_entropy_with_logits``: the same
    function, computed as softplus of the logit, which stays finite and keeps its gradient where
    the sigmoid saturates (log(sigmoid(l)) for l << 0 underflows, and BCELoss clamps it at -100).
    """

    def __init__(
        self, image_size: int = 28, channels: int = 1, width: int = 64, batch_norm: bool = True
    ):
        super().__init__()
        start, layers = layout(image_size)
        stack: list[nn.Module] = []
        c_in = channels
        for i in range(layers):
            c_out = width * 2**i
            stack.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
            if i > 0 and batch_norm:
                stack.append(nn.BatchNorm2d(c_out))
            stack.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        stack.append(nn.Conv2d(c_in, 1, start, 1, 0, bias=False))
        self.main = nn.Sequential(*stack)
        self.apply(dcgan_weights_init)

    def forward(self, x):
        return self.main(x).reshape(len(x))


def dcgan_discriminator_loss(real_logits, fake_logits):
    """The example's ``errD_real + errD_fake``: mean BCE of D(x) against 1 plus mean BCE of
    D(G(z)) against 0, on logits (:func:`vaejax.objectives.gan.discriminator_bce`)."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def dcgan_generator_loss(fake_logits):
    """The example's ``errG``, the non-saturating -mean log D(G(z)), on logits
    (:func:`vaejax.objectives.gan.generator_non_saturating`)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def _gan_layers(generator: DCGANGenerator, discriminator: DCGANDiscriminator):
    """(torch module, (flax network, flax layer), kind) for every layer with parameters."""
    pairs = []
    for part, net in (("generator", generator), ("discriminator", discriminator)):
        counts: dict[str, int] = {}
        layers = [
            m for m in net.main if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))
        ]
        for i, module in enumerate(layers):
            if isinstance(module, nn.BatchNorm2d):
                name, kind = "BatchNorm", "batch_norm"
            elif isinstance(module, nn.ConvTranspose2d):  # the first one is the flax Dense
                name, kind = (
                    ("Dense", "project") if i == 0 else ("ConvTranspose2D", "conv_transpose")
                )
            else:  # the last conv is the flax Dense
                name, kind = ("Dense", "logit") if i == len(layers) - 1 else ("Conv2D", "conv")
            pairs.append((module, (part, f"{name}_{counts.get(name, 0)}"), kind))
            counts[name] = counts.get(name, 0) + 1
    return pairs


def _gan_weight_to_torch(kind: str, kernel: np.ndarray, shape) -> np.ndarray:
    """A flax kernel as the torch weight of ``shape``.

    - project: Dense [nz, S*S*C] (reshaped NHWC) -> ConvTranspose2d [nz, C, S, S];
    - logit: Dense [S*S*C, 1] on the NHWC flatten -> Conv2d [1, C, S, S];
    - conv: [kh, kw, in, out] -> [out, in, kh, kw];
    - conv_transpose: [kh, kw, in, out] -> [in, out, kh, kw] flipped in space (XLA's transposed
      convolution correlates with the kernel as stored, PyTorch's with it flipped).
    """
    if kind == "project":
        nz, c, s, _ = shape
        return kernel.reshape(nz, s, s, c).transpose(0, 3, 1, 2)
    if kind == "logit":
        _, c, s, _ = shape
        return kernel[:, 0].reshape(s, s, c).transpose(2, 0, 1)[None]
    if kind == "conv":
        return kernel.transpose(3, 2, 0, 1)
    return kernel.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]


def _gan_weight_to_flax(kind: str, weight: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_gan_weight_to_torch`."""
    if kind == "project":
        return weight.transpose(0, 2, 3, 1).reshape(len(weight), -1)
    if kind == "logit":
        return weight[0].transpose(1, 2, 0).reshape(-1, 1)
    if kind == "conv":
        return weight.transpose(2, 3, 1, 0)
    return weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)


def load_flax_gan_params(
    generator: DCGANGenerator, discriminator: DCGANDiscriminator, params
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """Copies a :func:`vaejax.models.dcgan` tree ({'generator', 'discriminator'}, built with the
    same image size, channels, widths and batch norm) into the pair; returns it. Batch norm
    ``scale`` / ``bias`` become ``weight`` / ``bias``; see :func:`_gan_weight_to_torch` for the
    kernels."""
    with torch.no_grad():
        for module, (part, layer), kind in _gan_layers(generator, discriminator):
            p = {k: np.asarray(v) for k, v in params[part][layer].items()}
            if kind == "batch_norm":
                module.weight.copy_(torch.from_numpy(p["scale"].copy()))
                module.bias.copy_(torch.from_numpy(p["bias"].copy()))
            else:
                weight = _gan_weight_to_torch(kind, p["kernel"], tuple(module.weight.shape))
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
    return generator, discriminator


def flax_gan_gradients(generator: DCGANGenerator, discriminator: DCGANDiscriminator) -> dict:
    """The ``.grad`` of the pair's parameters as a :func:`vaejax.models.dcgan` tree (numpy); a
    network whose parameters hold no gradient is left out."""
    tree: dict = {}
    for module, (part, layer), kind in _gan_layers(generator, discriminator):
        if module.weight.grad is None:
            continue
        weight = module.weight.grad.numpy()
        if kind == "batch_norm":
            leaves = {"scale": weight, "bias": module.bias.grad.numpy()}
        else:
            leaves = {"kernel": np.ascontiguousarray(_gan_weight_to_flax(kind, weight))}
        tree.setdefault(part, {})[layer] = leaves
    return tree
