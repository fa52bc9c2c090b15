"""Train Burda et al.'s one-stochastic-layer model on dynamically binarized MNIST.

784-200-200 (tanh)-50 encoder and a mirrored Bernoulli decoder, as in Burda, Grosse and
Salakhutdinov, Importance Weighted Autoencoders (ICLR 2016), section 5. --objective elbo (the
default) trains the VAE; --objective iwae --iwae_samples 50 the IWAE. Evaluate the result with
python -m experiments.evaluate_likelihood --workdir <the workdir>.
"""

from vaejax.cli import main
from vaejax.runs.vae import VAEConfig

CONFIG = VAEConfig(
    dataset="mnist",
    model="burda",
    latent_dim=50,
    binarization="dynamic",
    batch_size=100,
    epochs=100,
    learning_rate=1e-3,
    adam_eps=1e-4,
    workdir="workdirs/burda_mnist",
)

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.burda_mnist"))
