"""GANs of the lectures: the DCGAN with its binary cross-entropy game, and WGAN-GP.

Models (flax.linen, NHWC, images in [-1, 1], the generator's tanh range):

- :class:`Generator`: z [B, noise_dim] -> image [B, S, S, C]. The pytorch/examples ``dcgan``
  layout (Radford et al. 2016): a projection of z to a ``start`` x ``start`` map (a 1x1
  transposed convolution's worth of weights, written as a dense layer), then 4x4 stride-2
  transposed convolutions halving the channels, batch normalization and ReLU between, tanh at
  the end. S = 64 gives pytorch/examples' generator exactly (widths 8w, 4w, 2w, w);
  S = 28 starts at 7x7 (widths 2w, w); any S = 4 * 2^k starts at 4x4.
- :class:`Discriminator`: the mirror: 4x4 stride-2 convolutions doubling the channels,
  LeakyReLU 0.2, batch normalization after all but the first, then one logit per image from
  the ``start`` x ``start`` map. With ``normalization="none"`` it is the WGAN-GP critic: the
  gradient penalty is per image, and batch normalization would mix the images of a batch
  (Gulrajani et al. 2017, sec. 4).

Batch normalization here uses the statistics of the batch at hand, in training and sampling
alike, as pytorch/examples' dcgan does (it never switches to running averages), so the models
hold no state besides their parameters. Draw samples in batches of 64 or more.

Losses, on logits ``l`` (D(x) = sigmoid(l)):

- discriminator: -log D(x) - log(1 - D(G(z))) = softplus(-l_real) + softplus(l_fake);
- generator, non-saturating: -log D(G(z)) = softplus(-l_fake);
- generator, minimax (Goodfellow et al.'s original): log(1 - D(G(z))) = -softplus(l_fake). Its
  gradient d/dl = -sigmoid(l) vanishes where the discriminator rejects the fakes (l << 0),
  early in training; the non-saturating one's, -(1 - sigmoid(l)), is then about -1;
- WGAN-GP critic: mean f(G(z)) - mean f(x) + lambda * mean (||grad f(x_hat)||_2 - 1)^2 over
  x_hat on random segments between real and fake images; generator: -mean f(G(z)).

One **update** (:func:`make_gan_update`) is ``n_critic`` discriminator steps, each on its own
slice of the real batch, then one generator step: two :func:`~vaejax.training.gradient_update`
on the two halves of :class:`GANState`, trained by the same epoch runner and loop as every
other model.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, io, models, training
from vaejax.autoencoders import start
from vaejax.experiment import (
    ConfigError,
    RunConfig,
    RunKeys,
    TrainSettings,
    _field,
    check_positive,
    fit_state,
    judge_field,
    resumable_fields,
    validate_run,
)
from vaejax.layers import Conv2D, ConvTranspose2D

LOSSES = ("bce", "wgan-gp")
GENERATOR_LOSSES = ("non-saturating", "minimax")
NORMALIZATIONS = ("batch", "none")

dcgan_init = nn.initializers.normal(0.02)  # Radford et al.: weights ~ N(0, 0.02)


def layout(image_size: int) -> tuple[int, int]:
    """(start size, number of stride-2 layers) with start * 2^layers = ``image_size``, start 7
    or 4: 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4). Raises ValueError for other sizes."""
    for first in (7, 4):
        layers = int(round(math.log2(image_size / first))) if image_size >= 2 * first else 0
        if layers >= 1 and first * 2 ** layers == image_size:
            return first, layers
    raise ValueError(f"image size {image_size} is not 7 * 2^k (14, 28, 56, ...) or 4 * 2^k (8, "
                     f"16, 32, 64, ...)")


class BatchNorm(nn.Module):
    """Normalizes each channel by the batch's mean and (biased) variance over [B, H, W], then
    scales and shifts: PyTorch's ``BatchNorm2d`` in training mode. scale ~ N(1, 0.02) and shift
    0 at initialization, as pytorch/examples' dcgan sets them."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        scale = self.param("scale", lambda k, s: 1.0 + 0.02 * jax.random.normal(k, s), (channels,))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        mean = jnp.mean(x, axis=(0, 1, 2))
        variance = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(variance + self.epsilon) * scale + bias


class Generator(nn.Module):
    """z [B, noise_dim] -> images [B, S, S, channels] in [-1, 1] (see the module docstring)."""

    image_size: int = 28
    channels: int = 1
    width: int = 64  # pytorch/examples' ngf
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, z):
        start, layers = layout(self.image_size)
        widths = [self.width * 2 ** (layers - 1 - i) for i in range(layers)]
        h = nn.Dense(start * start * widths[0], use_bias=False, kernel_init=dcgan_init)(z)
        h = nn.relu(BatchNorm()(h.reshape(z.shape[0], start, start, widths[0])))
        for width in widths[1:]:
            h = ConvTranspose2D(width, 4, stride=2, use_bias=False, kernel_init=dcgan_init,
                                implementation=self.conv_implementation)(h)
            h = nn.relu(BatchNorm()(h))
        h = ConvTranspose2D(self.channels, 4, stride=2, use_bias=False, kernel_init=dcgan_init,
                            implementation=self.conv_implementation)(h)
        return jnp.tanh(h)


class Discriminator(nn.Module):
    """images [B, S, S, C] in [-1, 1] -> logits [B] (see the module docstring)."""

    image_size: int = 28
    width: int = 64  # pytorch/examples' ndf
    normalization: str = "batch"  # "none" for the WGAN-GP critic
    conv_implementation: str = "auto"

    @nn.compact
    def __call__(self, x):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}")
        _, layers = layout(self.image_size)
        h = x
        for i in range(layers):
            h = Conv2D(self.width * 2 ** i, 4, stride=2, use_bias=False, kernel_init=dcgan_init,
                       implementation=self.conv_implementation)(h)
            if i > 0 and self.normalization == "batch":
                h = BatchNorm()(h)
            h = nn.leaky_relu(h, 0.2)
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(1, use_bias=False, kernel_init=dcgan_init)(h)[:, 0]


# ---------------------------------------------------------------------------------------------
# Losses (means over the batch)


def discriminator_bce(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """-mean log D(x) - mean log(1 - D(G(z))), in nats; logits [B]."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_non_saturating(fake_logits: jax.Array) -> jax.Array:
    """-mean log D(G(z)), in nats."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def generator_minimax(fake_logits: jax.Array) -> jax.Array:
    """mean log(1 - D(G(z))), the generator's side of the original minimax game (nats)."""
    return -jnp.mean(jax.nn.softplus(fake_logits))


GENERATOR_LOSS_FNS = {"non-saturating": generator_non_saturating, "minimax": generator_minimax}


def interpolates(key: jax.Array, real: jax.Array, fake: jax.Array) -> jax.Array:
    """x_hat = u * real + (1 - u) * fake with one u ~ U[0, 1] per image; images [B, ...]."""
    u = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    return u * real + (1.0 - u) * fake


def gradient_penalty(critic, x_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean over images of (||d critic(x_hat_i) / d x_hat_i||_2 - 1)^2, and the norms [B].

    ``critic`` maps images [B, ...] -> scores [B] with no interaction between the images of a
    batch (no batch normalization), so the gradient of the summed scores holds every image's own
    gradient. The norm carries a 1e-12 inside the square root: finite where the gradient is 0.
    """
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0)), norms


# ---------------------------------------------------------------------------------------------
# Training


class GANState(NamedTuple):
    """The two players' :class:`~vaejax.training.TrainState`."""

    generator: training.TrainState
    discriminator: training.TrainState


class GAN(NamedTuple):
    """A generator and a discriminator (critic) module, and the size of z."""

    generator: Generator
    discriminator: Discriminator
    noise_dim: int = 100

    def init(self, key: jax.Array) -> dict[str, Any]:
        """{'generator': params, 'discriminator': params}, compiled (run op by op, the
        initializers' random draws compile one by one: about 20 s on a 2-core CPU)."""

        def init_both(key):
            g_key, d_key = jax.random.split(key)
            z = jnp.zeros((2, self.noise_dim))
            g_params = self.generator.init(g_key, z)["params"]
            images = self.generator.apply({"params": g_params}, z)
            return {"generator": g_params,
                    "discriminator": self.discriminator.init(d_key, images)["params"]}

        return jax.jit(init_both)(key)

    def generate(self, params, z: jax.Array) -> jax.Array:
        """z [B, noise_dim] -> images [B, S, S, C] in [-1, 1]."""
        return self.generator.apply({"params": params}, z)

    def critic(self, params, images: jax.Array) -> jax.Array:
        """images [B, S, S, C] in [-1, 1] -> logits (scores) [B]."""
        return self.discriminator.apply({"params": params}, images)

    def sample(self, params, key: jax.Array, n: int) -> jax.Array:
        """n images [n, S, S, C] in [0, 1] from z ~ N(0, I) drawn with ``key``."""
        z = jax.random.normal(key, (n, self.noise_dim))
        return (self.generate(params, z) + 1.0) / 2.0


def dcgan(image_size: int = 28, channels: int = 1, width: int = 64, noise_dim: int = 100,
          critic: bool = False) -> GAN:
    """The DCGAN pair; ``critic=True`` drops the discriminator's batch normalization (WGAN-GP)."""
    return GAN(Generator(image_size, channels, width),
               Discriminator(image_size, width, "none" if critic else "batch"), noise_dim)


def create_gan_state(params, generator_optimizer: optax.GradientTransformation,
                     discriminator_optimizer: optax.GradientTransformation) -> GANState:
    return GANState(training.create_train_state(params["generator"], generator_optimizer),
                    training.create_train_state(params["discriminator"], discriminator_optimizer))


def make_gan_update(gan: GAN, *, loss: str, generator_optimizer: optax.GradientTransformation,
                    discriminator_optimizer: optax.GradientTransformation, n_critic: int = 1,
                    generator_loss: str = "non-saturating",
                    penalty_weight: float = 10.0) -> training.Update:
    """``update(state: GANState, real [n_critic * B, S, S, C] in [-1, 1], key)``: ``n_critic``
    discriminator steps, step j on real images j, n_critic + j, 2 n_critic + j, ... (every
    device holds a share of each slice) against fresh fakes, then one generator step on B fresh
    fakes. Metrics: ``d_loss``, ``g_loss``, ``d_grad_norm``, ``g_grad_norm``; for ``bce``
    ``d_real`` and ``d_fake`` (mean D(x), D(G(z))), for ``wgan-gp`` ``d_wasserstein`` (mean f(x)
    - mean f(G(z)), the critic's estimate) and ``d_gradient_penalty``; the discriminator's
    averaged over its steps.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if generator_loss not in GENERATOR_LOSSES:
        raise ValueError(f"generator loss must be one of {GENERATOR_LOSSES}")

    def fakes(g_params, key, n):
        return gan.generate(g_params, jax.random.normal(key, (n, gan.noise_dim)))

    def discriminator_loss(d_params, batch, key):
        real, g_params = batch
        noise_key, mix_key = jax.random.split(key)
        fake = jax.lax.stop_gradient(fakes(g_params, noise_key, real.shape[0]))
        real_logits, fake_logits = gan.critic(d_params, real), gan.critic(d_params, fake)
        if loss == "bce":
            return discriminator_bce(real_logits, fake_logits), {
                "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
                "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits))}
        penalty, _ = gradient_penalty(lambda x: gan.critic(d_params, x),
                                      interpolates(mix_key, real, fake))
        wasserstein = jnp.mean(real_logits) - jnp.mean(fake_logits)
        return -wasserstein + penalty_weight * penalty, {"wasserstein": wasserstein,
                                                         "gradient_penalty": penalty}

    def generator_objective(g_params, batch, key):
        d_params, n = batch
        fake_logits = gan.critic(d_params, fakes(g_params, key, n))
        if loss == "bce":
            return GENERATOR_LOSS_FNS[generator_loss](fake_logits), {}
        return -jnp.mean(fake_logits), {}

    d_step = training.gradient_update(discriminator_loss, discriminator_optimizer)
    g_step = training.gradient_update(generator_objective, generator_optimizer)

    def update(state: GANState, real, key):
        batch = real.shape[0] // n_critic
        # row i * n_critic + j -> slice j: each device's rows stay on that device
        slices = real.reshape(batch, n_critic, *real.shape[1:]).swapaxes(0, 1)
        d_keys = jax.random.split(jax.random.fold_in(key, 0), n_critic)

        def critic_step(d_state, inputs):
            images, step_key = inputs
            return d_step(d_state, (images, state.generator.params), step_key)

        d_state, d_metrics = jax.lax.scan(critic_step, state.discriminator, (slices, d_keys))
        g_state, g_metrics = g_step(state.generator, (d_state.params, batch),
                                    jax.random.fold_in(key, 1))
        metrics = {("d_" + k if not k.startswith("d_") else k): jnp.mean(v)
                   for k, v in d_metrics.items()}
        metrics.update({"g_" + k: v for k, v in g_metrics.items()})
        return GANState(g_state, d_state), metrics

    return update



# ---------------------------------------------------------------------------------------------
# The experiment: experiments.gan_mnist

# (learning rate, Adam beta2, critic steps per generator step) where the flags say 0: Radford et
# al. for the BCE game, Gulrajani et al. for WGAN-GP
LOSS_DEFAULTS = {"bce": (2e-4, 0.999, 1), "wgan-gp": (1e-4, 0.9, 5)}


@dataclasses.dataclass(frozen=True)
class GANConfig(RunConfig):
    """Settings of ``experiments.gan_mnist``."""

    loss: str = _field("bce", "bce: the DCGAN game (discriminator with sigmoid cross-entropy); "
                       "wgan-gp: Wasserstein critic with gradient penalty", LOSSES)
    generator_loss: str = _field("non-saturating", "the generator's side of the bce game: "
                                 "non-saturating (-log D(G(z))) or minimax (log(1 - D(G(z))), "
                                 "whose gradient vanishes early)", GENERATOR_LOSSES)
    batch_size: int = _field(64, "images per discriminator step (a multiple of the device "
                             "count); a generator step draws as many fakes")
    epochs: int = _field(5, "passes of the discriminator over the training images", resume=True)
    learning_rate: float = _field(0.0, "Adam learning rate of both players (0: 2e-4 for bce, "
                                  "1e-4 for wgan-gp)")
    adam_beta1: float = _field(0.5, "Adam beta1 of both players")
    adam_beta2: float = _field(0.0, "Adam beta2 of both players (0: 0.999 for bce, 0.9 for "
                               "wgan-gp)")
    n_critic: int = _field(0, "discriminator steps per generator step (0: 1 for bce, 5 for "
                           "wgan-gp)")
    penalty_weight: float = _field(10.0, "weight of the wgan-gp gradient penalty (lambda)")
    noise_dim: int = _field(100, "size of z")
    width: int = _field(64, "channels of the generator's last and the discriminator's first "
                        "hidden layer (pytorch/examples' ngf = ndf)")
    image_size: int = _field(28, "28 (MNIST as is) or 32 (padded)")
    classifier_workdir: str = judge_field()
    eval_samples: int = _field(2000, "generated images scored by the classifier after every "
                               "epoch (0 = no scoring)", resume=True)
    checkpoint_every: int = _field(200, "save a checkpoint every N generator steps (also at the "
                                   "end and on SIGTERM/SIGINT)", resume=True)
    workdir: str = _field("workdirs/gan_{dataset}_{loss}", "where metrics, sample grids and "
                          "checkpoints go ({dataset} and {loss} are replaced); rerunning with the "
                          "same workdir resumes", resume=True)

    def resolved(self) -> tuple[float, float, int]:
        """(learning rate, beta2, n_critic) with the loss's defaults filled in."""
        rate, beta2, n_critic = LOSS_DEFAULTS[self.loss]
        return self.learning_rate or rate, self.adam_beta2 or beta2, self.n_critic or n_critic


def validate(config: GANConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "noise_dim", "width", "penalty_weight")
    for name in ("learning_rate", "adam_beta2", "n_critic", "eval_samples"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"--{name} must be >= 0 (0 = the loss's default), got "
                              f"{getattr(config, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"--{name} must lie in [0, 1), got {getattr(config, name)}")
    if config.image_size not in (28, 32):
        raise ConfigError(f"--image_size must be 28 or 32, got {config.image_size}")
    if config.loss == "wgan-gp" and config.generator_loss != "non-saturating":
        raise ConfigError("--generator_loss chooses the bce game's generator loss; wgan-gp's is "
                          "-f(G(z)): drop --generator_loss or use --loss bce")
    learning_rate, _, n_critic = config.resolved()
    validate_run(dataclasses.replace(config, learning_rate=learning_rate), num_devices)
    n_train = config.train_examples or data.dataset_spec(config.dataset).num_examples["train"]
    if n_critic * config.batch_size > n_train:
        raise ConfigError(f"one generator step takes n_critic x batch_size = "
                          f"{n_critic * config.batch_size} real images, more than the {n_train} "
                          f"training images: lower --batch_size or --n_critic")


def build(config: GANConfig) -> GAN:
    return dcgan(config.image_size, 1, config.width, config.noise_dim,
                 critic=config.loss == "wgan-gp")


def to_tanh_range(preprocess: training.Preprocess) -> training.Preprocess:
    """Lifts an images -> [0, 1] preprocessor to the generator's range [-1, 1]."""
    return lambda batch, key: preprocess(batch, key) * 2.0 - 1.0


def _describe(terms: dict[str, float]) -> str:
    if "d_real" in terms:
        critic = (f"D loss {terms['d_loss']:.3f} (D(x) {terms['d_real']:.2f}, D(G(z)) "
                  f"{terms['d_fake']:.2f})")
    else:
        critic = (f"W estimate {terms['d_wasserstein']:.3f}  penalty "
                  f"{terms['d_gradient_penalty']:.3f}")
    return f"{critic}  G loss {terms['g_loss']:.3f}  |grad G| {terms['g_grad_norm']:.3g}"


def run(config: GANConfig, workdir: Path) -> dict:
    """Trains the GAN of ``config``; writes the files of :func:`~vaejax.experiment.fit_state`,
    ``samples_<epoch>.png`` (64 fixed z, the same every epoch) and at the end ``samples.png``
    and ``params.msgpack`` ({'generator', 'discriminator'}). With a classifier, every epoch's
    metrics line holds the FID / Inception-score analogues and the mode coverage of
    ``eval_samples`` generated images. Returns the last metrics record."""
    from vaejax import quality

    run_start = time.perf_counter()
    train, _, spec, writer, log = start(config, validate)
    learning_rate, beta2, n_critic = config.resolved()
    keys = RunKeys.of(jax.random.key(config.seed))
    gan = build(config)
    params = gan.init(keys.init)
    optimizer = optax.adam(learning_rate, b1=config.adam_beta1, b2=beta2, eps=config.adam_eps)
    update = make_gan_update(gan, loss=config.loss, generator_optimizer=optimizer,
                             discriminator_optimizer=optimizer, n_critic=n_critic,
                             generator_loss=config.generator_loss,
                             penalty_weight=config.penalty_weight)
    judge = quality.epoch_judge(config, train.images, log)
    game = (f"{config.loss}, {config.generator_loss} generator" if config.loss == "bce" else
            f"wgan-gp, lambda {config.penalty_weight:g}")
    log(f"vaejax: DCGAN ({game}; generator {models.count_params(params['generator']):,}, "
        f"{'critic' if config.loss == 'wgan-gp' else 'discriminator'} "
        f"{models.count_params(params['discriminator']):,} parameters) on {config.dataset}, "
        f"{len(train.images):,} training images; Adam {learning_rate:g} betas "
        f"({config.adam_beta1:g}, {beta2:g}), {n_critic} critic step(s) per generator step")

    fixed_z = jax.random.normal(keys.sample, (64, config.noise_dim))
    grid = jax.jit(lambda p: (gan.generate(p, fixed_z) + 1.0) / 2.0)
    sample = jax.jit(gan.sample, static_argnums=2)

    def end_of_epoch(epoch: int, state: GANState, train_terms):
        record = {f"train_{k}": v for k, v in (train_terms or {}).items()}
        text = f"epoch {epoch:3d}" + (f"  {_describe(train_terms)}" if train_terms else "")
        if judge is not None:
            params = state.generator.params
            scores, scored = quality.judge_epoch(
                judge, lambda key, n: np.asarray(sample(params, key, n)), keys.eval,
                config.eval_samples, spec.num_classes)
            record.update(scores)
            text += scored
        if writer and epoch > 0:
            io.save_image_grid(workdir / f"samples_{epoch}.png",
                               np.asarray(grid(jax.device_get(state.generator.params))), 8)
        return record, text

    settings = TrainSettings.of(config, batch_size=n_critic * config.batch_size,
                                learning_rate=learning_rate)
    state, record = fit_state(
        workdir, config_record=dataclasses.asdict(config),
        free_fields=resumable_fields(GANConfig), settings=settings,
        state=create_gan_state(params, optimizer, optimizer), update=update,
        train_data=train.images, preprocess=to_tanh_range(data.make_batch_preprocessor(
            config.image_size)), keys=keys, end_of_epoch=end_of_epoch)
    params = {"generator": jax.device_get(state.generator.params),
              "discriminator": jax.device_get(state.discriminator.params)}
    if writer:
        io.save_params(workdir / "params.msgpack", params)
        io.save_image_grid(workdir / "samples.png", np.asarray(grid(params["generator"])), 8)
    log(f"done: {config.epochs} epochs; whole run {time.perf_counter() - run_start:.1f} s; "
        f"outputs in {workdir}")
    return record
