"""``experiments.sample_quality`` (kind ``sample_quality``): the samples of finished runs of any
kind that offers ``sample``, scored side by side with real test images (the floor).

The judge (:mod:`vaejax.evaluation.judge`: the project's classifier, trained by
``experiments.classifier``, and the Gaussian fit of its penultimate features over the real
training images) gives each row the FID and Inception-score analogues and the mode coverage
(:func:`vaejax.evaluation.sample_quality.mode_coverage`). These are *analogues* of the
Inception-based numbers: comparable between models judged by the same classifier, never with
the Inception numbers of papers. Writes ``sample_quality.json``, ``mode_coverage.png`` and
``samples.png``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from vaejax import data, io
from vaejax.errors import NO_FLAGS, ConfigError
from vaejax.evaluation import judge
from vaejax.evaluation.judge import Judge, timed_draw, unit_float
from vaejax.runs.base import Study, register
from vaejax.runs.config import config_field, load_data
from vaejax.runs.load import load_run
from vaejax.runs.trained import TrainedRun


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Settings of ``experiments.sample_quality``."""

    dataset: str = config_field("mnist", "dataset of the classifier and the runs")
    runs: tuple[str, ...] = config_field(
        (), "workdirs of finished VAE / GAN / diffusion runs to score (none: real test images only)"
    )
    classifier_workdir: str = config_field(
        "workdirs/classifier_{dataset}",
        "the classifier trained by experiments.classifier ({dataset} is replaced)",
    )
    num_samples: int = config_field(10000, "generated images per run (the test set has 10,000)")
    seed: int = config_field(0, "seed of the generated images and of the floor's test images")
    sampler: str = config_field(
        "ddim",
        "how diffusion runs sample: ddim (--sampling_steps steps) or ddpm (all T steps, ancestral)",
        ("ddim", "ddpm"),
    )
    sampling_steps: int = config_field(50, "DDIM steps of diffusion runs")
    data_dir: str = config_field(
        "", "tfds data directory (empty: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    raw_data_dir: str = config_field("", "folder with the raw IDX .gz files, for offline use")
    train_examples: int = config_field(
        0, "fit the real features on the first N training images (0 = all)"
    )
    test_examples: int = config_field(
        0,
        "score N real test images, drawn at random by --seed, as the floor (0 = all 10,000; "
        "the same N as --num_samples compares like with like)",
    )
    workdir: str = config_field(
        "workdirs/sample_quality_{dataset}",
        "where sample_quality.json, mode_coverage.png and samples.png go",
    )


def _training_time(workdir: Path) -> dict | None:
    """Epochs and seconds of training from the run's timing.jsonl (None without one)."""
    timing = workdir / "timing.jsonl"
    lines = io.read_jsonl(timing) if timing.is_file() else []
    if not lines:
        return None
    return {
        "epochs": max(t.get("epoch", 0) for t in lines),
        "train_seconds": sum(t.get("seconds", 0.0) for t in lines),
    }


def _format_row(
    name: str, scores: dict, num_classes: int, training: dict | None, rate: float | None = None
) -> str:
    trained = (
        f"{training['epochs']:>6d}  {training['train_seconds']:>8.0f}"
        if training
        else f"{'-':>6}  {'-':>8}"
    )
    return (
        f"{name:<40} {scores['fid']:>8.2f}  {scores['inception_score']:>5.2f} ± "
        f"{scores['inception_score_std']:.2f}  {scores['classes_covered']:>3d}/{num_classes}  "
        f"{scores['largest_class_fraction']:>6.1%}  {trained}  "
        + (f"{rate:>10.1f}" if rate else f"{'-':>10}")
    )


def _load_runs(config: QualityConfig) -> list[tuple[Path, TrainedRun]]:
    """The finished runs of ``config.runs``, each with its workdir; raises
    :class:`~vaejax.errors.ConfigError` for one trained on another dataset."""
    if config.sampling_steps < 1:
        raise ConfigError(f"--sampling_steps must be >= 1, got {config.sampling_steps}")
    options = {"sampler": config.sampler, "steps": config.sampling_steps}
    trained = [(path, load_run(path, **options)) for path in (Path(p) for p in config.runs)]
    for path, trained_run in trained:
        if "sample" not in trained_run.operations:
            raise ConfigError(
                f"{path} holds a {trained_run.kind} run, which does not generate images (it "
                f"offers {', '.join(trained_run.operations) or 'nothing'}): pass runs that sample"
            )
        if trained_run.config.dataset != config.dataset:
            raise ConfigError(
                f"{path} was trained on {trained_run.config.dataset}, not "
                f"{config.dataset}: pass --dataset {trained_run.config.dataset}"
            )
    return trained


def _score_run(
    config: QualityConfig,
    scorer: Judge,
    index: int,
    path: Path,
    trained_run: TrainedRun,
    num_classes: int,
) -> tuple[dict, np.ndarray]:
    """Draws ``config.num_samples`` images of the run (with the seed's key folded with
    ``index``), scores them and prints the table's row; returns (the JSON row, the images)."""
    images, rate = timed_draw(
        lambda key, n, sample=trained_run.sample: unit_float(sample(key, n), scorer.shape),
        jax.random.fold_in(jax.random.key(config.seed), index),
        config.num_samples,
    )
    scores = scorer.score(images)
    kind = trained_run.label
    name = f"{kind}: {path}"
    training = _training_time(path)
    row = {
        "name": name,
        "workdir": str(path),
        "kind": kind,
        "images": config.num_samples,
        "samples_per_second": rate,
        "platform": jax.devices()[0].platform,
        **(training or {}),
        **scores,
    }
    print(_format_row(name, scores, num_classes, training, rate))
    return row, images


def _write_outputs(workdir: Path, record: dict, previews: list[tuple[np.ndarray, int]]) -> None:
    """``sample_quality.json`` (``record``), ``mode_coverage.png`` (a label histogram per row)
    and ``samples.png`` (the ``previews``) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_bytes(
        workdir / "sample_quality.json", (json.dumps(record, indent=2) + "\n").encode()
    )
    io.save_class_histograms(
        workdir / "mode_coverage.png",
        [(row["name"], row["class_histogram"]) for row in record["rows"]],
    )
    io.save_image_grids(workdir / "samples.png", [(np.concatenate([p for p, _ in previews]), 16)])
    print(f"vaejax: wrote sample_quality.json, mode_coverage.png and samples.png to {workdir}")


@register
class SampleQualityRun(Study):
    """Scores finished runs' samples with the judge (trains nothing)."""

    kind = "sample_quality"
    Config = QualityConfig
    memory_flags = NO_FLAGS

    def validate(self, num_devices: int) -> None:
        pass  # checked by study()

    def load_data(self) -> None:
        return None  # at the judge's size, in study()

    def study(self, data_: None) -> dict:
        """Scores the real test images and each run's samples (the data are loaded here, after the
        judge and the runs, so that a bad one fails fast); prints the table, writes
        ``sample_quality.json``, ``mode_coverage.png`` (label histograms) and ``samples.png`` (a row
        of samples per run) into ``workdir``. Returns the JSON record."""
        config, workdir = self.config, self.workdir
        if config.num_samples < 10:
            raise ConfigError(f"--num_samples must be at least 10, got {config.num_samples}")
        classifier_dir = config.classifier_workdir.replace("{dataset}", config.dataset)
        classifier = judge.load(classifier_dir, config.dataset)
        trained = _load_runs(config)  # every error before the slow part
        train, test = load_data(
            dataclasses.replace(config, test_examples=0), size=classifier.image_shape[0]
        )
        test = data.draw(test, config.test_examples, config.seed)  # not the first N: see draw
        scorer = Judge.of(classifier, train.images)
        num_classes = classifier.model.num_classes
        header = (
            f"{'images':<40} {'FID':>8}  {'IS':>12}  {'classes':>7}  {'top':>6}  "
            f"{'epochs':>6}  {'train s':>8}  {'samples/s':>10}"
        )
        print(
            f"vaejax: classifier {classifier_dir} (test accuracy "
            f"{classifier.test_accuracy:.2%}); FID against {len(train.images):,} training images"
        )
        print(header)
        real = scorer.score(test.images)
        rows = [{"name": "real test images", "images": len(test.images), **real}]
        print(_format_row("real test images", real, num_classes, None))
        previews = [(unit_float(test.images[:16], classifier.image_shape), 16)]
        for i, (path, trained_run) in enumerate(trained):
            row, images = _score_run(config, scorer, i, path, trained_run, num_classes)
            rows.append(row)
            previews.append((images[:16], 16))
        record = {
            "dataset": config.dataset,
            "classifier": classifier_dir,
            "classifier_test_accuracy": classifier.test_accuracy,
            "rows": rows,
        }
        _write_outputs(workdir, record, previews)
        return record
