"""The decoded copy of a prepared split, kept next to its tfds files: ``.npy`` arrays that later
runs open memory-mapped.

``<builder_dir>/vaejax_decoded_<split>/images.npy`` (uint8 [N, H, W, C]), ``labels.npy`` (int32
[N]) and, for data with attributes, ``attributes.npy`` (bool [N, A]). Opening them reads nothing
yet: the operating system pages rows in as they are used, so a split larger than the host's
memory can still be streamed to the devices (``--data_on_device off``), and a run that uses part
of a split reads only that part. The folder is written whole or not at all (a temporary folder
renamed into place); an unreadable or misshapen copy is decoded again; a folder that cannot be
written is no error (the copy is optional).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vaejax.data.idx import ImageSplit

log = logging.getLogger(__name__)


def cache_folder(builder_dir: Path, split: str) -> Path:
    return builder_dir / f"vaejax_decoded_{split}"


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


def save_decoded(builder_dir: Path, split: str, data: ImageSplit) -> None:
    """Writes the decoded copy of ``split`` (whole or not at all; a folder that cannot be
    written is logged and skipped)."""
    folder = cache_folder(builder_dir, split)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    arrays = {"images": data.images, "labels": np.asarray(data.labels, np.int32)}
    if data.attributes is not None:
        arrays["attributes"] = np.asarray(data.attributes, np.bool_)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as e:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not write the decoded copy %s (%s); continuing without it", folder, e)


def decoded_split(
    builder_dir: Path,
    split: str,
    n: int,
    image_shape,
    decode: Callable[[], ImageSplit],
    num_attributes: int = 0,
    what: str = "",
) -> ImageSplit:
    """The decoded copy of ``split`` (memory-mapped), decoding it with ``decode()`` and keeping
    the copy the first time."""
    loaded = load_decoded(builder_dir, split, n, image_shape, num_attributes)
    if loaded is not None:
        return loaded
    start = time.perf_counter()
    decoded = decode()
    log.info("decoded %s in %.1f s", what or f"{builder_dir}/{split}", time.perf_counter() - start)
    save_decoded(builder_dir, split, decoded)
    return load_decoded(builder_dir, split, n, image_shape, num_attributes) or decoded
