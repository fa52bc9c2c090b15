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

from vaejax import io
from vaejax.errors import ConfigError
from vaejax.evaluation import judge, sampling
from vaejax.evaluation.judge import Judge, Sampler, _unit_float, timed_draw
from vaejax.runs import ddpm as ddpm_run
from vaejax.runs import gan as gan_run
from vaejax.runs.config import _field, load_data
from vaejax.runs.likelihood import read_vae_run
from vaejax.training.loop import WorkdirError


class TrainedRun(NamedTuple):
    kind: str  # "vae", "gan", "ddpm" or "ddim<steps>"
    config: dict
    sample: Sampler


def load_run(workdir: Path, sampler: str = "ddim", steps: int = 50) -> TrainedRun:
    """The sampler of the finished VAE, GAN or diffusion run in ``workdir`` (its config.json says
    which); a diffusion run samples with ``sampler`` (ddpm: all T steps; ddim: ``steps``) from
    its EMA weights. Raises WorkdirError with the fix when there is none."""
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
    if "timesteps" in record:
        return TrainedRun("ddpm" if sampler == "ddpm" else f"ddim{steps}", record,
                          _diffusion_sampler(workdir, record, sampler, steps))
    if "likelihood" in record:  # VAEConfig (older runs lack "objective")

        _, model, params = read_vae_run(workdir)
        latent_dim = record["latent_dim"]
        decode = jax.jit(lambda z: jax.nn.sigmoid(model.apply({"params": params}, z,
                                                              method="decode")))
        return TrainedRun("vae", record, lambda key, n: _unit_float(np.asarray(
            decode(jax.random.normal(key, (n, latent_dim))))))
    raise WorkdirError(f"{workdir} holds no VAE run (vae_mnist, vae_fashion_mnist), GAN run "
                       f"(gan_mnist) or diffusion run (ddpm_mnist): pass one of those workdirs")


def _rebuild(workdir: Path, record: dict, config_class: type, build: Callable,
             template: Callable):
    """(config, model, params) of a finished run: ``build(config)`` and ``params.msgpack`` read
    against ``template(model, config)``; WorkdirError for a damaged or foreign file."""
    names = {f.name for f in dataclasses.fields(config_class)}
    try:
        config = config_class(**{k: v for k, v in record.items() if k in names})
        model = build(config)
        params = io.load_params(workdir / "params.msgpack",
                                jax.device_get(template(model, config)))
    except Exception as e:  # one line, nothing lost
        raise WorkdirError(f"{workdir / 'params.msgpack'} is damaged or belongs to another model "
                           f"({type(e).__name__}): retrain, or resume the run to rewrite it") from None
    return config, model, params


def _gan_sampler(workdir: Path, record: dict) -> Sampler:

    _, model, params = _rebuild(workdir, record, gan_run.GANConfig, gan_run.build,
                                lambda model, config: model.init(jax.random.key(0)))
    sample = jax.jit(lambda key, n: model.sample(params["generator"], key, n), static_argnums=1)
    return lambda key, n: _unit_float(np.asarray(sample(key, n)))


def _diffusion_sampler(workdir: Path, record: dict, sampler: str, steps: int) -> Sampler:

    def template(model, config):
        params = model.init(jax.random.key(0), (config.image_size, config.image_size, 1))
        return {"params": params, "ema": params}

    config, model, params = _rebuild(workdir, record, ddpm_run.DDPMConfig, ddpm_run.build,
                                     template)
    sample = ddpm_run.image_sampler(model, config, sampler, min(steps, config.timesteps))
    return lambda key, n: _unit_float(sampling.sample_any_count(sample, params["ema"], key, n,
                                                                 jax.device_count()))


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
    sampler: str = _field("ddim", "how diffusion runs sample: ddim (--sampling_steps steps) or "
                          "ddpm (all T steps, ancestral)", ("ddim", "ddpm"))
    sampling_steps: int = _field(50, "DDIM steps of diffusion runs")
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


def _format_row(name: str, scores: dict, num_classes: int, training: dict | None,
                rate: float | None = None) -> str:
    trained = (f"{training['epochs']:>6d}  {training['train_seconds']:>8.0f}" if training else
               f"{'-':>6}  {'-':>8}")
    return (f"{name:<40} {scores['fid']:>8.2f}  {scores['inception_score']:>5.2f} ± "
            f"{scores['inception_score_std']:.2f}  {scores['classes_covered']:>3d}/{num_classes}  "
            f"{scores['largest_class_fraction']:>6.1%}  {trained}  "
            + (f"{rate:>10.1f}" if rate else f"{'-':>10}"))


def run(config: QualityConfig, workdir: Path) -> dict:
    """Scores the real test images and each run's samples; prints the table, writes
    ``sample_quality.json``, ``mode_coverage.png`` (label histograms) and ``samples.png`` (a row
    of samples per run) into ``workdir``. Returns the JSON record."""
    if config.num_samples < 10:
        raise ConfigError(f"--num_samples must be at least 10, got {config.num_samples}")
    runs = [Path(p) for p in config.runs.split(",") if p.strip()]
    classifier_dir = config.classifier_workdir.replace("{dataset}", config.dataset)
    classifier = judge.load(classifier_dir, config.dataset)
    if config.sampling_steps < 1:
        raise ConfigError(f"--sampling_steps must be >= 1, got {config.sampling_steps}")
    trained = [(path, load_run(path, config.sampler, config.sampling_steps))
               for path in runs]  # every error before the slow part
    for path, trained_run in trained:
        if trained_run.config.get("dataset") != config.dataset:
            raise ConfigError(f"{path} was trained on {trained_run.config.get('dataset')}, not "
                              f"{config.dataset}: pass --dataset {trained_run.config.get('dataset')}")
    train, test = load_data(config)
    judge = Judge.of(classifier, train.images)
    num_classes = classifier.model.num_classes
    header = (f"{'images':<40} {'FID':>8}  {'IS':>12}  {'classes':>7}  {'top':>6}  "
              f"{'epochs':>6}  {'train s':>8}  {'samples/s':>10}")
    print(f"vaejax: classifier {classifier_dir} (test accuracy "
          f"{classifier.test_accuracy:.2%}); FID against {len(train.images):,} training images")
    print(header)
    real = judge.score(test.images)
    rows = [{"name": "real test images", "images": len(test.images), **real}]
    print(_format_row("real test images", real, num_classes, None))
    previews = [(_unit_float(test.images[:16]), 16)]
    for i, (path, trained_run) in enumerate(trained):
        images, rate = timed_draw(trained_run.sample,
                                  jax.random.fold_in(jax.random.key(config.seed), i),
                                  config.num_samples)
        scores = judge.score(images)
        name = f"{trained_run.kind}: {path}"
        training = _training_time(path)
        rows.append({"name": name, "workdir": str(path), "kind": trained_run.kind,
                     "images": config.num_samples, "samples_per_second": rate,
                     "platform": jax.devices()[0].platform, **(training or {}), **scores})
        print(_format_row(name, scores, num_classes, training, rate))
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
