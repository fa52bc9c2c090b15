"""Train Foster's convolutional VAE (Generative Deep Learning, 2nd ed., ch. 3) on Fashion-MNIST.

32x32 images (28x28 zero-padded), 2-D latent space, Adam 5e-4 (Keras epsilon 1e-7), batch 100,
5 epochs. Foster's loss, 500 x per-pixel-mean BCE + summed KL, is the negative ELBO with
beta = 1024 / 500 = 2.048 scaled by 500 / 1024 (a constant Adam ignores). Writes the files of
vae_mnist plus latent_space.png, the test set's posterior means coloured by class.
"""

from vaejax.cli import main
from vaejax.objectives.vae import foster_beta
from vaejax.runs.vae import VAEConfig

CONFIG = VAEConfig(
    dataset="fashion_mnist",
    model="conv",
    latent_dim=2,
    batch_size=100,
    epochs=5,
    learning_rate=5e-4,
    adam_eps=1e-7,
    beta=foster_beta(32 * 32),
    workdir="workdirs/vae_fashion_mnist",
)

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.vae_fashion_mnist"))
