"""PyTorch versions of vaejax's models, for the benchmark and the equivalence tests (optional:
needs the ``bench`` extra, i.e. ``torch``).

- :class:`ExampleMLPVAE` is the VAE of pytorch/examples ``vae/main.py`` as a PyTorch user runs it:
  784-400-(20, 20) encoder, 20-400-784 decoder ending in a sigmoid, PyTorch's default
  ``nn.Linear`` initialization (the same scheme as :func:`vaejax.models.mlp_vae`).
  :func:`example_loss` is its loss: binary cross-entropy on the sigmoid's output plus the
  analytic KL, **summed** over the batch (vaejax uses the batch mean; Adam does not care).
- :func:`load_flax_params` copies a :func:`vaejax.models.mlp_vae` parameter tree into it, so
  both frameworks can be run on the same weights.
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
    kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp())
    return bce + kl


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
        tree[part][layer] = {"Dense_0": {"kernel": linear.weight.grad.numpy().T,
                                         "bias": linear.bias.grad.numpy()}}
    return tree
