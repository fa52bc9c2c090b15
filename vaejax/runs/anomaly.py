"""Anomaly detection with autoencoders: train on every class but one, find the held-out class.

Protocol (one run does it for each held-out class ``c``):

1. Train an autoencoder and a VAE on the training images of every class except ``c``.
2. Score every test image: the autoencoder's reconstruction error (its training loss, summed
   over pixels) and the VAE's negative ELBO (nats per image, averaged over ``--vae_samples``
   draws of z). Higher = more anomalous.
3. With "is of class c" as the positive label: ROC-AUC and average precision over the test set,
   and precision / recall when flagging test images whose score exceeds the ``--percentile``-th
   percentile of the *training* scores (a threshold set without seeing any anomaly).
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np

from vaejax import io, objectives
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import metrics
from vaejax.runs import autoencoders as autoencoders_run
from vaejax.runs.autoencoders import AEConfig
from vaejax.runs.base import Data, Study, register
from vaejax.runs.config import config_field, data_spec, value_text


@dataclasses.dataclass(frozen=True)
class AnomalyConfig(AEConfig):
    """Settings of ``experiments.anomaly_detection``."""

    latent_dim: int = config_field(8, "size of the latent code z")
    epochs: int = config_field(5, "training epochs of each model", resume=True)
    classes: tuple[int, ...] | None = config_field(
        None, "held-out classes to run, labels such as 0,7 (auto: all)", resume=True
    )
    percentile: float = config_field(
        95.0,
        "flag a test image when its score exceeds this percentile of the training scores",
        resume=True,
    )
    vae_samples: int = config_field(8, "draws of z per image in the VAE's -ELBO score", resume=True)
    workdir: str = config_field(
        "workdirs/anomaly_mnist",
        "where the models, tables and checkpoints go; rerunning with the same workdir resumes",
        resume=True,
    )


def held_out_classes(config: AnomalyConfig) -> tuple[int, ...]:
    """The labels named by ``--classes`` (None: every class); raises ConfigError for labels
    outside the dataset's, repeated, or none."""
    n = data_spec(config).num_classes
    if config.classes is None:
        return tuple(range(n))
    labels = config.classes
    if not labels or not all(0 <= c < n for c in labels) or len(set(labels)) != len(labels):
        raise ConfigError(
            f"--classes must be distinct labels in 0..{n - 1} such as 0,7 (or auto "
            f"for all), got {value_text(labels) or 'none'}"
        )
    return labels


def validate(config: AnomalyConfig, num_devices: int) -> None:
    autoencoders_run.validate_ae(config, num_devices)
    held_out_classes(config)
    if not 0 <= config.percentile <= 100:
        raise ConfigError(f"--percentile must be between 0 and 100, got {config.percentile}")
    if config.vae_samples < 1:
        raise ConfigError(f"--vae_samples must be positive, got {config.vae_samples}")


def autoencoder_scores(
    model: autoencoders_run.TrainedModel, images: np.ndarray, loss: str, batch_size: int = 1000
) -> np.ndarray:
    """Reconstruction error per image [N] (``loss``, summed over pixels) of uint8 images."""
    per_example = objectives.autoencoder_per_example(model.module, loss)
    return autoencoders_run.map_batches(
        lambda m, x: per_example(m.params, m.prepare(x), None)["loss"], model, images, batch_size
    )


def vae_scores(
    model: autoencoders_run.TrainedModel,
    images: np.ndarray,
    key: jax.Array,
    samples: int,
    batch_size: int = 1000,
) -> np.ndarray:
    """Negative ELBO per image [N] in nats (beta 1, whatever beta trained the model), averaged
    over ``samples`` draws of z ~ q(z | x); draw ``s`` of image ``i`` uses fold_in(key, s) and
    the image's position, so the score of an image does not depend on the batching."""
    per_example = objectives.vae_per_example(model.module)

    def score(m, batch):
        index, x = batch
        x = m.prepare(x)

        def one_draw(s):
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, s), i))(index)
            return jax.vmap(lambda xi, k: per_example(m.params, xi[None], k)["negative_elbo"][0])(
                x, keys
            )

        return jax.lax.map(one_draw, np.arange(samples)).mean(axis=0)

    return autoencoders_run.map_batches(score, model, (np.arange(len(images)), images), batch_size)


def detection_metrics(
    test_scores: np.ndarray, is_anomaly: np.ndarray, train_scores: np.ndarray, percentile: float
) -> dict[str, float]:
    """ROC-AUC, average precision, and precision/recall at the training-score percentile."""
    threshold = metrics.percentile_threshold(train_scores, percentile)
    precision, recall = metrics.precision_recall_at(test_scores, is_anomaly, threshold)
    return {
        "roc_auc": metrics.roc_auc(test_scores, is_anomaly),
        "average_precision": metrics.average_precision(test_scores, is_anomaly),
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
    }


def class_label(row: dict) -> str:
    """'3' for MNIST's digit 3, '3 (Dress)' for a named class."""
    name = row["class_name"]
    return name if name == str(row["class"]) else f"{row['class']} ({name})"


def format_table(rows: list[dict], percentile: float) -> str:
    """The results as a Markdown table, one row per held-out class, and the mean."""
    head = (
        "| held-out class | ROC-AUC AE | ROC-AUC VAE | AP AE | AP VAE | "
        f"P / R AE (p{percentile:g}) | P / R VAE (p{percentile:g}) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    )

    def line(name, ae, vae):
        return (
            f"| {name} | {ae['roc_auc']:.3f} | {vae['roc_auc']:.3f} | "
            f"{ae['average_precision']:.3f} | {vae['average_precision']:.3f} | "
            f"{ae['precision']:.2f} / {ae['recall']:.2f} | "
            f"{vae['precision']:.2f} / {vae['recall']:.2f} |\n"
        )

    body = "".join(line(class_label(r), r["ae"], r["vae"]) for r in rows)
    mean = {
        m: {k: float(np.mean([r[m][k] for r in rows])) for k in rows[0][m]} for m in ("ae", "vae")
    }
    return head + body + line("mean", mean["ae"], mean["vae"])


@register
class AnomalyRun(Study):
    """Anomaly detection: per held-out class an autoencoder and a VAE trained on the other
    classes, scored by ROC-AUC and average precision."""

    kind = "anomaly"
    Config = AnomalyConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim",))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def study(self, data_: Data) -> list[dict]:
        """Runs the protocol for every held-out class of ``config``; writes, per class,
        ``class_<c>/ae/`` and ``class_<c>/vae/`` (each a training workdir) and at the end
        ``anomaly.json`` (one record per class) and ``anomaly.md`` (the table). Returns the
        records."""
        config, workdir = self.config, self.workdir
        seed_key = jax.random.key(config.seed)
        rows = [self._held_out(c, data_, seed_key) for c in held_out_classes(config)]
        table = format_table(rows, config.percentile)
        if self.writer:
            io.atomic_write_bytes(workdir / "anomaly.json", json.dumps(rows, indent=2).encode())
            io.atomic_write_bytes(workdir / "anomaly.md", table.encode())
        self.log(
            f"\n{config.dataset}, {config.model} models, latent {config.latent_dim}, "
            f"{config.epochs} epoch{'s' * (config.epochs != 1)}, scores: AE {config.loss} "
            f"reconstruction error, VAE -ELBO ({config.vae_samples} draws)\n{table}\n"
            f"whole run {time.perf_counter() - self.started:.1f} s; outputs in {workdir}"
        )
        return rows

    def _held_out(self, c: int, data_: Data, seed_key: jax.Array) -> dict:
        """Class ``c`` held out: the autoencoder and the VAE trained on the other classes and
        their detection metrics (one row of the table)."""
        config, (train, test, spec) = self.config, data_
        normal = train.labels != c
        is_anomaly = test.labels == c
        row = {"class": c, "class_name": spec.class_names[c]}
        self.log(
            f"held-out class {class_label(row)}: training on {int(normal.sum()):,} images of "
            f"the other classes"
        )
        class_key = jax.random.fold_in(seed_key, c)
        for index, kind in enumerate(("ae", "vae")):
            model = autoencoders_run.train_family_member(
                kind,
                config,
                self.workdir / f"class_{c}" / kind,
                train.images[normal],
                test.images,
                jax.random.fold_in(class_key, index),
            )
            if kind == "ae":
                scores = [
                    autoencoder_scores(model, x, config.loss, config.eval_batch_size)
                    for x in (test.images, train.images[normal])
                ]
            else:
                score_key = jax.random.fold_in(class_key, 2)
                scores = [
                    vae_scores(
                        model,
                        x,
                        jax.random.fold_in(score_key, i),
                        config.vae_samples,
                        config.eval_batch_size,
                    )
                    for i, x in enumerate((test.images, train.images[normal]))
                ]
            row[kind] = detection_metrics(scores[0], is_anomaly, scores[1], config.percentile)
        self.log(
            f"class {c}: ROC-AUC AE {row['ae']['roc_auc']:.3f}, VAE {row['vae']['roc_auc']:.3f}"
        )
        return row
