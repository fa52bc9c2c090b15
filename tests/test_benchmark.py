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
import pytest

from tests.helpers import run_python
from vaejax import benchmark, models, objectives

TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not TORCH and os.environ.get("CI") != "true",
                                 reason="torch is not installed (pip install -e '.[bench]')")


def _xla_train_flops_per_image(model, size: int, batch: int) -> float:
    """XLA's cost analysis of the loss gradient of ``model`` on a [batch, size, size, 1] batch."""
    key = jax.random.key(0)
    params = model.init(key, jnp.zeros((1, size, size, 1)), key)["params"]
    loss_fn = objectives.batch_mean(objectives.vae_per_example(model))
    grad = jax.jit(jax.grad(lambda p, x, k: loss_fn(p, x, k)[0]))
    cost = grad.lower(params, jnp.zeros((batch, size, size, 1)), key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch


def test_analytic_flops_match_xla_cost_analysis():
    xla_per_image = _xla_train_flops_per_image(models.mlp_vae(), 28, 128)
    # XLA also counts the elementwise work (activations, the loss), which the analytic count
    # leaves out: about 1% here
    assert benchmark.mlp_vae_train_flops() == 3_280_000
    assert xla_per_image == pytest.approx(benchmark.mlp_vae_train_flops(), rel=0.02)


def test_conv_flops_match_xla_cost_analysis():
    # XLA's own convolutions, counted by it
    xla_per_image = _xla_train_flops_per_image(models.conv_vae(conv_implementation="xla"), 32, 16)
    # 13,280,416 multiply-adds forward that touch data (the README's "13.3 M"); the first
    # conv's 47 x 47 taps x 32 channels need no input gradient
    assert benchmark.conv_vae_train_flops() == 2 * (3 * 13_280_416 - 47 * 47 * 32)
    assert xla_per_image == pytest.approx(benchmark.conv_vae_train_flops(), rel=0.02)


def _subset(n_train=1280):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8))


@pytest.mark.parametrize("model, variant", [
    ("mlp", "jax_epoch"), ("mlp", "jax_step"), ("conv", "jax_epoch"),
    pytest.param("mlp", "torch_example", marks=needs_torch),
    pytest.param("mlp", "torch_tuned", marks=needs_torch),
    pytest.param("conv", "torch_tuned", marks=needs_torch),
])
def test_each_variant_trains_and_reports(model, variant):
    train, test = _subset(1280 if model == "mlp" else 200)
    result = benchmark.run_variant(variant, train, test, batch_size=128 if model == "mlp" else 100,
                                   epochs=2, model=model)
    assert result["variant"] == variant and result["model"] == model
    assert len(result["epoch_seconds"]) == 2
    assert result["images_per_second"] > 0 and result["peak_host_mib"] > 0
    # random pixels: about 0.69 nats of cross-entropy per pixel (784; conv: 1024 with padding
    # that is easy to learn), less after a few steps; the conv loss adds beta = 2.048 x KL
    assert 200 < result["test_negative_elbo"] < 1024 * np.log(2) + 100


def test_matmul_peak_is_a_rate():
    flops = benchmark.matmul_peak_flops(n=256, repeats=3)
    assert 1e8 < flops < 1e16


@pytest.mark.parametrize("argv, message", [
    (["--variants", "torch_example,bogus"], "unknown variant(s) ['bogus']"),
    (["--batch_sizes", "128,-1"], "expected positive integers"),
    (["--epochs", "1"], "--epochs, --sweep_epochs and --conv_epochs must be at least 2"),
    (["--models", "mlp,gan"], "--models must name mlp and/or conv"),
    (["--conv_variants", "torch_example"], "the conv model's PyTorch baseline is torch_tuned"),
])
def test_bad_flags_are_one_line(argv, message):
    proc = run_python(["-m", "experiments.benchmark", *argv])
    assert proc.returncode == 2 and message in proc.stderr


def test_the_command_runs_end_to_end_on_real_data(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    out = tmp_path / "bench.json"
    proc = run_python(["-m", "experiments.benchmark", "--data_dir", str(mnist_tfds_dir),
                       "--raw_data_dir", str(mnist_raw_dir), "--variants", "jax_epoch",
                       "--epochs", "2", "--batch_sizes", "4096", "--devices", "2",
                       "--conv_variants", "jax_epoch", "--conv_train_examples", "300",
                       "--conv_epochs", "2", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["train_flops_per_image"]["mlp"] == 3_280_000 and results["matmul_flops"] > 0
    mlp, conv = results["models"]["mlp"], results["models"]["conv"]
    assert [r["variant"] for r in mlp] == ["jax_epoch"] == [r["variant"] for r in conv]
    assert mlp[0]["test_negative_elbo"] < 200  # two epochs of real MNIST
    assert conv[0]["train_examples"] == 300 and conv[0]["model"] == "conv"
    assert results["batch_sweep"][0]["batch_size"] == 4096
    assert results["device_sweep"][0]["devices"] == 2
    assert "of peak" in proc.stdout and "vs first" in proc.stdout and "conv VAE, batch 100" in proc.stdout
