"""Every model family on colour images of 32 and 64 pixels, from a folder of real data.

(WGAN-GP trains the DCGAN networks, the critic without batch normalization, on another loss:
its colour shapes are those of the parameter-count test against PyTorch, 32x32x3 included, and
its end-to-end run is in tests/test_quality.py.)

The data: MNIST digits coloured (a digit colour and a background colour per image, drawn from a
fixed palette) and written as 28x28 PNG files into class folders; ``folder:PATH`` prepares them
at the run's ``--image_size``. Each family trains a few steps in-process and must write finite
metrics and pictures in colour (the MLP VAE computing in bfloat16).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from vaejax.data import idx
from vaejax.runs.base import train_and_evaluate
from vaejax.runs.conditional import CVAEConfig
from vaejax.runs.ddpm import DDPMConfig
from vaejax.runs.gan import GANConfig
from vaejax.runs.vae import VAEConfig

PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [250, 190, 212], [0, 0, 0]],
    np.float32,
)  # fmt: skip


def colourise(images: np.ndarray, seed: int) -> np.ndarray:
    """Grey digits [N, 28, 28, 1] -> [N, 28, 28, 3]: ink and background colours from
    :data:`PALETTE`, never the same, blended by the grey value."""
    rng = np.random.default_rng(seed)
    ink = rng.integers(0, len(PALETTE), len(images))
    paper = (ink + rng.integers(1, len(PALETTE), len(images))) % len(PALETTE)
    alpha = images.astype(np.float32) / 255.0
    mixed = alpha * PALETTE[ink][:, None, None] + (1 - alpha) * PALETTE[paper][:, None, None]
    return np.round(mixed).astype(np.uint8)


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory, mnist_raw_dir) -> str:
    root = tmp_path_factory.mktemp("colour_digits")
    spec = idx.DATASETS["mnist"]
    for split, n, seed in (("train", 256, 1), ("test", 64, 2)):
        digits = idx.read_idx_split(mnist_raw_dir, split, spec)
        images = colourise(digits.images[:n], seed)
        for i, (image, label) in enumerate(zip(images, digits.labels[:n])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(image).save(folder / f"{i:05d}.png")
    return f"folder:{root}"


SMALL = dict(epochs=1, batch_size=64, eval_batch_size=64, checkpoint_every=1000)
FAMILIES = {
    "conv_vae_64": VAEConfig(model="conv", latent_dim=8, image_size=64),
    "mlp_vae_32": VAEConfig(
        model="mlp", latent_dim=8, image_size=32, hidden_dim=64, dtype="bfloat16"
    ),
    "cvae_32": CVAEConfig(image_size=32, hidden_dim=64, samples_per_class=2),
    # the WGAN-GP game, in colour
    "dcgan_32": GANConfig(image_size=32, width=8, eval_samples=0, loss="wgan-gp", n_critic=2),
    "ddpm_32": DDPMConfig(
        image_size=32,
        channels=8,
        multipliers=(1,),
        timesteps=4,
        sampling_steps=2,
        eval_samples=0,
        final_samples=4,
        warmup_steps=0,
    ),
}


def _is_colour_png(path: Path) -> bool:
    picture = np.asarray(PIL.Image.open(path))
    return picture.ndim == 3 and picture.shape[2] == 3 and np.ptp(picture.astype(int), -1).max() > 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """One data directory for the module: the folder is prepared once per size."""
    return str(tmp_path_factory.mktemp("colour_tfds"))


# the 64x64 conv VAE (50 s of compilation on 2 cores) is in the slow tier
# minutes of compilation on 2 cores; their default-tier cover: the conv VAE at 32x32 in
# vae_fashion_mnist's test, the DDPM and WGAN-GP trained on MNIST by the reproduce smoke suite,
# the colour DCGAN's shapes and ranges in test_gan.py
SLOW = ("conv_vae_64", "ddpm_32", "dcgan_32")


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=pytest.mark.slow) if f in SLOW else f for f in sorted(FAMILIES)],
)
def test_every_family_trains_on_colour_images(family, colour_folder, data_dir, tmp_path):
    config = dataclasses.replace(
        FAMILIES[family], dataset=colour_folder, data_dir=data_dir, **SMALL
    )
    train_and_evaluate(config, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(lines) == 2  # epoch 0 and epoch 1
    numbers = [v for v in lines[-1].values() if isinstance(v, float)]
    assert numbers and np.all(np.isfinite(numbers))
    pictures = sorted((tmp_path / "run").glob("*.png"))
    assert pictures, "no pictures written"
    assert all(_is_colour_png(p) for p in pictures), [p.name for p in pictures]
    size = config.image_size
    sample = next(p for p in pictures if p.name.startswith(("sample", "class_samples")))
    assert PIL.Image.open(sample).size[0] > 2 * size  # a grid of size-pixel images, enlarged


def test_an_image_size_a_model_cannot_take_is_one_line(colour_folder, tmp_path):
    from vaejax.errors import ConfigError

    config = dataclasses.replace(
        FAMILIES["conv_vae_64"], dataset=colour_folder, data_dir=str(tmp_path / "t"), image_size=36
    )
    with pytest.raises(ConfigError, match="does not take 36x36 images"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
