"""The classifier behind the sample-quality metrics, the metrics on real images under growing
damage, the perceptual loss, and the GAN / sample-quality experiments end to end on MNIST."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from tests.helpers import checkpoint_steps, grid_size, run_python
from vaejax import cli, data, io, models, objectives
from vaejax.errors import ConfigError
from vaejax.evaluation import judge
from vaejax.runs import gan as gan_run
from vaejax.runs import sample_quality as quality_run
from vaejax.runs import vae as vae_run
from vaejax.runs.load import load_run

# the module's fixtures train models: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("quality")


def _size(path):
    with PIL.Image.open(path) as picture:
        return picture.size


@pytest.fixture(scope="module")
def judge_and_test(mnist_classifier_dir, mnist_tfds_dir):
    trained = judge.load(mnist_classifier_dir, "mnist")
    train = data.load_split("mnist", "train", data_dir=mnist_tfds_dir)
    test = data.load_split("mnist", "test", data_dir=mnist_tfds_dir)
    return judge.Judge.of(trained, train.images[:20000]), test


def test_classifier_experiment_reaches_its_accuracy(mnist_classifier_dir):
    summary = json.loads((mnist_classifier_dir / "classifier.json").read_text())
    lines = io.read_jsonl(mnist_classifier_dir / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert summary["dataset"] == "mnist" and summary["test_accuracy"] == pytest.approx(
        1 - lines[-1]["test_error"]
    )
    assert summary["test_accuracy"] > 0.93  # 3,200 images, 2 epochs
    assert lines[0]["test_error"] > 0.5  # it learned that


def test_classifier_cross_entropy_is_the_closed_form():
    model = models.LeNet()
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    images = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
    labels = jnp.array([0, 3, 9, 3, 1])
    terms = objectives.classifier_per_example(model)(params, (images, labels), None)
    logits = np.asarray(model.apply({"params": params}, images).logits, np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(terms["loss"], -log_softmax[np.arange(5), labels], rtol=1e-5)
    np.testing.assert_array_equal(terms["error"], logits.argmax(1) != np.asarray(labels))
    acts = model.apply({"params": params}, images)
    assert acts.conv1.shape == (5, 14, 14, 16) and acts.conv2.shape == (5, 7, 7, 32)
    assert acts.features.shape == (5, 128) and float(acts.features.min()) >= 0  # ReLU


def _blur(images, times):
    x = images.astype(np.float64)
    for _ in range(times):  # 3x3 box filter, edges repeated
        p = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
        x = sum(p[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)) / 9
    return x


def test_fid_is_small_for_real_images_and_grows_with_noise_and_blur(judge_and_test):
    judge, test = judge_and_test
    clean = test.images[:2000].astype(np.float64) / 255
    rng = np.random.default_rng(0)
    noisy = [
        judge.score(np.clip(clean + rng.normal(0, s, clean.shape), 0, 1))["fid"]
        for s in (0.0, 0.1, 0.3, 0.6)
    ]
    blurred = [judge.score(_blur(clean, t))["fid"] for t in (0, 1, 3, 6)]
    assert noisy == sorted(noisy) and noisy[-1] > 20 * max(noisy[0], 1e-3), noisy
    assert blurred == sorted(blurred) and blurred[-1] > 5 * max(blurred[0], 1e-3), blurred
    real = judge.score(clean)
    assert (
        real["classes_covered"] == 10 and real["inception_score"] > 5
    )  # near 10 for a sharp judge
    ones = judge.score(clean[test.labels[:2000] == 1])
    assert ones["classes_covered"] == 1 and ones["inception_score"] < 1.5  # one mode


def test_load_fails_with_the_command_that_fixes_it(tmp_path, mnist_classifier_dir):
    with pytest.raises(
        ConfigError,
        match="no trained classifier in .*python -m experiments.classifier --dataset mnist",
    ):
        judge.load(tmp_path / "none", "mnist")
    with pytest.raises(ConfigError, match="trained on mnist, not fashion_mnist"):
        judge.load(mnist_classifier_dir, "fashion_mnist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classifier.json").write_text((mnist_classifier_dir / "classifier.json").read_text())
    (broken / "params.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        judge.load(broken, "mnist")


def test_perceptual_term_is_zero_for_a_perfect_reconstruction(mnist_classifier_dir):
    trained = judge.load(mnist_classifier_dir, "mnist")
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
    y = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    distance = jax.jit(judge.perceptual_loss(trained))
    assert np.all(np.asarray(distance(x, x)) == 0)
    assert np.all(np.asarray(distance(x, y)) > 0)
    padded = jnp.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)])  # a 32x32 model's images
    np.testing.assert_allclose(distance(padded, padded + 0.1), distance(x, x + 0.1), rtol=1e-5)
    model = models.mlp_vae(4, (32,))
    params = model.init(jax.random.key(2), x, jax.random.key(2))["params"]
    plain = jax.jit(objectives.vae_per_example(model))(params, x, jax.random.key(3))
    weighted = jax.jit(
        objectives.vae_per_example(
            model, perceptual=judge.perceptual_loss(trained), perceptual_weight=0.5
        )
    )(params, x, jax.random.key(3))
    np.testing.assert_allclose(
        weighted["loss"], plain["loss"] + 0.5 * weighted["perceptual"], rtol=1e-5
    )
    np.testing.assert_allclose(weighted["negative_elbo"], plain["negative_elbo"], rtol=1e-6)
    grads = jax.jit(
        jax.grad(
            lambda p: jnp.mean(
                objectives.vae_per_example(
                    model, perceptual=judge.perceptual_loss(trained), perceptual_weight=1.0
                )(p, x, jax.random.key(3))["perceptual"]
            )
        )
    )(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads["decoder"])) > 0


@pytest.mark.slow  # gan_mnist (both games) and sample_quality run in CI in the smoke suite
def test_gan_and_sample_quality_end_to_end(
    tmp_path, capsys, mnist_tfds_dir, mnist_raw_dir, mnist_classifier_dir
):
    """A DCGAN resumed from 1 to 2 epochs with per-epoch FID; a VAE with the perceptual term;
    then both scored side by side with real test images. (The WGAN-GP game through the same
    command: test_gan's update tests and its eight-device test.)"""
    common = [
        "--raw_data_dir",
        str(mnist_raw_dir),
        "--data_dir",
        str(mnist_tfds_dir),
        "--classifier_workdir",
        str(mnist_classifier_dir),
    ]
    bce = tmp_path / "bce"
    gan_args = [
        "-m",
        "experiments.gan_mnist",
        *common,
        "--width",
        "8",
        "--train_examples",
        "1280",
        "--eval_samples",
        "200",
        "--workdir",
        str(bce),
    ]
    first = run_python(gan_args + ["--epochs", "1"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_python(gan_args + ["--epochs", "2"])
    assert second.returncode == 0, second.stderr[-3000:]
    lines = io.read_jsonl(bce / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [0, 1, 2]
    assert [line["step"] for line in lines] == [0, 20, 40]  # 1,280 / 64 generator steps
    for key in (
        "train_d_loss",
        "train_g_loss",
        "train_d_real",
        "fid",
        "inception_score",
        "classes_covered",
    ):
        assert np.isfinite(lines[-1][key]), key
    assert sum(lines[-1]["class_histogram"]) == 200
    assert "epoch   2  D loss" in second.stdout and "FID" in second.stdout
    for name in ("samples_1.png", "samples_2.png", "samples.png"):
        assert _size(bce / name) == grid_size(8, 8)

    vae = tmp_path / "vae"  # in this process: the flags' parsing is the same
    assert (
        cli.main(
            vae_run.VAEConfig(),
            argv=[
                *common,
                "--train_examples",
                "1280",
                "--test_examples",
                "1000",
                "--epochs",
                "1",
                "--perceptual_weight",
                "0.01",
                "--workdir",
                str(vae),
            ],
        )
        == 0
    )
    last = io.read_jsonl(vae / "metrics.jsonl")[-1]
    assert last["train_loss"] == pytest.approx(
        last["train_negative_elbo"] + 0.01 * last["train_perceptual"], rel=1e-4
    )

    out = tmp_path / "quality"
    assert (
        cli.main(
            quality_run.QualityConfig(),
            argv=[
                *common,
                "--runs",
                f"{bce},{vae}",
                "--num_samples",
                "1000",  # two batches of 500: the second is timed
                "--train_examples",
                "2000",
                "--workdir",
                str(out),
            ],
        )
        == 0
    )
    printed = capsys.readouterr().out
    record = json.loads((out / "sample_quality.json").read_text())
    names = [row["name"] for row in record["rows"]]
    assert names == ["real test images", f"gan: {bce}", f"vae: {vae}"]
    real, *models_rows = record["rows"]
    assert all(real["fid"] < row["fid"] for row in models_rows)  # the floor
    assert record["rows"][1]["epochs"] == 2 and record["rows"][1]["train_seconds"] > 0
    assert all(row["samples_per_second"] > 0 for row in models_rows)  # the batch after the first
    assert "real test images" in printed and f"gan: {bce}" in printed
    assert _size(out / "samples.png") == grid_size(3, 16)  # a row per name
    assert _size(out / "mode_coverage.png")[1] > 300

    assert (
        cli.main(
            quality_run.QualityConfig(),
            argv=[*common, "--runs", str(out), "--workdir", str(tmp_path / "q2")],
        )
        == 2
    )
    assert capsys.readouterr().err.startswith(f"error: {out} holds no finished run")
    assert not (tmp_path / "q2").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--n_critic", "-1"], "error: --n_critic must be positive, got -1"),
        (
            ["--penalty_weight", "5"],
            "error: --penalty_weight applies only to --loss wgan-gp, not bce: drop it",
        ),
        (
            ["--loss", "wgan-gp", "--generator_loss", "minimax"],
            "error: --generator_loss applies only to --loss bce, not wgan-gp: drop it",
        ),
        (["--image_size", "30"], "error: DCGAN does not take 30x30 images"),
        (["--adam_beta1", "1"], "error: --adam_beta1 must lie in [0, 1), got 1.0"),
        (["--ema_decay", "1"], "error: --ema_decay must lie in [0, 1), got 1.0"),
        (
            ["--train_examples", "100", "--batch_size", "64", "--loss", "wgan-gp"],
            "error: one generator step takes n_critic x batch_size = 320 real images, "
            "more than the 100 training images",
        ),
        (["--learning_rate", "-1"], "error: --learning_rate must be a positive number, got -1.0"),
    ],
)
def test_gan_bad_flags_get_one_line(tmp_path, capsys, argv, message):
    try:
        code = cli.main(gan_run.GANConfig(), argv=argv + ["--workdir", str(tmp_path / "w")])
    except SystemExit as e:  # the parser's own errors (a flag that does not apply)
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "w").exists()


def test_a_gan_with_a_generator_average_resumes_it_exactly_and_samples_from_it(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    """--ema_decay: a run killed mid-epoch and resumed ends bit for bit as the uninterrupted
    one, average included; params.msgpack keeps the trained generator beside its average, and
    the loaded run draws from the average. Without it the same players train and the file holds
    them only."""

    def argv(workdir, decay):
        return [
            "-m",
            "experiments.gan_mnist",
            "--data_dir",
            str(mnist_tfds_dir),
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--width",
            "4",
            "--train_examples",
            "640",
            "--epochs",
            "2",
            "--eval_samples",
            "0",
            "--checkpoint_every",
            "3",
            "--ema_decay",
            str(decay),
            "--workdir",
            str(workdir),
        ]

    for name, decay in (("whole", 0.9), ("plain", 0)):
        proc = run_python(argv(tmp_path / name, decay))
        assert proc.returncode == 0, proc.stderr[-3000:]
    killed = run_python(argv(tmp_path / "killed", 0.9), env={"VAEJAX_FAULTS": "stretch@3:SIGKILL"})
    assert killed.returncode == -9 and checkpoint_steps(tmp_path / "killed")
    resumed = run_python(argv(tmp_path / "killed", 0.9))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    runs = {name: load_run(tmp_path / name) for name in ("whole", "killed", "plain")}
    params = runs["whole"].params
    assert set(params) == {"generator", "discriminator", "generator_ema"}
    assert set(runs["plain"].params) == {"generator", "discriminator"}
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(params), leaves(runs["killed"].params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(leaves(params["generator"]), leaves(runs["plain"].params["generator"])):
        np.testing.assert_array_equal(a, b)
    key, model = jax.random.key(3), runs["whole"].model
    for generator, run in (
        (params["generator_ema"], runs["whole"]),
        (params["generator"], runs["plain"]),
    ):
        np.testing.assert_allclose(run.sample(key, 8), model.sample(generator, key, 8), atol=1e-6)
    assert np.abs(runs["whole"].sample(key, 8) - runs["plain"].sample(key, 8)).max() > 1e-3


def test_vae_perceptual_flags_are_checked(tmp_path, capsys):
    for argv, message in (
        (["--perceptual_weight", "-1"], "error: --perceptual_weight must be >= 0"),
        (
            ["--perceptual_weight", "1", "--objective", "iwae"],
            "error: --perceptual_weight adds to the ELBO",
        ),
        (
            ["--perceptual_weight", "1", "--classifier_workdir", str(tmp_path / "none")],
            "error: no trained classifier in",
        ),
    ):
        code = cli.main(vae_run.VAEConfig(), argv=argv + ["--workdir", str(tmp_path / "w")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "w").exists()


def test_the_floor_is_a_seeded_random_draw_of_the_test_images_not_the_first():
    n = 10_000
    split = data.ImageSplit(np.zeros((n, 2, 2, 1), np.uint8), np.arange(n) % 10, np.arange(n))
    floor = data.draw(split, 2000, seed=0)
    index = floor.attributes  # the attributes carry each example's position in the file
    assert len(index) == len(set(index)) == 2000 and np.all(np.diff(index) > 0)
    assert 800 < np.sum(index < n // 2) < 1200  # both halves of the file (two NIST collections)
    np.testing.assert_array_equal(floor.labels, index % 10)  # labels stay with their images
    again = data.draw(split, 2000, seed=0).attributes
    np.testing.assert_array_equal(again, index)
    assert not np.array_equal(data.draw(split, 2000, seed=1).attributes, index)
    assert data.draw(split, 0, seed=0) is split
    assert data.draw(split, n, seed=0) is split
