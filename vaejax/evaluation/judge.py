"""Judging generated images with the project's classifier: FID, Inception-score analogue, modes.

A :class:`Judge` holds a trained classifier (:class:`vaejax.models.classifier.LeNet`, trained by
``experiments.classifier``) and the Gaussian fit of its penultimate features over the real
training images; ``judge.score(images)`` gives

- ``fid``: the Fréchet distance between the images' feature Gaussian and the real one;
- ``inception_score`` (and ``inception_score_std`` over 10 splits): exp E KL(p(y|x) || p(y))
  under the classifier's softmax, between 1 and the number of classes;
- ``class_histogram``, ``classes_covered``, ``largest_class_fraction``: the classifier's labels
  of the images (:func:`vaejax.evaluation.sample_quality.mode_coverage`): mode collapse,
  measured.

These are *analogues* of Inception-based FID and IS: comparable between models judged by the
same classifier, never with the Inception numbers of papers (no Inception network can be
downloaded here). ``experiments.sample_quality`` scores real test images (the floor) and the
samples of trained VAE and GAN runs side by side. The same classifier's conv maps give the
perceptual loss of the VAE experiments (:func:`perceptual_distance`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import io
from vaejax.errors import ConfigError
from vaejax.evaluation import sample_quality
from vaejax.models.classifier import Activations, LeNet

SUMMARY = "classifier.json"


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    model: LeNet
    params: dict
    dataset: str
    test_accuracy: float
    image_shape: tuple[int, int, int] = (28, 28, 1)  # of the images it was trained on


def load(workdir: str | Path, dataset: str) -> TrainedClassifier:
    """The classifier trained by ``experiments.classifier`` in ``workdir`` ('{dataset}' is
    replaced). Raises ConfigError, naming the command that makes one, if there is none or it was
    trained on another dataset."""
    workdir = Path(str(workdir).replace("{dataset}", dataset))
    make = f"python -m experiments.classifier --dataset {dataset} --workdir {workdir}"
    summary_path, params_path = workdir / SUMMARY, workdir / "params.msgpack"
    if not summary_path.is_file() or not params_path.is_file():
        raise ConfigError(f"no trained classifier in {workdir}: train one with `{make}`")
    try:
        summary = json.loads(summary_path.read_text())
        model = LeNet(summary["num_classes"], hidden_dim=summary["hidden_dim"])
        shape = tuple(summary.get("image_shape", (28, 28, 1)))
        target = jax.eval_shape(
            lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]
        )
        params = io.load_params(
            params_path, jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), target)
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"the classifier in {workdir} is unreadable ({e}): retrain it with "
            f"`{make}` into a new --workdir"
        ) from None
    if summary["dataset"] != dataset:
        raise ConfigError(
            f"the classifier in {workdir} was trained on {summary['dataset']}, "
            f"not {dataset}: pass --classifier_workdir of a {dataset} classifier"
        )
    return TrainedClassifier(model, params, dataset, summary["test_accuracy"], shape)


def activations(classifier: TrainedClassifier, images, batch_size: int = 1000) -> Activations:
    """Activations of images [N, H, W, C] in [0, 1] (host or device arrays), as host arrays,
    computed in batches of ``batch_size``."""
    apply = _compiled_apply(classifier.model)
    parts = [
        apply(classifier.params, jnp.asarray(images[i : i + batch_size], jnp.float32))
        for i in range(0, len(images), batch_size)
    ]
    return Activations(
        *(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in Activations._fields)
    )


@functools.cache
def _compiled_apply(model: LeNet):
    """One compiled forward pass per architecture (flax modules hash by their fields)."""
    return jax.jit(lambda params, x: model.apply({"params": params}, x))


def crop_padded(images, size: int = 28):
    """Images [N, size + 4, size + 4, C] zero-padded from ``size`` (a 32x32 model's images of
    28x28 data) -> their centre; other sizes unchanged. numpy or jax arrays."""
    return images[:, 2 : size + 2, 2 : size + 2] if images.shape[1] == size + 4 else images


def perceptual_distance(classifier: TrainedClassifier, x: jax.Array, y: jax.Array) -> jax.Array:
    """Sum over both conv layers' maps of the squared difference between the activations of
    images ``x`` and ``y`` [B, H, W, C] in [0, 1] at the classifier's size (28x28 data padded
    to 32x32: their centre): [B]. Differentiable in both; 0 where x = y."""
    size = classifier.image_shape[0]
    x, y = crop_padded(x, size), crop_padded(y, size)
    a = classifier.model.apply({"params": classifier.params}, x)
    b = classifier.model.apply({"params": classifier.params}, y)
    return sum(
        jnp.sum(jnp.square(p - q).reshape(x.shape[0], -1), axis=1)
        for p, q in ((a.conv1, b.conv1), (a.conv2, b.conv2))
    )


def perceptual_loss(classifier: TrainedClassifier):
    """``(x, x_hat) -> [B]``: :func:`perceptual_distance` under ``classifier`` (fixed weights)."""
    return lambda x, x_hat: perceptual_distance(classifier, x, x_hat)


INCEPTION_SPLITS = 10


def unit_float(images, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 images in 0..255 or floats in [0, 1] at the classifier's ``shape`` (28x28 padded
    to 32x32: the centre is kept) -> float32 [N, *shape] in [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = crop_padded(images, shape[0])
    if images.shape[1:] != tuple(shape):
        raise ValueError(f"images must be [N, {', '.join(map(str, shape))}], got {images.shape}")
    return images.astype(np.float32)


class Judge(NamedTuple):
    classifier: TrainedClassifier
    reference_mean: np.ndarray  # [F] mean feature of the real training images
    reference_covariance: np.ndarray  # [F, F]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The images it judges: [H, W, C] of its classifier."""
        return self.classifier.image_shape

    @classmethod
    def of(cls, classifier: TrainedClassifier, reference_images) -> Judge:
        """A judge against ``reference_images`` (the real training set: uint8 or [0, 1])."""
        features = activations(classifier, unit_float(reference_images, classifier.image_shape))
        features = features.features
        return cls(classifier, *sample_quality.gaussian_fit(features))

    def score(self, images) -> dict:
        """The metrics of the module docstring for images [N, H, W, C] at the classifier's size
        (or padded from 28 to 32) (N >= 10)."""
        acts = activations(self.classifier, unit_float(images, self.classifier.image_shape))
        mean, covariance = sample_quality.gaussian_fit(acts.features)
        logits = acts.logits.astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        score, spread = sample_quality.inception_score(probabilities, INCEPTION_SPLITS)
        coverage = sample_quality.mode_coverage(
            np.argmax(acts.logits, axis=1), acts.logits.shape[1]
        )
        return {
            "fid": sample_quality.frechet_distance(
                mean, covariance, self.reference_mean, self.reference_covariance
            ),
            "inception_score": score,
            "inception_score_std": spread,
            "classes_covered": coverage["classes_covered"],
            "largest_class_fraction": coverage["largest_class_fraction"],
            "class_histogram": coverage["histogram"],
        }


def epoch_judge(config, train_images, log) -> Judge | None:
    """The judge of a training run's per-epoch scores: None (said once through ``log``) when
    ``config.eval_samples`` is 0 or there is no classifier in ``config.classifier_workdir``."""
    if not config.eval_samples:
        return None
    try:
        classifier = load(config.classifier_workdir, config.dataset)
    except ConfigError as e:
        log(f"vaejax: no per-epoch FID: {e}")
        return None
    shape = tuple(train_images.shape[1:])
    if classifier.image_shape not in (shape, (shape[0] - 4, shape[1] - 4, shape[2])):
        log(
            f"vaejax: no per-epoch FID: the classifier judges {classifier.image_shape} images, "
            f"the model makes {train_images.shape[1:]}: train a classifier with the same "
            f"--image_size"
        )
        return None
    return Judge.of(classifier, train_images)


def judge_epoch(
    judge: Judge, sampler: Sampler, key: jax.Array, n: int, num_classes: int
) -> tuple[dict, str]:
    """Scores n samples drawn by ``sampler``: (the scores, '  FID ..  IS ..  classes ../..')."""
    scores = judge.score(draw(sampler, key, n))
    return scores, (
        f"  FID {scores['fid']:.2f}  IS {scores['inception_score']:.2f}  classes "
        f"{scores['classes_covered']}/{num_classes}"
    )


Sampler = Callable[[jax.Array, int], np.ndarray]  # (key, n) -> images [n, H, W, C] in [0, 1]


def draw(sampler: Sampler, key: jax.Array, n: int, batch_size: int = 500) -> np.ndarray:
    """n images from ``sampler``, batch b drawn with fold_in(key, b) (batches of 500: a GAN's
    batch normalization sees that many)."""
    parts = [
        sampler(jax.random.fold_in(key, b), min(batch_size, n - start))
        for b, start in enumerate(range(0, n, batch_size))
    ]
    return np.concatenate(parts)


def timed_draw(
    sampler: Sampler, key: jax.Array, n: int, batch_size: int = 500
) -> tuple[np.ndarray, float | None]:
    """:func:`draw`, and the samples per second of the batches after the first (which compiles);
    None with a single batch."""
    timings = []  # (images, seconds) per batch

    def timed(key, size):
        began = time.perf_counter()
        images = sampler(key, size)  # a numpy array: the batch is done
        timings.append((size, time.perf_counter() - began))
        return images

    images = draw(timed, key, n, batch_size)
    later = timings[1:]
    return images, (sum(s for s, _ in later) / sum(t for _, t in later) if later else None)
