"""A small LeNet-style classifier per dataset: the feature extractor of the sample-quality metrics.

No Inception network can be downloaded here, so FID and the Inception score are computed the
same way with this network in its place (:mod:`vaejax.evaluation.sample_quality`,
:mod:`vaejax.evaluation.judge`): its penultimate layer (128 ReLU units) gives the features of
the Fréchet distance, its softmax the class probabilities of the score, and its conv maps the
perceptual loss of the VAE experiments. The numbers compare models with each other under one
trained classifier; they are not comparable with Inception-based numbers in papers.

Architecture (LeCun et al. 1998, widened): conv 5x5 16 -> ReLU -> max-pool 2 -> conv 5x5 32 ->
ReLU -> max-pool 2 -> dense 128 -> ReLU (the features) -> dense 10. 'SAME' convolutions on
28x28x1 images in [0, 1].
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax

from vaejax.models.layers import Conv2D


class Activations(NamedTuple):
    """What the classifier computes for images [B, 28, 28, 1]."""

    conv1: jax.Array  # [B, 14, 14, 16] after ReLU and pooling
    conv2: jax.Array  # [B, 7, 7, 32]
    features: jax.Array  # [B, hidden] the penultimate layer (FID's features)
    logits: jax.Array  # [B, num_classes]


class LeNet(nn.Module):
    """images [B, 28, 28, 1] in [0, 1] -> :class:`Activations`."""

    num_classes: int = 10
    channels: tuple[int, int] = (16, 32)
    hidden_dim: int = 128

    @nn.compact
    def __call__(self, x):
        h1 = nn.max_pool(nn.relu(Conv2D(self.channels[0], 5)(x)), (2, 2), (2, 2))
        h2 = nn.max_pool(nn.relu(Conv2D(self.channels[1], 5)(h1)), (2, 2), (2, 2))
        features = nn.relu(nn.Dense(self.hidden_dim)(h2.reshape(x.shape[0], -1)))
        return Activations(h1, h2, features, nn.Dense(self.num_classes)(features))
