"""Objectives: the ELBO and its terms, the IWAE bound, autoencoder and classifier losses, GAN
losses, the diffusion process and its samplers."""

from vaejax.objectives.classification import classifier_per_example
from vaejax.objectives.diffusion import (
    SCHEDULES,
    Diffusion,
    Schedule,
    cosine_schedule,
    linear_schedule,
    make_schedule,
    marginal_moments,
    noise_prediction_loss,
    posterior,
    predict_x0,
    q_sample,
    q_step,
    scaled_linear_schedule,
)
from vaejax.objectives.gan import (
    GENERATOR_LOSS_FNS,
    GENERATOR_LOSSES,
    LOSSES,
    discriminator_bce,
    generator_minimax,
    generator_non_saturating,
    gradient_penalty,
    interpolates,
)
from vaejax.objectives.hierarchical import two_layer_elbo_per_example, two_layer_terms
from vaejax.objectives.likelihood import (
    importance_weighted_bound,
    iwae_per_example,
    streamed_bound,
    vae_bound,
)
from vaejax.objectives.sampling import (
    SAMPLERS,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    make_sampler,
    sample_loop,
)
from vaejax.objectives.vae import (
    LIKELIHOODS,
    RECONSTRUCTION_LOSSES,
    PerExampleFn,
    autoencoder_per_example,
    batch_mean,
    bernoulli_log_likelihood,
    cvae_per_example,
    diagonal_normal_log_density,
    foster_beta,
    gaussian_log_likelihood,
    iwae_bound,
    kl_to_standard_normal,
    log_importance_weights,
    log_likelihood,
    negative_elbo,
    reconstruction_loss,
    standard_normal_log_density,
    vae_per_example,
    with_bits_per_dim,
)
