"""A small LeNet-style classifier per dataset: the feature extractor of the sample-quality metrics.

No Inception network can be downloaded here, so FID and the Inception score are computed the
same way with this network in its place (:mod:`vaejax.evaluation.judge`,
:mod:`vaejax.evaluation.sample_quality`):
its penultimate layer (128 ReLU units) gives the features of the Fréchet distance, its softmax
the class probabilities of the score, and its conv maps the perceptual loss of the VAE
experiments. The numbers compare models with each other under one trained classifier; they are
not comparable with Inception-based numbers in papers.

Architecture (LeCun et al. 1998, widened): conv 5x5 16 -> ReLU -> max-pool 2 -> conv 5x5 32 ->
ReLU -> max-pool 2 -> dense 128 -> ReLU (the features) -> dense 10. 'SAME' convolutions on
28x28x1 images in [0, 1].
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import io, models, objectives
from vaejax.data.preprocess import make_classifier_preprocessor
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation.judge import SUMMARY
from vaejax.models.classifier import LeNet
from vaejax.runs.base import Data, Run, Training, register
from vaejax.runs.config import (
    RunConfig,
    check_positive,
    config_field,
    data_spec,
    image_shape,
    in_dtype,
    require_labels,
    validate_run,
)
from vaejax.runs.trained import TrainedRun
from vaejax.training.fit import RunKeys, one_model
from vaejax.training.schedules import adam_of


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(RunConfig):
    """Settings of ``experiments.classifier``."""

    epochs: int = config_field(10, "training epochs", resume=True)
    hidden_dim: int = config_field(128, "width of the penultimate layer (the FID features)")
    shift: int = config_field(
        0, "augmentation: move each training image by up to N pixels along each axis (0 = off)"
    )
    workdir: str = config_field(
        "workdirs/classifier_{dataset}",
        "where the classifier goes "
        "({dataset} is replaced); the sample-quality metrics read it from "
        "there",
        resume=True,
    )


def validate(config: ClassifierConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "hidden_dim")
    if not 0 <= config.shift <= 8:
        raise ConfigError(f"--shift must be between 0 and 8 pixels, got {config.shift}")
    validate_run(config, num_devices)
    require_labels(config, "the classifier")


@register
class ClassifierRun(Run):
    """The judge: a LeNet-style classifier of ``config.dataset``. Writes the files of every
    training run and ``classifier.json`` (dataset, test accuracy, sizes)."""

    kind = "classifier"
    Config = ClassifierConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("hidden_dim",))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def build(self) -> LeNet:
        model = LeNet(data_spec(self.config).num_classes, hidden_dim=self.config.hidden_dim)
        return in_dtype(self.config, model)

    def init_params(self, model: LeNet, key: jax.Array):
        return jax.jit(model.init)(key, jnp.zeros((1, *image_shape(self.config))))["params"]

    def training(self, data_: Data, keys: RunKeys, mesh) -> Training:
        config = self.config
        model = self.build()
        params = self.init_params(model, keys.init)
        trained = one_model(
            params,
            objectives.classifier_per_example(model),
            adam_of(config, len(data_.train.images)),
            test_data=(data_.test.images, data_.test.labels.astype(np.int32)),
            eval_preprocess=make_classifier_preprocessor(),
            eval_batch_size=config.eval_batch_size,
            eval_key=keys.eval,
            describe=lambda t: f"cross-entropy {t['loss']:.4f}  accuracy {1 - t['error']:.2%}",
            mesh=mesh,
        )
        return Training(
            state=trained.state,
            update=trained.update,
            preprocess=make_classifier_preprocessor(config.shift),
            data=(data_.train.images, data_.train.labels.astype(np.int32)),
            evaluation=trained.end_of_epoch,
            description="LeNet-style classifier",
            parameters=models.count_params(params),
        )

    def summary(self, record: dict) -> str:
        return f"test accuracy {1.0 - record['test_error']:.2%}"

    def conclude(self, record: dict | None) -> None:
        config = self.config
        summary = {
            "dataset": config.dataset,
            "num_classes": data_spec(config).num_classes,
            "image_shape": list(image_shape(config)),
            "hidden_dim": config.hidden_dim,
            "epochs": config.epochs,
            "test_accuracy": 1.0 - record["test_error"] if record else None,
        }
        if self.writer:
            io.atomic_write_bytes(
                self.workdir / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode()
            )

    def trained(self, model: LeNet, params) -> TrainedRun:
        return TrainedRun(self.kind, self.config, params, model, self.workdir)
