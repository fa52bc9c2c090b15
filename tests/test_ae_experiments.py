"""The autoencoder-family experiments end to end on real MNIST / Fashion-MNIST (small subsets),
and their handling of bad flags."""

from __future__ import annotations

import dataclasses
import json

import PIL.Image
import pytest

from tests.helpers import grid_size, read_events, run_python
from vaejax import cli, io
from vaejax.runs import anomaly as anomaly_run
from vaejax.runs import conditional as conditional_run
from vaejax.runs import denoising as denoising_run
from vaejax.runs import latent_study as latent_study_run


def _size(path):
    with PIL.Image.open(path) as picture:
        return picture.size


def test_cvae_mnist_with_a_relative_workdir_and_resume(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    args = [
        "-m",
        "experiments.cvae_mnist",
        "--raw_data_dir",
        str(mnist_raw_dir),
        "--data_dir",
        str(mnist_tfds_dir),
        "--workdir",
        "runs/cvae",
        "--epochs",
        "1",
        "--train_examples",
        "2560",
        "--test_examples",
        "2000",
    ]
    proc = run_python(args, cwd=tmp_path)  # orbax needs absolute paths: the default is relative
    assert proc.returncode == 0, proc.stderr[-3000:]
    workdir = tmp_path / "runs" / "cvae"
    lines = io.read_jsonl(workdir / "metrics.jsonl")
    assert [line["epoch"] for line in lines] == [0, 1]
    assert lines[1]["test_negative_elbo"] < lines[0]["test_negative_elbo"] - 100
    assert _size(workdir / "class_samples.png") == grid_size(10, 10)
    assert _size(workdir / "class_samples_1.png") == grid_size(10, 10)
    assert _size(workdir / "restyle.png") == grid_size(10, 11)
    again = run_python(args, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to train" in again.stdout
    assert io.read_jsonl(workdir / "metrics.jsonl") == lines


def test_denoising_ae_reports_psnr(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    workdir = tmp_path / "dn"
    proc = run_python(
        [
            "-m",
            "experiments.denoising_ae",
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--data_dir",
            str(mnist_tfds_dir),
            "--workdir",
            str(workdir),
            "--epochs",
            "2",
            "--train_examples",
            "6400",
            "--test_examples",
            "2000",
            "--eval_levels",
            "0,0.2,0.6",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((workdir / "psnr.json").read_text())
    assert [r["level"] for r in rows] == [0, 0.2, 0.6]
    # level 0: the clean images themselves, an infinite PSNR (null in JSON, inf in the table)
    assert rows[0]["psnr_corrupted"] is None and 10 < rows[0]["psnr_denoised"] < 40
    assert "| 0 | inf |" in (workdir / "psnr.md").read_text()
    # more noise, lower PSNR; at 0.6 (trained at 0.5) 100 steps already denoise
    assert rows[1]["psnr_corrupted"] > rows[2]["psnr_corrupted"]
    assert rows[2]["psnr_denoised"] > rows[2]["psnr_corrupted"] + 2
    assert _size(workdir / "denoising.png") == grid_size(7, 10)
    assert (workdir / "ae" / "params.msgpack").exists()


def test_anomaly_detection_table_is_reproduced_on_rerun(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    workdir = tmp_path / "an"
    args = [
        "-m",
        "experiments.anomaly_detection",
        "--raw_data_dir",
        str(mnist_raw_dir),
        "--data_dir",
        str(mnist_tfds_dir),
        "--workdir",
        str(workdir),
        "--classes",
        "1",
        "--epochs",
        "1",
        "--train_examples",
        "1000",
        "--test_examples",
        "1000",
        "--batch_size",
        "100",
    ]
    proc = run_python(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((workdir / "anomaly.json").read_text())
    assert [r["class"] for r in rows] == [1]
    for row in rows:
        for model in ("ae", "vae"):
            assert 0 <= row[model]["roc_auc"] <= 1 and 0 < row[model]["average_precision"] <= 1
    for c in (1,):
        for kind in ("ae", "vae"):
            trained = io.read_jsonl(workdir / f"class_{c}" / kind / "metrics.jsonl")
            assert [line["epoch"] for line in trained] == [0, 1]
    table = (workdir / "anomaly.md").read_text()
    assert table.count("\n") == 2 + 1 + 1 and table in proc.stdout
    # a rerun trains nothing and scores the same models the same way
    again = run_python(args)
    assert again.returncode == 0 and again.stdout.count("nothing to train") == 2
    assert json.loads((workdir / "anomaly.json").read_text()) == rows


@pytest.mark.slow  # 40-70 s on 2 cores; the latent study runs in CI in test_sources (CelebA)
def test_ae_fashion_mnist_writes_every_figure_and_the_table(
    tmp_path, fashion_raw_dir, fashion_tfds_dir
):
    workdir = tmp_path / "ls"
    proc = run_python(
        [
            "-m",
            "experiments.ae_fashion_mnist",
            "--raw_data_dir",
            str(fashion_raw_dir),
            "--data_dir",
            str(fashion_tfds_dir),
            "--workdir",
            str(workdir),
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--vae_epochs",
            "1",
            "--train_examples",
            "2000",
            "--test_examples",
            "2000",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((workdir / "dimensionality_reduction.json").read_text())
    assert [r["dimensions"] for r in table] == [2, 2, 2, 784]
    assert table[2]["codes"].startswith("PCA (2 components")
    assert all(0.3 < r["knn_accuracy"] <= 1 for r in table)
    assert table[3]["knn_accuracy"] > 0.7  # raw pixels, 2,000 neighbours to choose from
    assert _size(workdir / "reconstructions.png") == grid_size(3, 10)
    assert _size(workdir / "interpolation.png") == grid_size(3 * 4, 10)
    for kind in ("ae", "vae"):
        assert _size(workdir / f"attributes_{kind}.png") == grid_size(2 * 5, 5)
    for name in ("latent_space", "latent_p_values", "decoded_grid", "samples"):
        assert _size(workdir / f"{name}.png")[0] > 400
    assert _size(workdir / "decoded_grid.png") == (
        2 * grid_size(15, 15)[0] + 2 * 12,
        grid_size(15, 15)[1],
    )
    for kind in ("ae", "vae"):
        assert (workdir / kind / "params.msgpack").exists()
        assert _size(workdir / kind / "reconstruction_1.png") == grid_size(2, 8, image=28)
        tags = {(step, tag) for step, tag, _ in read_events(workdir / kind)}
        steps = io.read_jsonl(workdir / kind / "metrics.jsonl")[-1]["step"]
        assert {(steps, "reconstruction"), (steps, "test/loss"), (0, "test/loss")} <= tags


def test_a_plain_autoencoder_trains_from_its_config_alone(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    """``train_and_evaluate(AEConfig(...))``: the family's autoencoder on its own, from the
    config's dataset and seed, then loaded back."""
    import numpy as np

    import vaejax
    from vaejax.runs.autoencoders import AEConfig

    config = AEConfig(
        data_dir=str(mnist_tfds_dir),
        raw_data_dir=str(mnist_raw_dir),
        train_examples=1000,
        test_examples=200,
        batch_size=100,
        epochs=1,
    )
    record = vaejax.train_and_evaluate(config, tmp_path / "ae")
    assert record["step"] == 10 and record["test_loss"] < 400  # 543 nats untrained
    run = vaejax.load_run(tmp_path / "ae")
    assert run.kind == "autoencoder" and run.encode(np.zeros((3, 28, 28, 1))).shape == (3, 2)
    assert _size(tmp_path / "ae" / "reconstruction_1.png") == grid_size(2, 8, image=28)
    with pytest.raises(vaejax.ConfigError, match="--latent_dim must be"):
        vaejax.train_and_evaluate(dataclasses.replace(config, latent_dim=0), tmp_path / "bad")


@pytest.mark.parametrize(
    "defaults,argv,message",
    [
        (
            anomaly_run.AnomalyConfig(),
            ["--classes", "12"],
            "error: --classes must be distinct labels in 0..9 such as 0,7 "
            "(or auto for all), got 12",
        ),
        (
            anomaly_run.AnomalyConfig(),
            ["--percentile", "101"],
            "error: --percentile must be between 0 and 100, got 101.0",
        ),
        (
            anomaly_run.AnomalyConfig(),
            ["--latent_dim", "0"],
            "error: --latent_dim must be positive, got 0",
        ),
        (
            denoising_run.DenoisingConfig(),
            ["--noise", "salt_pepper", "--noise_level", "2"],
            "error: --noise_level must lie in [0, 1] for salt_pepper noise, got 2.0",
        ),
        (
            denoising_run.DenoisingConfig(),
            ["--eval_levels", "0.1;0.2"],
            "error: argument --eval_levels: invalid value: '0.1;0.2'; expected comma-separated "
            "numbers, e.g. --eval_levels 0.0,0.1,0.3,0.5,0.7",
        ),
        (
            latent_study_run.LatentStudyConfig(),
            ["--attribute_classes", "3,3"],
            "error: --attribute_classes must be two different labels A,B in 0..9, "
            "e.g. 9,7, got 3,3",
        ),
        (
            latent_study_run.LatentStudyConfig(),
            ["--attribute", "Smiling"],
            "error: --attribute Smiling is not an attribute of fashion_mnist (its attributes: "
            "none: use --attribute_classes)",
        ),
        (
            latent_study_run.LatentStudyConfig(),
            ["--vae_learning_rate", "0"],
            "error: --vae_learning_rate must be a positive number, got 0.0",
        ),
        (
            conditional_run.CVAEConfig(),
            ["--hidden_dim", "0"],
            "error: --hidden_dim must be positive, got 0",
        ),
    ],
)
def test_bad_flags_get_one_line(tmp_path, capsys, defaults, argv, message):
    try:
        code = cli.main(defaults, argv=argv + ["--workdir", str(tmp_path / "w")])
    except SystemExit as e:  # the parser's own errors (a list it cannot read)
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "w").exists()
