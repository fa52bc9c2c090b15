"""Shared fixtures. Tests that need the raw datasets read them from ../shared/data; without it
they skip, except under CI=true, where a missing dataset is a failure."""

from __future__ import annotations

import contextlib
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
# every program, however quick to compile: an experiment the tests start compiles some twenty
# small ones, and loading them halves its run (10.8 s -> 5.5 s for a tiny vae_mnist on 2 cores)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker more than the cores this process may use, at most 4. Tests spend
    part of their time idle (a subprocess starting, a lock on a shared fixture), and on 2 cores
    a third worker fills it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores + 1, 4)


RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _missing_raw_files(folder: Path) -> list[str]:
    return [f for f in RAW_FILES if not (folder / f).is_file()]


def _raw_dir(name: str) -> Path:
    folder = SHARED_DATA / name
    missing = _missing_raw_files(folder)
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


def _shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this test session shared by its pytest-xdist workers (or this process's own)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / name  # the session's root
        folder.mkdir(exist_ok=True)
        return folder
    return tmp_path_factory.mktemp(name)


@contextlib.contextmanager
def _locked(folder: Path):
    """Holds ``folder``'s lock: the first worker builds what it holds, the others wait."""
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prepared(tmp_path_factory, name: str, raw_dir: Path) -> Path:
    from vaejax import data

    data_dir = _shared_dir(tmp_path_factory, f"tfds_{name}")
    with _locked(data_dir):
        for split in ("train", "test"):
            data.load_split(name, split, data_dir=data_dir, raw_data_dir=raw_dir)
    return data_dir


@pytest.fixture(scope="session")
def mnist_tfds_dir(tmp_path_factory, mnist_raw_dir) -> Path:
    """A tfds data_dir with mnist prepared from the raw files and both splits decoded once: once
    per test session, shared by the pytest-xdist workers (the first prepares it under a lock,
    about 40 s of CPU)."""
    return _prepared(tmp_path_factory, "mnist", mnist_raw_dir)


@pytest.fixture(scope="session")
def fashion_tfds_dir(tmp_path_factory, fashion_raw_dir) -> Path:
    """The same for fashion_mnist."""
    return _prepared(tmp_path_factory, "fashion_mnist", fashion_raw_dir)


@pytest.fixture(scope="session", autouse=True)
def _fashion_prepared_early(request, tmp_path_factory):
    """The second pytest-xdist worker prepares fashion_mnist first, while the first prepares
    mnist for its first test: otherwise one waits on the other's lock, idle, at the start."""
    if os.environ.get("PYTEST_XDIST_WORKER") != "gw1":
        return
    if any("fashion_tfds_dir" in item.fixturenames for item in request.session.items):
        folder = SHARED_DATA / "fashion_mnist"
        if not _missing_raw_files(folder):  # else the tests say why
            _prepared(tmp_path_factory, "fashion_mnist", folder)


@pytest.fixture
def no_raw_data_env(monkeypatch):
    monkeypatch.delenv("VAEJAX_RAW_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def mnist_classifier_dir(tmp_path_factory, mnist_tfds_dir, mnist_raw_dir) -> Path:
    """A LeNet classifier trained by ``experiments.classifier`` on 3,200 MNIST images (2 epochs,
    about 96% test accuracy): the judge of the sample-quality tests, trained once per session
    and shared by the workers."""
    from tests.helpers import run_python

    folder = _shared_dir(tmp_path_factory, "classifier")
    workdir = folder / "mnist"
    with _locked(folder):
        if not (workdir / "classifier.json").is_file():
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


# minutes of subprocesses in one test: started first, so that it never runs alone at the end
LONGEST_FIRST = ("tests/test_reproduce.py::test_smoke_suite",)


def pytest_collection_modifyitems(config, items):
    """The tests of :data:`LONGEST_FIRST` at the front of the run (the rest keep their order)."""
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))
