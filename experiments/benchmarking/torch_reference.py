"""PyTorch versions of vaejax's models, for the benchmark and the equivalence tests (optional:
needs the ``bench`` extra, i.e. ``torch``).

- :class:`ExampleMLPVAE` is the VAE of pytorch/examples ``vae/main.py`` as a PyTorch user runs it:
  784-400-(20, 20) encoder, 20-400-784 decoder ending in a sigmoid, PyTorch's default
  ``nn.Linear`` initialization (the same scheme as :func:`vaejax.models.mlp_vae`).
  :func:`example_loss` is its loss: binary cross-entropy on the sigmoid's output plus the
  analytic KL, **summed** over the batch (vaejax uses the batch mean; Adam does not care).
- :func:`load_flax_params` copies a :func:`vaejax.models.mlp_vae` parameter tree into it, so
  both frameworks can be run on the same weights.
- :class:`FosterConvVAE` is Foster's convolutional VAE (the ``conv`` model) written as a PyTorch
  user ports the Keras original: channels-first tensors, Keras' 'same' padding reproduced
  (:class:`SameConv2d`, :class:`SameConvTranspose2d`), the flatten in Keras' channels-last
  order. :func:`load_flax_conv_params` copies a :func:`vaejax.models.conv_vae` tree into it.
- :class:`DCGANGenerator` and :class:`DCGANDiscriminator` are the networks of pytorch/examples
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


class ExampleMLPVAE(nn.Module):
    """pytorch/examples' VAE; ``forward(x, eps=None) -> (pixel means [B, 784], mean, log_var)``.

    ``eps`` [B, latent_dim] is the standard-normal noise of the reparameterization; None draws it
    with ``torch.randn_like`` (PyTorch's global generator), as the example does.
    """

    def __init__(self, latent_dim: int = 20, hidden_dim: int = 400, pixels: int = 784):
        super().__init__()
        self.pixels = pixels
        self.fc1 = nn.Linear(pixels, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, pixels)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x, eps=None):
        mean, log_var = self.encode(x.reshape(-1, self.pixels))
        std = torch.exp(0.5 * log_var)
        eps = torch.randn_like(std) if eps is None else eps
        return self.decode(mean + eps * std), mean, log_var


def example_loss(probs, x, mean, log_var):
    """The example's loss in nats, summed over the batch: BCE(probs, x) + KL(q || N(0, I)).

    ``F.binary_cross_entropy`` clamps its logs at -100, so pixels the decoder is certain about
    (|logit| > ~100) differ from vaejax's logit form; for any trained model they agree.
    """
    bce = F.binary_cross_entropy(probs, x.reshape(probs.shape), reduction="sum")
    return bce + kl_to_standard_normal(mean, log_var)


def kl_to_standard_normal(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over the batch and the latents."""
    return -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())


def foster_loss(logits, x, mean, log_var, beta: float = 1024 / 500):
    """Foster's loss as vaejax trains it, summed over the batch: BCE on the decoder's logits
    plus ``beta`` x KL (beta = 1024/500 is Foster's 500 x mean-BCE + KL on 32x32 images)."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return bce + beta * kl_to_standard_normal(mean, log_var)


_LAYERS = {  # torch layer -> flax path (vaejax.models.mlp_vae with one hidden layer)
    "fc1": ("encoder", "TorchDense_0"),
    "fc21": ("encoder", "mean"),
    "fc22": ("encoder", "log_var"),
    "fc3": ("decoder", "TorchDense_0"),
    "fc4": ("decoder", "TorchDense_1"),
}


def load_flax_params(model: ExampleMLPVAE, params) -> ExampleMLPVAE:
    """Copies the weights of a one-hidden-layer :func:`vaejax.models.mlp_vae` into ``model``
    (flax kernels are [in, out], torch weights [out, in]); returns ``model``."""
    with torch.no_grad():
        for name, (part, layer) in _LAYERS.items():
            dense = params[part][layer]["Dense_0"]
            linear = getattr(model, name)
            linear.weight.copy_(torch.from_numpy(np.asarray(dense["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(dense["bias"]).copy()))
    return model


def flax_gradients(model: ExampleMLPVAE) -> dict:
    """The ``.grad`` of ``model``'s parameters arranged as a flax parameter tree (numpy)."""
    tree: dict = {"encoder": {}, "decoder": {}}
    for name, (part, layer) in _LAYERS.items():
        linear = getattr(model, name)
        tree[part][layer] = {
            "Dense_0": {"kernel": linear.weight.grad.numpy().T, "bias": linear.bias.grad.numpy()}
        }
    return tree


# ---------------------------------------------------------------------------------------------
# Foster's convolutional VAE


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with Keras/XLA 'same' padding: ceil(size / stride) outputs, the odd padding
    pixel at the end (PyTorch's own ``padding=1`` at stride 2 puts it at the start too)."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(
            reversed(x.shape[2:]), reversed(self.kernel_size), reversed(self.stride)
        ):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride)


class SameConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (no padding) cropped to stride x size outputs: the alignment of
    XLA's 'SAME' transposed convolution, for odd kernels with stride 2 (Foster's layers)."""

    def forward(self, x):
        size = [n * s for n, s in zip(x.shape[2:], self.stride)]
        return super().forward(x)[:, :, : size[0], : size[1]]


class FosterConvVAE(nn.Module):
    """Foster's VAE on [B, 1, 32, 32]: ``forward(x, eps=None) -> (logits, mean, log_var)``.

    Initialized as Keras does (Glorot-uniform weights, zero biases; Glorot's bound depends on
    fan_in + fan_out only, so PyTorch's swapped fans for transposed convs do not matter)."""

    def __init__(self, latent_dim: int = 2, channels=(32, 64, 128)):
        super().__init__()
        widths = (1, *channels)
        self.encoder_convs = nn.ModuleList(
            SameConv2d(a, b, 3, stride=2) for a, b in zip(widths[:-1], widths[1:])
        )
        self.z_mean = nn.Linear(4 * 4 * channels[-1], latent_dim)
        self.z_log_var = nn.Linear(4 * 4 * channels[-1], latent_dim)
        self.dense = nn.Linear(latent_dim, 4 * 4 * channels[-1])
        back = (channels[-1], *reversed(channels))
        self.decoder_convs = nn.ModuleList(
            SameConvTranspose2d(a, b, 3, stride=2) for a, b in zip(back[:-1], back[1:])
        )
        self.output_conv = SameConv2d(channels[0], 1, 3)
        self.channels = channels
        for module in self.modules():  # Keras' defaults, as vaejax's conv models use
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x):
        h = x
        for conv in self.encoder_convs:
            h = F.relu(conv(h))
        h = h.permute(0, 2, 3, 1).reshape(len(h), -1)  # Keras flattens channels-last
        return self.z_mean(h), self.z_log_var(h)

    def decode(self, z):
        h = self.dense(z).reshape(len(z), 4, 4, self.channels[-1]).permute(0, 3, 1, 2)
        for conv in self.decoder_convs:
            h = F.relu(conv(h))
        return self.output_conv(h)

    def forward(self, x, eps=None):
        mean, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        eps = torch.randn_like(std) if eps is None else eps
        return self.decode(mean + eps * std), mean, log_var


def _copy(module, kernel, bias) -> None:
    module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
    module.bias.copy_(torch.from_numpy(np.asarray(bias).copy()))


def load_flax_conv_params(model: FosterConvVAE, params) -> FosterConvVAE:
    """Copies a :func:`vaejax.models.conv_vae` parameter tree into ``model``; returns it.

    Conv kernels [kh, kw, in, out] become [out, in, kh, kw]; transposed-conv kernels become
    [in, out, kh, kw] flipped in space (XLA's transposed convolution correlates with the kernel
    as stored, PyTorch's with it flipped)."""
    encoder, decoder = params["encoder"], params["decoder"]
    as_numpy = lambda tree: {k: np.asarray(v) for k, v in tree.items()}
    with torch.no_grad():
        for i, conv in enumerate(model.encoder_convs):
            p = as_numpy(encoder[f"Conv2D_{i}"])
            _copy(conv, p["kernel"].transpose(3, 2, 0, 1), p["bias"])
        for name in ("z_mean", "z_log_var"):
            p = as_numpy(encoder[name])
            _copy(getattr(model, name), p["kernel"].T, p["bias"])
        p = as_numpy(decoder["Dense_0"])
        _copy(model.dense, p["kernel"].T, p["bias"])
        for i, conv in enumerate(model.decoder_convs):
            p = as_numpy(decoder[f"ConvTranspose2D_{i}"])
            _copy(conv, p["kernel"].transpose(2, 3, 0, 1)[:, :, ::-1, ::-1], p["bias"])
        p = as_numpy(decoder["Conv2D_0"])
        _copy(model.output_conv, p["kernel"].transpose(3, 2, 0, 1), p["bias"])
    return model


# ---------------------------------------------------------------------------------------------
# The DCGAN of pytorch/examples dcgan/main.py


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
