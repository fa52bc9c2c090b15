"""Foster's convolutional autoencoder and VAE on Fashion-MNIST, and their latent spaces compared.

The autoencoder (2-D latent, 32x32 images, Adam 1e-3, batch 100, 3 epochs, binary cross-entropy)
and then the VAE on the same images (Adam 5e-4, 5 epochs, Foster's loss), as in Generative Deep
Learning 2nd ed., ch. 3. Writes reconstructions.png, latent_space.png, latent_p_values.png,
decoded_grid.png, samples.png, interpolation.png, attributes_ae.png, attributes_vae.png and the
k-NN vs PCA table dimensionality_reduction.md; ae/ and vae/ hold each model's training run.
"""

from vaejax.cli import main
from vaejax.runs.latent_study import LatentStudyConfig

CONFIG = LatentStudyConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.ae_fashion_mnist"))
