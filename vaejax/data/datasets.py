"""MNIST and Fashion-MNIST: raw IDX files -> tfds (array_record) -> uint8 arrays -> device batches.

The path a dataset takes:

1. Raw files: the four IDX ``.gz`` files, found in a local folder (offline) or downloaded from
   the official URLs through tfds' download manager (online).
2. tfds: the builders in :mod:`vaejax.data.tfds_builders` read them with ``gzip`` + numpy and
   write the standard layout ``<data_dir>/<name>/3.0.1/`` (array_record files) — no TensorFlow
   needed.
3. Arrays: ``tfds.data_source`` reads the prepared split once; the decoded uint8 arrays are
   kept next to the tfds files (:mod:`vaejax.data.cache`), and later runs open them
   memory-mapped in milliseconds.
4. Device: the whole split is placed on the device(s) as uint8 and turned into float batches
   there (:func:`vaejax.data.preprocess.make_batch_preprocessor`): scaling to [0, 1], dynamic
   binarization, padding.

Preparing is safe against concurrent and killed processes. A preparation holds an exclusive
``fcntl.flock`` on ``<data_dir>/<name>/.vaejax-prepare.lock``; a second process waits for it,
then uses its result. tfds writes into a temporary ``<data_dir>/<name>/incomplete.*`` folder and
renames it when done, so a killed preparation leaves that folder behind: the next preparation
removes every ``incomplete.*`` there once it holds the lock (a live preparation would hold the
lock, so they can only be left by dead ones; a program that prepares the same folder without
this lock, tfds' own builders say, is not protected). Reading prepared data takes no lock and
needs no write (the decoded cache is optional), so a read-only ``data_dir`` serves prepared data;
preparing into a folder that cannot be written fails with one :class:`DataError` naming it.
Raw files given explicitly are checked against the official ones on every run, cheaply once
the data are prepared (:func:`vaejax.data.idx.check_raw_files`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaejax.data.cache import decoded_split
from vaejax.data.idx import (
    IDX_FILES,
    IMAGE_SHAPE,
    RAW_DATA_DIR_ENV,
    RAW_STEMS,
    TFDS_VERSION,
    VERIFIED_FILE,
    DataError,
    DatasetSpec,
    ImageSplit,
    check_raw_file,
    check_raw_files,
    dataset_spec,
    find_raw_dir,
    read_idx_split,
    remember_verified,
)

log = logging.getLogger(__name__)


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fails within ``timeout`` seconds if ``url`` cannot be reached.

    tfds' downloader retries a dead connection for minutes; this probe is asked first so an
    offline user hears about the offline option at once.
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered: downloads can go ahead (a directory URL may say 403/404)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot reach {url} ({reason})") from None


def default_data_dir() -> Path:
    """tfds' data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def prepare(
    name: str,
    data_dir: os.PathLike | str | None = None,
    raw_data_dir: os.PathLike | str | None = None,
) -> Path:
    """Makes sure ``<data_dir>/<name>/3.0.1`` is prepared; returns that folder.

    Nothing is written when it already is: a read-only ``data_dir`` serves prepared data.
    Otherwise the raw files come from :func:`find_raw_dir`, or are downloaded; with neither
    possible this fails within seconds naming the offline option. Raw files given explicitly
    (``raw_data_dir`` or ``$VAEJAX_RAW_DATA_DIR``) must be the official ones even when they are
    not needed (:func:`vaejax.data.idx.check_raw_files`).
    """
    spec = dataset_spec(name)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / name / TFDS_VERSION
    explicit = find_raw_dir(name, raw_data_dir)  # flag or environment: checked even when prepared
    if not is_prepared(builder_dir):
        raw_dir = explicit or find_raw_dir(name, manual_dir=data_dir / "downloads" / "manual")
        splits, digests = _read_raw(spec, data_dir, raw_dir)  # before anything is written
        _prepare_locked(spec, data_dir, raw_dir, splits)
        remember_verified(builder_dir / VERIFIED_FILE, digests)
    check_prepared(builder_dir)
    if explicit is not None:  # cheap once prepared: see check_raw_files
        check_raw_files(explicit, spec, memo=builder_dir / VERIFIED_FILE)
    return builder_dir


def is_prepared(builder_dir: Path) -> bool:
    """Whether ``builder_dir`` holds a prepared dataset (its ``dataset_info.json``)."""
    return (builder_dir / "dataset_info.json").is_file()


def _read_raw(
    spec: DatasetSpec, data_dir: Path, raw_dir: Path | None
) -> tuple[dict[str, ImageSplit] | None, dict[str, str]]:
    """The splits read and checked from ``raw_dir``, and the SHA-256s of those raw files that are
    re-compressed copies; ``(None, {})`` when they are to be downloaded (the server must answer)."""
    if raw_dir is None:
        try:
            check_reachable(spec.url)
        except DataError as e:
            raise DataError(
                f"{spec.name} is not prepared in {data_dir} and cannot be downloaded: {e}. "
                f"Offline, pass --raw_data_dir DIR (or set {RAW_DATA_DIR_ENV}=DIR) where DIR "
                f"holds the four raw .gz files, e.g. ../shared/data/{spec.name}"
            ) from None
        return None, {}
    digests = {}
    for stem in RAW_STEMS:
        digest, official = check_raw_file(raw_dir / f"{stem}.gz", spec)
        if not official:
            digests[stem] = digest  # read_idx_split checks its uncompressed bytes below
    splits = {split: read_idx_split(raw_dir, split, spec) for split in IDX_FILES}
    return splits, digests


def _prepare_locked(
    spec: DatasetSpec, data_dir: Path, raw_dir: Path | None, splits: dict | None
) -> None:
    """Prepares under the lock of ``<data_dir>/<name>``, unless another process did meanwhile."""
    builder_dir = data_dir / spec.name / TFDS_VERSION
    with preparation_lock(data_dir, spec.name) as locked:
        if is_prepared(builder_dir):
            log.info("%s was prepared in %s by another process", spec.name, data_dir)
            return
        if locked:
            remove_leftovers(data_dir / spec.name)
        from vaejax.data import (
            tfds_builders,  # imports tensorflow_datasets, which takes seconds
        )

        builder = tfds_builders.builder(spec.name, data_dir=data_dir, splits=splits)
        log.info("preparing %s in %s from %s (once)", spec.name, builder_dir, raw_dir or spec.url)
        with writing_into(data_dir, spec.name):
            builder.download_and_prepare()


PREPARE_LOCK = ".vaejax-prepare.lock"  # in <data_dir>/<name>/
# what an OSError of a preparation means when the data directory is the problem
_WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def writing_into(data_dir: Path, what: str) -> Iterator[None]:
    """Turns an OSError of a preparation that the data directory caused (read-only, no room,
    no permission) into one :class:`DataError` naming ``what`` and ``data_dir``; any other
    error passes."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS and "disk space" not in str(e):
            raise
        raise DataError(
            f"cannot prepare {what} in {data_dir} ({e}): pass --data_dir to a writable folder "
            f"with room for it"
        ) from None


@contextlib.contextmanager
def preparation_lock(data_dir: Path, name: str) -> Iterator[bool]:
    """Holds the lock of ``<data_dir>/<name>`` (creating both) while a preparation runs, waiting
    while another process holds it; yields False where the file system cannot lock. A folder
    left holding nothing but the lock file (a failed preparation) is removed."""
    folder = data_dir / name
    fd, locked = _acquire(data_dir, name)
    try:
        yield locked
    finally:
        with contextlib.suppress(OSError):
            if [p.name for p in folder.iterdir()] == [PREPARE_LOCK]:
                (folder / PREPARE_LOCK).unlink()  # a waiter notices and locks a new file
                folder.rmdir()
        os.close(fd)  # releases the lock


def _acquire(data_dir: Path, name: str) -> tuple[int, bool]:
    lock_path = data_dir / name / PREPARE_LOCK
    while True:
        fd = _open_lock_file(data_dir, name)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process preparing %s in %s", name, data_dir)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_current(fd, lock_path):
                return fd, True
        except OSError as e:  # a file system without locks (some network mounts)
            log.warning("cannot lock %s (%s); preparing without a lock", lock_path, e)
            return fd, False
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed by its holder meanwhile: lock the new one


def _open_lock_file(data_dir: Path, name: str) -> int:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the tfds data directory {data_dir} ({e}): "
            "pass --data_dir to a writable folder"
        ) from None
    lock_path = data_dir / name / PREPARE_LOCK
    try:
        lock_path.parent.mkdir(exist_ok=True)
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            return os.open(lock_path, os.O_RDONLY)  # another user's lock file
    except OSError as e:
        raise DataError(
            f"cannot prepare {name} in {data_dir}, which is not writable ({e}): "
            "pass --data_dir to a writable folder"
        ) from None


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)


def remove_leftovers(folder: Path) -> None:
    """Removes tfds' temporary folders (``incomplete.*``) from ``folder``. Called only under
    the lock: no live preparation owns them, they are what killed ones left."""
    for path in sorted(folder.glob("incomplete.*")):
        log.info("removing %s, left by an interrupted preparation", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def check_prepared(builder_dir: Path) -> None:
    """A prepared folder must be readable by ``tfds.data_source``: array_record files."""
    try:
        info = json.loads((builder_dir / "dataset_info.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"{builder_dir}/dataset_info.json is unreadable ({e}): delete "
            f"{builder_dir} to prepare it again"
        ) from None
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "array_record":
        raise DataError(
            f"{builder_dir} holds {file_format} files, which tfds.data_source cannot "
            f"read: pass another --data_dir (vaejax prepares array_record files)"
        )


def _fill(out: ImageSplit, decoded: ImageSplit) -> None:
    out.images[:] = decoded.images
    out.labels[:] = decoded.labels


def read_tfds_split(name: str, split: str, data_dir: os.PathLike | str) -> ImageSplit:
    """Decodes a prepared split with ``tfds.data_source`` (every image, in file order)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False)
        records = source.__getitems__(range(len(source)))
        images = np.stack([r["image"] for r in records]).astype(np.uint8)
        labels = np.asarray([r["label"] for r in records], dtype=np.int32)
        images = images.reshape(len(records), *IMAGE_SHAPE)
    except Exception as e:  # noqa: BLE001 - any failure here means damaged prepared files
        folder = Path(data_dir) / name / TFDS_VERSION
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot read the prepared {name} {split} split ({reason}): delete "
            f"{folder} to prepare it again"
        ) from None
    return ImageSplit(images, labels)


def load_split(
    name: str,
    split: str,
    data_dir: os.PathLike | str | None = None,
    raw_data_dir: os.PathLike | str | None = None,
) -> ImageSplit:
    """One split of ``name`` as uint8 arrays, preparing the tfds files first if needed.

    Without tensorflow-datasets installed (e.g. a bare accelerator image) the raw files are
    read directly from the raw data folder instead.
    """
    spec = dataset_spec(name)
    if split not in IDX_FILES:
        raise DataError(f"unknown split {split!r}: choose train or test")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raw_dir = find_raw_dir(name, raw_data_dir)
        if raw_dir is None:
            raise DataError(
                f"tensorflow-datasets is not installed: pass --raw_data_dir DIR (or set "
                f"{RAW_DATA_DIR_ENV}) to the folder with the {name} raw .gz files"
            ) from None
        return read_idx_split(raw_dir, split, spec)
    builder_dir = prepare(name, data_dir, raw_data_dir)
    return decoded_split(
        builder_dir,
        split,
        spec.num_examples[split],
        IMAGE_SHAPE,
        lambda out: _fill(out, read_tfds_split(name, split, builder_dir.parent.parent)),
        what=f"{name}/{split}",
    )
