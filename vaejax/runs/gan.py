"""The GAN experiment (``experiments.gan_mnist``): the DCGAN's BCE game or WGAN-GP, trained
through the shared loop, judged every epoch by the classifier's FID / IS analogues.

The models are :mod:`vaejax.models.gan`, the losses :mod:`vaejax.objectives.gan`, the two-player
update :mod:`vaejax.training.gan`; this module holds the config, the Run and its pictures.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

from vaejax import data, io, models
from vaejax.data.preprocess import to_tanh_range
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import judge
from vaejax.models.gan import GAN, dcgan, layout
from vaejax.objectives.gan import GENERATOR_LOSSES, LOSSES
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import (
    RunConfig,
    applies_when,
    check_image_size,
    check_positive,
    config_field,
    data_spec,
    image_shape,
    in_dtype,
    judge_field,
    validate_run,
)
from vaejax.runs.trained import TrainedRun
from vaejax.training import schedules
from vaejax.training.ema import EMAState, with_ema
from vaejax.training.fit import RunKeys, TrainSettings
from vaejax.training.gan import GANState, create_gan_state, make_gan_update

# (learning rate, Adam beta2, critic steps per generator step) where the flags say auto (None):
# Radford et al. for the BCE game, Gulrajani et al. for WGAN-GP
LOSS_DEFAULTS = {"bce": (2e-4, 0.999, 1), "wgan-gp": (1e-4, 0.9, 5)}


@dataclasses.dataclass(frozen=True)
class GANConfig(RunConfig):
    """Settings of ``experiments.gan_mnist``."""

    loss: str = config_field(
        "bce",
        "bce: the DCGAN game (discriminator with sigmoid cross-entropy); "
        "wgan-gp: Wasserstein critic with gradient penalty",
        LOSSES,
    )
    generator_loss: str = config_field(
        "non-saturating",
        "the generator's side of the bce game: "
        "non-saturating (-log D(G(z))) or minimax (log(1 - D(G(z))), "
        "whose gradient vanishes early)",
        GENERATOR_LOSSES,
        applies=applies_when(loss="bce"),
    )
    batch_size: int = config_field(
        64,
        "images per discriminator step (a multiple of the device "
        "count); a generator step draws as many fakes",
    )
    epochs: int = config_field(
        5, "passes of the discriminator over the training images", resume=True
    )
    learning_rate: float | None = config_field(
        None, "Adam learning rate of both players (auto: 2e-4 for bce, 1e-4 for wgan-gp)"
    )
    adam_beta1: float = config_field(0.5, "Adam beta1 of both players")
    adam_beta2: float | None = config_field(
        None, "Adam beta2 of both players (auto: 0.999 for bce, 0.9 for wgan-gp)"
    )
    n_critic: int | None = config_field(
        None, "discriminator steps per generator step (auto: 1 for bce, 5 for wgan-gp)"
    )
    penalty_weight: float = config_field(
        10.0,
        "weight of the wgan-gp gradient penalty (lambda)",
        applies=applies_when(loss="wgan-gp"),
    )
    ema_decay: float = config_field(
        0.0,
        "decay of a moving average of the generator's weights that then draws every sample "
        "and score (0 = the trained weights; 0.999 is Yazici et al. 2019's)",
    )
    noise_dim: int = config_field(100, "size of z")
    width: int = config_field(
        64,
        "channels of the generator's last and the discriminator's first "
        "hidden layer (pytorch/examples' ngf = ndf)",
    )
    classifier_workdir: str = judge_field()
    eval_samples: int = config_field(
        2000,
        "generated images scored by the classifier after every epoch (0 = no scoring)",
        resume=True,
    )
    checkpoint_every: int = config_field(
        200,
        "save a checkpoint every N generator steps (also at the end and on SIGTERM/SIGINT)",
        resume=True,
    )
    workdir: str = config_field(
        "workdirs/gan_{dataset}_{loss}",
        "where metrics, sample grids and "
        "checkpoints go ({dataset} and {loss} are replaced); rerunning with the "
        "same workdir resumes",
        resume=True,
    )

    def resolved(self) -> tuple[float, float, int]:
        """(learning rate, beta2, n_critic), the loss's defaults (``LOSS_DEFAULTS``) in place of
        None."""
        given = (self.learning_rate, self.adam_beta2, self.n_critic)
        return tuple(
            default if value is None else value
            for value, default in zip(given, LOSS_DEFAULTS[self.loss])
        )


def validate(config: GANConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "noise_dim", "width", "penalty_weight", "n_critic")
    if not config.eval_samples >= 0:
        raise ConfigError(
            f"--eval_samples must be >= 0 (0 = no scoring), got {config.eval_samples}"
        )
    _, adam_beta2, _ = config.resolved()
    for name, value in (("adam_beta1", config.adam_beta1), ("adam_beta2", adam_beta2)):
        if not 0 <= value < 1:
            raise ConfigError(f"--{name} must lie in [0, 1), got {value}")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must lie in [0, 1), got {config.ema_decay}")
    if config.loss == "wgan-gp" and config.generator_loss != "non-saturating":
        raise ConfigError(
            "--generator_loss chooses the bce game's generator loss; wgan-gp's is "
            "-f(G(z)): drop --generator_loss or use --loss bce"
        )
    learning_rate, _, n_critic = config.resolved()
    validate_run(dataclasses.replace(config, learning_rate=learning_rate), num_devices)
    check_image_size(image_shape(config)[0], _fits_dcgan, "DCGAN")
    n_train = config.train_examples or data_spec(config).num_examples["train"]
    if n_critic * config.batch_size > n_train:
        raise ConfigError(
            f"one generator step takes n_critic x batch_size = "
            f"{n_critic * config.batch_size} real images, more than the {n_train} "
            f"training images: lower --batch_size or --n_critic"
        )


def _fits_dcgan(size: int) -> bool:
    try:
        layout(size)
    except ValueError:
        return False
    return True


def build(config: GANConfig) -> GAN:
    size, _, channels = image_shape(config)
    model = dcgan(size, channels, config.width, config.noise_dim, critic=config.loss == "wgan-gp")
    return in_dtype(config, model)


def _describe(terms: dict[str, float]) -> str:
    if "d_real" in terms:
        critic = (
            f"D loss {terms['d_loss']:.3f} (D(x) {terms['d_real']:.2f}, D(G(z)) "
            f"{terms['d_fake']:.2f})"
        )
    else:
        critic = (
            f"W estimate {terms['d_wasserstein']:.3f}  penalty {terms['d_gradient_penalty']:.3f}"
        )
    return f"{critic}  G loss {terms['g_loss']:.3f}  |grad G| {terms['g_grad_norm']:.3g}"


@register
class GANRun(Run):
    """A DCGAN (BCE game) or WGAN-GP. Writes the files of every training run,
    ``samples_<epoch>.png`` (64 fixed z, the same every epoch) and at the end ``samples.png`` and
    ``params.msgpack`` ({'generator', 'discriminator'}, and 'generator_ema' with ``ema_decay``:
    the average then draws every sample). With a classifier, every epoch's metrics line holds
    the FID / Inception-score analogues and the mode coverage of ``eval_samples`` generated
    images."""

    kind = "gan"
    Config = GANConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("width", "noise_dim"))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def build(self) -> GAN:
        return build(self.config)

    def init_params(self, model: GAN, key: jax.Array):
        params = model.init(key)
        if self.config.ema_decay > 0:
            params["generator_ema"] = params["generator"]
        return params

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config = self.config
        learning_rate, beta2, n_critic = config.resolved()
        gan = self.build()
        params = self.init_params(gan, keys.init)
        rate = schedules.learning_rate_of(
            config,
            len(data_.train.images),
            batch_size=n_critic * config.batch_size,
            peak=learning_rate,
        )
        generator_optimizer, critic_optimizer = (
            optax.adam(r, b1=config.adam_beta1, b2=beta2, eps=config.adam_eps)
            for r in (rate, schedules.every_nth(rate, n_critic))
        )
        update = make_gan_update(
            gan,
            loss=config.loss,
            generator_optimizer=generator_optimizer,
            discriminator_optimizer=critic_optimizer,
            n_critic=n_critic,
            generator_loss=config.generator_loss,
            penalty_weight=config.penalty_weight,
        )
        scorer = judge.epoch_judge(config, data_.train.images, self.log)
        fixed_z = jax.random.normal(keys.sample, (64, config.noise_dim))
        grid = jax.jit(lambda p: (gan.generate(p, fixed_z) + 1.0) / 2.0)
        sample = jax.jit(gan.sample, static_argnums=2)
        players = {"generator": params["generator"], "discriminator": params["discriminator"]}
        state = create_gan_state(players, generator_optimizer, critic_optimizer)
        if config.ema_decay > 0:  # without it, no copy in the state and no work per step
            ema = jax.tree_util.tree_map(np.array, params["generator_ema"])
            state = EMAState(state, ema)
            update = with_ema(update, config.ema_decay, lambda game: game.generator)

        def pictures(epoch: int, state: GANState | EMAState) -> None:
            generator = jax.device_get(_players_and_sampler(state)[1])
            io.save_image_grid(
                self.workdir / f"samples_{epoch}.png", np.asarray(grid(generator)), 8
            )

        return Training(
            state=state,
            update=update,
            preprocess=to_tanh_range(data.make_batch_preprocessor(image_shape(config)[0])),
            data=data_.train.images,
            evaluation=self._evaluation(scorer, sample, data_, keys),
            description=self._description(players, learning_rate, beta2, n_critic),
            parameters=models.count_params(players),
            pictures=pictures,
            finish=lambda state: self._finish(state, grid),
            settings=TrainSettings.of(
                config, batch_size=n_critic * config.batch_size, learning_rate=learning_rate
            ),
        )

    def _description(self, players, learning_rate: float, beta2: float, n_critic: int) -> str:
        config = self.config
        game = (
            f"{config.loss}, {config.generator_loss} generator"
            if config.loss == "bce"
            else f"wgan-gp, lambda {config.penalty_weight:g}"
        )
        return (
            f"DCGAN ({game}; generator {models.count_params(players['generator']):,}, "
            f"{'critic' if config.loss == 'wgan-gp' else 'discriminator'} "
            f"{models.count_params(players['discriminator']):,}); Adam {learning_rate:g} betas "
            f"({config.adam_beta1:g}, {beta2:g}), {n_critic} critic step(s) per generator step"
            + (f", generator EMA {config.ema_decay:g}" if config.ema_decay > 0 else "")
        )

    def _evaluation(self, scorer, sample, data_: Data, keys: RunKeys):
        """The per-epoch record and line: the epoch's mean training terms and the scores of
        ``scorer`` (if any) on images drawn with ``sample``."""
        config = self.config

        def evaluation(epoch: int, state: GANState | EMAState, train_terms):
            record = {f"train_{k}": v for k, v in (train_terms or {}).items()}
            text = f"epoch {epoch:3d}" + (f"  {_describe(train_terms)}" if train_terms else "")
            if scorer is not None:
                generator = _players_and_sampler(state)[1]
                scores, scored = judge.judge_epoch(
                    scorer,
                    lambda key, n: np.asarray(sample(generator, key, n)),
                    keys.eval,
                    config.eval_samples,
                    data_.spec.num_classes,
                )
                record.update(scores)
                text += scored
            return record, text

        return evaluation

    def _finish(self, state: GANState | EMAState, grid):
        """The saved parameters (the layout of :meth:`init_params`); on the writer
        ``samples.png``."""
        game, generator = _players_and_sampler(state)
        params = {
            "generator": jax.device_get(game.generator.params),
            "discriminator": jax.device_get(game.discriminator.params),
        }
        if isinstance(state, EMAState):
            params["generator_ema"] = jax.device_get(generator)
        if self.writer:
            io.save_image_grid(
                self.workdir / "samples.png", np.asarray(grid(sampler_of(params))), 8
            )
        return params

    def summary(self, record: dict) -> str:
        if "fid" in record:
            return f"FID {record['fid']:.2f}, IS {record['inception_score']:.2f}"
        return f"D loss {record['train_d_loss']:.3f}, G loss {record['train_g_loss']:.3f}"

    def trained(self, model: GAN, params) -> TrainedRun:
        generator = sampler_of(params)
        sample = jax.jit(lambda key, n: model.sample(generator, key, n), static_argnums=1)
        return TrainedRun(self.kind, self.config, params, model, self.workdir, sample)


def _players_and_sampler(state: GANState | EMAState):
    """The two players' state, and the generator weights that draw samples: the moving average
    where the run keeps one (``--ema_decay``), else the trained generator's."""
    if isinstance(state, EMAState):
        return state.train, state.ema_params
    return state, state.generator.params


def sampler_of(params: dict):
    """The generator that draws a run's samples: the moving average where the run kept one."""
    return params.get("generator_ema", params["generator"])
