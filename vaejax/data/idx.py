"""The datasets' specs and the raw IDX files: reading and checking them."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

RAW_DATA_DIR_ENV = "VAEJAX_RAW_DATA_DIR"


TFDS_VERSION = "3.0.1"  # the version of tfds' own mnist / fashion_mnist builders: same layout


class DataError(Exception):
    """A dataset cannot be found, downloaded or read. The message names the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What is known about one raw IDX dataset."""

    name: str
    url: str
    class_names: tuple[str, ...]
    # md5 of the *uncompressed* IDX bytes of the official files. The gzip wrapper is not
    # checked: re-compressed copies of the same data are equally valid.
    md5: dict[str, str]
    num_examples: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"train": 60_000, "test": 10_000}
    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


IMAGE_SHAPE = (28, 28, 1)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        class_names=tuple(str(i) for i in range(10)),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}"
        ) from None


class ImageSplit(NamedTuple):
    """One split in memory: ``images`` uint8 [N, 28, 28, 1], ``labels`` int32 [N]."""

    images: np.ndarray
    labels: np.ndarray


def read_idx(path: os.PathLike | str, spec: DatasetSpec | None = None) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format) into a uint8 array.

    IDX: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions, one big-endian
    uint32 per dimension, then the data in C order. With ``spec`` the uncompressed bytes must also
    match the official md5. Raises :class:`DataError` for a missing, truncated or corrupt file.
    """
    path = Path(path)
    fix = "replace it with a fresh copy of the official file"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing raw data file {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}): {fix}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        raise DataError(f"{path} is not a uint8 IDX file (bad header {raw[:4]!r}): {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header: {fix}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: {fix}"
        )
    if spec is not None:
        stem = path.name.removesuffix(".gz")
        want, got = spec.md5.get(stem), hashlib.md5(raw).hexdigest()
        if want is not None and got != want:
            others = [other.name for other in DATASETS.values() if other.md5.get(stem) == got]
            if others:
                raise DataError(
                    f"{path} is {others[0]} data, not {spec.name}: point the raw data "
                    f"folder at the {spec.name} files"
                )
            raise DataError(f"{path} does not match the official {spec.name} data (md5): {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(raw_dir: os.PathLike | str, split: str, spec: DatasetSpec) -> ImageSplit:
    """Reads one split from a folder holding the raw ``.gz`` files; checks shapes and md5."""
    image_file, label_file = IDX_FILES[split]
    return read_idx_pair(
        Path(raw_dir) / f"{image_file}.gz", Path(raw_dir) / f"{label_file}.gz", split, spec
    )


def read_idx_pair(
    image_path: os.PathLike | str, label_path: os.PathLike | str, split: str, spec: DatasetSpec
) -> ImageSplit:
    """Reads the image and label files of one split; checks shapes and md5."""
    images = read_idx(image_path, spec)
    labels = read_idx(label_path, spec)
    n = spec.num_examples[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DataError(
            f"{spec.name} {split}: {image_path} has shape {images.shape} and {label_path} "
            f"{labels.shape}, expected ({n}, 28, 28) and ({n},)"
        )
    return ImageSplit(images[..., None], labels.astype(np.int32))
