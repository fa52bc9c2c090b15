"""Score generated images with the project's classifier: FID and Inception-score analogues and
mode coverage of real test images (the floor) and of trained VAE / GAN runs, side by side.

    python -m experiments.sample_quality --dataset mnist \
        --runs workdirs/vae_mnist,workdirs/gan_mnist_bce,workdirs/gan_mnist_wgan-gp

Needs a classifier from experiments.classifier (--classifier_workdir). The numbers are
comparable with each other, not with Inception-based FID / IS in papers. Writes
sample_quality.json, mode_coverage.png and samples.png into --workdir.
"""

from vaejax.cli import main
from vaejax.runs.sample_quality import QualityConfig

CONFIG = QualityConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.sample_quality"))
