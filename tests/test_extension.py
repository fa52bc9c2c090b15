"""A model defined outside vaejax (tests/tiny_run.py) gets everything a built-in one has: the
command line, checkpoints and bit-for-bit resume, load_run, and sample quality."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import killed_and_rerun, run_python
from vaejax import load_run

# the module's fixtures train models: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("extension")


def _argv(workdir, tfds_dir, raw_dir):
    return [
        "-m",
        "tests.tiny_run",
        "--data_dir",
        str(tfds_dir),
        "--raw_data_dir",
        str(raw_dir),
        "--train_examples",
        "6000",
        "--batch_size",
        "50",
        "--epochs",
        "3",
        "--checkpoint_every",
        "25",
        "--workdir",
        str(workdir),
    ]


@pytest.fixture(scope="module")
def pixels_run(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    workdir = tmp_path_factory.mktemp("pixels") / "run"
    done = run_python(_argv(workdir, mnist_tfds_dir, mnist_raw_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vaejax: tiny_pixels: independent Bernoulli pixels (784 parameters)" in done.stdout
    assert "starting" in done.stdout and "done: test NLL" in done.stdout
    return workdir


def test_killed_and_resumed_new_model_matches_the_uninterrupted_run(
    pixels_run, tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    workdir = tmp_path / "run"
    done = killed_and_rerun(_argv(workdir, mnist_tfds_dir, mnist_raw_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from step" in done.stdout  # killed at the end of the first epoch
    for name in ("metrics.jsonl", "params.msgpack"):
        assert (workdir / name).read_bytes() == (pixels_run / name).read_bytes(), name
    record = json.loads((workdir / "config.json").read_text())
    assert record["kind"] == "tiny_pixels" and record["run"] == "tests.tiny_run:PixelRun"


def test_load_run_rebuilds_the_new_model_and_it_learned_the_pixel_means(
    pixels_run, mnist_tfds_dir, mnist_raw_dir
):
    trained = load_run(str(pixels_run))  # a str, and the defining module imported by name
    assert trained.kind == "tiny_pixels" and trained.config.epochs == 3
    from vaejax import data

    train = data.load_split(
        "mnist", "train", data_dir=mnist_tfds_dir, raw_data_dir=mnist_raw_dir
    ).images[:6000]
    learned = np.asarray(jax.nn.sigmoid(trained.params["logits"]))
    assert abs(learned.mean() - train.mean() / 255) < 0.02
    images = trained.sample(jax.random.key(0), 500)
    assert images.shape == (500, 28, 28, 1) and set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_allclose(images.mean(0), learned, atol=0.15)  # 500 Bernoulli draws


def test_sample_quality_scores_the_new_model(
    pixels_run, tmp_path, mnist_classifier_dir, mnist_tfds_dir, mnist_raw_dir
):
    out = tmp_path / "quality"
    done = run_python(
        [
            "-m",
            "experiments.sample_quality",
            "--runs",
            str(pixels_run),
            "--classifier_workdir",
            str(mnist_classifier_dir),
            "--num_samples",
            "200",
            "--train_examples",
            "2000",
            "--data_dir",
            str(mnist_tfds_dir),
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--workdir",
            str(out),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((out / "sample_quality.json").read_text())["rows"]
    real, pixels = rows
    assert pixels["kind"] == "tiny_pixels" and pixels["images"] == 200
    assert pixels["fid"] > real["fid"]  # noise-like pixels are far from real digits


def test_load_run_refuses_a_workdir_without_a_finished_run(tmp_path):
    from vaejax.training.loop import WorkdirError

    with pytest.raises(WorkdirError, match="holds no finished run"):
        load_run(tmp_path)
