"""Datasets other than the IDX pair: what each one is, where its raw files come from, how its
records become uint8 arrays.

A **source** describes one dataset that vaejax prepares itself without TensorFlow
(:data:`SOURCES`: ``cifar10``, ``svhn_cropped``, ``celeb_a``). Each lives in its own module and
provides a :class:`SourceSpec` plus three functions (the types: :mod:`vaejax.data.source_spec`):

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

from vaejax.data import celeba, cifar, idx, svhn
from vaejax.data.idx import DataError
from vaejax.data.images import image_array  # noqa: F401  (re-exported)
from vaejax.data.source_spec import (  # noqa: F401  (re-exported)
    Example,
    RawFile,
    Source,
    SourceSpec,
    check_raw_file,
    find_raw_dir,
    raw_file_names,
)

# name -> the module implementing Source
SOURCES: dict[str, Source] = {
    "cifar10": cifar,
    "svhn_cropped": svhn,
    "celeb_a": celeba,
}


def builtin_names() -> tuple[str, ...]:
    """The names vaejax prepares itself, offline from raw files included."""
    return (*idx.DATASETS, *SOURCES)


def source(name: str) -> Source:
    """The module of the dataset ``name`` (a key of :data:`SOURCES`)."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}: choose one of {', '.join(sorted(SOURCES))}"
        ) from None
