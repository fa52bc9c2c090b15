"""Evaluate a trained VAE as the papers do: the test ELBO and the importance-weighted estimate of
the test negative log-likelihood with K = 5000 draws per image (Burda et al. 2016), with its
standard error, under the run's binarization protocol.

    python -m experiments.evaluate_likelihood --workdir workdirs/burda_vae

Writes likelihood_<K>.json into the workdir.
"""

from vaejax.cli import main
from vaejax.runs.likelihood import EvaluateConfig

CONFIG = EvaluateConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.evaluate_likelihood"))
