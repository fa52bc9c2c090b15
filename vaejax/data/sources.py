"""Datasets other than the IDX pair: what each one is, where its raw files come from, how its
records become uint8 arrays.

A **source** describes one dataset that vaejax prepares itself without TensorFlow
(:data:`SOURCES`: ``cifar10``, ``svhn_cropped``, ``celeb_a``). Each lives in its own module and
provides a :class:`SourceSpec` plus three functions:

- ``features()``: the tfds ``FeaturesDict``, the same as tfds' own builder of that name and
  version, so the prepared folder has tfds' layout and ``tfds.data_source`` reads it;
- ``examples(paths, split)``: ``(key, example)`` pairs of one tfds split in the order of the
  raw files, read from them (``paths``: raw file name -> local path) with the standard library,
  numpy and ``scipy.io``; images are given in forms tfds encodes without TensorFlow (PIL images,
  which PIL encodes, or JPEG bytes, which tfds stores as they are);
- ``decode(record)``: a record read back by ``tfds.data_source`` (or an example) ->
  :class:`Example` at the delivered ``image_shape`` (e.g. CelebA's 218x178 photos
  centre-cropped to 64x64).

Raw files are found in a folder (:func:`find_raw_dir`: ``--raw_data_dir``,
``$VAEJAX_RAW_DATA_DIR``, tfds' manual folder; the folder itself or its ``<name>/`` subfolder)
or downloaded through tfds' download manager, and checked by size and SHA-256 against
:attr:`SourceSpec.raw_files` (:func:`check_raw_file`). :mod:`vaejax.data.source_builder`
prepares and loads them.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import PIL.Image

from vaejax.data.idx import DataError, file_sha256, search_raw_dir


@dataclasses.dataclass(frozen=True)
class RawFile:
    """One official raw file: its name in a raw-data folder, its URL, size and SHA-256."""

    name: str
    url: str
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """What is known about a dataset before it is read.

    ``image_shape`` is what the loader delivers (H, W, C), not necessarily what the records hold
    (CelebA). ``splits`` maps vaejax's two splits to the tfds split names, and ``num_examples``
    gives the size of each (keyed by vaejax's split name). ``other_splits`` are tfds splits
    that are prepared as tfds' own builder prepares them but not delivered by vaejax (CelebA's
    ``validation``). ``class_names`` is empty for data without labels (their label is 0);
    ``attribute_names`` lists binary attributes delivered with each image (CelebA's 40).
    """

    name: str
    version: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    num_examples: Mapping[str, int]
    raw_files: tuple[RawFile, ...] = ()
    attribute_names: tuple[str, ...] = ()
    splits: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "test": "test"}
    )
    other_splits: tuple[str, ...] = ()
    homepage: str = ""
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tfds_splits(self) -> tuple[str, ...]:
        """Every tfds split a preparation writes."""
        return (*self.splits.values(), *self.other_splits)

    @property
    def url(self) -> str:
        """Where the downloads come from: probed before a download starts."""
        return self.raw_files[0].url if self.raw_files else self.homepage


class Example(NamedTuple):
    """One decoded record: ``image`` uint8 [H, W, C], ``label`` int (0 without labels),
    ``attributes`` bool [A] (A = 0 without attributes)."""

    image: np.ndarray
    label: int
    attributes: np.ndarray


class Source(Protocol):
    SPEC: SourceSpec

    def features(self) -> Any: ...

    def examples(self, paths: Mapping[str, Path], split: str) -> Iterator[tuple[Any, dict]]: ...

    def decode(self, record: Mapping[str, Any]) -> Example: ...


# name -> module implementing Source (imported on first use)
SOURCES = {
    "cifar10": "vaejax.data.cifar",
    "svhn_cropped": "vaejax.data.svhn",
    "celeb_a": "vaejax.data.celeba",
}


def source(name: str) -> Source:
    """The module of the dataset ``name`` (a key of :data:`SOURCES`)."""
    try:
        module = SOURCES[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}: choose one of {', '.join(sorted(SOURCES))}"
        ) from None
    return importlib.import_module(module)


def check_raw_file(
    path: Path, raw: RawFile, dataset: str, fix: str | None = None, digest: bool = True
) -> None:
    """Raises :class:`DataError` unless ``path`` is the official ``raw`` file: its size first
    (instant), then, with ``digest``, its SHA-256 (about 3 s a GB). ``fix`` ends the message (by
    default: replace the file with a fresh copy of its URL)."""
    fix = fix or f"replace it with a fresh copy of {raw.url}"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"missing raw data file {path}") from None
    if size != raw.size:
        raise DataError(
            f"{path} has {size:,} bytes, not the {raw.size:,} of the official {dataset} file "
            f"{raw.name}: {fix}"
        )
    if not digest:
        return
    try:
        sha256 = file_sha256(path)
    except OSError as e:
        raise DataError(f"cannot read the raw data file {path} ({e.strerror})") from None
    if sha256 != raw.sha256:
        raise DataError(
            f"{path} is damaged (its SHA-256 is not the official {dataset} file's): {fix}"
        )


def raw_file_names(spec: SourceSpec) -> str:
    return ", ".join(raw.name for raw in spec.raw_files)


def find_raw_dir(
    spec: SourceSpec,
    raw_data_dir: os.PathLike | str | None = None,
    manual_dir: os.PathLike | str | None = None,
) -> Path | None:
    """The local folder with every raw file of ``spec``, or None to download them
    (:func:`vaejax.data.idx.search_raw_dir`)."""
    urls = {raw.name: raw.url for raw in spec.raw_files}
    return search_raw_dir(spec.name, urls, raw_data_dir, manual_dir)


def image_array(image: Any) -> np.ndarray:
    """An image as a uint8 array [H, W, C] from what a record or an example holds: an array
    (``tfds.data_source`` decoded it), encoded bytes (read with ``SkipDecoding``, or an example's
    JPEG), a file object or a PIL image (an example not yet written)."""
    if isinstance(image, np.ndarray):
        array = image
    else:
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = io.BytesIO(image)
        if isinstance(image, PIL.Image.Image):
            array = np.asarray(image)
        else:
            with PIL.Image.open(image) as opened:
                array = np.asarray(opened if opened.mode in ("L", "RGB") else opened.convert("RGB"))
    array = np.asarray(array, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
