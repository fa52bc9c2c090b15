"""Train a denoising autoencoder on MNIST and measure it in PSNR.

Inputs are corrupted afresh every step (--noise gaussian: std --noise_level; salt_pepper: rate
--noise_level); the target is the clean image. Reports the PSNR (dB) of corrupted and denoised
test images against the clean ones at each of --eval_levels, and writes psnr.md, psnr.json and
denoising.png (per level a corrupted row over a denoised row; the clean images last).
"""

from vaejax.cli import main
from vaejax.runs.denoising import DenoisingConfig

CONFIG = DenoisingConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.denoising_ae"))
