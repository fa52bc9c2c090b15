"""MNIST and Fashion-MNIST: raw IDX files -> tfds (array_record) -> uint8 arrays -> device batches.

The path a dataset takes:

1. Raw files: the four IDX ``.gz`` files, found in a local folder (offline) or downloaded from
   the official URLs through tfds' download manager (online).
2. tfds: the builders in :mod:`vaejax.data.tfds_builders` read them with ``gzip`` + numpy and
   write the standard layout ``<data_dir>/<name>/3.0.1/`` (array_record files) — no TensorFlow
   needed.
3. Arrays: ``tfds.data_source`` reads the prepared split once; the decoded uint8 arrays are
   cached next to the tfds files (``vaejax_decoded_<split>.npz``) so later runs load in
   milliseconds.
4. Device: the whole split is placed on the device(s) as uint8 and turned into float batches
   there (:func:`vaejax.data.preprocess.make_batch_preprocessor`): scaling to [0, 1], dynamic
   binarization, padding.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from vaejax.data.idx import (
    IDX_FILES,
    IMAGE_SHAPE,
    RAW_DATA_DIR_ENV,
    TFDS_VERSION,
    DataError,
    ImageSplit,
    dataset_spec,
    read_idx_split,
)

log = logging.getLogger(__name__)


def _holds_raw_files(folder: Path) -> bool:
    return all((folder / f"{stem}.gz").is_file() for pair in IDX_FILES.values() for stem in pair)


def find_raw_dir(
    name: str,
    raw_data_dir: os.PathLike | str | None = None,
    manual_dir: os.PathLike | str | None = None,
) -> Path | None:
    """The local folder with the four raw ``.gz`` files of ``name``, or None to download.

    Looked for, in this order: ``raw_data_dir`` (the ``--raw_data_dir`` flag), the environment
    variable ``VAEJAX_RAW_DATA_DIR``, tfds' manual directory ``<data_dir>/downloads/manual``.
    Each may be the folder holding the files or a parent with a ``<name>/`` folder holding them.
    A folder given explicitly (flag or environment) that holds neither is an error.
    """
    explicit = [
        (raw_data_dir, "--raw_data_dir"),
        (os.environ.get(RAW_DATA_DIR_ENV) or None, RAW_DATA_DIR_ENV),
    ]
    for folder, origin in explicit:
        if folder is None:
            continue
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"{origin}={folder} does not exist: point it at the folder with "
                f"the {name} raw .gz files"
            )
        for candidate in (folder, folder / name):
            if _holds_raw_files(candidate):
                return candidate
        files = ", ".join(f"{stem}.gz" for pair in IDX_FILES.values() for stem in pair)
        raise DataError(
            f"{origin}={folder} holds neither the {name} raw files ({files}) nor a {name}/ "
            f"folder with them"
        )
    if manual_dir is not None:
        for candidate in (Path(manual_dir) / name, Path(manual_dir)):
            if _holds_raw_files(candidate):
                return candidate
    return None


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

    Nothing is done when it already is. Otherwise the raw files come from
    :func:`find_raw_dir`, or are downloaded; with neither possible this fails within seconds
    naming the offline option.
    """
    spec = dataset_spec(name)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / name / TFDS_VERSION
    if raw_data_dir is not None:
        find_raw_dir(name, raw_data_dir)  # a mistyped flag is an error even when not needed
    if (builder_dir / "dataset_info.json").is_file():
        _check_prepared(builder_dir)
        return builder_dir
    raw_dir = find_raw_dir(name, raw_data_dir, manual_dir=data_dir / "downloads" / "manual")
    splits = None
    if raw_dir is not None:  # read and checked before tfds starts writing anything
        splits = {split: read_idx_split(raw_dir, split, spec) for split in IDX_FILES}
    else:
        try:
            check_reachable(spec.url)
        except DataError as e:
            raise DataError(
                f"{name} is not prepared in {data_dir} and cannot be downloaded: {e}. Offline, "
                f"pass --raw_data_dir DIR (or set {RAW_DATA_DIR_ENV}=DIR) where DIR holds the "
                f"four raw .gz files, e.g. ../shared/data/{name}"
            ) from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the tfds data directory {data_dir} ({e}): "
            "pass --data_dir to a writable folder"
        ) from None
    from vaejax.data import (
        tfds_builders,  # imports tensorflow_datasets, which takes seconds
    )

    builder = tfds_builders.builder(name, data_dir=data_dir, splits=splits)
    log.info("preparing %s in %s from %s (once)", name, builder_dir, raw_dir or spec.url)
    try:
        builder.download_and_prepare()
    finally:
        if (data_dir / name).is_dir() and not any((data_dir / name).iterdir()):
            (data_dir / name).rmdir()  # leave no empty folder behind a failed preparation
    return builder_dir


def _check_prepared(builder_dir: Path) -> None:
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


def _cache_path(builder_dir: Path, split: str) -> Path:
    return builder_dir / f"vaejax_decoded_{split}.npz"


def _load_cache(path: Path, expected_n: int) -> ImageSplit | None:
    try:
        with np.load(path) as f:
            split = ImageSplit(f["images"], f["labels"])
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt from tfds
        log.warning("ignoring unreadable cache %s (%s); decoding again", path, e)
        return None
    if split.images.shape != (expected_n, *IMAGE_SHAPE) or split.labels.shape != (expected_n,):
        log.warning("ignoring cache %s of the wrong shape; decoding again", path)
        return None
    return split


def _save_cache(path: Path, split: ImageSplit) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, images=split.images, labels=split.labels)
        os.replace(tmp, path)  # atomic: a reader never sees half a cache
    except OSError as e:
        log.warning("could not write the cache %s (%s); continuing without it", path, e)
        tmp.unlink(missing_ok=True)


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
    cache = _cache_path(builder_dir, split)
    loaded = _load_cache(cache, spec.num_examples[split])
    if loaded is None:
        start = time.perf_counter()
        loaded = read_tfds_split(name, split, builder_dir.parent.parent)
        log.info("decoded %s/%s in %.1f s", name, split, time.perf_counter() - start)
        _save_cache(cache, loaded)
    return loaded
