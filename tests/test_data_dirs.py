"""Data directories that cannot be written, preparations that are killed or run side by side, and
raw files that are not the official ones."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, start_python
from vaejax import data
from vaejax.data import datasets, idx

RAW_FILES = [f"{stem}.gz" for stem in idx.RAW_STEMS]


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]


def _ro_mounts(folders: list[Path]) -> str:
    return " && ".join(
        f"mount --bind {q} {q} && mount -o remount,bind,ro {q} {q}"
        for q in map(shlex.quote, map(str, folders))
    )


def _unshare_works(folder: Path) -> bool:
    try:
        done = subprocess.run([*UNSHARE, _ro_mounts([folder])], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def read_only(folders: list[Path], probe_dir: Path):
    """Yields the command prefix that runs a program with ``folders`` read-only: read-only bind
    mounts in a user namespace, or (not root, no namespaces) the folders chmod'ed read-only."""
    if _unshare_works(probe_dir):
        yield [*UNSHARE, f'{_ro_mounts(folders)} && exec "$@"', "sh"]
        return
    if os.geteuid() == 0:
        pytest.skip("unshare cannot make read-only mounts here, and root ignores chmod")
    dirs = [d for folder in folders for d in (folder, *folder.rglob("*")) if d.is_dir()]
    for d in dirs:
        d.chmod(0o555)
    try:
        yield []
    finally:
        for d in dirs:
            d.chmod(0o755)


READ_ONLY_SCRIPT = """
import json, sys
from vaejax import data
prepared, writable_parent, raw = sys.argv[1:4]
out = {}
for split in ("test", "train"):  # test: decoded by tfds.data_source; train: from the cache
    out[split] = data.load_split("mnist", split, data_dir=prepared, raw_data_dir=raw).images.shape
for case, data_dir in (("exists", writable_parent), ("new", writable_parent + "/sub/tfds")):
    try:
        data.prepare("mnist", data_dir, raw)
    except data.DataError as e:
        out[case] = str(e)
print(json.dumps(out))
"""


def test_read_only_data_dirs(tmp_path, mnist_tfds_dir, mnist_raw_dir):
    """Prepared data are read from a read-only folder (the decoded cache and the record of checked
    raw files are skipped); preparing into a read-only folder is one DataError naming it."""
    prepared, empty = tmp_path / "prepared", tmp_path / "empty"
    shutil.copytree(mnist_tfds_dir / "mnist", prepared / "mnist")
    version_dir = prepared / "mnist" / data.TFDS_VERSION
    shutil.rmtree(version_dir / "vaejax_decoded_test")
    (version_dir / idx.VERIFIED_FILE).unlink(missing_ok=True)
    empty.mkdir()
    before = _tree(prepared)
    with read_only([prepared, empty], probe_dir=empty) as prefix:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
        args = [sys.executable, "-c", READ_ONLY_SCRIPT, str(prepared), str(empty)]
        done = subprocess.run(
            [*prefix, *args, str(mnist_raw_dir)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["test"] == [10000, 28, 28, 1] and out["train"] == [60000, 28, 28, 1]
    assert "could not write the decoded copy" in done.stderr  # one warning, then on without it
    assert _tree(prepared) == before and not any(empty.iterdir())
    for case, folder in (("exists", empty), ("new", empty / "sub" / "tfds")):
        message = out[case]
        assert str(folder) in message and "pass --data_dir to a writable folder" in message
        assert "\n" not in message


PREPARE_SCRIPT = """
import logging, sys
from vaejax import data
logging.basicConfig(level=logging.INFO, format="%(message)s")
data.prepare("mnist", sys.argv[1], sys.argv[2])
"""


def _wait_for(condition, proc, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)


def test_killed_preparation_is_cleaned_up_and_a_concurrent_one_waits(tmp_path, mnist_raw_dir):
    """One real preparation: a first one is killed (SIGKILL) once tfds made its folder; the next
    removes what it left; a third, started meanwhile, waits for it and uses its result."""
    data_dir = tmp_path / "tfds"
    folder = data_dir / "mnist"
    argv = ["-c", PREPARE_SCRIPT, str(data_dir), str(mnist_raw_dir)]
    incomplete = lambda: sorted(folder.glob("incomplete.*")) if folder.is_dir() else []
    killed = start_python(argv)
    _wait_for(incomplete, killed, "tfds folder")  # ~2 s; it fills ~12 s later
    killed.kill()
    killed.communicate()
    (leftover,) = incomplete()

    first = start_python(argv)
    _wait_for(lambda: incomplete() not in ([], [leftover]), first, "new tfds folder")
    second = start_python(argv)
    first_out, first_err = first.communicate(timeout=300)
    second_err = second.communicate(timeout=300)[1]
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 0, second_err[-3000:]
    assert f"removing {leftover}, left by an interrupted preparation" in first_err
    preparing = f"preparing mnist in {folder / data.TFDS_VERSION}"
    assert preparing in first_err and preparing not in second_err
    # tfds' own lines, with sizes these builders do not know and a download there was not
    assert "Unknown size" not in first_out + first_err and "Subsequent calls" not in first_out
    assert "waiting for another process preparing mnist" in second_err
    assert "prepared in" in second_err and "by another process" in second_err
    assert sorted(p.name for p in folder.iterdir()) == [datasets.PREPARE_LOCK, data.TFDS_VERSION]


def test_a_failed_preparation_held_the_lock_and_leaves_nothing(
    tmp_path, mnist_raw_dir, monkeypatch
):
    """A preparation that fails for want of space or rights is one DataError naming the folder;
    it ran under the lock, and the folder it made is gone."""
    from vaejax.data import tfds_builders

    data_dir = tmp_path / "tfds"
    held = []

    class FullDisk:
        def download_and_prepare(self):
            with open(data_dir / "mnist" / datasets.PREPARE_LOCK) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append(True)
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tfds_builders, "builder", lambda *args, **kwargs: FullDisk())
    with pytest.raises(data.DataError) as e:
        data.prepare("mnist", data_dir, mnist_raw_dir)
    message = str(e.value)
    assert message.startswith(f"cannot prepare mnist in {data_dir} ([Errno {errno.ENOSPC}]")
    assert "pass --data_dir" in message and "\n" not in message
    assert held == [True]
    assert not (data_dir / "mnist").exists()


def _copy_raw(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in RAW_FILES:
        (target / name).symlink_to(source / name)
    return target


def test_given_raw_files_are_checked_when_prepared(
    tmp_path, mnist_tfds_dir, mnist_raw_dir, fashion_raw_dir, monkeypatch, no_raw_data_env
):
    verified = mnist_tfds_dir / "mnist" / data.TFDS_VERSION / idx.VERIFIED_FILE
    assert verified.is_file()  # written by the preparation from the re-compressed shared copy

    def no_decompression(*args, **kwargs):
        raise AssertionError("a recorded copy should be recognised by its SHA-256 alone")

    with monkeypatch.context() as m:
        m.setattr(idx, "read_idx", no_decompression)
        data.prepare("mnist", mnist_tfds_dir, mnist_raw_dir)

    with pytest.raises(data.DataError, match="is fashion_mnist data, not mnist: point the raw"):
        data.prepare("mnist", mnist_tfds_dir, fashion_raw_dir)

    damaged = _copy_raw(mnist_raw_dir, tmp_path / "damaged")
    labels = damaged / "t10k-labels-idx1-ubyte.gz"
    size = data.DATASETS["mnist"].gz["t10k-labels-idx1-ubyte"][0]
    payload = (mnist_raw_dir / labels.name).read_bytes()
    labels.unlink()
    labels.write_bytes(payload.ljust(size, b"\0"))  # the official size, not its digest
    monkeypatch.setenv(data.RAW_DATA_DIR_ENV, str(damaged))
    with pytest.raises(data.DataError) as e:
        data.load_split("mnist", "test", data_dir=mnist_tfds_dir)
    assert str(e.value) == (
        f"{labels} is damaged (its SHA-256 is not the official mnist file's): replace it with a "
        "fresh copy of the official file"
    )

    labels.write_bytes(payload[:-100])  # another size: only its content can tell
    with pytest.raises(data.DataError, match=f"{re.escape(str(labels))} is not a readable gzip"):
        data.load_split("mnist", "test", data_dir=mnist_tfds_dir)


def test_official_downloads_are_known_by_digest(fashion_raw_dir, mnist_raw_dir):
    """The Fashion-MNIST copy is the official download (size and SHA-256); the MNIST copy is
    re-compressed, so only its content proves it."""
    for name in RAW_FILES:
        digest, official = idx.check_raw_file(
            fashion_raw_dir / name, data.DATASETS["fashion_mnist"]
        )
        assert official and digest == data.DATASETS["fashion_mnist"].gz[name[:-3]][1]
        digest, official = idx.check_raw_file(mnist_raw_dir / name, data.DATASETS["mnist"])
        assert not official
        assert idx.check_raw_file(mnist_raw_dir / name, data.DATASETS["mnist"], [digest])[1]


def test_opening_a_folder_not_yet_prepared_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    """Each of the project's builders, opened on an empty data dir (as every preparation does
    first), makes no folder in the temp dir: tfds' lookup of its published metadata would make
    an empty one each time and never remove it."""
    import types

    from vaejax.data import folder, source_builder, tfds_builders

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    meta = {"image_shape": [8, 8, 1], "class_names": ["a", "b"], "source": "a folder"}
    opened = {
        "mnist": lambda d: tfds_builders.builder("mnist", data_dir=d),
        "cifar10": lambda d: source_builder.builder("cifar10", d),
        "folder": lambda d: folder._builder("pictures", 8, d, types.SimpleNamespace(meta=meta)),
    }
    for name, open_builder in opened.items():
        data_dir = tmp_path / name
        builder = open_builder(data_dir)
        assert builder.info.features is not None and not builder.is_prepared(), name
        assert sorted(temp.iterdir()) == [], name


KILLED_DECODE = """
import os, sys, time
from pathlib import Path
from vaejax.data import cache

os.getpid = lambda: 4242  # every writer the same pid, as in containers sharing a volume

def fill(out):
    out.images[:] = 7
    print("filling", flush=True)
    time.sleep(600)

cache.decoded_split(Path(sys.argv[1]), "test", 4, (2, 2, 1), fill)
"""


def test_a_decoded_copy_left_by_a_killed_run_is_removed_and_one_being_written_is_not(tmp_path):
    """A run SIGKILLed while decoding leaves its temporary copy; the next decode removes it, but
    not the copy another run is still writing (its writer holds the copy's lock) nor one just
    made."""
    import signal

    from vaejax.data import cache

    folder = cache.cache_folder(tmp_path, "test")
    temporary = lambda: set(tmp_path.glob(f".{folder.name}.*.tmp"))
    writers, tmps = [], []
    try:
        for _ in range(2):  # the first is killed, the second keeps writing; both "pid 4242"
            before = temporary()
            writers.append(start_python(["-c", KILLED_DECODE, str(tmp_path)]))
            assert writers[-1].stdout.readline().strip() == "filling", writers[-1].stderr.read()
            (new,) = temporary() - before
            assert ".4242." in new.name and (new / "images.npy").is_file()
            tmps.append(new)
        assert all(tmp.is_dir() for tmp in tmps)  # the second did not take the first's place
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(30)
        old = time.time() - 2 * cache.ABANDONED_AFTER_S
        for tmp in tmps:
            os.utime(tmp, (old, old))
        young = tmp_path / f".{folder.name}.1.tmp"
        young.mkdir()

        def fill(out):
            out.images[:] = np.arange(16, dtype=np.uint8).reshape(4, 2, 2, 1)
            out.labels[:] = [3, 1, 4, 1]

        copy = cache.decoded_split(tmp_path, "test", 4, (2, 2, 1), fill)
        assert not tmps[0].exists() and tmps[1].is_dir() and young.is_dir()
        assert copy.images.ravel().tolist() == list(range(16))
        assert sorted(os.listdir(folder)) == ["images.npy", "labels.npy"]  # no lock file
        assert copy.labels.tolist() == [3, 1, 4, 1]
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(30)
    assert cache.remove_abandoned(folder) == [tmps[1]]  # its writer gone; the young one stays
    os.utime(young, (old, old))
    assert cache.remove_abandoned(folder) == [young]
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
