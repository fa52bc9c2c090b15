"""Train a denoising diffusion model (DDPM, Ho et al. 2020) on MNIST, or on Fashion-MNIST with
--dataset fashion_mnist: a small U-Net predicting the noise, the linear (or --schedule cosine)
variance schedule over T = 1000 steps.

Prints the noise-prediction loss (train, and test under the EMA weights) every epoch and, with a
classifier from experiments.classifier, the FID / Inception-score analogues and classes covered
of --eval_samples samples. Writes samples_<epoch>.png (64 fixed x_T through --sampler: ddim with
--sampling_steps, default, or ddpm over all T), metrics.jsonl, timing.jsonl, checkpoints
(resumable), and at the end params.msgpack, samples_ddpm.png and samples_ddim.png with their
samples/second (sampling_speed.json), noising.png (one test image noised to x_T) and
denoising.png (one sample from x_T to x_0) into --workdir (default workdirs/ddpm_<dataset>).
"""

from vaejax.cli import main
from vaejax.runs.ddpm import DDPMConfig

CONFIG = DDPMConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.ddpm_mnist"))
