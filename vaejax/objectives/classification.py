"""The classifier's objective: cross-entropy and error per example."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from vaejax.models.classifier import LeNet


def classifier_per_example(model: LeNet):
    """``f(params, (images, labels), key) -> {"loss": cross-entropy [B] (nats), "error": [B]
    (1 if the arg-max is wrong)}``."""

    def terms(params, batch, key):
        del key
        images, labels = batch
        logits = model.apply({"params": params}, images).logits
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels),
            "error": (jnp.argmax(logits, -1) != labels).astype(jnp.float32),
        }

    return terms
