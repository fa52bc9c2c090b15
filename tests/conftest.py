"""Shared fixtures. Tests that need the raw datasets read them from ../shared/data; without it
they skip, except under CI=true, where a missing dataset is a failure."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# XLA's compilations on disk, shared by the test processes, the pytest-xdist workers and the
# experiments the tests start: the same tiny models compile in many tests (on a 2-core CPU a
# U-Net's training step takes 24 s to compile and 4 s to load). The key holds the program, the
# jax version and the flags, so a stale entry is never used.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".pytest_cache" / "jax_compilation_cache")
)
RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _raw_dir(name: str) -> Path:
    folder = SHARED_DATA / name
    missing = [f for f in RAW_FILES if not (folder / f).is_file()]
    if missing:
        message = f"raw {name} files missing from {folder}: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def mnist_raw_dir() -> Path:
    return _raw_dir("mnist")


@pytest.fixture(scope="session")
def fashion_raw_dir() -> Path:
    return _raw_dir("fashion_mnist")


@pytest.fixture(scope="session")
def mnist_tfds_dir(tmp_path_factory, mnist_raw_dir) -> Path:
    """A tfds data_dir with mnist prepared from the raw files and both splits decoded once: once
    per test session, shared by the pytest-xdist workers (the first prepares it under a lock,
    about 40 s of CPU)."""
    from vaejax import data

    if os.environ.get("PYTEST_XDIST_WORKER"):
        data_dir = tmp_path_factory.getbasetemp().parent / "tfds_shared"  # the session's root
        data_dir.mkdir(exist_ok=True)
    else:
        data_dir = tmp_path_factory.mktemp("tfds")
    with open(data_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for split in ("train", "test"):
            data.load_split("mnist", split, data_dir=data_dir, raw_data_dir=mnist_raw_dir)
    return data_dir


@pytest.fixture
def no_raw_data_env(monkeypatch):
    monkeypatch.delenv("VAEJAX_RAW_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def mnist_classifier_dir(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    """A LeNet classifier trained by ``experiments.classifier`` on 3,200 MNIST images (2 epochs,
    about 96% test accuracy): the judge of the sample-quality tests."""
    from tests.helpers import run_python

    workdir = tmp_path_factory.mktemp("classifier") / "mnist"
    proc = run_python(
        [
            "-m",
            "experiments.classifier",
            "--raw_data_dir",
            str(mnist_raw_dir),
            "--data_dir",
            str(mnist_tfds_dir),
            "--train_examples",
            "3200",
            "--epochs",
            "2",
            "--batch_size",
            "64",
            "--workdir",
            str(workdir),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir
