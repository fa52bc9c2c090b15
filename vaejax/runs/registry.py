"""The built-in run kinds: importing this module registers them (one line per kind)."""

from vaejax.runs import (  # noqa: F401
    anomaly,
    autoencoders,
    classifier,
    conditional,
    ddpm,
    denoising,
    gan,
    latent_study,
    likelihood,
    sample_quality,
    vae,
)
