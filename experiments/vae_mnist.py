"""Train the VAE of pytorch/examples (vae/main.py) on MNIST with vaejax.

784-400-20 MLP encoder and 20-400-784 decoder, Bernoulli likelihood on grey pixels (summed
binary cross-entropy), Adam 1e-3, batch 128, 10 epochs. Prints train and test negative ELBO in
nats/image each epoch; writes config.json, metrics.jsonl, reconstruction_<epoch>.png,
sample_<epoch>.png, params.msgpack and (with --latent_dim 2) latent_space.png into --workdir.
"""

from vaejax.cli import main
from vaejax.runs.vae import VAEConfig

CONFIG = VAEConfig(
    dataset="mnist",
    model="mlp",
    latent_dim=20,
    hidden_dim=400,
    batch_size=128,
    epochs=10,
    learning_rate=1e-3,
    workdir="workdirs/vae_mnist",
)

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.vae_mnist"))
