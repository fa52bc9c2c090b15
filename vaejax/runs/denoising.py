"""Denoising autoencoders: corrupt the input, reconstruct the clean image.

Two corruptions, applied on the device inside each training step with the step's key (a fresh
corruption of an image every time it is visited):

- ``gaussian``: x + level * N(0, 1) per pixel, clipped to [0, 1] (``level`` is the std).
- ``salt_pepper``: each pixel independently, with probability ``level``, replaced by 0 or 1
  (equally likely).

The experiment trains one autoencoder at ``--noise_level`` and reports the PSNR (dB, peak 1) of
the corrupted and the denoised test images against the clean ones at several levels.
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vaejax import io
from vaejax.data.preprocess import NOISES, corrupt, make_denoising_preprocessor
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import metrics
from vaejax.runs import autoencoders as autoencoders_run
from vaejax.runs.autoencoders import AEConfig
from vaejax.runs.base import Data, Study, register
from vaejax.runs.config import config_field, value_text


@dataclasses.dataclass(frozen=True)
class DenoisingConfig(AEConfig):
    """Settings of ``experiments.denoising_ae``."""

    latent_dim: int = config_field(32, "size of the latent code z")
    noise: str = config_field(
        "gaussian", "corruption: gaussian (std = level) or salt_pepper (rate = level)", NOISES
    )
    noise_level: float = config_field(0.5, "corruption level during training")
    eval_levels: tuple[float, ...] = config_field(
        (0.0, 0.1, 0.3, 0.5, 0.7),
        "corruption levels of the PSNR table and the picture (0: "
        "the clean images, the autoencoder's own ceiling)",
        resume=True,
    )
    workdir: str = config_field(
        "workdirs/denoising_mnist",
        "where the model, table and pictures go; rerunning with the same workdir resumes",
        resume=True,
    )


def validate(config: DenoisingConfig, num_devices: int) -> None:
    autoencoders_run.validate_ae(config, num_devices)
    high = 1.0 if config.noise == "salt_pepper" else 10.0
    if not 0 <= config.noise_level <= high:
        raise ConfigError(
            f"--noise_level must lie in [0, {high:g}] for {config.noise} noise, "
            f"got {config.noise_level}"
        )
    if not config.eval_levels:
        raise ConfigError("--eval_levels needs at least one level, e.g. 0,0.1,0.3,0.5,0.7")
    if not all(0 <= level <= high for level in config.eval_levels):
        raise ConfigError(
            f"--eval_levels must lie in [0, {high:g}] for {config.noise} noise, "
            f"got {value_text(config.eval_levels)}"
        )


def denoise(
    model: autoencoders_run.TrainedModel,
    images: np.ndarray,
    noise: str,
    level: float,
    key: jax.Array,
    batch_size: int = 1000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corrupted, denoised, clean) [N, S, S, 1] in [0, 1] for uint8 test images; batch ``b`` is
    corrupted with fold_in(key, b)."""

    def apply(m, batch):
        b, x = batch
        clean = m.prepare(x)
        noisy = corrupt(noise, jax.random.fold_in(key, b[0]), clean, level)
        return jnp.stack([noisy, m.decode(m.encode(noisy)), clean], axis=1)

    batch_index = np.arange(len(images)) // batch_size
    out = autoencoders_run.map_batches(apply, model, (batch_index, images), batch_size)
    return out[:, 0], out[:, 1], out[:, 2]


def _gain(row: dict) -> str:
    gain = row["psnr_denoised"] - row["psnr_corrupted"]
    return f"{gain:+.2f}" if np.isfinite(gain) else "n/a"


def _psnr_rows(
    model: autoencoders_run.TrainedModel,
    images: np.ndarray,
    config: DenoisingConfig,
    key: jax.Array,
) -> tuple[list[dict], list[np.ndarray]]:
    """For each of ``config.eval_levels`` (the ``i``-th corrupted with fold_in(key, i)) the PSNR
    of the corrupted and the denoised images; and the picture's rows: for each level ten
    corrupted and ten denoised images, then ten clean ones."""
    rows, picture = [], []
    for i, level in enumerate(config.eval_levels):
        noisy, denoised, clean = denoise(
            model,
            images,
            config.noise,
            level,
            jax.random.fold_in(key, i),
            config.eval_batch_size,
        )
        rows.append(
            {
                "level": level,
                "psnr_corrupted": metrics.mean_psnr(clean, noisy),
                "psnr_denoised": metrics.mean_psnr(clean, denoised),
            }
        )
        picture += [noisy[:10], denoised[:10]]
    picture.append(clean[:10])
    return rows, picture


def _psnr_table(rows: list[dict]) -> str:
    """``psnr.md``: a markdown table of the PSNR rows and their gains."""
    return (
        "| level | PSNR corrupted (dB) | PSNR denoised (dB) | gain (dB) |\n"
        "| --- | --- | --- | --- |\n"
        + "".join(
            f"| {r['level']:g} | {r['psnr_corrupted']:.2f} | "
            f"{r['psnr_denoised']:.2f} | {_gain(r)} |\n"
            for r in rows
        )
    )


@register
class DenoisingRun(Study):
    """A denoising autoencoder (sub-workdir ``ae``) and its PSNR gain at several noise levels."""

    kind = "denoising"
    Config = DenoisingConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim",))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def study(self, data_: Data) -> list[dict]:
        """Trains the denoising autoencoder in ``workdir/ae`` and writes ``psnr.json`` (an
        infinite PSNR, of identical images at level 0, as null), ``psnr.md`` and
        ``denoising.png`` (for each level a row of corrupted and a row of denoised test images,
        then the clean ones). Returns the PSNR records."""
        config, workdir, writer, log = self.config, self.workdir, self.writer, self.log
        train, test, _ = data_
        key = jax.random.key(config.seed)
        size = autoencoders_run.image_size(config)
        preprocess = make_denoising_preprocessor(size, config.noise, config.noise_level)
        model = autoencoders_run.train_family_member(
            "ae",
            config,
            workdir / "ae",
            train.images,
            test.images,
            jax.random.fold_in(key, 0),
            preprocess=preprocess,
            eval_preprocess=preprocess,
        )

        rows, picture = _psnr_rows(model, test.images, config, jax.random.fold_in(key, 1))
        table = _psnr_table(rows)
        if writer:
            finite = [{k: (v if np.isfinite(v) else None) for k, v in r.items()} for r in rows]
            io.atomic_write_bytes(workdir / "psnr.json", json.dumps(finite, indent=2).encode())
            io.atomic_write_bytes(workdir / "psnr.md", table.encode())
            io.save_image_grid(workdir / "denoising.png", np.concatenate(picture), columns=10)
        log(
            f"\n{config.noise} noise, trained at level {config.noise_level:g}, "
            f"{config.model} autoencoder ({config.loss}), PSNR over the {len(test.images):,} test "
            f"images (peak 1; pooled squared error)\n{table}\nwhole run "
            f"{time.perf_counter() - self.started:.1f} s; outputs in {workdir}"
        )
        return rows
