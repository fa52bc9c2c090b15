"""The decoded copy of a prepared split, kept next to its tfds files: ``.npy`` arrays that later
runs open memory-mapped.

``<builder_dir>/vaejax_decoded_<split>/images.npy`` (uint8 [N, H, W, C]), ``labels.npy`` (int32
[N]) and, for data with attributes, ``attributes.npy`` (bool [N, A]). Opening them reads nothing
yet: the operating system pages rows in as they are used, so a split larger than the host's
memory can still be streamed to the devices (``--data_on_device off``), and a run that uses part
of a split reads only that part. The first run decodes the split straight into these files
(never the whole split in memory), in a temporary folder renamed into place when complete; an
unreadable or misshapen copy is decoded again; a folder that cannot be written is no error (the
split is then decoded into memory, and nothing is kept). A writer holds an ``fcntl.flock`` on a
lock file in its temporary folder, so the next writer can tell one left by a killed process (no
lock held) from one still being written, and removes it: a killed decode of a large split would
otherwise keep its size on the disk for good.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from vaejax.data.idx import ImageSplit

log = logging.getLogger(__name__)


# a temporary copy younger than this is never taken for abandoned: its writer locks it right
# after making it, and a folder made a moment ago may not be locked yet
ABANDONED_AFTER_S = 60.0
WRITER_LOCK = ".writer.lock"  # in a temporary copy, locked by its writer while it writes


def cache_folder(builder_dir: Path, split: str) -> Path:
    return builder_dir / f"vaejax_decoded_{split}"


def _new_temporary(folder: Path) -> Path:
    """A new, empty temporary copy of ``folder`` beside it, named for this host and process
    and made unique (two hosts, or two containers, may share a pid)."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
    tmp = folder.with_name(f".{folder.name}.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    return tmp


def _hold(tmp: Path) -> int | None:
    """An open descriptor of ``tmp``'s lock file holding an exclusive flock (the file made if
    missing), or None where another process holds it or the file system cannot lock. The lock
    is on a regular file opened for writing: NFS shares such locks between hosts, not a
    directory's."""
    try:
        fd = os.open(tmp / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _discard(tmp: Path | None, held: int | None) -> None:
    """Removes the temporary copy ``tmp`` (if still there), then lets go of its lock."""
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if held is not None:
        os.close(held)


def remove_abandoned(folder: Path) -> list[Path]:
    """Removes the temporary copies of ``folder`` whose lock no writer holds (their process
    was killed) and that are older than :data:`ABANDONED_AFTER_S`; returns those removed."""
    removed = []
    for tmp in folder.parent.glob(f".{folder.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime < ABANDONED_AFTER_S:
                continue
        except OSError:
            continue
        fd = _hold(tmp)
        if fd is None:
            continue
        _discard(tmp, fd)
        if not tmp.exists():
            removed.append(tmp)
    if removed:
        log.info("removed %d unfinished decoded copies left by killed runs", len(removed))
    return removed


def load_decoded(
    builder_dir: Path, split: str, n: int, image_shape, num_attributes: int = 0
) -> ImageSplit | None:
    """The decoded copy of ``split``, memory-mapped, or None when there is none or it does not
    have N examples of ``image_shape`` (and ``num_attributes`` attributes)."""
    folder = cache_folder(builder_dir, split)
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy", mmap_mode="r")
        attributes = np.load(folder / "attributes.npy", mmap_mode="r") if num_attributes else None
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - any unreadable copy is decoded again
        log.warning("ignoring the unreadable decoded copy %s (%s); decoding again", folder, e)
        return None
    wanted = [
        (images, (n, *image_shape), np.uint8),
        (labels, (n,), np.int32),
        *([(attributes, (n, num_attributes), np.bool_)] if num_attributes else []),
    ]
    if any(a.shape != shape or a.dtype != dtype for a, shape, dtype in wanted):
        log.warning("ignoring the decoded copy %s of the wrong shape; decoding again", folder)
        return None
    return ImageSplit(images, labels, attributes)


def _allocate(folder: Path, n: int, image_shape, num_attributes: int) -> ImageSplit:
    """Empty ``.npy`` files in ``folder``, mapped for writing, their blocks reserved up front (a
    full disk is an OSError here, not a crash on a later write into the mapping)."""
    shapes = {"images": ((n, *image_shape), np.uint8), "labels": ((n,), np.int32)}
    if num_attributes:
        shapes["attributes"] = ((n, num_attributes), np.bool_)
    arrays = {}
    for name, (shape, dtype) in shapes.items():
        path = folder / f"{name}.npy"
        arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    return ImageSplit(arrays["images"], arrays["labels"], arrays.get("attributes"))


def _in_memory(n: int, image_shape, num_attributes: int) -> ImageSplit:
    attributes = np.empty((n, num_attributes), np.bool_) if num_attributes else None
    return ImageSplit(np.empty((n, *image_shape), np.uint8), np.empty(n, np.int32), attributes)


def decoded_split(
    builder_dir: Path,
    split: str,
    n: int,
    image_shape,
    fill: Callable[[ImageSplit], None],
    num_attributes: int = 0,
    what: str = "",
) -> ImageSplit:
    """The decoded copy of ``split`` (memory-mapped). The first time, ``fill(out)`` decodes
    every example into the arrays of ``out`` (N rows): files on disk, written as they are
    filled (so a split larger than memory can be decoded), renamed into place when complete.
    Where the folder cannot be written (read-only, full), ``out`` is in memory and nothing is
    kept."""
    loaded = load_decoded(builder_dir, split, n, image_shape, num_attributes)
    if loaded is not None:
        return loaded
    start = time.perf_counter()
    folder = cache_folder(builder_dir, split)
    remove_abandoned(folder)
    tmp = held = None
    try:
        tmp = _new_temporary(folder)
        held = _hold(tmp)  # None where the file system cannot lock: then never removed by others
        out = _allocate(tmp, n, image_shape, num_attributes)
    except OSError as e:
        _discard(tmp, held)
        log.warning("could not write the decoded copy %s (%s); continuing without it", folder, e)
        out = _in_memory(n, image_shape, num_attributes)
        fill(out)
        return out
    except BaseException:
        _discard(tmp, held)
        raise
    try:
        fill(out)
        for array in out:
            if array is not None:
                array.flush()
        del out
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        with contextlib.suppress(OSError):
            (folder / WRITER_LOCK).unlink()
    finally:
        _discard(tmp, held)
    log.info("decoded %s in %.1f s", what or folder, time.perf_counter() - start)
    return load_decoded(builder_dir, split, n, image_shape, num_attributes)
