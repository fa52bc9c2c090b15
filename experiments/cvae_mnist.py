"""Train a conditional VAE on MNIST and draw every digit on demand.

Encoder and decoder see the one-hot label; z (2-D by default) keeps the style. Writes
class_samples.png (rows = digits 0-9, columns = fixed z ~ N(0, I): a column shares its style),
restyle.png (a test image per class, then its code decoded as every digit), per-epoch
class_samples_<epoch>.png, metrics.jsonl (conditional -ELBO, nats per image) and checkpoints.
"""

from vaejax.cli import main
from vaejax.runs.conditional import CVAEConfig

CONFIG = CVAEConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.cvae_mnist"))
