"""What a source is (:mod:`vaejax.data.sources`): its :class:`SourceSpec` and official
:class:`RawFile` s, the :class:`Source` protocol its module follows, the :class:`Example` it
decodes; and the checks of its raw files (:func:`check_raw_file`, :func:`find_raw_dir`).

Below the sources' modules (:mod:`vaejax.data.cifar`, :mod:`vaejax.data.svhn`,
:mod:`vaejax.data.celeba`), which build on it, and below :mod:`vaejax.data.sources`, which
names them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

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
