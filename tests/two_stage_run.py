"""A two-stage model defined outside vaejax against ``import vaejax`` alone: a codebook of 4x4
patches (stage 1, a vector quantizer without an encoder: each patch is coded by its nearest
vector) and a prior over the 7x7 grid of codes (stage 2: an independent categorical per grid
cell), which reads the finished first stage through ``vaejax.load_run``.

    python -m tests.two_stage_run codebook --workdir DIR1 ...
    python -m tests.two_stage_run prior --codebook_workdir DIR1 --workdir DIR2 ...

The prior's run samples codes and decodes them with the codebook, and bounds the likelihood of
an image x with its code c(x) as the one-point posterior: log p(x) >= log p(c) + log p(x | c),
grey pixels as Bernoulli targets of the decoded patches, in nats per image.
"""

import dataclasses
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import vaejax

PATCH, CELLS = 4, 7  # 28 = 7 x 4


def patches(x):
    """[B, 28, 28, 1] in [0, 1] -> [B, 7, 7, 16]."""
    x = x.reshape(-1, CELLS, PATCH, CELLS, PATCH)
    return x.transpose(0, 1, 3, 2, 4).reshape(-1, CELLS, CELLS, PATCH * PATCH)


def image(cells):
    """[B, 7, 7, 16] -> [B, 28, 28, 1]."""
    x = cells.reshape(-1, CELLS, CELLS, PATCH, PATCH).transpose(0, 1, 3, 2, 4)
    return x.reshape(-1, CELLS * PATCH, CELLS * PATCH, 1)


class Codebook(nn.Module):
    size: int = 16  # K

    def setup(self):
        init = lambda key, shape: jax.random.uniform(key, shape)
        self.vectors = self.param("vectors", init, (self.size, PATCH * PATCH))

    def encode(self, x):  # [B, 28, 28, 1] -> codes [B, 7, 7], each patch's nearest vector
        p = patches(x)
        return jnp.argmin(((p[..., None, :] - self.vectors) ** 2).sum(-1), axis=-1)

    def decode(self, codes):  # [B, 7, 7] -> [B, 28, 28, 1]
        return image(self.vectors[codes])

    def __call__(self, x):  # squared error of each image's patches to their vectors [B]
        return ((patches(x) - patches(self.decode(self.encode(x)))) ** 2).sum((1, 2, 3))


@dataclasses.dataclass(frozen=True)
class CodebookConfig(vaejax.RunConfig):
    codes: int = vaejax.config_field(16, "K, vectors in the codebook")
    learning_rate: float = vaejax.config_field(0.05, "Adam learning rate")
    workdir: str = vaejax.config_field("workdirs/codebook", "where the run goes", resume=True)


@dataclasses.dataclass(frozen=True)
class TrainedCodebook(vaejax.TrainedRun):
    operations = ("encode", "decode", "reconstruct")

    def encode(self, images):
        x = jnp.asarray(images, jnp.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
        return np.asarray(self.model.apply({"params": self.params}, x, method="encode"))

    def decode(self, codes):
        return np.asarray(self.model.apply({"params": self.params}, codes, method="decode"))

    def reconstruct(self, images):
        return self.decode(self.encode(images))


def one_model_training(run, model, params, loss, data, keys, mesh, description):
    """The Training of ``model`` trained on ``loss(params, batch) -> [B]`` (both stages)."""
    plain = lambda batch, key: batch
    per_example = lambda p, batch, key: {"loss": loss(p, batch)}
    trained = vaejax.one_model(
        params,
        per_example,
        optax.adam(run.config.learning_rate),
        test_data=data.test.images,
        eval_preprocess=plain,
        eval_key=keys.eval,
        eval_batch_size=run.config.eval_batch_size,
        describe=lambda t: f"loss {t['loss']:.3f}",
        mesh=mesh,
    )
    return trained.training(
        preprocess=plain,
        data=data.train.images,
        parameters=vaejax.count_params(params),
        description=description,
    )


@vaejax.register
class CodebookRun(vaejax.Run):
    kind, Config = "tiny_codebook", CodebookConfig

    def build(self):
        return Codebook(self.config.codes)

    def init_params(self, model, key):
        return model.init(key, jnp.zeros((1, 28, 28, 1)))["params"]

    def load_data(self):
        data = super().load_data()  # uint8 images -> floats in [0, 1], once
        unit = lambda split: split._replace(images=split.images.astype(np.float32) / 255.0)
        return data._replace(train=unit(data.train), test=unit(data.test))

    def training(self, data, keys, mesh):
        model = self.build()
        loss = lambda p, x: model.apply({"params": p}, x)
        params = self.init_params(model, keys.init)
        return one_model_training(self, model, params, loss, data, keys, mesh, "4x4 codebook")

    def trained(self, model, params):
        return TrainedCodebook(self.kind, self.config, params, model, self.workdir)


class CodePrior(nn.Module):
    size: int = 16

    @nn.compact
    def __call__(self, codes):  # log p(codes) [B], nats
        logits = self.param("logits", nn.initializers.zeros, (CELLS, CELLS, self.size))
        return (jax.nn.one_hot(codes, self.size) * jax.nn.log_softmax(logits)).sum((1, 2, 3))


@dataclasses.dataclass(frozen=True)
class PriorConfig(vaejax.RunConfig):
    codebook_workdir: str = vaejax.config_field("workdirs/codebook", "the finished codebook run")
    learning_rate: float = vaejax.config_field(0.1, "Adam learning rate")
    workdir: str = vaejax.config_field("workdirs/code_prior", "where the run goes", resume=True)


@dataclasses.dataclass(frozen=True)
class TrainedPrior(vaejax.TrainedRun):
    codebook: TrainedCodebook | None = None
    operations = ("sample", "likelihood_bounds")

    def sample(self, key, n):
        logits = jnp.broadcast_to(self.params["logits"], (n, *self.params["logits"].shape))
        return self.codebook.decode(jax.random.categorical(key, logits))

    def likelihood_bounds(self, images, key, k=1, batch_size=100, chunk_size=100, progress=False):
        x = np.asarray(images, np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
        codes = self.codebook.encode(x)
        log_prior = self.model.apply({"params": self.params}, jnp.asarray(codes))
        probs = jnp.clip(jnp.asarray(self.codebook.decode(codes)), 1e-3, 1 - 1e-3)
        logits = jnp.log(probs) - jnp.log1p(-probs)
        bound = np.asarray(log_prior + vaejax.bernoulli_log_likelihood(jnp.asarray(x), logits))
        return {"elbo": bound, "iwae": bound}  # a one-point posterior: both bounds are one


@vaejax.register
class PriorRun(vaejax.Run):
    kind, Config = "tiny_code_prior", PriorConfig

    def build(self):
        return CodePrior(self.codebook().config.codes)

    def codebook(self) -> TrainedCodebook:
        return vaejax.load_run(self.config.codebook_workdir)

    def init_params(self, model, key):
        return model.init(key, jnp.zeros((1, CELLS, CELLS), jnp.int32))["params"]

    def load_data(self):  # the codes of the codebook run's images
        data, codebook = super().load_data(), self.codebook()
        codes = lambda split: split._replace(images=codebook.encode(split.images))
        return data._replace(train=codes(data.train), test=codes(data.test))

    def training(self, data, keys, mesh):
        model = self.build()
        loss = lambda p, codes: -model.apply({"params": p}, codes)
        params = self.init_params(model, keys.init)
        return one_model_training(self, model, params, loss, data, keys, mesh, "code prior")

    def summary(self, record):
        return f"test NLL of the codes {record['test_loss']:.2f} nats/image"

    def trained(self, model, params):
        return TrainedPrior(
            self.kind, self.config, params, model, self.workdir, codebook=self.codebook()
        )


if __name__ == "__main__":
    stage = sys.argv.pop(1)
    defaults = {"codebook": CodebookConfig(), "prior": PriorConfig()}[stage]
    raise SystemExit(vaejax.main(defaults, __doc__, prog=f"python -m tests.two_stage_run {stage}"))
