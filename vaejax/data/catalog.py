"""Every dataset by its name: what it is (:func:`dataset_spec`) and its splits as arrays
(:func:`load_split`), whichever of the four kinds the name is. :data:`LOADERS` maps each name (or
name prefix) to the :class:`Loader` of its kind:

- ``mnist``, ``fashion_mnist``: the IDX pair (:mod:`vaejax.data.datasets`);
- ``cifar10``, ``svhn_cropped``, ``celeb_a``: the sources vaejax prepares without TensorFlow
  (:mod:`vaejax.data.sources`, :mod:`vaejax.data.source_builder`);
- ``folder:PATH``: the user's own images (:mod:`vaejax.data.folder`);
- any other tfds image dataset, by its tfds name, once prepared as array_record files in the data
  directory (:mod:`vaejax.data.tfds_any`): tfds' own builders need TensorFlow to prepare it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from vaejax.data import datasets, folder, idx, remote, source_builder, tfds_any
from vaejax.data.idx import DataError, ImageSplit
from vaejax.data.images import fit_to_size  # noqa: F401  (re-exported)
from vaejax.data.sources import SOURCES, builtin_names, source

FOLDER_PREFIX = "folder:"
DEFAULT_FOLDER_SIZE = 64  # the size a folder is prepared at when the run names none
SPLITS = ("train", "test")


def _tfds_folder(name: str) -> str:
    return name.split("/")[0].split(":")[0]


class Loader(NamedTuple):
    """How the names of one kind are read; each function takes the name first."""

    # (name, data_dir, image_size) -> the spec (see dataset_spec)
    spec: Callable[[str, Any, int | None], Any]
    # (name, split, data_dir, raw_data_dir, image_size) -> the split, prepared first if needed
    load: Callable[[str, str, Any, Any, int | None], ImageSplit]
    # whether ``spec`` reads the data directory (staged first when it is in an object store)
    spec_reads_data_dir: bool = False
    # name -> its folder in a data directory (tfds' ``<data_dir>/<builder name>/``)
    dataset_dir: Callable[[str], str] = _tfds_folder
    # name -> the raw files vaejax prepares it from (none for names it does not prepare)
    raw_files: Callable[[str], tuple[str, ...]] = lambda name: ()


IDX_LOADER = Loader(
    spec=lambda name, data_dir, image_size: idx.DATASETS[name],
    load=lambda name, split, data_dir, raw_data_dir, image_size: datasets.load_split(
        name, split, data_dir, raw_data_dir
    ),
    raw_files=lambda name: tuple(f"{stem}.gz" for stem in idx.RAW_STEMS),
)
SOURCE_LOADER = Loader(
    spec=lambda name, data_dir, image_size: source(name).SPEC,
    load=lambda name, split, data_dir, raw_data_dir, image_size: source_builder.load_source_split(
        name, split, data_dir, raw_data_dir
    ),
    raw_files=lambda name: tuple(raw.name for raw in source(name).SPEC.raw_files),
)
FOLDER_LOADER = Loader(
    spec=lambda name, data_dir, image_size: folder.folder_spec(
        name, image_size or DEFAULT_FOLDER_SIZE, data_dir
    ),
    load=lambda name, split, data_dir, raw_data_dir, image_size: folder.load_folder_split(
        name, split, image_size or DEFAULT_FOLDER_SIZE, data_dir
    ),
    spec_reads_data_dir=True,
    dataset_dir=lambda name: folder.prepared_name(name[len(FOLDER_PREFIX) :]),
)
TFDS_LOADER = Loader(
    spec=lambda name, data_dir, image_size: tfds_any.tfds_spec(name, data_dir, image_size),
    load=lambda name, split, data_dir, raw_data_dir, image_size: tfds_any.load_tfds_split(
        name, split, data_dir, image_size
    ),
    spec_reads_data_dir=True,
)

# A name -> its loader; a key ending in ":" is a prefix (``folder:PATH``); "" is any other name.
LOADERS: dict[str, Loader] = {
    **dict.fromkeys(idx.DATASETS, IDX_LOADER),
    **dict.fromkeys(SOURCES, SOURCE_LOADER),
    FOLDER_PREFIX: FOLDER_LOADER,
    "": TFDS_LOADER,
}


def loader(name: str) -> Loader:
    """The loader of ``name`` in :data:`LOADERS`: its own, else that of the prefix it starts
    with, else that of any other name."""
    if name in LOADERS:
        return LOADERS[name]
    prefix = next((key for key in LOADERS if key.endswith(":") and name.startswith(key)), "")
    return LOADERS[prefix]


def dataset_spec(
    name: str, data_dir: os.PathLike | str | None = None, image_size: int | None = None
):
    """What is known about ``name``: ``name``, ``image_shape`` (H, W, C as delivered),
    ``class_names`` (empty without labels), ``num_classes``, ``num_examples`` (per split),
    ``attribute_names``.

    Cheap for the built-in names. A ``folder:PATH`` is prepared first (at ``image_size``, by
    default 64) and another tfds name is read from its prepared files in ``data_dir``.
    Raises :class:`DataError` for an unknown name.
    """
    kind = loader(name)
    if not kind.spec_reads_data_dir:
        return kind.spec(name, data_dir, image_size)
    with remote.staged(dataset_dir(name), data_dir, upload=False) as (data_dir, _):
        return kind.spec(name, data_dir, image_size)


def load_split(
    name: str,
    split: str,
    data_dir: os.PathLike | str | None = None,
    raw_data_dir: os.PathLike | str | None = None,
    image_size: int | None = None,
) -> ImageSplit:
    """One split (``train`` or ``test``) of ``name`` as uint8 arrays at the dataset's delivered
    shape, preparing it first if needed (see the module docstring for the names)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose train or test")
    if raw_data_dir and name not in builtin_names():
        raise DataError(
            f"--raw_data_dir applies to the datasets vaejax prepares from raw files "
            f"({', '.join(builtin_names())}), not to {name}: drop it"
        )
    staging = remote.staged(dataset_dir(name), data_dir, raw_data_dir, raw_file_names(name))
    with staging as (data_dir, raw_data_dir):
        return loader(name).load(name, split, data_dir, raw_data_dir, image_size)


def dataset_dir(name: str) -> str:
    """The folder of ``name`` in a data directory (tfds' ``<data_dir>/<builder name>/``)."""
    return loader(name).dataset_dir(name)


def raw_file_names(name: str) -> tuple[str, ...]:
    """The raw files vaejax prepares ``name`` from (none for names it does not prepare)."""
    return loader(name).raw_files(name)


def take(split: ImageSplit, n: int) -> ImageSplit:
    """The first ``n`` examples of ``split`` (all of them for 0)."""
    return select(split, slice(None, n)) if n else split


def select(split: ImageSplit, index) -> ImageSplit:
    """The examples ``index`` (a slice or an array of positions) of ``split``, each with its
    label and attributes."""
    attributes = None if split.attributes is None else split.attributes[index]
    return ImageSplit(split.images[index], split.labels[index], attributes)


def draw(split: ImageSplit, n: int, seed: int) -> ImageSplit:
    """``n`` examples of ``split`` drawn at random without replacement by ``seed``, kept in file
    order (all of them for 0 or n >= len). An evaluation on part of a test set takes these, not
    the first ``n``: the MNIST test file is ordered by writers (its first 5,000 images come from
    NIST's SD-3, its last 5,000 from SD-1, per LeCun's MNIST page), so its first images are not
    a sample of the whole (docs/results.md measures the difference)."""
    if not n or n >= len(split.images):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split.images), n, replace=False))
    return select(split, index)


def attribute_mask(split: ImageSplit, spec: Any, name: str) -> np.ndarray:
    """bool [N]: which examples of ``split`` have the binary attribute ``name`` (one of
    ``spec.attribute_names``, e.g. CelebA's "Smiling"); for
    :func:`vaejax.evaluation.latent.attribute_vector`. Raises :class:`DataError` for a dataset
    without it."""
    if name not in spec.attribute_names or split.attributes is None:
        known = ", ".join(spec.attribute_names) or "none"
        raise DataError(f"{spec.name} has no attribute {name!r} (its attributes: {known})")
    return np.asarray(split.attributes[:, spec.attribute_names.index(name)], bool)


def describe(spec: Any) -> str:
    """'cifar10 (32x32x3, 10 classes)' for the start line and errors."""
    h, w, c = spec.image_shape
    labels = f"{spec.num_classes} classes" if spec.num_classes else "no labels"
    return f"{spec.name} ({h}x{w}x{c}, {labels})"
