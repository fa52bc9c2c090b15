"""The experiments end to end on real data, and their handling of bad input."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from tests.helpers import grid_size, run_python
from vaejax import cli, data, errors, io, objectives, training
from vaejax.runs import vae as vae_run
from vaejax.runs.load import load_run


def test_vae_mnist_end_to_end(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    workdir = tmp_path / "run"
    # 300 steps of batch 128 on the real MNIST, with the command's own compilation cache: no
    # JAX_COMPILATION_CACHE_DIR, so ~/.cache/vaejax/xla (in a new home). Every program is kept
    # (threshold 0 s): at the default 0.1 s a program near it is kept by one run and not by
    # the other, as the machine's load goes
    argv = ["-m", "experiments.vae_mnist", "--raw_data_dir", str(mnist_raw_dir)]
    argv += ["--data_dir", str(mnist_tfds_dir), "--epochs", "1", "--train_examples", "38400"]
    env = {k: v for k, v in os.environ.items() if k != cli.COMPILATION_CACHE_ENV}
    env.update(HOME=str(tmp_path / "home"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    proc = run_python([*argv, "--workdir", str(workdir)], env=env, replace_env=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "img/s" in proc.stdout + proc.stderr
    lines = io.read_jsonl(workdir / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [0, 1]
    assert lines[1]["step"] == 300
    before, after = lines[0]["test_loss"], lines[1]["test_loss"]
    assert before > 500  # an untrained decoder: about 784 * log(2) nats
    assert after < 150 and after < before / 3
    assert lines[1]["test_loss"] == pytest.approx(
        lines[1]["test_reconstruction"] + lines[1]["test_kl"], rel=1e-5
    )
    assert lines[1]["test_negative_elbo"] == pytest.approx(lines[1]["test_loss"], rel=1e-6)
    assert set(lines[1]) >= {"train_loss", "train_grad_norm", "train_skipped_steps"}
    assert lines[1]["train_skipped_steps"] == 0
    assert not any("second" in key for line in lines for key in line)  # timings: timing.jsonl
    timing = io.read_jsonl(workdir / "timing.jsonl")
    assert [t["epoch"] for t in timing] == [0, 1] and timing[1]["images_per_second"] > 0
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["0", "300"]

    with PIL.Image.open(workdir / "reconstruction_1.png") as picture:
        assert picture.size == grid_size(2, 8)
    with PIL.Image.open(workdir / "sample_1.png") as picture:
        assert picture.size == grid_size(8, 8)
    record = json.loads((workdir / "config.json").read_text())
    assert record["kind"] == "vae" and record["run"] == "vaejax.runs.vae:VAERun"
    trained = load_run(str(workdir))
    config = trained.config
    assert isinstance(config, vae_run.VAEConfig)
    assert config.train_examples == 300 * 128 and config.epochs == 1

    # the saved parameters are the trained ones: they reproduce the logged test loss
    evaluate = training.make_evaluator(
        objectives.vae_per_example(trained.model), data.make_batch_preprocessor(28), batch_size=1000
    )
    test = data.load_split("mnist", "test", data_dir=mnist_tfds_dir)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 3)
    result = evaluate(trained.params, jnp.asarray(test.images), eval_key)
    assert float(result["loss"]) == pytest.approx(after, rel=1e-4)

    # what load_run offers a VAE: samples, codes, reconstructions, a likelihood bound
    samples = trained.sample(jax.random.key(0), 8)
    assert samples.shape == (8, 28, 28, 1) and 0 <= samples.min() and samples.max() <= 1
    assert trained.encode(test.images[:8]).shape == (8, 20)
    reconstructions = trained.reconstruct(test.images[:8])
    assert reconstructions.shape == (8, 28, 28, 1)
    assert np.abs(reconstructions - test.images[:8] / 255).mean() < 0.2
    bound = trained.log_likelihood(test.images[:20], jax.random.key(1), k=20)
    assert bound.shape == (20,) and np.all(np.isfinite(bound))
    assert -bound.mean() < after + 20  # L_20 is no worse than the ELBO, up to noise

    # running into the same workdir with other settings refuses, and keeps what is there
    before_bytes = (workdir / "metrics.jsonl").read_bytes()
    again = run_python(
        [
            "-m",
            "experiments.vae_mnist",
            "--data_dir",
            str(mnist_tfds_dir),
            "--workdir",
            str(workdir),
            "--epochs",
            "1",
        ]
    )
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: workdir {workdir} holds a run with other settings (--train_examples 38400 "
        f"there, 0 here): rerun with the same flags to resume it, or pass a new --workdir"
    ]
    assert (workdir / "metrics.jsonl").read_bytes() == before_bytes

    # the same command into a new workdir loads every compiled program it needs from the cache
    # (it adds no entry) and writes the same metrics, bit for bit
    cache = tmp_path / "home" / ".cache" / "vaejax" / "xla"
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) >= 2  # the training step and the evaluation at least
    second = run_python([*argv, "--workdir", str(tmp_path / "second")], env=env, replace_env=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (tmp_path / "second" / "metrics.jsonl").read_bytes() == before_bytes
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_vae_fashion_mnist_end_to_end(tmp_path, fashion_raw_dir, fashion_tfds_dir):
    from experiments import vae_fashion_mnist

    assert vae_fashion_mnist.CONFIG.beta == pytest.approx(2.048)
    workdir = tmp_path / "fashion"
    proc = run_python(
        [
            "-m",
            "experiments.vae_fashion_mnist",
            "--raw_data_dir",
            str(fashion_raw_dir.parent),
            "--data_dir",
            str(fashion_tfds_dir),
            "--workdir",
            str(workdir),
            "--train_examples",
            "1200",
            "--test_examples",
            "1000",
            "--epochs",
            "1",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1,200 train / 1,000 test images)" in proc.stdout
    lines = io.read_jsonl(workdir / "metrics.jsonl")
    assert lines[1]["test_loss"] < lines[0]["test_loss"]
    assert lines[1]["test_loss"] == pytest.approx(  # Foster's weighting: beta = 2.048
        lines[1]["test_reconstruction"] + 2.048 * lines[1]["test_kl"], rel=1e-5
    )
    assert "x kl" in proc.stdout + proc.stderr
    assert lines[1]["step"] == 12  # 1200 / batch 100
    with PIL.Image.open(workdir / "sample_1.png") as picture:
        assert picture.size == grid_size(8, 8, image=32)
    with PIL.Image.open(workdir / "latent_space.png") as picture:
        assert picture.size[0] > 300
    with PIL.Image.open(workdir / "latent_manifold.png") as picture:
        assert picture.size == grid_size(20, 20, image=32)


def _main(argv, defaults=None):
    return cli.main(defaults or dataclasses.replace(vae_run.VAEConfig()), argv=argv)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--batch_size", "0"], "error: --batch_size must be positive, got 0"),
        (["--learning_rate", "-1"], "error: --learning_rate must be a positive number, got -1.0"),
        (["--beta", "nan"], "error: --beta must be >= 0, got nan"),
        (["--model", "conv", "--image_size", "28"], "error: the conv model does not take 28x28"),
        (["--image_size", "4"], "error: --image_size must be between 8 and 1024, got 4"),
        (["--dataset", "cifar1O"], "error: unknown dataset 'cifar1O' (did you mean cifar10"),
        (["--dataset", "folder:"], "error: 'folder:' names no folder: pass --dataset folder:PATH"),
        (["--train_examples", "100"], "error: --batch_size 128 exceeds the 100 training images"),
        (
            ["--train_examples", "99999"],
            "error: --train_examples must be between 0 (all) and 60000",
        ),
        (["--seed", "-1"], "error: --seed must be between 0 and 2147483647, got -1"),
        (["--checkpoint_every", "0"], "error: --checkpoint_every must be positive, got 0"),
        (["--keep_checkpoints", "-2"], "error: --keep_checkpoints must be positive, got -2"),
        (
            ["--latent_plots", "on"],
            "error: --latent_plots on draws 2-D latent codes, but "
            "--latent_dim is 20: pass --latent_dim 2, or --latent_plots off",
        ),
        (
            ["--coordinator_address", "localhost:1234"],
            "error: --coordinator_address needs --num_processes N",
        ),
    ],
)
def test_bad_flags_get_one_line(tmp_path, capsys, argv, message):
    code = _main(argv + ["--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err
    assert not (tmp_path / "w").exists()


def test_batch_size_must_split_over_the_devices():
    config = vae_run.VAEConfig(batch_size=100)
    vae_run.validate(config, num_devices=4)
    with pytest.raises(
        errors.ConfigError,
        match="--batch_size 100 does not split over 8 devices: use a multiple of 8, e.g. 96 or 104",
    ):
        vae_run.validate(config, num_devices=8)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--learning_rate", "abc"], "error: argument --learning_rate: invalid float value: 'abc'"),
        (["--epoch", "3", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["--nonfinite", "ignore"], "error: argument --nonfinite: invalid choice: 'ignore'"),
        (
            ["--model", "conv", "--hidden_dim", "64"],
            "error: --hidden_dim applies only to --model mlp, not conv: drop it",
        ),
        (
            ["--iwae_samples", "5"],
            "error: --iwae_samples applies only to --objective iwae, not elbo: drop it",
        ),
        (
            ["--gaussian_variance", "0.5"],
            "error: --gaussian_variance applies only to --likelihood "
            "gaussian, not bernoulli: drop it",
        ),
        (
            ["--classifier_workdir", "elsewhere"],
            "error: --classifier_workdir applies only with a "
            "--perceptual_weight above 0, not 0.0: drop it",
        ),
    ],
)
def test_the_parser_rejects_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        _main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith(message) and "\n" not in err


def test_missing_raw_data_is_one_line(tmp_path, capsys, no_raw_data_env):
    code = _main(
        [
            "--data_dir",
            str(tmp_path / "tfds"),
            "--raw_data_dir",
            str(tmp_path),
            "--workdir",
            str(tmp_path / "w"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: --raw_data_dir={tmp_path} holds neither the mnist raw files")
    assert not (tmp_path / "w").exists()  # nothing is written before the data are there


def test_unwritable_workdir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = _main(["--workdir", str(blocker / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: workdir {blocker / 'run'} is not writable")


def test_help_lists_every_flag_with_its_default():
    proc = run_python(["-m", "experiments.vae_mnist", "--help"])
    assert proc.returncode == 0
    for field in dataclasses.fields(vae_run.VAEConfig):
        assert f"--{field.name}" in proc.stdout
    assert "(default: 128)" in proc.stdout and "(default: 0.001)" in proc.stdout
