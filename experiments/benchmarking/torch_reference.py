"""PyTorch versions of vaejax's VAEs, for the benchmark and the equivalence tests (optional:
needs the ``bench`` extra, i.e. ``torch``). The DCGAN's twin is in
:mod:`experiments.benchmarking.torch_dcgan`.

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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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
