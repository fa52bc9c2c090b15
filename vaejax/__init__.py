"""vaejax: generative image models (autoencoders, VAEs, GANs, diffusion) in JAX/Flax, written as
pure functions.

The package is layered; each layer imports only from the layers before it:

- :mod:`vaejax.io`, :mod:`vaejax.sharding`, :mod:`vaejax.errors`: files, device meshes, errors;
- :mod:`vaejax.models`: the flax.linen modules of every family;
- :mod:`vaejax.objectives`: ELBO, IWAE bound, GAN losses, the diffusion process and samplers;
- :mod:`vaejax.data`: datasets through tfds without TensorFlow, preprocessing on the device;
- :mod:`vaejax.training`: the update, the compiled epoch, the loop (checkpoints, resume);
- :mod:`vaejax.evaluation`: metrics, likelihood, FID / IS analogues, latent-space tools;
- :mod:`vaejax.runs`: one Run per experiment kind, the driver, :func:`load_run`;
- :mod:`vaejax.flags` and :mod:`vaejax.cli`: the command line of every experiment (typed flags
  from the config dataclasses; one-line errors).

The names below are the most used ones, loaded on first use (``import vaejax`` stays cheap):
:func:`load_run` to use a trained model; the extension API (:class:`Run`, :class:`RunConfig`,
:func:`config_field`, :func:`register`, :class:`Training`, :func:`one_model`,
:class:`TrainedRun`, :func:`main`), with which a model defined outside the package gets the
command line, exact resume and :func:`load_run`; the models, the objectives, the data loaders
and the training machinery.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "vaejax.runs.load": ["load_run"],
    "vaejax.runs.trained": ["TrainedRun", "TrainedAutoencoder"],
    "vaejax.runs.base": [
        "Data",
        "Run",
        "Study",
        "execute",
        "register",
        "registered_kinds",
        "run_class",
        "train_and_evaluate",
    ],
    "vaejax.runs.config": ["RunConfig", "config_field"],
    "vaejax.runs.vae": ["VAEConfig"],
    "vaejax.cli": ["main"],
    "vaejax.errors": ["ConfigError"],
    "vaejax.training.fit": ["Training", "one_model", "fit_state"],
    "vaejax.training.job": ["RunKeys", "TrainSettings"],
    "vaejax.data": [
        "DATASETS",
        "DataError",
        "ImageSplit",
        "apply_binarization_protocol",
        "binarize",
        "fixed_binarization",
        "load_split",
        "make_batch_preprocessor",
        "pad_images",
        "prepare",
        "read_idx",
        "to_unit_interval",
    ],
    "vaejax.io": [
        "append_jsonl",
        "image_grid",
        "load_params",
        "read_jsonl",
        "save_image_grid",
        "save_params",
    ],
    "vaejax.models": [
        "VAE",
        "Autoencoder",
        "ConditionalVAE",
        "ConvDecoder",
        "ConvEncoder",
        "MLPDecoder",
        "MLPEncoder",
        "conv_autoencoder",
        "conv_vae",
        "count_params",
        "mlp_autoencoder",
        "mlp_cvae",
        "mlp_vae",
        "reparameterize",
    ],
    "vaejax.objectives": [
        "autoencoder_per_example",
        "batch_mean",
        "bernoulli_log_likelihood",
        "cvae_per_example",
        "foster_beta",
        "gaussian_log_likelihood",
        "iwae_bound",
        "kl_to_standard_normal",
        "log_importance_weights",
        "log_likelihood",
        "negative_elbo",
        "reconstruction_loss",
        "vae_per_example",
    ],
    "vaejax.training": [
        "NONFINITE_POLICIES",
        "EpochRunner",
        "NonFiniteError",
        "TrainState",
        "create_train_state",
        "data_mesh",
        "gradient_update",
        "make_epoch_runner",
        "make_evaluator",
        "make_train_step",
        "put_replicated",
        "put_row_sharded",
        "step_key",
    ],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vaejax' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
