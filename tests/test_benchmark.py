"""The benchmark's pieces: the FLOP count against XLA's own, every variant on a small subset,
and the command line's handling of bad flags. (Speeds are measured by the benchmark itself, not
asserted here.)"""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.benchmarking import flops
from experiments.benchmarking import journal as journal_module
from experiments.benchmarking.journal import Journal
from experiments.benchmarking.measure import run_variant
from tests.helpers import run_python
from vaejax import models, objectives
from vaejax.training import gan as gan_training

TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not TORCH and os.environ.get("CI") != "true",
    reason="torch is not installed (pip install -e '.[bench]')",
)


def _xla_train_flops_per_image(model, size: int, batch: int) -> float:
    """XLA's cost analysis of the loss gradient of ``model`` on a [batch, size, size, 1] batch."""
    key = jax.random.key(0)
    # shapes only, and the lowered program's count: nothing here needs compiling
    params = jax.eval_shape(model.init, key, jnp.zeros((1, size, size, 1)), key)["params"]
    loss_fn = objectives.batch_mean(objectives.vae_per_example(model))
    grad = jax.jit(jax.grad(lambda p, x, k: loss_fn(p, x, k)[0]))
    cost = grad.lower(params, jnp.zeros((batch, size, size, 1)), key).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch


def test_analytic_flops_match_xla_cost_analysis():
    xla_per_image = _xla_train_flops_per_image(models.mlp_vae(), 28, 128)
    # XLA also counts the elementwise work (activations, the loss), which the analytic count
    # leaves out: about 1% here
    assert flops.mlp_vae_train_flops() == 3_280_000
    assert xla_per_image == pytest.approx(flops.mlp_vae_train_flops(), rel=0.02)


def test_conv_flops_match_xla_cost_analysis():
    # XLA's own convolutions, counted by it
    xla_per_image = _xla_train_flops_per_image(models.conv_vae(conv_implementation="xla"), 32, 16)
    # 13,280,416 multiply-adds forward that touch data (the README's "13.3 M"); the first
    # conv's 47 x 47 taps x 32 channels need no input gradient
    assert flops.conv_vae_train_flops() == 2 * (3 * 13_280_416 - 47 * 47 * 32)
    assert xla_per_image == pytest.approx(flops.conv_vae_train_flops(), rel=0.02)


@pytest.mark.parametrize("image_size, width", [(28, 64), (32, 64), (28, 128)])
def test_dcgan_flops_match_xla_cost_analysis(image_size, width):
    """The analytic count against XLA's count of one whole update (make_gan_update: both players'
    steps, Adam) with XLA's own convolutions, per real image. XLA also counts the elementwise
    work, linear in the width while the convolutions are quadratic: 1.2% more at width 64, 0.64%
    at 128. (HLO before compilation: the same count to 0.5%, without seconds of compiling.)"""
    model = models.GAN(
        models.Generator(image_size, 1, width, conv_implementation="xla"),
        models.Discriminator(image_size, width, "batch", conv_implementation="xla"),
        100,
    )
    optimizer = optax.adam(2e-4, b1=0.5, b2=0.999)
    update = gan_training.make_gan_update(
        model, loss="bce", generator_optimizer=optimizer, discriminator_optimizer=optimizer
    )
    state = jax.eval_shape(
        lambda key: gan_training.create_gan_state(model.init(key), optimizer, optimizer),
        jax.random.key(0),
    )
    batch = 64
    images = jax.ShapeDtypeStruct((batch, image_size, image_size, 1), jnp.float32)
    cost = jax.jit(update).lower(state, images, jax.random.key(0)).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = flops.dcgan_train_flops(image_size, 1, width)
    assert 1.0 <= cost["flops"] / batch / analytic <= 1 + 1.0 / width


def test_unet_flops_match_xla_cost_analysis():
    """The analytic count against XLA's count of the DDPM loss gradient (HLO before compiling),
    per image; XLA also counts GroupNorm, swish and the loss, linear in the width."""
    from vaejax.models.unet import UNet
    from vaejax.objectives.diffusion import Diffusion, make_schedule, noise_prediction_loss

    width, batch = 16, 8
    model = Diffusion(UNet(width, (1, 2, 2)), make_schedule("linear", 1000))
    params = jax.eval_shape(lambda key: model.init(key, (28, 28, 1)), jax.random.key(0))
    loss_fn = objectives.batch_mean(noise_prediction_loss(model))
    grad = jax.jit(jax.grad(lambda p, x, k: loss_fn(p, x, k)[0]))
    images = jax.ShapeDtypeStruct((batch, 28, 28, 1), jnp.float32)
    cost = grad.lower(params, images, jax.random.key(0)).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    analytic = flops.unet_train_flops(28, width)
    assert 1.0 <= cost["flops"] / batch / analytic <= 1 + 3.0 / width
    assert flops.unet_train_flops() == 632_499_456  # width 32, the experiment's


def test_dcgan_flops_of_the_default_model():
    # 28 x 28, width 64: G forward 0.63 M (projection) + 26^2 x 128 x 64 + 54^2 x 64 multiply-adds,
    # D forward 54^2 x 64 + 26^2 x 64 x 128 + 7 x 7 x 128
    g = 100 * 49 * 128 + 26**2 * 128 * 64 + 54**2 * 64
    d = 54**2 * 64 + 26**2 * 64 * 128 + 49 * 128
    assert flops.dcgan_forward_macs() == {
        "generator": g,
        "discriminator": d,
        "projection": 100 * 49 * 128,
        "first_conv": 54**2 * 64,
    }
    assert flops.dcgan_train_flops() == 2 * (4 * g + 8 * d - 2 * 54**2 * 64 - 100 * 49 * 128)
    assert flops.train_flops("dcgan") == flops.dcgan_train_flops() == 140_503_040
    assert flops.train_flops("dcgan", image_size=32, width=8) == flops.dcgan_train_flops(32, 1, 8)


def _subset(n_train=1280):
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        rng.integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, variant",
    [
        ("mlp", "jax_epoch"),
        ("mlp", "jax_step"),
        ("conv", "jax_epoch"),
        pytest.param("mlp", "torch_example", marks=needs_torch),
        pytest.param("mlp", "torch_tuned", marks=needs_torch),
        pytest.param("conv", "torch_tuned", marks=needs_torch),
    ],
)
def test_each_variant_trains_and_reports(model, variant):
    train, test = _subset(1280 if model == "mlp" else 200)
    result = run_variant(
        variant, train, test, batch_size=128 if model == "mlp" else 100, epochs=2, model=model
    )
    assert result["variant"] == variant and result["model"] == model
    assert len(result["epoch_seconds"]) == 2
    assert result["images_per_second"] > 0 and result["peak_host_mib"] > 0
    # random pixels: about 0.69 nats of cross-entropy per pixel (784; conv: 1024 with padding
    # that is easy to learn), less after a few steps; the conv loss adds beta = 2.048 x KL
    assert 200 < result["test_negative_elbo"] < 1024 * np.log(2) + 100


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["jax_epoch", pytest.param("torch_tuned", marks=needs_torch)])
def test_the_unet_variants_train_and_report(variant):
    """The DDPM step of both frameworks through the benchmark's dispatch, at width 8."""
    train, _ = _subset(32)
    result = run_variant(variant, train, None, batch_size=16, epochs=2, model="unet", width=8)
    assert result["variant"] == variant and result["model"] == "unet"
    assert len(result["epoch_seconds"]) == 2 and result["images_per_second"] > 0
    # the noise-prediction MSE of a fresh network (zero output layer: exactly 1 in expectation)
    assert 0.5 < result["loss"] < 2.0


def test_matmul_peak_is_a_rate():
    rate = flops.matmul_peak_flops(n=256, repeats=3)
    assert 1e8 < rate < 1e16


def test_none_turns_a_sweep_off():
    from experiments.benchmarking.command_line import build_parser

    args = build_parser().parse_args(["--batch_sizes", "none", "--devices", "2,4"])
    assert args.batch_sizes == [] and args.devices == [2, 4]
    assert build_parser().parse_args([]).batch_sizes == [128, 256, 512, 1024, 2048, 4096]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--variants", "torch_example,bogus"], "unknown variant(s) ['bogus']"),
        (["--batch_sizes", "128,-1"], "expected positive integers"),
        (["--devices", "none,1"], "expected comma-separated integers, got 'none,1'"),
        (["--epochs", "1"], "--epochs must be at least 2 (one warm-up, one timed)"),
        (["--unet_epochs", "0"], "--unet_epochs must be at least 2"),
        (["--models", "mlp,gan"], "--models must name some of mlp, conv, dcgan, unet"),
        (["--conv_variants", "torch_example"], "the conv model's PyTorch baseline is torch_tuned"),
        (
            ["--dcgan_variants", "torch_example"],
            "the dcgan model's PyTorch baseline is torch_tuned",
        ),
        (["--dcgan_epochs", "1"], "--dcgan_epochs must be at least 2"),
        (
            ["--train_examples", "1000", "--batch_sizes", "128,2048"],
            "--train_examples must be between the largest batch size (2048) and 60000",
        ),
        (
            ["--dcgan_train_examples", "32", "--dcgan_batch_size", "64"],
            "--dcgan_train_examples must be between --dcgan_batch_size (64) and 60000",
        ),
        (["--dcgan_image_size", "64"], "invalid choice: 64"),
    ],
)
def test_bad_flags_are_one_line(argv, message):
    proc = run_python(["-m", "experiments.benchmark", *argv])
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_the_command_runs_end_to_end_on_real_data(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    out = tmp_path / "bench.json"
    proc = run_python(
        [
            "-m",
            "experiments.benchmark",
            "--data_dir",
            str(mnist_tfds_dir),
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--variants",
            "jax_epoch",
            "--epochs",
            "2",
            "--train_examples",
            "8192",
            "--batch_sizes",
            "4096",
            "--devices",
            "2",
            "--models",
            "mlp",  # the conv VAE's runner: test_each_variant_trains_and_reports
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["train_flops_per_image"]["mlp"] == 3_280_000 and results["matmul_flops"] > 0
    assert list(results["models"]) == ["mlp"]
    mlp = results["models"]["mlp"]
    assert [r["variant"] for r in mlp] == ["jax_epoch"]
    assert mlp[0]["test_negative_elbo"] < 200  # two epochs of 8,192 real MNIST images
    assert mlp[0]["train_examples"] == 8192
    assert results["batch_sweep"][0]["batch_size"] == 4096
    assert results["device_sweep"][0]["devices"] == 2
    assert "of peak" in proc.stdout and "vs first" in proc.stdout
    assert "mlp VAE, batch 128" in proc.stdout and "conv VAE" not in proc.stdout


@pytest.mark.slow
def test_the_dcgan_benchmark_runs_end_to_end(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    """Tuned PyTorch and the compiled epoch on 2 epochs of 4 batches of 16 real MNIST images at
    width 8: a table with ratios to tuned PyTorch, and the same rows in the JSON. (jax_step runs
    the same update through the loop the mlp's jax_step test covers; each JAX variant costs about
    30 s of XLA compilation on 2 cores, so it is left out here.)"""
    out = tmp_path / "bench.json"
    variants = ["torch_tuned", "jax_epoch"] if TORCH else ["jax_epoch"]
    proc = run_python(
        [
            "-m",
            "experiments.benchmark",
            "--data_dir",
            str(mnist_tfds_dir),
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--models",
            "dcgan",
            "--dcgan_variants",
            ",".join(variants),
            "--dcgan_train_examples",
            "72",
            "--dcgan_batch_size",
            "16",
            "--dcgan_width",
            "8",
            "--dcgan_epochs",
            "2",
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["train_flops_per_image"]["dcgan"] == flops.dcgan_train_flops(28, 1, 8)
    rows = results["models"]["dcgan"]
    assert [r["variant"] for r in rows] == variants and "mlp" not in results["models"]
    baseline = variants[0]
    assert results["ratio_baseline"] == {"dcgan": baseline}
    for r in rows:
        assert "error" not in r, r
        assert r["model"] == "dcgan" and r["train_examples"] == 72 and r["batch_size"] == 16
        assert len(r["epoch_seconds"]) == 2 and r["images_per_second"] > 0
        assert r["ratio"] == pytest.approx(r["images_per_second"] / rows[0]["images_per_second"])
        # four updates from the initialization: the discriminator has barely started winning
        assert 0.5 < r["d_loss"] < 2 * np.log(2) + 0.5 and 0.2 < r["g_loss"] < 2
        assert 0 < r["d_fake"] < r["d_real"] < 1
    assert rows[0]["ratio"] == 1.0
    table = proc.stdout[proc.stdout.index("dcgan, batch 16, width 8, 28x28, 72 images") :]
    assert f"vs {baseline}" in table and "D(x) / D(G(z))" in table and "of peak" in table
    for variant in variants:
        assert variant in table


@pytest.mark.parametrize("kernel_size, stride, size", [(3, 2, 4), (3, 2, 5), (4, 2, 7), (3, 1, 6)])
def test_the_subpixel_route_is_the_transposed_convolution(kernel_size, stride, size):
    from experiments.benchmarking import conv_routes
    from vaejax.models import layers

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 5)), jnp.float32)
    want = layers._xla_conv_transpose(x, kernel, stride)
    got = conv_routes.conv_transpose_subpixel(x, kernel, stride)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_stopped_benchmark_keeps_its_measurements_for_the_rerun(tmp_path, monkeypatch):
    measured = []

    def fake_measure(spec, devices=None):
        measured.append((spec["variant"], devices))
        if spec["variant"] == "broken":
            return {**spec, "error": "no output"}
        return {"images_per_second": 1000.0 + len(measured), "variant": spec["variant"]}

    out = tmp_path / "benchmark.json"
    first = Journal(out, fake_measure)
    a = first.measure({"variant": "jax_step"})
    first.measure({"variant": "jax_epoch"}, devices=8)
    first.measure({"variant": "broken"})
    with open(first.path, "a") as f:
        f.write('{"key": "cut by a ki')  # a kill while writing the next line
    measured.clear()

    again = Journal(out, fake_measure)  # the rerun: kept results, the rest measured
    assert again.measure({"variant": "jax_step"}) == a
    again.measure({"variant": "jax_epoch"}, devices=8)
    again.measure({"variant": "jax_epoch"})  # another device count: another measurement
    again.measure({"variant": "broken"})  # a failure is measured again
    assert measured == [("jax_epoch", None), ("broken", None)]
    assert len(Journal(out, fake_measure).kept) == 3  # written after the cut line, not into it

    monkeypatch.setattr(journal_module.socket, "gethostname", lambda: "another-machine")
    measured.clear()
    Journal(out, fake_measure).measure({"variant": "jax_step"})
    assert measured == [("jax_step", None)]  # another machine's timings are not reused
    again.close()
    assert not again.path.exists() and not Journal(out, fake_measure).kept
