"""Datasets other than the IDX pair: what each one is, where its raw files come from, how its
records become uint8 arrays.

A **source** describes one dataset that vaejax prepares itself without TensorFlow
(:data:`SOURCES`: ``cifar10``, ``svhn_cropped``, ``celeb_a``). Each lives in its own module and
provides a :class:`SourceSpec` plus three functions:

- ``features()``: the tfds ``FeaturesDict``, the same as tfds' own builder of that name and
  version, so the prepared folder has tfds' layout and ``tfds.data_source`` reads it;
- ``examples(paths, split)``: ``(key, example)`` pairs of one tfds split, read from the raw
  files (``paths``: raw file name -> local path) with the standard library and numpy;
- ``decode(record)``: a record read back by ``tfds.data_source`` -> :class:`Example` at the
  delivered ``image_shape`` (e.g. CelebA's 218x178 photos centre-cropped to 64x64).

Raw files are found in a folder (``--raw_data_dir``, ``$VAEJAX_RAW_DATA_DIR``, tfds' manual
folder; the folder itself or its ``<name>/`` subfolder) or downloaded through tfds' download
manager, and checked by size and SHA-256 against :attr:`SourceSpec.raw_files`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from vaejax.data.idx import DataError, file_sha256


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
    (CelebA). ``splits`` maps vaejax's two splits to the tfds split names. ``class_names`` is
    empty for data without labels (their label is 0); ``attribute_names`` lists binary
    attributes delivered with each image (CelebA's 40).
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
    homepage: str = ""
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
    return importlib.import_module(SOURCES[name])


def check_raw_file(path: Path, raw: RawFile, dataset: str) -> None:
    """Raises :class:`DataError` unless ``path`` is the official ``raw`` file (size, SHA-256)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"missing raw data file {path}") from None
    if size != raw.size:
        raise DataError(
            f"{path} has {size:,} bytes, not the {raw.size:,} of the official {dataset} file "
            f"{raw.name}: replace it with a fresh copy of {raw.url}"
        )
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise DataError(f"cannot read the raw data file {path} ({e.strerror})") from None
    if digest != raw.sha256:
        raise DataError(
            f"{path} is damaged (its SHA-256 is not the official {dataset} file's): replace it "
            f"with a fresh copy of {raw.url}"
        )


def holds_raw_files(folder: Path, spec: SourceSpec) -> bool:
    return all((folder / raw.name).is_file() for raw in spec.raw_files)


def raw_file_names(spec: SourceSpec) -> str:
    return ", ".join(raw.name for raw in spec.raw_files)
