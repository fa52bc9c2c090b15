"""The diffusion experiment (``experiments.ddpm_mnist``): a DDPM trained on L_simple with an EMA
of its weights, sampled by DDPM and DDIM.

The U-Net is :mod:`vaejax.models.unet`, the process and loss :mod:`vaejax.objectives.diffusion`,
the samplers :mod:`vaejax.objectives.sampling`, the EMA :mod:`vaejax.training.ema`; this module
holds the config, the Run, its pictures and its sampling-speed report.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaejax import data, io, models, objectives, sharding, training
from vaejax.data.preprocess import to_tanh_range
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import judge
from vaejax.evaluation.diffusion_pictures import (
    denoising_strip,
    noising_strip,
    sample_any_count,
    sampling_rate,
    strip_timesteps,
    to_unit,
)
from vaejax.models.unet import UNet
from vaejax.objectives.diffusion import SCHEDULES, Diffusion, make_schedule, noise_prediction_loss
from vaejax.objectives.sampling import SAMPLERS, make_sampler
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import (
    RunConfig,
    check_positive,
    config_field,
    image_shape,
    in_dtype,
    judge_field,
    validate_run,
    value_text,
)
from vaejax.runs.trained import TrainedRun
from vaejax.training.ema import EMAState, with_ema
from vaejax.training.fit import RunKeys, train_and_test_record
from vaejax.training.schedules import learning_rate_of


def optimizer(rate, clip_norm: float, adam_eps: float) -> optax.GradientTransformation:
    """Ho et al.'s: gradients clipped to global norm ``clip_norm``, then Adam at ``rate`` (a float
    or an optax schedule; the experiment's: a linear warmup, then ``--lr_schedule``)."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(rate, eps=adam_eps))


@dataclasses.dataclass(frozen=True)
class DDPMConfig(RunConfig):
    """Settings of ``experiments.ddpm_mnist``. Defaults: Ho et al.'s schedule and loss, a small
    U-Net."""

    epochs: int = config_field(20, "training epochs", resume=True)
    learning_rate: float = config_field(1e-3, "Adam learning rate (after the warmup)")
    warmup_steps: int = config_field(200, "linear learning-rate warmup from 0 (0 = none)")
    clip_norm: float = config_field(1.0, "clip gradients to this global L2 norm")
    ema_decay: float = config_field(
        0.999,
        "decay of the parameters' moving average that samples "
        "(0 = sample with the trained parameters)",
    )
    schedule: str = config_field(
        "linear", "variance schedule: linear (1e-4..0.02) or cosine", SCHEDULES
    )
    timesteps: int = config_field(1000, "diffusion steps T")
    channels: int = config_field(32, "U-Net channels at full resolution")
    multipliers: tuple[int, ...] = config_field(
        (1, 2, 2),
        "U-Net channel multiplier per resolution level (each level after the first halves H and W)",
    )
    sampler: str = config_field(
        "ddim", "sampler of the per-epoch grids and scores", SAMPLERS, resume=True
    )
    sampling_steps: int = config_field(
        50, "DDIM steps (the ddpm sampler always takes all T)", resume=True
    )
    eta: float = config_field(
        0.0, "DDIM noise: 0 deterministic, 1 = DDPM's posterior variance", resume=True
    )
    classifier_workdir: str = judge_field()
    eval_samples: int = config_field(
        1000, "samples scored by the classifier after every epoch (0 = no scoring)", resume=True
    )
    final_samples: int = config_field(
        64,
        "images of the final samples_ddpm.png / samples_ddim.png, whose sampling speed is reported",
        resume=True,
    )
    workdir: str = config_field(
        "workdirs/ddpm_{dataset}",
        "where metrics, sample grids, strips and "
        "checkpoints go ({dataset} is replaced); rerunning with the same "
        "workdir resumes",
        resume=True,
    )


def validate(config: DDPMConfig, num_devices: int) -> None:
    check_positive(config, "timesteps", "channels", "clip_norm", "sampling_steps", "final_samples")
    validate_run(config, num_devices)
    for name in ("warmup_steps", "eval_samples"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {getattr(config, name)}")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must lie in [0, 1), got {config.ema_decay}")
    if not 0 <= config.eta <= 1:
        raise ConfigError(f"--eta must lie in [0, 1], got {config.eta}")
    if config.sampling_steps > config.timesteps:
        raise ConfigError(
            f"--sampling_steps {config.sampling_steps} exceeds --timesteps {config.timesteps}"
        )
    if not config.multipliers or min(config.multipliers) < 1:
        raise ConfigError(
            f"--multipliers must be positive integers, one per U-Net level, e.g. "
            f"1,2,2, got {value_text(config.multipliers) or 'none'}"
        )
    levels = len(config.multipliers)
    size = image_shape(config)[0]
    if size % 2 ** (levels - 1):
        raise ConfigError(
            f"{levels} U-Net levels halve the image {levels - 1} times, which "
            f"{size}x{size} does not allow: use fewer --multipliers or another --image_size"
        )
    if config.channels % 8:
        raise ConfigError(
            f"--channels must be a multiple of 8 (GroupNorm's 8 groups), got {config.channels}"
        )
    for name in ("eval_samples", "final_samples"):
        try:
            sharding.check_batch_size(
                getattr(config, name) or num_devices, num_devices, f"--{name}"
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None


def build(config: DDPMConfig) -> Diffusion:
    model = Diffusion(
        UNet(config.channels, config.multipliers), make_schedule(config.schedule, config.timesteps)
    )
    return in_dtype(config, model)


def image_sampler(
    model: Diffusion,
    config: DDPMConfig,
    sampler: str | None = None,
    steps: int | None = None,
    mesh=None,
):
    """``sample(params, key, n) -> images [n, S, S, C] in [0, 1]`` of a run (x_0 predictions
    clipped to [-1, 1] on the way), compiled chunk by chunk (:func:`make_sampler`)."""
    return make_sampler(
        model,
        image_shape(config),
        sampler=sampler or config.sampler,
        steps=config.sampling_steps if steps is None else steps,
        eta=config.eta,
        clip=1.0,
        mesh=mesh,
        finish=to_unit,
    )


def _describe(terms: dict[str, float]) -> str:
    return f"noise MSE {terms['loss']:.4f}"


@register
class DDPMRun(Run):
    """A DDPM trained on L_simple with an EMA of its weights. Every epoch: the test noise MSE
    (EMA weights), ``samples_<epoch>.png`` (64 fixed x_T through ``--sampler``) and, with a
    classifier, the FID / IS analogues of ``eval_samples`` samples. At the end:
    ``params.msgpack`` ({'params', 'ema'}), ``samples_ddpm.png`` (all T steps) and
    ``samples_ddim.png`` (``--sampling_steps``) with their samples/s in
    ``sampling_speed.json``, ``noising.png`` and ``denoising.png``."""

    kind = "ddpm"
    Config = DDPMConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("channels", "multipliers"))
    sampling_options = ("sampler", "steps")

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def build(self) -> Diffusion:
        return build(self.config)

    def init_params(self, model: Diffusion, key: jax.Array):
        params = model.init(key, self.shape)
        return {"params": params, "ema": params}

    @property
    def shape(self) -> tuple[int, int, int]:
        return image_shape(self.config)

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config = self.config
        model = self.build()
        params = self.init_params(model, keys.init)
        rate = learning_rate_of(config, len(data_.train.images))
        tx = optimizer(rate, config.clip_norm, config.adam_eps)
        per_example = noise_prediction_loss(model)
        preprocess = to_tanh_range(data.make_batch_preprocessor(self.shape[0]))
        evaluate = training.make_evaluator(
            per_example, preprocess, batch_size=config.eval_batch_size, mesh=mesh
        )
        test_images = sharding.put_row_sharded(data_.test.images, mesh)  # 1/N on each
        scorer = judge.epoch_judge(config, data_.train.images, self.log)
        self._warn_of_warmup(len(data_.train.images))
        # pictures and scores: each process samples on its own devices, from host weights (a
        # sampler sharded over every process would need all of them; only process 0 writes)
        local_mesh = sharding.data_mesh(jax.local_devices())
        sample = image_sampler(model, config, mesh=local_mesh)
        steps = f"{config.sampling_steps}" if config.sampler == "ddim" else f"{config.timesteps}"

        def pictures(epoch: int, state: EMAState) -> None:
            ema = jax.device_get(state.ema_params)
            grid = sample_any_count(sample, ema, keys.sample, 64, local_mesh.size)
            io.save_image_grid(self.workdir / f"samples_{epoch}.png", grid, 8)

        return Training(
            state=EMAState(  # own buffers for the average: the state is donated
                training.create_train_state(params["params"], tx),
                jax.tree_util.tree_map(np.array, params["ema"]),
            ),
            update=with_ema(
                training.gradient_update(objectives.batch_mean(per_example), tx), config.ema_decay
            ),
            preprocess=preprocess,
            data=data_.train.images,
            evaluation=self._evaluation(
                evaluate, test_images, scorer, sample, local_mesh, data_, keys
            ),
            description=f"DDPM ({config.schedule} schedule, T = {config.timesteps}; U-Net "
            f"{config.channels} x ({value_text(config.multipliers)})); Adam "
            f"{config.learning_rate:g}, EMA {config.ema_decay:g}; per-epoch samples: "
            f"{config.sampler} {steps} steps",
            parameters=models.count_params(params["params"]),
            pictures=pictures,
            finish=lambda state: self._finish(state, model, local_mesh, preprocess, data_, keys),
        )

    def _warn_of_warmup(self, num_train: int) -> None:
        """Warns when ``--warmup_steps`` is not below the run's training steps."""
        config = self.config
        total_steps = config.epochs * (num_train // config.batch_size)
        if config.warmup_steps >= total_steps:
            self.log(
                f"vaejax: warning: --warmup_steps {config.warmup_steps} is not below the "
                f"run's {total_steps} training steps: the learning rate never reaches "
                f"--learning_rate {config.learning_rate:g}; lower --warmup_steps or train "
                f"longer"
            )

    def _evaluation(
        self, evaluate, test_images, scorer, sample, local_mesh, data_: Data, keys: RunKeys
    ):
        """The per-epoch evaluation: the test noise MSE of the EMA weights (``evaluate`` on
        ``test_images``); after epoch 0 the scores of ``scorer`` (if any), on images drawn with
        ``sample`` on the local devices."""
        config = self.config

        def evaluation(epoch: int, state: EMAState, train_terms):
            terms = evaluate(state.ema_params, test_images, keys.eval, len(data_.test.images))
            test_terms = {k: float(v) for k, v in terms.items()}
            record, text = train_and_test_record(epoch, train_terms, test_terms, _describe)
            if epoch == 0 or scorer is None:
                return record, text
            ema = jax.device_get(state.ema_params)
            scores, scored = judge.judge_epoch(
                scorer,
                lambda key, n: sample_any_count(sample, ema, key, n, local_mesh.size),
                keys.eval,
                config.eval_samples,
                data_.spec.num_classes,
            )
            record.update(scores)
            return record, text + scored

        return evaluation

    def _finish(
        self, state: EMAState, model: Diffusion, local_mesh, preprocess, data_: Data, keys: RunKeys
    ):
        """The saved parameters ({'params', 'ema'}); on the writer the final pictures."""
        saved = {
            "params": jax.device_get(state.train.params),
            "ema": jax.device_get(state.ema_params),
        }
        if self.writer:
            self._sampling_speed(model, saved["ema"], local_mesh, keys)
            self._strips(model, saved["ema"], preprocess, data_, keys)
        return saved

    def _sampling_speed(self, model: Diffusion, ema, local_mesh, keys: RunKeys) -> None:
        """``samples_ddpm.png`` and ``samples_ddim.png``, with their samples/s in
        ``sampling_speed.json``."""
        config, workdir = self.config, self.workdir
        rates = {}
        for name, steps in (("ddpm", config.timesteps), ("ddim", config.sampling_steps)):
            images, rates[name] = sampling_rate(
                image_sampler(model, config, name, steps, local_mesh),
                ema,
                keys.sample,
                config.final_samples,
            )
            io.save_image_grid(workdir / f"samples_{name}.png", images, 8)
            self.log(
                f"vaejax: {name} sampling, {steps} steps: {config.final_samples} images in "
                f"{rates[name]['seconds']:.1f} s = "
                f"{rates[name]['samples_per_second']:.2f} samples/s (compiling "
                f"{rates[name]['compile_seconds']:.1f} s)"
            )
        speed = {
            "devices": local_mesh.size,
            "platform": jax.devices()[0].platform,
            "samples": config.final_samples,
            **rates,
        }
        io.atomic_write_bytes(
            workdir / "sampling_speed.json", (json.dumps(speed, indent=2) + "\n").encode()
        )

    def _strips(self, model: Diffusion, ema, preprocess, data_: Data, keys: RunKeys) -> None:
        """``noising.png`` (a test image along the forward process) and ``denoising.png``."""
        config, workdir = self.config, self.workdir
        times = strip_timesteps(config.timesteps)
        x0 = preprocess(jnp.asarray(data_.test.images[:1]), keys.eval)[0]
        io.save_image_grid(
            workdir / "noising.png",
            np.asarray(to_unit(noising_strip(model.schedule, x0, keys.eval, times))),
            len(times) + 1,
        )
        strip = jax.jit(lambda p, key: denoising_strip(model, p, key, self.shape, times))
        io.save_image_grid(
            workdir / "denoising.png", np.asarray(to_unit(strip(ema, keys.sample))), len(times) + 1
        )

    def summary(self, record: dict) -> str:
        return f"test noise MSE {record['test_loss']:.4f}"

    def trained(
        self, model: Diffusion, params, sampler: str | None = None, steps: int | None = None
    ) -> TrainedRun:
        """Samples from the EMA weights with ``sampler`` (default: the run's) and ``steps``
        (DDIM; default: the run's ``sampling_steps``)."""
        config = self.config
        steps = min(steps or config.sampling_steps, config.timesteps)
        sampler = sampler or config.sampler
        sample = image_sampler(model, config, sampler, steps)
        devices = jax.device_count()
        return TrainedRun(
            self.kind,
            config,
            params["ema"],
            model,
            self.workdir,
            lambda key, n: sample_any_count(sample, params["ema"], key, n, devices),
            sampling="ddpm" if sampler == "ddpm" else f"ddim{steps}",
        )
