"""Train a DCGAN on MNIST (or Fashion-MNIST with --dataset fashion_mnist): the BCE game of
Goodfellow et al. with the non-saturating (default) or the original minimax generator loss, or
WGAN-GP with --loss wgan-gp.

Prints both players' losses every epoch (and, with a classifier from experiments.classifier,
the FID / Inception-score analogues and the classes covered by 2,000 samples). Writes
samples_<epoch>.png (64 fixed z, the same every epoch), samples.png, metrics.jsonl,
timing.jsonl, checkpoints (resumable) and params.msgpack into --workdir
(default workdirs/gan_<dataset>_<loss>).
"""

from vaejax.cli import main
from vaejax.runs.gan import GANConfig

CONFIG = GANConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.gan_mnist"))
