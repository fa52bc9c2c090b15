"""Independent Bernoulli pixels, one learned logit each: a model and its Run defined outside
vaejax, written against ``import vaejax`` alone. ``python -m tests.tiny_run --workdir DIR``."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import vaejax


class PixelLogits(nn.Module):
    @nn.compact
    def __call__(self, x):  # [B, 28, 28, 1] -> the same logits for every image
        return jnp.broadcast_to(self.param("logits", nn.initializers.zeros, (28, 28, 1)), x.shape)


@dataclasses.dataclass(frozen=True)
class PixelConfig(vaejax.RunConfig):
    learning_rate: float = vaejax.config_field(0.05, "Adam learning rate")
    workdir: str = vaejax.config_field("workdirs/pixels", "where the run goes", resume=True)


@vaejax.register
class PixelRun(vaejax.Run):
    kind, Config = "tiny_pixels", PixelConfig

    def build(self):
        return PixelLogits()

    def init_params(self, model, key):
        return model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]

    def training(self, data, keys, mesh):
        model, plain, config = self.build(), vaejax.make_batch_preprocessor(28), self.config
        logits = lambda p, x: model.apply({"params": p}, x)
        nll = lambda p, x, key: {"loss": -vaejax.bernoulli_log_likelihood(x, logits(p, x))}
        trained = vaejax.one_model(
            self.init_params(model, keys.init),
            nll,
            optax.adam(config.learning_rate),
            test_data=data.test.images,
            eval_preprocess=plain,
            eval_key=keys.eval,
            eval_batch_size=config.eval_batch_size,
            describe=lambda t: f"NLL {t['loss']:.2f}",
            mesh=mesh,
        )
        return trained.training(
            preprocess=plain,
            data=data.train.images,
            parameters=28 * 28,
            description="independent Bernoulli pixels",
        )

    def summary(self, record):
        return f"test NLL {record['test_loss']:.2f} nats/image"

    def trained(self, model, params):
        probs = jax.nn.sigmoid(params["logits"])
        draw = lambda key, n: jax.random.bernoulli(key, probs, (n, *probs.shape)).astype(float)
        sample = jax.jit(draw, static_argnums=1)
        return vaejax.TrainedRun(self.kind, self.config, params, model, self.workdir, sample)


if __name__ == "__main__":
    raise SystemExit(vaejax.main(PixelConfig(), __doc__))
