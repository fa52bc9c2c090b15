"""A new model and its Run, defined outside the vaejax package: independent Bernoulli pixels
(one learned logit per pixel). The extension test trains it through the experiments' command
line, kills and resumes it, loads it with vaejax.load_run and scores it with sample quality.

Run it as ``python -m tests.tiny_run --workdir DIR ...``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vaejax import data, models, objectives
from vaejax.cli import main
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import RunConfig, config_field
from vaejax.runs.trained import TrainedRun
from vaejax.training.fit import RunKeys, one_model


class PixelLogits(nn.Module):
    """One logit per pixel: p(x) = prod Bernoulli(x_ij | sigmoid(l_ij)); ignores its input."""

    shape: tuple[int, int, int] = (28, 28, 1)

    @nn.compact
    def __call__(self, x):
        logits = self.param("logits", nn.initializers.zeros, self.shape)
        return jnp.broadcast_to(logits, (x.shape[0], *self.shape))


def pixel_nll(model: PixelLogits):
    """Per-example negative log-likelihood in nats (grey pixels as Bernoulli targets)."""

    def terms(params, x, key):
        del key
        logits = model.apply({"params": params}, x)
        return {"loss": -objectives.bernoulli_log_likelihood(x, logits)}

    return terms


@dataclasses.dataclass(frozen=True)
class PixelConfig(RunConfig):
    """Settings of the pixel model."""

    learning_rate: float = config_field(0.05, "Adam learning rate")
    workdir: str = config_field("workdirs/pixels", "where the run goes", resume=True)


@register
class PixelRun(Run):
    kind = "tiny_pixels"
    Config = PixelConfig

    def build(self) -> PixelLogits:
        return PixelLogits()

    def init_params(self, model: PixelLogits, key: jax.Array):
        return model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config, model = self.config, self.build()
        params = self.init_params(model, keys.init)
        plain = data.make_batch_preprocessor(28)
        trained = one_model(
            params,
            pixel_nll(model),
            optax.adam(config.learning_rate),
            test_data=data_.test.images,
            eval_preprocess=plain,
            eval_batch_size=config.eval_batch_size,
            eval_key=keys.eval,
            describe=lambda t: f"NLL {t['loss']:.2f}",
            mesh=mesh,
        )
        return Training(
            trained.state,
            trained.update,
            plain,
            data_.train.images,
            trained.end_of_epoch,
            "independent Bernoulli pixels",
            models.count_params(params),
        )

    def summary(self, record: dict) -> str:
        return f"test NLL {record['test_loss']:.2f} nats/image"

    def trained(self, model: PixelLogits, params) -> TrainedRun:
        @functools.partial(jax.jit, static_argnums=1)
        def sample(key, n):
            return jax.random.bernoulli(
                key, jax.nn.sigmoid(params["logits"]), (n, 28, 28, 1)
            ).astype(jnp.float32)

        return TrainedRun(self.kind, self.config, params, model, self.workdir, sample)


if __name__ == "__main__":
    raise SystemExit(main(PixelConfig(), __doc__, run=lambda c, w: PixelRun(c, w).execute()))
