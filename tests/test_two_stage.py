"""A two-stage model defined outside vaejax (tests/two_stage_run.py: a codebook, then a prior over
its codes that reads the codebook run through load_run) gets everything a built-in kind has:
the command line, bit-for-bit resume after a kill, load_run and its sampler, sample quality and
experiments.evaluate_likelihood."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.helpers import killed_and_rerun, run_python
from tests.two_stage_run import patches
from vaejax import load_run

# the module's fixtures train models: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("two_stage")


def _data(tfds_dir, raw_dir):
    return ["--data_dir", str(tfds_dir), "--raw_data_dir", str(raw_dir)]


def _prior_argv(workdir, codebook, tfds_dir, raw_dir):
    return [
        "-m",
        "tests.two_stage_run",
        "prior",
        *_data(tfds_dir, raw_dir),
        "--codebook_workdir",
        str(codebook),
        "--train_examples",
        "3000",
        "--test_examples",
        "500",
        "--batch_size",
        "50",
        "--epochs",
        "2",
        "--checkpoint_every",
        "20",
        "--workdir",
        str(workdir),
    ]


@pytest.fixture(scope="module")
def codebook_run(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    workdir = tmp_path_factory.mktemp("codebook") / "run"
    done = run_python(
        [
            "-m",
            "tests.two_stage_run",
            "codebook",
            *_data(mnist_tfds_dir, mnist_raw_dir),
            "--train_examples",
            "3000",
            "--test_examples",
            "500",
            "--batch_size",
            "100",
            "--epochs",
            "2",
            "--workdir",
            str(workdir),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vaejax: tiny_codebook: 4x4 codebook (256 parameters)" in done.stdout
    return workdir


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, codebook_run, mnist_tfds_dir, mnist_raw_dir) -> Path:
    workdir = tmp_path_factory.mktemp("prior") / "run"
    done = run_python(_prior_argv(workdir, codebook_run, mnist_tfds_dir, mnist_raw_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vaejax: tiny_code_prior: code prior (784 parameters)" in done.stdout
    assert "done: test NLL of the codes" in done.stdout
    return workdir


def test_the_codebook_learned_to_code_patches(codebook_run, mnist_tfds_dir, mnist_raw_dir):
    metrics = [json.loads(line) for line in (codebook_run / "metrics.jsonl").open()]
    assert metrics[-1]["test_loss"] < 0.5 * metrics[0]["test_loss"]
    codebook = load_run(codebook_run)
    assert codebook.operations == ("encode", "decode", "reconstruct")
    from vaejax import data

    images = data.load_split(
        "mnist", "test", data_dir=mnist_tfds_dir, raw_data_dir=mnist_raw_dir
    ).images[:50]
    codes = codebook.encode(images)
    assert codes.shape == (50, 7, 7) and codes.max() < 16
    # each patch's code is its nearest vector, by brute force
    x = patches(images.astype(np.float32) / 255.0)
    vectors = np.asarray(codebook.params["vectors"])
    distances = ((x[..., None, :] - vectors) ** 2).sum(-1)
    np.testing.assert_array_equal(codes, distances.argmin(-1))


def test_the_prior_killed_and_resumed_matches_the_uninterrupted_run(
    prior_run, codebook_run, tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    workdir = tmp_path / "run"
    argv = _prior_argv(workdir, codebook_run, mnist_tfds_dir, mnist_raw_dir)
    done = killed_and_rerun(argv)  # at the end of the first epoch, before its checkpoint
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from step" in done.stdout  # 20 or 40: the last save may not have landed
    for name in ("metrics.jsonl", "params.msgpack"):
        assert (workdir / name).read_bytes() == (prior_run / name).read_bytes(), name
    record = json.loads((workdir / "config.json").read_text())
    assert record["run"] == "tests.two_stage_run:PriorRun"


def test_the_loaded_prior_samples_through_the_codebook(prior_run, codebook_run):
    prior = load_run(prior_run)
    assert prior.kind == "tiny_code_prior" and prior.operations == ("sample", "likelihood_bounds")
    images = prior.sample(jax.random.key(0), 16)
    assert images.shape == (16, 28, 28, 1)
    codes = load_run(codebook_run).encode(images)  # decoded codes are codes of the codebook
    np.testing.assert_array_equal(load_run(codebook_run).decode(codes), images)
    with pytest.raises(AttributeError, match="offers sample, likelihood_bounds"):
        prior.encode(images)


def test_sample_quality_and_likelihood_evaluation_take_the_prior(
    prior_run, tmp_path, mnist_classifier_dir, mnist_tfds_dir, mnist_raw_dir
):
    out = tmp_path / "quality"
    done = run_python(
        [
            "-m",
            "experiments.sample_quality",
            "--runs",
            str(prior_run),
            "--classifier_workdir",
            str(mnist_classifier_dir),
            "--num_samples",
            "200",
            "--train_examples",
            "2000",
            *_data(mnist_tfds_dir, mnist_raw_dir),
            "--workdir",
            str(out),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    real, prior = json.loads((out / "sample_quality.json").read_text())["rows"]
    assert prior["kind"] == "tiny_code_prior" and prior["fid"] > real["fid"]

    done = run_python(
        ["-m", "experiments.evaluate_likelihood", "--workdir", str(prior_run), "--samples", "1"]
        + ["--test_examples", "200"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((prior_run / "likelihood_1.json").read_text())
    assert result["test_examples"] == 200 and result["objective"] == "loss"
    # below the untrained stages' -log p: a uniform prior (49 log 16), a decoder of 0.5s (784 log 2)
    untrained = 784 * np.log(2) + 49 * np.log(16)
    assert 0 < result["test_nll"] == result["test_negative_elbo"] < untrained
    assert "tiny_code_prior run from" in done.stdout


def test_a_run_without_the_operation_a_tool_needs_is_one_line(
    codebook_run, tmp_path, capsys, mnist_classifier_dir, mnist_tfds_dir, mnist_raw_dir
):
    from vaejax import cli
    from vaejax.runs.likelihood import EvaluateConfig
    from vaejax.runs.sample_quality import QualityConfig

    assert cli.main(EvaluateConfig(), argv=["--workdir", str(codebook_run)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {codebook_run} holds a tiny_codebook run, which has no likelihood (it offers "
        "encode, decode, reconstruct): pass the workdir of a VAE run (vae_mnist, "
        "vae_fashion_mnist or burda_mnist)"
    )
    argv = ["--runs", str(codebook_run), "--classifier_workdir", str(mnist_classifier_dir)]
    argv += [*_data(mnist_tfds_dir, mnist_raw_dir), "--workdir", str(tmp_path / "q")]
    assert cli.main(QualityConfig(), argv=argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {codebook_run} holds a tiny_codebook run, which does not generate images (it "
        "offers encode, decode, reconstruct): pass runs that sample"
    )
    with pytest.raises(AttributeError, match="a tiny_codebook run has no 'sample_grid'"):
        load_run(codebook_run).sample_grid()
