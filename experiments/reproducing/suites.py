"""The suites of ``experiments.reproduce``: which commands run, in which order, at which size.

A suite is a list of :class:`Part` s, each one command of the project (a training run, a
likelihood evaluation, a sample-quality scoring, the benchmark), written as data from one
:class:`Sizes`. ``{name}`` in a part's flags is the workdir of the part called ``name``; each
part that trains or scores writes into ``<suite workdir>/<part name>``.
"""

from __future__ import annotations

import dataclasses

SUITES = ("smoke", "cpu", "gpu")
DATASETS = ("mnist", "fashion_mnist")
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


@dataclasses.dataclass(frozen=True)
class Part:
    """One command of a suite.

    ``flags`` exclude ``--workdir`` (the runner adds ``<root>/<name>`` unless ``evaluates``
    names the part whose workdir the command reads and writes into) and the data flags.
    ``table`` is where its numbers go (see :mod:`experiments.reproducing.report`); ``target``
    the test NLL a likelihood part is meant to reach, in words (the sample-quality targets,
    one per scored source, are :func:`experiments.reproducing.report.quality_target`'s). Two
    parts run alone even with ``--jobs``: the judge, which comes first and prepares the data
    every other part reads (several processes preparing the same tfds folder at once would
    collide), and the benchmark (its timings).
    """

    name: str
    module: str
    flags: tuple[str, ...]
    table: str
    label: str
    target: str = ""
    evaluates: str = ""  # the part whose workdir this one reads (and writes its result into)
    takes_workdir: bool = True  # False: the command has no --workdir (the benchmark)
    alone: bool = False  # runs with no other part beside it (see runner.startable)

    def uses(self) -> tuple[str, ...]:
        """The parts this one needs finished first: those its flags name, and ``evaluates``."""
        named = {f[1:-1] for flag in self.flags for f in _braced(flag)}
        named |= {self.evaluates} if self.evaluates else set()
        return tuple(sorted(named - {self.name}))


def _braced(flag: str) -> list[str]:
    out, start = [], flag.find("{")
    while start >= 0:
        end = flag.index("}", start)
        out.append(flag[start : end + 1])
        start = flag.find("{", end)
    return out


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How long each training runs and how much each evaluation draws, per suite."""

    train_examples: int  # 0 = all 60,000
    test_examples: int  # of the trainings' per-epoch evaluations; 0 = all 10,000
    classifier_epochs: int
    vae_epochs: int  # one-layer VAE and IWAE k = 5, Burda's schedule
    two_layer_epochs: int  # two-layer IWAE k = 50
    likelihood_samples: int  # K of the test NLL
    likelihood_test_examples: int  # 0 = all 10,000
    gan_epochs: int
    wgan_epochs: int
    ddpm_epochs: int
    ddpm_channels: int
    quality_samples: int  # generated images scored, and real test images for the floor
    eval_samples: int  # per-epoch judge samples of the GANs and the DDPM
    best_sampler: tuple[str, str]  # (--sampler, --sampling_steps) of the DDPM's best row
    ddpm_extra: tuple[str, ...]  # more flags of the DDPM training
    quality_steps: int  # DDIM steps of the DDPM in the side-by-side scores
    gan_extra: tuple[str, ...]  # more flags of both GAN trainings
    benchmark: tuple[str, ...]  # flags of experiments.benchmark


SIZES = {
    "smoke": Sizes(
        train_examples=600,
        test_examples=500,
        classifier_epochs=1,
        vae_epochs=1,
        two_layer_epochs=1,
        likelihood_samples=20,
        likelihood_test_examples=100,
        gan_epochs=1,
        wgan_epochs=1,
        ddpm_epochs=1,
        ddpm_channels=8,
        quality_samples=100,
        eval_samples=50,
        best_sampler=("ddim", "10"),
        ddpm_extra=(
            "--multipliers=1,2",
            "--timesteps=50",
            "--warmup_steps=0",
            "--final_samples=8",
            "--sampling_steps=5",
        ),
        quality_steps=10,
        gan_extra=("--width=8",),
        benchmark=(
            "--models=mlp",
            "--variants=torch_tuned,jax_epoch",
            "--epochs=2",
            "--train_examples=2048",
            "--batch_sizes=none",
            "--devices=none",
        ),
    ),
    "cpu": Sizes(
        train_examples=0,
        test_examples=0,
        classifier_epochs=5,
        vae_epochs=100,
        two_layer_epochs=12,
        likelihood_samples=5000,
        likelihood_test_examples=1000,
        gan_epochs=5,
        wgan_epochs=5,
        ddpm_epochs=4,
        ddpm_channels=32,
        quality_samples=2000,
        eval_samples=500,
        best_sampler=("ddim", "100"),
        ddpm_extra=(),
        quality_steps=50,
        gan_extra=(),
        benchmark=("--models=mlp,conv",),
    ),
    "gpu": Sizes(
        train_examples=0,
        test_examples=0,
        classifier_epochs=10,
        vae_epochs=364,  # Burda's passes 0..5 (the paper: passes 0..7, 3,280 epochs)
        two_layer_epochs=121,  # passes 0..4
        likelihood_samples=5000,
        likelihood_test_examples=0,
        gan_epochs=60,  # the games were still improving at 25 (docs/results.md)
        wgan_epochs=60,
        ddpm_epochs=30,
        ddpm_channels=64,
        quality_samples=2000,
        eval_samples=2000,
        best_sampler=("ddpm", "1000"),
        ddpm_extra=(),
        quality_steps=50,
        gan_extra=(),
        benchmark=(
            "--models=mlp,conv,dcgan,unet",
            "--variants=torch_example,torch_tuned,jax_step,jax_epoch",
            "--devices=none",
            "--batch_sizes=1024",
            "--epochs=3",
        ),
    ),
}


def _likelihood_parts(
    s: Sizes, trainings: tuple[str, ...], data: tuple[str, ...], dataset: str
) -> list[Part]:
    """Burda et al.'s three models on MNIST (their Table 1); on another dataset, which has no
    published number, the one-layer VAE alone."""
    burda = ("--lr_schedule", "burda", *trainings)
    trainings = [
        ("vae1", ("--epochs", str(s.vae_epochs)), "one-layer VAE", "<= 86.76"),
        (
            "iwae1_k5",
            ("--epochs", str(s.vae_epochs), "--objective", "iwae", "--iwae_samples", "5"),
            "one-layer IWAE, k = 5",
            "<= 85.54",
        ),
        (
            "iwae2_k50",
            ("--epochs", str(s.two_layer_epochs), "--model", "burda2", "--objective", "iwae"),
            "two-layer IWAE, k = 50",
            "<= 82.90",
        ),
    ]
    if dataset != "mnist":
        trainings = [(name, flags, label, "") for name, flags, label, _ in trainings[:1]]
    parts = []
    for name, flags, label, target in trainings:
        parts.append(Part(name, "experiments.burda_mnist", (*flags, *burda), "training", label))
        parts.append(
            Part(
                f"nll_{name}",
                "experiments.evaluate_likelihood",
                (
                    "--samples",
                    str(s.likelihood_samples),
                    "--test_examples",
                    str(s.likelihood_test_examples),
                    *data,
                ),
                "likelihood",
                label,
                target,
                evaluates=name,
            )
        )
    return parts


def _generative_parts(s: Sizes, data: tuple[str, ...]) -> list[Part]:
    judged = ("--classifier_workdir", "{classifier}", "--eval_samples", str(s.eval_samples))
    gan = ("experiments.gan_mnist", "training")
    return [
        Part(
            "dcgan",
            gan[0],
            ("--epochs", str(s.gan_epochs), *s.gan_extra, *judged, *data),
            gan[1],
            "DCGAN (BCE, non-saturating)",
        ),
        Part(
            "wgan_gp",
            gan[0],
            ("--loss", "wgan-gp", "--epochs", str(s.wgan_epochs), *s.gan_extra, *judged, *data),
            gan[1],
            "WGAN-GP",
        ),
        Part(
            "ddpm",
            "experiments.ddpm_mnist",
            ("--epochs", str(s.ddpm_epochs), "--channels", str(s.ddpm_channels), *s.ddpm_extra)
            + (*judged, *data),
            "training",
            "DDPM (U-Net, linear schedule)",
        ),
    ]


def _quality_parts(s: Sizes, data: tuple[str, ...]) -> list[Part]:
    common = ("--classifier_workdir", "{classifier}", "--num_samples", str(s.quality_samples))
    common += ("--test_examples", str(s.quality_samples), *data)
    sampler, steps = s.best_sampler
    return [
        Part(
            "quality",
            "experiments.sample_quality",
            ("--runs", "{vae1},{dcgan},{wgan_gp},{ddpm}", "--sampling_steps", str(s.quality_steps))
            + common,
            "quality",
            f"VAE, DCGAN, WGAN-GP, DDPM (DDIM {s.quality_steps} steps)",
        ),
        Part(
            "quality_ddpm_best",
            "experiments.sample_quality",
            ("--runs", "{ddpm}", "--sampler", sampler, "--sampling_steps", steps, *common),
            "quality",
            f"DDPM, {sampler} {steps} steps",
        ),
    ]


def label(suite: str, dataset: str = "mnist") -> str:
    """The suite's name in its state file and on its page: 'cpu', or 'cpu, Fashion-MNIST'."""
    return suite if dataset == "mnist" else f"{suite}, {DATASET_NAMES[dataset]}"


def parts(suite: str, data: tuple[str, ...] = (), dataset: str = "mnist") -> list[Part]:
    """The parts of ``suite`` on ``dataset`` in the order they run; ``data`` are the data flags
    every part takes (``--data_dir``, ``--raw_data_dir``). On Fashion-MNIST: the judge, the
    one-layer VAE with its test NLL, the GANs, the DDPM and their sample quality (the
    benchmark's speed does not depend on the data, and Burda et al.'s IWAE numbers are
    MNIST's)."""
    if suite not in SIZES:
        raise ValueError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    s = SIZES[suite]
    on = ("--dataset", dataset) if dataset != "mnist" else ()  # the runs' flag (MNIST: default)
    subset = ("--train_examples", str(s.train_examples)) if s.train_examples else ()
    subset += ("--test_examples", str(s.test_examples)) if s.test_examples else ()
    trainings = (*subset, *on, *data)
    classifier = Part(
        "classifier",
        "experiments.classifier",
        ("--epochs", str(s.classifier_epochs), *trainings),
        "training",
        "the judge (LeNet classifier)",
        alone=True,
    )
    benchmark = Part(
        "benchmark",
        "experiments.benchmark",
        (*s.benchmark, "--out", "{benchmark}/benchmark.json", *data),
        "benchmark",
        "vaejax against PyTorch",
        takes_workdir=False,
        alone=True,
    )
    return [
        classifier,
        *_likelihood_parts(s, trainings, data, dataset),
        *_generative_parts(s, trainings),
        *_quality_parts(s, (*on, *data)),
        *([benchmark] if dataset == "mnist" else []),
    ]
