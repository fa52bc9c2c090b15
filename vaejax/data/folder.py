"""A folder of the user's own images (``--dataset folder:PATH``) as a tfds dataset, without
TensorFlow.

The folder is prepared once per image size into tfds' standard layout
(``<data_dir>/folder_<basename>_<8 hex>/<S>x<S>/1.0.0/``, array_record files that
``tfds.data_source`` reads) and read back as uint8 arrays, cached next to the prepared files
like the other datasets (:mod:`vaejax.data.cache`).

tfds' own ``tfds.folder_dataset.ImageFolder`` is not used: it lists the folder with
``tf.io.gfile`` and decodes the files with ``tf.image``, so without TensorFlow it fails as soon as
it is constructed (``No module named 'tensorflow'``). It also prepares nothing (it re-reads and
re-decodes the original files on every pass), needs ``train/`` and ``test/`` folders, has no
common image size, and stops at the first file it cannot decode.

**The folder** is listed, split, labelled and decoded by :mod:`vaejax.data.folder_scan` (each
image file by :mod:`vaejax.data.folder_decode`), whose docstrings give the rules; preparing logs
its one-line summary, also :attr:`FolderSpec.summary`.

**Preparing.** The prepared name identifies the folder: ``folder_<basename>_<8 hex>`` (the
basename in lower-case letters, digits and ``_``; the hex digits from the SHA-256 of the
resolved absolute path) with the image size as tfds config (``<S>x<S>``). Features: ``image``
``Image(shape=(S, S, C))`` and, for a labelled folder, ``label`` ``ClassLabel(names)``; an
unlabelled folder's records hold the image only. ``metadata.json`` in the prepared folder, written
by tfds with the rest before the folder takes its final name, holds the SHA-256 of the folder's
listing (relative paths, sizes, modification times) with the summary: each use lists the folder
again (no image is opened for it), and a folder whose listing changed is prepared again, the old
copy being moved aside (``incomplete.*``) and removed once the new one is in place. Preparing
takes the lock of :mod:`vaejax.data.datasets` and removes what killed preparations left; a
read-only data directory holding an up-to-date copy serves it without writing.

Without tensorflow-datasets installed, the folder is decoded directly on each run instead (the
same arrays, in the same order).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import operator
import os
import re
import shutil
import types
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from vaejax.data.cache import decoded_split
from vaejax.data.datasets import (
    check_prepared,
    default_data_dir,
    is_prepared,
    preparation_lock,
    remove_leftovers,
    writing_into,
)
from vaejax.data.folder_scan import SPLITS, FolderImages, Listing, read_folder, scan
from vaejax.data.folder_scan import in_test_split as in_test_split  # re-exported
from vaejax.data.idx import DataError, ImageSplit

log = logging.getLogger(__name__)

FOLDER_PREFIX = "folder:"
MIN_IMAGE_SIZE = 8
VERSION = "1.0.0"
METADATA_FILE = "metadata.json"  # written by tfds from DatasetInfo.metadata


def parse_folder_name(dataset: str) -> Path | None:
    """``folder:PATH`` -> ``Path(PATH).expanduser()``; None for any other dataset name."""
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    path = dataset[len(FOLDER_PREFIX) :]
    if not path.strip():
        raise DataError(
            f"{dataset!r} names no folder: pass --dataset folder:PATH with PATH a folder of images"
        )
    return Path(path).expanduser()


def prepared_name(folder: os.PathLike | str) -> str:
    """The tfds name ``folder`` is prepared under: ``folder_<basename>_<8 hex>``."""
    resolved = Path(folder).expanduser().resolve()
    base = re.sub(r"[^a-z0-9]+", "_", resolved.name.lower()).strip("_")[:40].strip("_")
    digest = hashlib.sha256(os.fsencode(str(resolved))).hexdigest()[:8]
    return f"folder_{base or 'root'}_{digest}"


def config_name(image_size: int) -> str:
    return f"{image_size}x{image_size}"


@dataclasses.dataclass(frozen=True)
class FolderSpec:
    """What a run needs to know of a prepared folder (the interface of the other datasets'
    specs), with where it was prepared and its summary line."""

    name: str  # "folder:PATH", as given
    path: Path
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]  # empty for an unlabelled folder (labels 0)
    num_examples: Mapping[str, int]
    summary: str
    builder_dir: Path | None  # None where tfds is missing and the folder is read directly
    attribute_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def folder_spec(
    dataset: str, image_size: int, data_dir: os.PathLike | str | None = None
) -> FolderSpec:
    """The spec of the folder ``dataset`` (``folder:PATH``) at ``image_size``, preparing it
    first when it is not prepared at that size or its listing changed since (which reads every
    image: minutes for a large folder, once)."""
    return _resolve(dataset, image_size, data_dir)[0]


def load_folder_split(
    dataset: str, split: str, image_size: int, data_dir: os.PathLike | str | None = None
) -> ImageSplit:
    """One split (``train`` or ``test``) of the folder ``dataset`` as uint8 images [N, S, S, C]
    and int32 labels [N] (0 for an unlabelled folder), in record order; prepares the folder
    first if needed (:func:`folder_spec`)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose train or test")
    spec, direct = _resolve(dataset, image_size, data_dir)
    if direct is not None:
        return direct.splits[split]
    return decoded_split(
        spec.builder_dir,
        split,
        spec.num_examples[split],
        spec.image_shape,
        lambda out: _read_prepared(spec, split, out),
        what=f"{spec.name}/{split}",
    )


def _resolve(
    dataset: str, image_size: int, data_dir: os.PathLike | str | None
) -> tuple[FolderSpec, FolderImages | None]:
    """The folder's spec, preparing it if needed; without tfds, also the folder decoded."""
    root = _folder(dataset)
    size = _check_size(image_size)
    listing = scan(root)
    digest = listing.digest(size)
    if not _have_tfds():
        direct = _read_directly(listing, size, digest)
        return _spec(dataset, root, None, direct.meta), direct
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / prepared_name(root) / config_name(size) / VERSION
    meta = _current(builder_dir, digest)
    if meta is None:
        meta = _prepare_locked(listing, size, digest, data_dir)
    check_prepared(builder_dir)
    return _spec(dataset, root, builder_dir, meta), None


def _folder(dataset: str) -> Path:
    root = parse_folder_name(dataset)
    if root is None:
        raise DataError(f"{dataset!r} is not a folder: pass --dataset folder:PATH")
    return root


def _check_size(image_size: int) -> int:
    try:
        size = operator.index(image_size)
    except TypeError:
        size = None
    if size is None or size < MIN_IMAGE_SIZE:
        raise DataError(
            f"image size {image_size!r} is too small for a folder of images: pass "
            f"--image_size {MIN_IMAGE_SIZE} or more"
        )
    return size


# ---------------------------------------------------------------------------- tfds


def _have_tfds() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


_DIRECT: dict[tuple[str, int, str], FolderImages] = {}  # the last folder read without tfds


def _read_directly(listing: Listing, size: int, digest: str) -> FolderImages:
    key = (os.fspath(listing.root), size, digest)
    if key not in _DIRECT:
        _DIRECT.clear()
        _DIRECT[key] = read_folder(listing, size, digest)
        log.info("%s", _DIRECT[key].meta["summary"])
    return _DIRECT[key]


def _current(builder_dir: Path, digest: str) -> dict[str, Any] | None:
    """The metadata of the copy in ``builder_dir`` if it was prepared from the listing
    ``digest``; None when there is none or it is out of date."""
    if not is_prepared(builder_dir):
        return None
    try:
        meta = json.loads((builder_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("listing_digest") != digest:
        return None
    return meta


def _spec(dataset: str, root: Path, builder_dir: Path | None, meta: Mapping) -> FolderSpec:
    return FolderSpec(
        name=dataset,
        path=root,
        image_shape=tuple(int(n) for n in meta["image_shape"]),
        class_names=tuple(meta["class_names"]),
        num_examples={split: int(meta["num_examples"][split]) for split in SPLITS},
        summary=meta["summary"],
        builder_dir=builder_dir,
    )


def _prepare_locked(listing: Listing, size: int, digest: str, data_dir: Path) -> dict[str, Any]:
    """Prepares the folder under the lock of its prepared name, unless another process did
    meanwhile; returns the metadata."""
    name = prepared_name(listing.root)
    config_dir = data_dir / name / config_name(size)
    builder_dir = config_dir / VERSION
    with preparation_lock(data_dir, name) as locked:
        meta = _current(builder_dir, digest)
        if meta is not None:
            log.info("%s was prepared in %s by another process", listing.root, data_dir)
            return meta
        if locked:
            remove_leftovers(config_dir)
        read = read_folder(listing, size, digest)  # before anything is written
        stale = None
        try:
            with writing_into(data_dir, str(listing.root)):
                if builder_dir.exists() or builder_dir.is_symlink():
                    stale = config_dir / f"incomplete.{uuid.uuid4().hex[:8]}_replaced_{VERSION}"
                    log.info("%s changed since it was prepared: preparing it again", listing.root)
                    builder_dir.rename(stale)
                log.info("preparing %s in %s (once)", listing.root, builder_dir)
                _builder(name, size, data_dir, read).download_and_prepare()
        finally:
            if stale is not None:
                shutil.rmtree(stale, ignore_errors=True)
    log.info("%s", read.meta["summary"])
    return read.meta


def _builder(name: str, size: int, data_dir: Path, read: FolderImages):
    """The tfds builder writing ``read`` as ``<data_dir>/<name>/<S>x<S>/1.0.0``."""
    import tensorflow_datasets as tfds

    config = tfds.core.BuilderConfig(
        name=config_name(size), description=f"the images fitted to {size}x{size}"
    )

    def body(namespace):
        namespace.update(name=name, BUILDER_CONFIGS=[config])

    base = _base_builder()
    cls = types.new_class("PreparedFolder", (base,), {"skip_registration": True}, body)
    return cls(
        read=read,
        data_dir=os.fspath(data_dir),
        config=config.name,
        file_format="array_record",
    )


@functools.cache
def _base_builder():
    """The builder class, made on first use: importing tfds takes a while."""
    import tensorflow_datasets as tfds

    from vaejax.data.tfds_builders import LocalDatasetInfo, QuietPreparation

    class FolderBuilder(QuietPreparation, tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Writes a decoded folder; examples keep its record order
        (:mod:`vaejax.data.folder_scan`)."""

        VERSION = tfds.core.Version(VERSION)

        def __init__(self, *, read: FolderImages, **kwargs):
            self._read = read
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            meta = self._read.meta
            features = {"image": tfds.features.Image(shape=tuple(meta["image_shape"]))}
            if meta["class_names"]:
                features["label"] = tfds.features.ClassLabel(names=meta["class_names"])
            return LocalDatasetInfo(
                builder=self,
                description=f"The images of {meta['source']}, prepared by vaejax.",
                features=tfds.features.FeaturesDict(features),
                supervised_keys=("image", "label") if meta["class_names"] else None,
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(meta),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split: str):
            arrays = self._read[split]
            labelled = bool(self._read.meta["class_names"])
            for index, (image, label) in enumerate(zip(arrays.images, arrays.labels)):
                # A PIL image is PNG-encoded by PIL; a numpy array would need TensorFlow.
                picture = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
                example = {"image": picture}
                if labelled:
                    example["label"] = int(label)
                yield index, example

    return FolderBuilder


def _read_prepared(spec: FolderSpec, split: str, out: ImageSplit) -> None:
    """Decodes a prepared split with tfds (every record, in order) into ``out``'s arrays, a
    thousand records at a time."""
    import tensorflow_datasets as tfds

    n = spec.num_examples[split]
    try:
        source = tfds.builder_from_directory(os.fspath(spec.builder_dir)).as_data_source(split)
        if len(source) != n:
            raise ValueError(f"it holds {len(source)} images, not {n}")
        for start in range(0, n, 1000):
            records = source.__getitems__(range(start, min(start + 1000, n)))
            images = np.stack([r["image"] for r in records]).astype(np.uint8)
            out.images[start : start + len(records)] = images.reshape(-1, *spec.image_shape)
            labels = [r["label"] for r in records] if spec.class_names else 0
            out.labels[start : start + len(records)] = labels
    except Exception as e:  # noqa: BLE001 - any failure here means damaged prepared files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot read the prepared {spec.name} {split} split ({reason}): delete "
            f"{spec.builder_dir} to prepare it again"
        ) from None
