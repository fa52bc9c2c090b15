"""Anomaly detection with an autoencoder and a VAE, one held-out class at a time.

For each class c of MNIST (or --dataset fashion_mnist): train both models on the other classes,
score the test set (autoencoder: reconstruction error; VAE: -ELBO in nats), and report ROC-AUC,
average precision, and precision/recall at a threshold set from a percentile of the training
scores, with class c as the anomaly. Prints the table and writes anomaly.md and anomaly.json.
"""

from vaejax.cli import main
from vaejax.runs.anomaly import AnomalyConfig

CONFIG = AnomalyConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.anomaly_detection"))
