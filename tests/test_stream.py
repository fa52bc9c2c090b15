"""Training data streamed from the host against data held on the devices: the same batches, the
same parameters bit for bit, and a killed streamed run resumed exactly."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import run_python
from vaejax import sharding
from vaejax.training import step, stream


def _runner(n: int, batch_size: int, streamed: bool):
    update = lambda state, batch, key: (state, {"loss": jnp.sum(batch["x"]).astype(jnp.float32)})
    make = stream.make_streamed_runner if streamed else step.make_epoch_runner
    return make(update, None, batch_size=batch_size, num_examples=n, mesh=sharding.data_mesh())


def test_the_reader_gathers_the_rows_of_the_on_device_order():
    data = {"x": np.arange(100, dtype=np.int32), "y": np.arange(100, dtype=np.int32) * 10}
    runner = _runner(100, 8, streamed=True)
    key = jax.random.key(3)
    reader = stream.Streamed(data, runner, key, sharding.data_mesh(), chunk=4)
    order = np.asarray(runner.order(key, 1))  # [12, 8]
    first = reader.local_batches(1, 0, 4)
    assert [b["x"].tolist() for b in first] == order[:4].tolist()
    assert reader.local_batches(1, 4, 7)[2]["y"].tolist() == (order[6] * 10).tolist()
    # a jump (a resumed run) reopens the reader at that step of that epoch's order
    assert reader.local_batches(1, 10, 12)[0]["x"].tolist() == order[10].tolist()
    block = reader.block(1, 0, 3)  # a chunk of four steps: the fourth is read ahead
    assert block["x"].shape == (4, 8)
    assert np.asarray(block["x"]).tolist() == order[:4].tolist()
    reader.prefetch(1, 3)  # the next stretch starts within the steps already read
    assert reader.ahead is not None
    block = reader.block(1, 3, 7)
    assert reader.ahead is None and np.asarray(block["x"]).tolist() == order[3:7].tolist()
    last = np.asarray(reader.block(1, 10, 12)["x"])  # the epoch's last two, padded with zeros
    assert last[:2].tolist() == order[10:].tolist() and not last[2:].any()
    assert (
        np.asarray(reader.block(2, 0, 4)["x"]).tolist()
        == np.asarray(runner.order(key, 2))[:4].tolist()
    )


def test_auto_keeps_data_on_the_device_within_the_budget(monkeypatch):
    mesh = sharding.data_mesh()
    data = np.zeros((1000, 10), np.uint8)  # 10 kB
    monkeypatch.setattr(stream, "device_memory", lambda device: 40_000)
    assert stream.data_on_device("auto", data, mesh)  # 10 kB <= a quarter of 40 kB
    monkeypatch.setattr(stream, "device_memory", lambda device: 39_996)
    assert not stream.data_on_device("auto", data, mesh)
    assert stream.data_on_device("on", data, mesh) and not stream.data_on_device("off", data, mesh)
    four = types.SimpleNamespace(size=4, devices=np.array([object()] * 4))  # rows split 4 ways
    monkeypatch.setattr(stream, "device_memory", lambda device: 10_000)
    assert stream.data_on_device("auto", data, four)  # 2.5 kB a device <= a quarter of 10 kB
    monkeypatch.setattr(stream, "device_memory", lambda device: 9_996)
    assert not stream.data_on_device("auto", data, four)
    with pytest.raises(ValueError, match="data_on_device must be one of auto, on, off"):
        stream.data_on_device("maybe", data, mesh)


def test_streamed_runs_train_like_on_device_ones_and_resume_exactly(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    """4 CPU devices: the on-device run, and a streamed run SIGKILLed mid-epoch then resumed,
    write the same params.msgpack and metrics.jsonl, byte for byte."""
    common = [
        "-m",
        "experiments.vae_mnist",
        *("--data_dir", str(mnist_tfds_dir), "--raw_data_dir", str(mnist_raw_dir)),
        *("--train_examples", "480", "--test_examples", "240", "--eval_batch_size", "240"),
        *("--batch_size", "40", "--epochs", "2", "--checkpoint_every", "5", "--hidden_dim", "64"),
    ]
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    on = run_python([*common, "--data_on_device", "on", "--workdir", str(tmp_path / "on")], env=env)
    assert on.returncode == 0, on.stderr[-3000:]
    streamed = [*common, "--data_on_device", "off", "--workdir", str(tmp_path / "off")]
    killed = run_python(streamed, env={**env, "VAEJAX_FAULTS": "stretch@4:SIGKILL"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = run_python(streamed, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "4 cpu device(s)" in resumed.stdout and "resuming from step" in resumed.stdout
    for name in ("params.msgpack", "metrics.jsonl"):
        assert (tmp_path / "off" / name).read_bytes() == (tmp_path / "on" / name).read_bytes()


def test_the_throughput_benchmark_reads_arrays_and_record_sources():
    from experiments.data_throughput import reader_rate

    class Decoded:  # a random-access source, as vaejax.data.records.RecordSource
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return {"image": np.full((4, 4, 1), i, np.uint8), "label": np.int32(i % 10)}

    assert reader_rate(np.zeros((64, 4, 4, 1), np.uint8), 4, 16) > 0
    assert reader_rate(Decoded(), 4, 16) > 0
