"""Runs that survive: kill and resume bit for bit, SIGTERM, damaged or foreign checkpoints,
non-finite steps, determinism. Each run is a real `python -m experiments.vae_mnist` process."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from tests.helpers import checkpoint_steps, file_snapshot, start_python, wait_for_checkpoint_after
from vaejax import io
from vaejax.training import checkpoints

# the module's fixtures train models: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("reliability")

STEPS = 3 * (3000 // 50)  # 3 epochs of 60 steps


def _argv(workdir, tfds_dir, raw_dir, *extra):
    return [
        "-m",
        "experiments.vae_mnist",
        "--data_dir",
        str(tfds_dir),
        "--raw_data_dir",
        str(raw_dir),
        "--train_examples",
        "3000",
        "--batch_size",
        "50",
        "--epochs",
        "3",
        # a schedule of the optimizer's step count: a resumed run must pick it up where it was
        "--lr_schedule",
        "cosine",
        "--warmup_steps",
        "30",
        "--checkpoint_every",
        "25",
        "--workdir",
        str(workdir),
        *extra,
    ]


def _finish(proc, timeout=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _run(argv, timeout=300) -> tuple[int, str, str]:
    return _finish(start_python(argv), timeout)


def _params(workdir: Path):
    return jax.tree_util.tree_leaves(
        serialization.msgpack_restore((workdir / "params.msgpack").read_bytes())
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, _, err = _run(_argv(workdir, mnist_tfds_dir, mnist_raw_dir))
    assert code == 0, err[-3000:]
    return workdir


def test_killed_and_stopped_runs_resume_bit_for_bit(
    uninterrupted, tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    workdir = tmp_path / "run"
    argv = _argv(workdir, mnist_tfds_dir, mnist_raw_dir)

    proc = start_python(argv)  # 1. SIGKILL: no chance to save anything
    wait_for_checkpoint_after(proc, workdir, 0)
    proc.kill()
    code, _, _ = _finish(proc)
    assert code == -signal.SIGKILL
    killed_at = checkpoint_steps(workdir)[-1]
    assert 0 < killed_at < STEPS and not (workdir / "params.msgpack").exists()

    proc = start_python(argv)  # 2. resumed, then SIGTERM: saves where it is and exits
    wait_for_checkpoint_after(proc, workdir, killed_at)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert f"resuming from step {killed_at}" in out
    assert "learning rate: cosine decay to 0 after 30 warmup steps; resuming" in out
    stopped_line = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped_line) == 1, err[-3000:]
    # in training it saves where it is; in an evaluation it keeps the newest checkpoint
    stopped_at = int(re.search(r"checkpoint (\d+) in ", stopped_line[0]).group(1))
    assert killed_at < stopped_at < STEPS and stopped_at in checkpoint_steps(workdir)
    assert len(checkpoint_steps(workdir)) <= 3  # --keep_checkpoints 3

    code, out, err = _run(argv)  # 3. resumed to the end
    assert code == 0, err[-3000:]
    assert f"resuming from step {stopped_at}" in out

    for a, b in zip(_params(uninterrupted), _params(workdir), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit for bit
    assert (workdir / "metrics.jsonl").read_text() == (uninterrupted / "metrics.jsonl").read_text()
    final = checkpoints.restore(workdir / "checkpoints", STEPS)
    reference = checkpoints.restore(uninterrupted / "checkpoints", STEPS)
    assert jax.tree_util.tree_structure(final) == jax.tree_util.tree_structure(reference)
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(reference)):
        assert np.array_equal(a, b)  # optimizer state, step and epoch metrics too


def test_a_finished_run_is_not_retrained_and_can_be_extended(
    uninterrupted, tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    workdir = tmp_path / "copy"
    shutil.copytree(uninterrupted, workdir)
    code, out, err = _run(_argv(workdir, mnist_tfds_dir, mnist_raw_dir))
    assert code == 0, err[-3000:]
    assert "finished run of 3 epochs: nothing to train" in out
    code, out, err = _run(
        _argv(workdir, mnist_tfds_dir, mnist_raw_dir)[:-4]
        + ["--epochs", "4", "--workdir", str(workdir)]
    )
    assert code == 0, err[-3000:]
    assert [r["epoch"] for r in io.read_jsonl(workdir / "metrics.jsonl")] == [0, 1, 2, 3, 4]


def test_a_run_with_other_settings_is_refused(
    uninterrupted, tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    before = file_snapshot(uninterrupted)
    code, _, err = _run(
        _argv(
            uninterrupted,
            mnist_tfds_dir,
            mnist_raw_dir,
            "--latent_dim",
            "5",
            "--learning_rate",
            "0.002",
        )
    )
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: workdir {uninterrupted} holds a run with other settings")
    assert (
        "--latent_dim 20 there, 5 here" in err and "--learning_rate 0.001 there, 0.002 here" in err
    )
    assert file_snapshot(uninterrupted) == before


def test_a_diverging_run_stops_and_saves_nothing_non_finite(
    tmp_path, mnist_tfds_dir, mnist_raw_dir
):
    workdir = tmp_path / "diverging"
    code, _, err = _run(
        _argv(
            workdir, mnist_tfds_dir, mnist_raw_dir, "--learning_rate", "1e30", "--warmup_steps", "0"
        )
    )
    assert code == 3, err[-3000:]
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "a non-finite loss or gradient at step 1," in line[0]
    assert "last good checkpoint: step 0 in" in line[0] and "--nonfinite skip" in line[0]
    steps = checkpoint_steps(workdir)
    assert steps == [0]
    saved = checkpoints.restore(workdir / "checkpoints", 0)
    assert all(
        np.all(np.isfinite(a))
        for a in jax.tree_util.tree_leaves(saved)
        if np.issubdtype(a.dtype, np.inexact)
    )
