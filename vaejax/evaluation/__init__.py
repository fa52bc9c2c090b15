"""Evaluation: metrics, likelihood bounds, FID / Inception-score analogues and their judge,
latent-space tools, sampling."""
