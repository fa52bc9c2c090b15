"""An autoencoder and a VAE of one family on the same images, and their latent spaces compared.

The workflow of the lectures (after Foster, Generative Deep Learning 2nd ed., ch. 3): train
Foster's conv autoencoder on Fashion-MNIST with a 2-D latent space, then his conv VAE on the same
images, and look at what each latent space is good for:

- embeddings of the test set coloured by class (the AE's are lopsided and unbounded; the VAE's
  crowd around the origin), and their standard normal CDF, the "p-value" view: for a VAE whose
  posterior means follow N(0, I) the points fill the unit square evenly;
- decoded grids: over the bounding box of the AE's embeddings, and over N(0, I) quantiles for
  the VAE; random samples: uniform in the AE's box against the VAE's prior;
- interpolation between two images' codes (straight for both; spherical too for the VAE);
- attribute vectors: mean code of group A minus mean code of group B added at several strengths;
- dimensionality reduction as a number: k-NN test accuracy from the codes against PCA with as
  many components (and the raw pixels).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from vaejax import data, io
from vaejax.errors import ConfigError, MemoryFlags
from vaejax.evaluation import latent
from vaejax.runs import autoencoders as autoencoders_run
from vaejax.runs.autoencoders import AEConfig, TrainedModel
from vaejax.runs.base import Data, Study, register
from vaejax.runs.config import check_positive, config_field, data_spec, value_text
from vaejax.training.fit import TrainSettings


@dataclasses.dataclass(frozen=True)
class LatentStudyConfig(AEConfig):
    """Settings of ``experiments.ae_fashion_mnist``; defaults: Foster's notebooks."""

    dataset: str = config_field(
        "fashion_mnist", "dataset (any with class labels; see --help of experiments.vae_mnist)"
    )
    model: str = config_field(
        "conv",
        "conv: Foster's convolutional AE and VAE (32x32); mlp: the dense "
        "784-256-128-latent AE and VAE (28x28)",
        autoencoders_run.MODELS,
    )
    batch_size: int = config_field(100, "training batch size (a multiple of the device count)")
    epochs: int = config_field(3, "training epochs of the autoencoder", resume=True)
    learning_rate: float = config_field(1e-3, "Adam learning rate of the autoencoder")
    adam_eps: float = config_field(1e-7, "Adam epsilon (Keras' default)")
    vae_epochs: int = config_field(5, "training epochs of the VAE", resume=True)
    vae_learning_rate: float = config_field(5e-4, "Adam learning rate of the VAE")
    attribute_classes: tuple[int, ...] = config_field(
        (9, 7),
        "the class-pair attribute vector A,B: mean code of class A minus that of class "
        "B, added to class B images (fashion_mnist 9,7: ankle boot minus sneaker)",
        resume=True,
    )
    attribute: str = config_field(
        "",
        "a binary attribute of the dataset (celeb_a: any of its 40, e.g. Smiling) in place of "
        "--attribute_classes: mean code of the images with it minus that of those without, "
        "added to test images without it",
        resume=True,
    )
    strengths: tuple[float, ...] = config_field(
        (-2.0, -1.0, 0.0, 1.0, 2.0), "strengths at which attribute vectors are added", resume=True
    )
    knn_k: int = config_field(
        5, "neighbours of the k-NN classifier in the dimensionality-reduction table", resume=True
    )
    workdir: str = config_field(
        "workdirs/ae_fashion_mnist",
        "where models, pictures and tables go; rerunning with the same workdir resumes",
        resume=True,
    )


def attribute_pair(config: LatentStudyConfig) -> tuple[int, int]:
    """(A, B) of ``--attribute_classes``; raises ConfigError unless they are two different
    labels of the dataset."""
    n = data_spec(config).num_classes
    pair = config.attribute_classes
    if not (len(pair) == 2 and all(0 <= c < n for c in pair) and pair[0] != pair[1]):
        raise ConfigError(
            f"--attribute_classes must be two different labels A,B in 0..{n - 1}, "
            f"e.g. 9,7, got {value_text(pair) or 'none'}"
        )
    return pair[0], pair[1]


def check_attribute(config: LatentStudyConfig) -> None:
    """Raises ConfigError unless ``--attribute`` names one of the dataset's attributes."""
    names = data_spec(config).attribute_names
    if config.attribute not in names:
        known = f"one of {', '.join(names)}" if names else "none: use --attribute_classes"
        raise ConfigError(
            f"--attribute {config.attribute} is not an attribute of {config.dataset} "
            f"(its attributes: {known})"
        )


def second_attribute(config: LatentStudyConfig, train, test, spec):
    """(training rows with it, training rows without it, test images it is added to) of the
    second attribute vector: ``--attribute`` (added to test images without the attribute),
    else the class pair A, B of ``--attribute_classes`` (added to class-B test images)."""
    if config.attribute:
        has = data.attribute_mask(train, spec, config.attribute)
        lacks = ~data.attribute_mask(test, spec, config.attribute)
        return has, ~has, test.images[lacks]
    a, b = attribute_pair(config)
    return train.labels == a, train.labels == b, test.images[test.labels == b]


def validate(config: LatentStudyConfig, num_devices: int) -> None:
    autoencoders_run.validate_ae(config, num_devices)
    check_positive(config, "vae_epochs", "vae_learning_rate", "knn_k")
    if config.attribute:
        check_attribute(config)
    else:
        attribute_pair(config)
    if not config.strengths:
        raise ConfigError("--strengths needs at least one strength, e.g. -2,-1,0,1,2")
    if not all(-100 <= v <= 100 for v in config.strengths):
        raise ConfigError(
            f"--strengths must lie in [-100, 100], got {value_text(config.strengths)}"
        )


def dimensionality_reduction(
    codes: dict[str, tuple[np.ndarray, np.ndarray]],
    train: data.ImageSplit,
    test: data.ImageSplit,
    components: int,
    k: int,
) -> list[dict]:
    """k-NN test accuracy of each ``name -> (train codes, test codes)``, of PCA with
    ``components`` components fitted on the training pixels, and of the raw pixels."""
    pixels = [
        split.images.reshape(len(split.images), -1).astype(np.float64) / 255.0
        for split in (train, test)
    ]
    mean, basis, explained = latent.pca_fit(pixels[0], components)
    share = float(explained.sum() / pixels[0].var(axis=0, ddof=1).sum())
    codes = {
        **codes,
        f"PCA ({components} components, {share:.0%} of the variance)": tuple(
            latent.pca_transform(p, mean, basis) for p in pixels
        ),
        f"raw pixels ({pixels[0].shape[1]}-D)": tuple(pixels),
    }
    return [
        {
            "codes": name,
            "dimensions": int(tr.shape[1]),
            "knn_accuracy": latent.knn_accuracy(tr, train.labels, te, test.labels, k),
        }
        for name, (tr, te) in codes.items()
    ]


def interpolation_strips(
    ae: TrainedModel, vae: TrainedModel, starts: np.ndarray, ends: np.ndarray, steps: int
) -> np.ndarray:
    """For each pair of uint8 images (starts[i], ends[i]) three strips of ``steps`` decodes
    from one code to the other: AE straight line, VAE straight line, VAE spherical (slerp);
    [3 * pairs * steps, S, S, 1]."""
    ae_z = [autoencoders_run.encode_images(ae, x) for x in (starts, ends)]
    vae_z = [autoencoders_run.encode_images(vae, x) for x in (starts, ends)]
    strips = []
    for i in range(len(starts)):
        strips += [
            autoencoders_run.decode_codes(ae, latent.lerp(ae_z[0][i], ae_z[1][i], steps)),
            autoencoders_run.decode_codes(vae, latent.lerp(vae_z[0][i], vae_z[1][i], steps)),
            autoencoders_run.decode_codes(vae, latent.slerp(vae_z[0][i], vae_z[1][i], steps)),
        ]
    return np.concatenate(strips)


def attribute_grid(
    model: TrainedModel,
    train_codes: np.ndarray,
    train: data.ImageSplit,
    test: data.ImageSplit,
    second,
    strengths,
    rows: int = 5,
) -> np.ndarray:
    """Two attribute vectors added to test images at ``strengths`` (one column each):

    - ink: mean code of the thickest quarter of training images minus the thinnest quarter
      (thickness = pixels above 1/2), on the first ``rows`` test images;
    - ``second`` = (training rows with, training rows without, test images) of
      :func:`second_attribute`: its vector on the first ``rows`` of those test images.
    Returns [2 * rows * len(strengths), S, S, C].
    """
    thickness = latent.ink(train.images / 255.0)
    low, high = np.percentile(thickness, [25, 75])
    ink_vector = latent.attribute_vector(train_codes, thickness >= high, thickness <= low)
    with_it, without_it, shifted_images = second
    second_vector = latent.attribute_vector(train_codes, with_it, without_it)
    blocks = []
    for vector, images in (
        (ink_vector, test.images[:rows]),
        (second_vector, shifted_images[:rows]),
    ):
        z = autoencoders_run.encode_images(model, images)
        shifted = latent.add_attribute(z, vector, strengths)  # [S, rows, D]
        decoded = autoencoders_run.decode_codes(
            model, shifted.swapaxes(0, 1).reshape(-1, z.shape[1])
        )
        blocks.append(decoded)
    return np.concatenate(blocks)


def train_pair(config: LatentStudyConfig, workdir: Path, train, test, key: jax.Array):
    """The autoencoder (``workdir/ae``) and the VAE (``workdir/vae``, its own epochs and rate)."""
    ae = autoencoders_run.train_family_member(
        "ae", config, workdir / "ae", train.images, test.images, jax.random.fold_in(key, 0)
    )
    settings = TrainSettings.of(
        config, epochs=config.vae_epochs, learning_rate=config.vae_learning_rate
    )
    vae = autoencoders_run.train_family_member(
        "vae",
        config,
        workdir / "vae",
        train.images,
        test.images,
        jax.random.fold_in(key, 1),
        settings=settings,
    )
    return ae, vae


def knn_table(config: LatentStudyConfig, codes: dict, train, test) -> tuple[list[dict], str]:
    """The dimensionality-reduction rows and their markdown table."""
    table = dimensionality_reduction(
        {"autoencoder codes": codes["ae"], "VAE posterior means": codes["vae"]},
        train,
        test,
        config.latent_dim,
        config.knn_k,
    )
    rows = "".join(
        f"| {r['codes']} | {r['dimensions']} | {r['knn_accuracy']:.4f} |\n" for r in table
    )
    header = f"| codes | dimensions | {config.knn_k}-NN test accuracy |\n| --- | --- | --- |\n"
    return table, header + rows


def save_reconstructions_and_samples(workdir: Path, ae, vae, codes: dict, test, key, latent_dim):
    """reconstructions.png (10 test images, then both models' reconstructions) and samples.png
    (the autoencoder from its codes' bounding box, the VAE from its prior)."""
    decode, encode = autoencoders_run.decode_codes, autoencoders_run.encode_images
    preview = test.images[:10]
    rows = [np.asarray(ae.prepare(preview))]
    rows += [decode(model, encode(model, preview)) for model in (ae, vae)]
    io.save_image_grid(workdir / "reconstructions.png", np.concatenate(rows), columns=10)
    sample_key = jax.random.fold_in(key, 2)
    box = latent.bounding_box(codes["ae"][1])
    ae_samples = decode(ae, latent.sample_box(sample_key, *box, 64))
    vae_samples = decode(vae, jax.random.normal(sample_key, (64, latent_dim)))
    io.save_image_grids(workdir / "samples.png", [(ae_samples, 8), (vae_samples, 8)])


def save_interpolations_and_attributes(
    workdir: Path, config: LatentStudyConfig, ae, vae, codes: dict, train, test, spec
) -> None:
    """interpolation.png (4 pairs of test images of other classes) and attributes_<model>.png."""
    starts, ends = interpolation_ends(test, spec.num_classes)
    strips = interpolation_strips(ae, vae, starts, ends, 10)
    io.save_image_grid(workdir / "interpolation.png", strips, columns=10)
    second, strengths = second_attribute(config, train, test, spec), config.strengths
    for name, model in (("ae", ae), ("vae", vae)):
        grid = attribute_grid(model, codes[name][0], train, test, second, strengths)
        io.save_image_grid(workdir / f"attributes_{name}.png", grid, columns=len(strengths))


def interpolation_ends(test: data.ImageSplit, num_classes: int):
    """Four pairs of test images to interpolate between: the first of classes 0, 2, 4, 6 and of
    3, 5, 7, 9 (mod the classes) where the data have 8 classes or more, else test images 0, 2,
    4, 6 and 1, 3, 5, 7."""
    if num_classes < 8:
        return test.images[0:8:2], test.images[1:8:2]
    firsts = [int(np.flatnonzero(test.labels == c)[0]) for c in range(num_classes)]
    starts = test.images[[firsts[c] for c in range(0, 8, 2)]]
    return starts, test.images[[firsts[(c + 3) % num_classes] for c in range(0, 8, 2)]]


def save_latent_plots(workdir: Path, ae, vae, codes: dict, test, spec) -> None:
    """latent_space.png, latent_p_values.png and decoded_grid.png of 2-D codes."""
    ae_test, vae_test = codes["ae"][1], codes["vae"][1]
    io.save_latent_scatters(
        workdir / "latent_space.png",
        [
            (ae_test, "autoencoder: codes of the test set"),
            (vae_test, "VAE: posterior means of the test set"),
        ],
        test.labels,
        spec.class_names,
    )
    io.save_latent_scatters(
        workdir / "latent_p_values.png",
        [
            (np.asarray(latent.p_values(ae_test)), "autoencoder: Phi(code)"),
            (np.asarray(latent.p_values(vae_test)), "VAE: Phi(posterior mean)"),
        ],
        test.labels,
        spec.class_names,
        axis_labels=("Phi(z[0])", "Phi(z[1])"),
        limits=(-0.02, 1.02),
    )
    box = latent.bounding_box(ae_test)
    io.save_image_grids(
        workdir / "decoded_grid.png",
        [
            (autoencoders_run.decode_codes(ae, latent.box_grid(*box, 15)), 15),
            (autoencoders_run.decode_codes(vae, latent.normal_quantile_grid(15)), 15),
        ],
    )


@register
class LatentStudyRun(Study):
    """The autoencoder and the VAE of a family side by side: latent spaces, samples, interpolation,
    attribute vectors, dimensionality reduction (each member in its own sub-workdir)."""

    kind = "latent_study"
    Config = LatentStudyConfig
    memory_flags = MemoryFlags(("batch_size", "eval_batch_size"), ("latent_dim",))

    def validate(self, num_devices: int) -> None:
        validate(self.config, num_devices)

    def study(self, data_: Data) -> list[dict]:
        """Trains the autoencoder (``workdir/ae``) and the VAE (``workdir/vae``), then writes the
        pictures and tables of docs/autoencoders.md; returns the dimensionality-reduction table."""
        config, workdir, writer, log = self.config, self.workdir, self.writer, self.log
        train, test, spec = data_
        key = jax.random.key(config.seed)
        ae, vae = train_pair(config, workdir, train, test, key)
        codes = {
            name: tuple(
                autoencoders_run.encode_images(model, split.images) for split in (train, test)
            )
            for name, model in (("ae", ae), ("vae", vae))
        }
        table, markdown = knn_table(config, codes, train, test)
        if not writer:
            return table
        io.atomic_write_bytes(
            workdir / "dimensionality_reduction.json", json.dumps(table, indent=2).encode()
        )
        io.atomic_write_bytes(workdir / "dimensionality_reduction.md", markdown.encode())
        save_reconstructions_and_samples(workdir, ae, vae, codes, test, key, config.latent_dim)
        save_interpolations_and_attributes(workdir, config, ae, vae, codes, train, test, spec)
        if config.latent_dim == 2:
            save_latent_plots(workdir, ae, vae, codes, test, spec)
        else:
            log(
                f"latent_space.png, latent_p_values.png and decoded_grid.png draw 2-D codes: "
                f"skipped for --latent_dim {config.latent_dim}"
            )
        seconds = time.perf_counter() - self.started
        log(
            f"\n{config.dataset} test set, {config.model} models, latent {config.latent_dim}\n"
            f"{markdown}\nwhole run {seconds:.1f} s; outputs in {workdir}"
        )
        return table
