"""Throughput of vaejax's models against PyTorch versions of them, on the same data and machine.

The models: ``mlp``, the pytorch/examples VAE, ``conv``, Foster's conv VAE (its experiment's
settings: Adam 5e-4, epsilon 1e-7, beta 2.048; there is no "PyTorch example" of it, so its
baseline is ``torch_tuned``), and ``dcgan``, the DCGAN of pytorch/examples ``dcgan/main.py``
(see below). What follows describes the MLP; the conv model runs the same variants except
``torch_example``.

Each *variant* trains the 784-400-20 MLP VAE (Adam 1e-3, summed BCE + KL, grey MNIST) for a
number of epochs and reports images/second over the warm epochs (median), the first epoch's
time (compilation, warm-up), the test negative ELBO after training, and peak memory:

- ``torch_example``: pytorch/examples ``vae/main.py`` as a user runs it: a ``DataLoader``
  (shuffle, batch 128, last batch kept) over a dataset whose items go through PIL and
  ``ToTensor`` as torchvision's MNIST does, eager PyTorch, ``loss.item()`` every step.
- ``torch_tuned``: fair to PyTorch: the training set is one float tensor on the device, batches
  are index slices of a ``randperm`` (ragged batch dropped, as vaejax does), no per-step host
  sync; with ``torch_compile`` the model and loss go through ``torch.compile``.
- ``jax_step``: vaejax's ``make_train_step`` in a Python loop over host batches.
- ``jax_epoch``: vaejax's ``make_epoch_runner``: the whole epoch as one compiled loop over data on
  the device(s).

FLOPs are counted analytically (:mod:`experiments.benchmarking.flops`); the machine's
matrix-multiply peak is measured in the same run
(:func:`~experiments.benchmarking.flops.matmul_peak_flops`).

``dcgan`` trains :func:`vaejax.models.dcgan` and its PyTorch twin
(:class:`~experiments.benchmarking.torch_dcgan.DCGANGenerator`,
:class:`~experiments.benchmarking.torch_dcgan.DCGANDiscriminator`) on MNIST scaled to
[-1, 1] (28 x 28, or zero-padded to 32 x 32): Adam 2e-4, betas (0.5, 0.999) for both players,
batch 64 by default. One update is a discriminator step (binary cross-entropy on the logits of
the real batch and of fakes from fresh z) then a generator step (non-saturating loss, fresh z):
the ``torch_tuned`` loop does in PyTorch what :func:`vaejax.training.gan.make_gan_update` does
(fakes for the discriminator made without a graph, no discriminator weight gradients in the
generator's step), and ``jax_step`` / ``jax_epoch`` run that update as for the VAEs. It reports
real images per second and, instead of a test loss, the last epoch's mean losses and D(x),
D(G(z)) (the same game in both frameworks should end near the same values); FLOPs:
:func:`~experiments.benchmarking.flops.dcgan_train_flops`. There is no ``torch_example``
variant.

``unet`` trains the DDPM of ``experiments.ddpm_mnist`` (its U-Net, 32 channels by default,
noise-prediction MSE, gradients clipped to norm 1, Adam 1e-3 with a 200-step warmup, an EMA of
the weights) and the same update on its PyTorch twin
(:mod:`experiments.benchmarking.torch_unet`), on MNIST in [-1, 1], batch 128; it reports the
last epoch's mean loss. FLOPs: XLA's cost analysis of the training step.

The pieces: :mod:`experiments.benchmarking.common` (variants, settings, the result record),
:mod:`experiments.benchmarking.flops`, :mod:`experiments.benchmarking.jax_runners`
(:func:`run_jax`, :func:`run_jax_gan`), :mod:`experiments.benchmarking.torch_runners`
(:func:`run_torch`, :func:`run_torch_gan`); :func:`run_variant` picks the runner.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from experiments.benchmarking.jax_runners import run_jax, run_jax_ddpm, run_jax_gan
from experiments.benchmarking.torch_runners import run_torch, run_torch_ddpm, run_torch_gan


def run_variant(variant: str, train: np.ndarray, test: np.ndarray, **kwargs) -> dict[str, Any]:
    """Runs ``variant`` of ``kwargs['model']`` (default mlp); the dcgan model ignores ``test``
    and takes ``image_size`` and ``width``, the unet model ignores ``test`` and takes
    ``width``."""
    model = kwargs.get("model", "mlp")
    if variant.startswith("jax"):
        kwargs.pop("compile_model", None)
    if model in ("dcgan", "unet"):
        kwargs.pop("model")
        jax_runner, torch_runner = {
            "dcgan": (run_jax_gan, run_torch_gan),
            "unet": (run_jax_ddpm, run_torch_ddpm),
        }[model]
        runner: Callable = jax_runner if variant.startswith("jax") else torch_runner
        return {"variant": variant, "model": model, **runner(variant, train, **kwargs)}
    runner = run_jax if variant.startswith("jax") else run_torch
    return {"variant": variant, "model": model, **runner(variant, train, test, **kwargs)}
