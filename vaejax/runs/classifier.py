"""A small LeNet-style classifier per dataset: the feature extractor of the sample-quality metrics.

No Inception network can be downloaded here, so FID and the Inception score are computed the
same way with this network in its place (:mod:`vaejax.sample_quality`, :mod:`vaejax.quality`):
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
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import io, models, objectives
from vaejax.data.preprocess import make_classifier_preprocessor
from vaejax.errors import ConfigError
from vaejax.evaluation.judge import SUMMARY
from vaejax.models.classifier import LeNet
from vaejax.runs.config import (
    RunConfig,
    _field,
    check_positive,
    resumable_fields,
    start,
    validate_run,
)
from vaejax.training.fit import RunKeys, TrainSettings, fit


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(RunConfig):
    """Settings of ``experiments.classifier``."""

    epochs: int = _field(10, "training epochs", resume=True)
    hidden_dim: int = _field(128, "width of the penultimate layer (the FID features)")
    shift: int = _field(0, "augmentation: move each training image by up to N pixels along "
                        "each axis (0 = off)")
    workdir: str = _field("workdirs/classifier_{dataset}", "where the classifier goes "
                          "({dataset} is replaced); the sample-quality metrics read it from "
                          "there", resume=True)


def validate(config: ClassifierConfig, num_devices: int) -> None:
    check_positive(config, "batch_size", "hidden_dim")
    if not 0 <= config.shift <= 8:
        raise ConfigError(f"--shift must be between 0 and 8 pixels, got {config.shift}")
    validate_run(config, num_devices)


def run(config: ClassifierConfig, workdir: Path) -> dict:
    """Trains the classifier on ``config.dataset``; writes the files of
    :func:`~vaejax.experiment.fit` and ``classifier.json`` (dataset, test accuracy, sizes).
    Returns the summary."""
    run_start = time.perf_counter()
    train, test, spec, writer, log = start(config, validate)
    keys = RunKeys.of(jax.random.key(config.seed))
    model = LeNet(spec.num_classes, hidden_dim=config.hidden_dim)
    params = model.init(keys.init, jnp.zeros((1, 28, 28, 1)))["params"]
    log(f"vaejax: LeNet-style classifier ({models.count_params(params):,} parameters) on "
        f"{config.dataset}, {len(train.images):,} training images")
    describe = lambda t: f"cross-entropy {t['loss']:.4f}  accuracy {1 - t['error']:.2%}"
    params, record = fit(
        workdir, config_record=dataclasses.asdict(config),
        free_fields=resumable_fields(ClassifierConfig), settings=TrainSettings.of(config),
        params=params, per_example=objectives.classifier_per_example(model),
        train_data=(train.images, train.labels.astype(np.int32)),
        test_data=(test.images, test.labels.astype(np.int32)),
        preprocess=make_classifier_preprocessor(config.shift), eval_preprocess=make_classifier_preprocessor(), keys=keys,
        describe=describe)
    summary = {"dataset": config.dataset, "num_classes": spec.num_classes,
               "hidden_dim": config.hidden_dim, "epochs": config.epochs,
               "test_accuracy": 1.0 - record["test_error"] if record else None}
    if writer:
        io.atomic_write_bytes(workdir / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    log(f"done: test accuracy {summary['test_accuracy']:.2%} on {config.dataset}; whole run "
        f"{time.perf_counter() - run_start:.1f} s; outputs in {workdir}")
    return summary
