"""Train the LeNet-style classifier whose features and softmax define the project's FID and
Inception-score analogues (and the VAEs' perceptual loss) for one dataset.

Writes into --workdir (default workdirs/classifier_<dataset>): params.msgpack, classifier.json
(test accuracy), metrics.jsonl (cross-entropy and error per epoch) and checkpoints. Targets:
at least 99% test accuracy on MNIST, 90% on Fashion-MNIST.
"""

from vaejax.cli import main
from vaejax.runs.classifier import ClassifierConfig

CONFIG = ClassifierConfig()

if __name__ == "__main__":
    raise SystemExit(main(CONFIG, __doc__, prog="python -m experiments.classifier"))
