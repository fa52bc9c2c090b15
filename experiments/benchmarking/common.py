"""What every benchmark runner shares: the variants, the models and their training settings,
and the record a run returns."""

from __future__ import annotations

import resource
import statistics
from typing import Any

VARIANTS = ("torch_example", "torch_tuned", "jax_step", "jax_epoch")
MODELS = ("mlp", "conv", "dcgan", "unet")
# the experiments' settings: pytorch/examples for the MLP and the DCGAN, Foster's for the conv VAE
SETTINGS = {
    "mlp": {"size": 28, "learning_rate": 1e-3, "adam_eps": 1e-8, "beta": 1.0},
    "conv": {"size": 32, "learning_rate": 5e-4, "adam_eps": 1e-7, "beta": 1024 / 500},
    "dcgan": {"noise_dim": 100, "learning_rate": 2e-4, "betas": (0.5, 0.999)},
    # experiments.ddpm_mnist's defaults (Ho et al.'s schedule and loss, a small U-Net)
    "unet": {
        "multipliers": (1, 2, 2),
        "learning_rate": 1e-3,
        "warmup_steps": 200,
        "clip_norm": 1.0,
        "ema_decay": 0.999,
        "timesteps": 1000,
    },
}
# what the DCGAN reports instead of a test loss: the last epoch's means
GAN_METRICS = ("d_loss", "g_loss", "d_real", "d_fake")
# and the DDPM's: the last epoch's mean noise-prediction MSE
DDPM_METRICS = ("loss",)


def peak_host_mib() -> float:
    """This process's peak resident memory, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(
    epoch_seconds: list[float],
    images_per_epoch: int,
    test_loss: float | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result of a run; ``test_loss`` None (the GAN, which has none) leaves it out."""
    warm = epoch_seconds[1:] or epoch_seconds
    loss = {} if test_loss is None else {"test_negative_elbo": test_loss}
    return {
        "images_per_second": images_per_epoch / statistics.median(warm),
        "first_epoch_seconds": epoch_seconds[0],
        "epoch_seconds": epoch_seconds,
        **loss,
        "peak_host_mib": peak_host_mib(),
        **(extra or {}),
    }
