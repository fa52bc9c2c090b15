"""Judging generated images with the project's classifier: FID, Inception-score analogue, modes.

A :class:`Judge` holds a trained classifier (:mod:`vaejax.classifier`) and the Gaussian fit of
its penultimate features over the real training images; ``judge.score(images)`` gives

- ``fid``: the Fréchet distance between the images' feature Gaussian and the real one;
- ``inception_score`` (and ``inception_score_std`` over 10 splits): exp E KL(p(y|x) || p(y))
  under the classifier's softmax, between 1 and the number of classes;
- ``class_histogram``, ``classes_covered``, ``largest_class_fraction``: the classifier's labels
  of the images (:func:`vaejax.sample_quality.mode_coverage`): mode collapse, measured.

These are *analogues* of Inception-based FID and IS: comparable between models judged by the
same classifier, never with the Inception numbers of papers. ``experiments.sample_quality``
scores real test images (the floor) and the samples of trained VAE and GAN runs side by side.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np

from vaejax import classifier as classifiers
from vaejax import io, sample_quality
from vaejax.experiment import ConfigError, _field, load_data
from vaejax.loop import WorkdirError

INCEPTION_SPLITS = 10


def _unit_float(images) -> np.ndarray:
    """uint8 images in 0..255 or floats in [0, 1], 28x28 or 32x32 (padded: the center is kept)
    -> float32 [N, 28, 28, 1] in [0, 1]."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = classifiers.crop_padded(images)
    if images.shape[1:] != (28, 28, 1):
        raise ValueError(f"images must be [N, 28, 28, 1] (or 32x32, padded), got {images.shape}")
    return images.astype(np.float32)


class Judge(NamedTuple):
    classifier: classifiers.TrainedClassifier
    reference_mean: np.ndarray  # [F] mean feature of the real training images
    reference_covariance: np.ndarray  # [F, F]

    @classmethod
    def of(cls, classifier: classifiers.TrainedClassifier, reference_images) -> "Judge":
        """A judge against ``reference_images`` (the real training set: uint8 or [0, 1])."""
        features = classifiers.activations(classifier, _unit_float(reference_images)).features
        return cls(classifier, *sample_quality.gaussian_fit(features))

    def score(self, images) -> dict:
        """The metrics of the module docstring for images [N, 28 or 32, same, 1] (N >= 10)."""
        acts = classifiers.activations(self.classifier, _unit_float(images))
        mean, covariance = sample_quality.gaussian_fit(acts.features)
        logits = acts.logits.astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        score, spread = sample_quality.inception_score(probabilities, INCEPTION_SPLITS)
        coverage = sample_quality.mode_coverage(np.argmax(acts.logits, axis=1),
                                                acts.logits.shape[1])
        return {"fid": sample_quality.frechet_distance(mean, covariance, self.reference_mean,
                                                       self.reference_covariance),
                "inception_score": score, "inception_score_std": spread,
                "classes_covered": coverage["classes_covered"],
                "largest_class_fraction": coverage["largest_class_fraction"],
                "class_histogram": coverage["histogram"]}


# ---------------------------------------------------------------------------------------------
# Samplers of trained runs

Sampler = Callable[[jax.Array, int], np.ndarray]  # (key, n) -> images [n, 28, 28, 1] in [0, 1]


class TrainedRun(NamedTuple):
    kind: str  # "vae" or "gan"
    config: dict
    sample: Sampler


def load_run(workdir: Path) -> TrainedRun:
    """The sampler of the finished VAE or GAN run in ``workdir`` (its config.json says which).
    Raises WorkdirError with the fix when there is none."""
    config_path = workdir / "config.json"
    if not config_path.is_file() or not (workdir / "params.msgpack").is_file():
        raise WorkdirError(f"{workdir} holds no finished run (config.json and params.msgpack): "
                           f"train one first, e.g. python -m experiments.gan_mnist --workdir "
                           f"{workdir}")
    try:
        record = json.loads(config_path.read_text())
    except ValueError as e:
        raise WorkdirError(f"{config_path} is not readable JSON ({e}): rerun the training to "
                           f"rewrite it") from None
    if "noise_dim" in record:
        return TrainedRun("gan", record, _gan_sampler(workdir, record))
    if "likelihood" in record:  # VAEConfig (older runs lack "objective")
        from vaejax.likelihood import read_vae_run

        _, model, params = read_vae_run(workdir)
        latent_dim = record["latent_dim"]
        decode = jax.jit(lambda z: jax.nn.sigmoid(model.apply({"params": params}, z,
                                                              method="decode")))
        return TrainedRun("vae", record, lambda key, n: _unit_float(np.asarray(
            decode(jax.random.normal(key, (n, latent_dim))))))
    raise WorkdirError(f"{workdir} holds neither a VAE run (vae_mnist, vae_fashion_mnist) nor a "
                       f"GAN run (gan_mnist): pass one of those workdirs")


def _gan_sampler(workdir: Path, record: dict) -> Sampler:
    from vaejax import gan as gans

    names = {f.name for f in dataclasses.fields(gans.GANConfig)}
    try:
        config = gans.GANConfig(**{k: v for k, v in record.items() if k in names})
        model = gans.build(config)
        template = jax.device_get(model.init(jax.random.key(0)))
        params = io.load_params(workdir / "params.msgpack", template)["generator"]
    except Exception as e:  # a damaged or foreign file: one line, nothing lost
        raise WorkdirError(f"{workdir / 'params.msgpack'} is damaged or belongs to another model "
                           f"({type(e).__name__}): retrain, or resume the run to rewrite it") from None
    sample = jax.jit(lambda key, n: model.sample(params, key, n), static_argnums=1)
    return lambda key, n: _unit_float(np.asarray(sample(key, n)))


def draw(sampler: Sampler, key: jax.Array, n: int, batch_size: int = 500) -> np.ndarray:
    """n images from ``sampler``, batch b drawn with fold_in(key, b) (batches of 500: a GAN's
    batch normalization sees that many)."""
    parts = [sampler(jax.random.fold_in(key, b), min(batch_size, n - start))
             for b, start in enumerate(range(0, n, batch_size))]
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------------
# experiments.sample_quality


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Settings of ``experiments.sample_quality``."""

    dataset: str = _field("mnist", "dataset of the classifier and the runs",
                          ("mnist", "fashion_mnist"))
    runs: str = _field("", "comma-separated workdirs of finished VAE / GAN runs to score "
                       "(empty: real test images only)")
    classifier_workdir: str = _field("workdirs/classifier_{dataset}", "the classifier trained "
                                     "by experiments.classifier ({dataset} is replaced)")
    num_samples: int = _field(10000, "generated images per run (the test set has 10,000)")
    seed: int = _field(0, "seed of the generated images")
    data_dir: str = _field("", "tfds data directory (empty: $TFDS_DATA_DIR or "
                           "~/tensorflow_datasets)")
    raw_data_dir: str = _field("", "folder with the raw IDX .gz files, for offline use")
    train_examples: int = _field(0, "fit the real features on the first N training images "
                                 "(0 = all)")
    workdir: str = _field("workdirs/sample_quality_{dataset}", "where sample_quality.json, "
                          "mode_coverage.png and samples.png go")


def _training_time(workdir: Path) -> dict | None:
    """Epochs and seconds of training from the run's timing.jsonl (None without one)."""
    timing = workdir / "timing.jsonl"
    lines = io.read_jsonl(timing) if timing.is_file() else []
    if not lines:
        return None
    return {"epochs": max(t.get("epoch", 0) for t in lines),
            "train_seconds": sum(t.get("seconds", 0.0) for t in lines)}


def _format_row(name: str, scores: dict, num_classes: int, training: dict | None) -> str:
    trained = (f"{training['epochs']:>6d}  {training['train_seconds']:>8.0f}" if training else
               f"{'-':>6}  {'-':>8}")
    return (f"{name:<40} {scores['fid']:>8.2f}  {scores['inception_score']:>5.2f} ± "
            f"{scores['inception_score_std']:.2f}  {scores['classes_covered']:>3d}/{num_classes}  "
            f"{scores['largest_class_fraction']:>6.1%}  {trained}")


def run(config: QualityConfig, workdir: Path) -> dict:
    """Scores the real test images and each run's samples; prints the table, writes
    ``sample_quality.json``, ``mode_coverage.png`` (label histograms) and ``samples.png`` (a row
    of samples per run) into ``workdir``. Returns the JSON record."""
    if config.num_samples < 10:
        raise ConfigError(f"--num_samples must be at least 10, got {config.num_samples}")
    runs = [Path(p) for p in config.runs.split(",") if p.strip()]
    classifier_dir = config.classifier_workdir.replace("{dataset}", config.dataset)
    classifier = classifiers.load(classifier_dir, config.dataset)
    trained = [(path, load_run(path)) for path in runs]  # every error before the slow part
    for path, trained_run in trained:
        if trained_run.config.get("dataset") != config.dataset:
            raise ConfigError(f"{path} was trained on {trained_run.config.get('dataset')}, not "
                              f"{config.dataset}: pass --dataset {trained_run.config.get('dataset')}")
    train, test = load_data(config)
    judge = Judge.of(classifier, train.images)
    num_classes = classifier.model.num_classes
    header = (f"{'images':<40} {'FID':>8}  {'IS':>12}  {'classes':>7}  {'top':>6}  "
              f"{'epochs':>6}  {'train s':>8}")
    print(f"vaejax: classifier {classifier_dir} (test accuracy "
          f"{classifier.test_accuracy:.2%}); FID against {len(train.images):,} training images")
    print(header)
    real = judge.score(test.images)
    rows = [{"name": "real test images", "images": len(test.images), **real}]
    print(_format_row("real test images", real, num_classes, None))
    previews = [(_unit_float(test.images[:16]), 16)]
    for i, (path, trained_run) in enumerate(trained):
        images = draw(trained_run.sample, jax.random.fold_in(jax.random.key(config.seed), i),
                      config.num_samples)
        scores = judge.score(images)
        name = f"{trained_run.kind}: {path}"
        training = _training_time(path)
        rows.append({"name": name, "workdir": str(path), "kind": trained_run.kind,
                     "images": config.num_samples, **(training or {}), **scores})
        print(_format_row(name, scores, num_classes, training))
        previews.append((images[:16], 16))
    record = {"dataset": config.dataset, "classifier": classifier_dir,
              "classifier_test_accuracy": classifier.test_accuracy, "rows": rows}
    workdir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_bytes(workdir / "sample_quality.json",
                          (json.dumps(record, indent=2) + "\n").encode())
    io.save_class_histograms(workdir / "mode_coverage.png",
                             [(row["name"], row["class_histogram"]) for row in rows])
    io.save_image_grids(workdir / "samples.png", [(np.concatenate([p for p, _ in previews]), 16)])
    print(f"vaejax: wrote sample_quality.json, mode_coverage.png and samples.png to {workdir}")
    return record
