"""Data folders in object stores (``--data_dir gs://...``, ``--raw_data_dir gs://...``), read
through a local mirror.

tfds' array_record reader opens local files only (riegeli has no open-source GCS reader:
google/array_record#120, google/riegeli#31), and vaejax memory-maps the decoded copy of each
split, so a data folder named by a URL is mirrored on the local disk and the run reads the mirror:

- before a run reads ``<data_dir>/<dataset>/``, the files of that folder that the mirror lacks
  (or holds at another size) are copied down from the object store;
- a dataset prepared locally because the store did not hold it is copied up, ``dataset_info.json``
  of each folder last (tfds reads a folder holding it as prepared), by the first process only, so
  that other machines and later runs copy it down instead of preparing it again; the decoded
  copies (``vaejax_decoded_*``) and lock files stay local;
- from a raw-data folder only the dataset's own raw files are copied down, found as in a local
  folder (in the folder itself or in its ``<dataset>/`` folder).

The mirror is ``$VAEJAX_DATA_CACHE`` (default ``~/.cache/vaejax/data``) / scheme / bucket / path.
Everything goes through ``etils.epath``, so any scheme it knows works where its file system's
package and credentials are present.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import jax

from vaejax import io
from vaejax.data.idx import DataError

log = logging.getLogger(__name__)

CACHE_ENV = "VAEJAX_DATA_CACHE"
DEFAULT_CACHE = "~/.cache/vaejax/data"
INFO_FILE = "dataset_info.json"  # what tfds takes as the mark of a prepared folder
LOCAL_ONLY = ("vaejax_decoded_", ".vaejax", "incomplete.", ".lock")  # name prefixes never synced


def is_remote(path: os.PathLike | str | None) -> bool:
    return bool(path) and "://" in os.fspath(path)


def mirror_of(url: os.PathLike | str) -> Path:
    """The local folder mirroring ``url``: ``gs://bucket/tfds`` -> ``<cache>/gs/bucket/tfds``."""
    scheme, rest = os.fspath(url).split("://", 1)
    cache = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    return cache / scheme / rest.strip("/")


def _synced(name: str) -> bool:
    return not name.startswith(LOCAL_ONLY)


def _remote_files(folder) -> Iterator[tuple[str, object]]:
    """(relative path, epath) of every synced file under the remote ``folder``."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not _synced(entry.name):
            continue
        if entry.is_dir():
            yield from ((f"{entry.name}/{rel}", p) for rel, p in _remote_files(entry))
        else:
            yield entry.name, entry


def _copy(source, target) -> None:
    """Copies one file between an epath and a local path, the local side through a temporary
    name (an interrupted copy never looks complete)."""
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        with source.open("rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)


def pull(remote, local: Path) -> int:
    """Copies down the files under ``remote`` that ``local`` lacks or holds at another size;
    returns how many."""
    copied = 0
    for rel, source in _remote_files(remote):
        target = local / rel
        if not target.is_file() or target.stat().st_size != source.stat().length:
            _copy(source, target)
            copied += 1
    return copied


def push(local: Path, remote) -> int:
    """Copies up the synced files under ``local`` that ``remote`` lacks or holds at another
    size, each folder's ``dataset_info.json`` last; returns how many."""
    files = [
        p
        for p in local.rglob("*")
        if p.is_file() and all(_synced(part) for part in p.relative_to(local).parts)
    ]
    copied = 0
    for path in sorted(files, key=lambda p: (p.name == INFO_FILE, str(p))):
        target = remote / path.relative_to(local).as_posix()
        if not target.exists() or target.stat().length != path.stat().st_size:
            _copy(path, target)
            copied += 1
    return copied


def _pull_raw(url, local: Path, dataset: str, raw_files: Iterable[str]) -> None:
    remote = io.as_path(url)
    for folder, mirror in ((remote, local), (remote / dataset, local / dataset)):
        for name in raw_files:
            source = folder / name
            target = mirror / name
            if source.exists() and (
                not target.is_file() or target.stat().st_size != source.stat().length
            ):
                _copy(source, target)


@contextlib.contextmanager
def staged(
    dataset_dir: str,
    data_dir: os.PathLike | str | None,
    raw_data_dir: os.PathLike | str | None = None,
    raw_files: Iterable[str] = (),
    upload: bool = True,
) -> Iterator[tuple[os.PathLike | str | None, os.PathLike | str | None]]:
    """Yields local stand-ins for ``(data_dir, raw_data_dir)``: each unchanged when local, else
    its mirror, filled first with ``<data_dir>/<dataset_dir>/`` and with ``raw_files`` of the
    raw folder; afterwards copies the dataset's folder up when ``upload`` (see the module).
    A store that cannot be read is one :class:`DataError`; one that cannot be written to, a
    warning (the run goes on with its local copy)."""
    local_data = mirror_of(data_dir) if is_remote(data_dir) else data_dir
    local_raw = mirror_of(raw_data_dir) if is_remote(raw_data_dir) else raw_data_dir
    if is_remote(raw_data_dir):
        with _reading(raw_data_dir, "--raw_data_dir"):
            local_raw.mkdir(parents=True, exist_ok=True)
            _pull_raw(raw_data_dir, local_raw, dataset_dir, raw_files)
    if is_remote(data_dir):
        with _reading(data_dir, "--data_dir"):
            pull(io.as_path(data_dir) / dataset_dir, local_data / dataset_dir)
    yield local_data, local_raw
    if is_remote(data_dir) and upload and (local_data / dataset_dir).is_dir():
        if jax.process_index() == 0:
            try:
                push(local_data / dataset_dir, io.as_path(data_dir) / dataset_dir)
            except Exception as e:  # noqa: BLE001 - the run has its data; only sharing failed
                log.warning("could not copy %s up to %s (%s)", dataset_dir, data_dir, _reason(e))


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _reading(url, flag: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if isinstance(e, DataError) or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
            raise  # a full local disk is the command line's own one line
        fix = io.object_store_fix(flag)
        raise DataError(f"cannot use {flag} {url} ({_reason(e)}): {fix}") from None
