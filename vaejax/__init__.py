"""vaejax: generative image models (autoencoders, VAEs, GANs, diffusion) in JAX/Flax, written as
pure functions.

The public names, by concern:

- models: :class:`VAE`, :class:`Autoencoder`, :class:`ConditionalVAE`, encoders/decoders,
  :func:`mlp_vae`, :func:`mlp_autoencoder`, :func:`mlp_cvae`, :func:`conv_vae`,
  :func:`conv_autoencoder`, :func:`count_params`
- objectives: :func:`reparameterize`, :func:`kl_to_standard_normal`,
  :func:`bernoulli_log_likelihood`, :func:`gaussian_log_likelihood`, :func:`negative_elbo`,
  :func:`log_importance_weights`, :func:`iwae_bound`, :func:`reconstruction_loss`,
  :func:`vae_per_example`, :func:`cvae_per_example`, :func:`autoencoder_per_example`,
  :func:`batch_mean`
- data: :func:`load_split`, :func:`read_idx`, :func:`make_batch_preprocessor`, ...
- training: :class:`TrainState`, :func:`gradient_update`, :func:`make_train_step`,
  :func:`make_epoch_runner` (:class:`EpochRunner`), :func:`make_evaluator`, :func:`data_mesh`
- the modules :mod:`vaejax.loop` (the shared training loop: checkpoints, resume, signals) and
  :mod:`vaejax.checkpoints` (orbax)
- io: :func:`save_image_grid`, :func:`append_jsonl`, :func:`save_params`, :func:`load_params`
- experiment: :class:`RunConfig`, :class:`VAEConfig`, :func:`fit` (any model through the shared
  loop), :func:`train_and_evaluate`
- the modules :mod:`vaejax.metrics` (ROC-AUC, average precision, PSNR), :mod:`vaejax.latent`
  (grids, p-values, interpolation, attribute vectors, PCA, k-NN) and the experiments of the
  autoencoder family: :mod:`vaejax.latent_study`, :mod:`vaejax.denoising`,
  :mod:`vaejax.anomaly`, :mod:`vaejax.conditional`
- the modules :mod:`vaejax.gan` (DCGAN, WGAN-GP), :mod:`vaejax.diffusion` (DDPM, DDIM),
  :mod:`vaejax.classifier` and :mod:`vaejax.quality` (FID / Inception-score analogues)
"""

from vaejax.data import (
    DATASETS,
    DataError,
    ImageSplit,
    apply_binarization_protocol,
    binarize,
    fixed_binarization,
    load_split,
    make_batch_preprocessor,
    pad_images,
    prepare,
    read_idx,
    to_unit_interval,
)
from vaejax.experiment import ConfigError, RunConfig, VAEConfig, fit, train_and_evaluate
from vaejax.io import append_jsonl, image_grid, load_params, read_jsonl, save_image_grid, save_params
from vaejax.models import (
    VAE,
    Autoencoder,
    ConditionalVAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    conv_autoencoder,
    conv_vae,
    count_params,
    mlp_autoencoder,
    mlp_cvae,
    mlp_vae,
)
from vaejax.objectives import (
    autoencoder_per_example,
    batch_mean,
    bernoulli_log_likelihood,
    cvae_per_example,
    foster_beta,
    gaussian_log_likelihood,
    iwae_bound,
    kl_to_standard_normal,
    log_importance_weights,
    log_likelihood,
    negative_elbo,
    reconstruction_loss,
    reparameterize,
    vae_per_example,
)
from vaejax.training import (
    NONFINITE_POLICIES,
    EpochRunner,
    NonFiniteError,
    TrainState,
    create_train_state,
    data_mesh,
    gradient_update,
    make_epoch_runner,
    make_evaluator,
    make_train_step,
    put_replicated,
    step_key,
)

__version__ = "0.1.0"
