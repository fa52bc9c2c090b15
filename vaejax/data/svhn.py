"""SVHN (cropped digits): 32x32 colour photos of house-number digits, from the official ``.mat``
files.

The prepared folder is what tfds' own ``svhn_cropped`` builder (version 3.1.0) writes for its
``train`` and ``test`` splits: features ``id`` (text, ``train_000000``...), ``image`` uint8
[32, 32, 3] and ``label`` (10 classes, ``0``-``9``). Only ``train_32x32.mat`` and
``test_32x32.mat`` are read: tfds' ``extra`` split (531,131 easier digits in a 1.3 GB file) is
neither downloaded nor prepared. Like tfds, the label ``10`` of the files (digit 0) becomes 0.
It differs from tfds' own builder in that the files are read with ``scipy.io.loadmat`` from a
local path (tfds' own opens them with ``tf.io.gfile``), images are PNG-encoded by PIL rather
than TensorFlow (other bytes, the same pixels), and records keep the order of the files, which
tfds' own builder shuffles.

File layout (http://ufldl.stanford.edu/housenumbers/): MATLAB v5 files holding ``X``, uint8
[32, 32, 3, N], and ``y``, [N, 1] with values 1-10.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from vaejax.data.idx import DataError
from vaejax.data.images import image_array
from vaejax.data.source_spec import Example, RawFile, SourceSpec

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
IMAGE_SHAPE = (32, 32, 3)

SPEC = SourceSpec(
    name="svhn_cropped",
    version="3.1.0",  # tfds' own svhn_cropped builder
    image_shape=IMAGE_SHAPE,
    class_names=tuple(str(digit) for digit in range(10)),
    num_examples={"train": 73_257, "test": 26_032},
    # tensorflow_datasets 4.9.10, datasets/svhn_cropped/checksums.tsv
    raw_files=(
        RawFile(
            name="train_32x32.mat",
            url="http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            size=182_040_794,
            sha256="435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
        ),
        RawFile(
            name="test_32x32.mat",
            url="http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            size=64_275_384,
            sha256="cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
        ),
    ),
    homepage="http://ufldl.stanford.edu/housenumbers/",
    description=(
        "SVHN, cropped digits: 32x32 colour photos of house-number digits from Google Street "
        "View, 73,257 for training and 26,032 for testing."
    ),
)


def features() -> Any:
    """tfds' own ``svhn_cropped`` features."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(num_classes=10),
            "id": tfds.features.Text(),
        }
    )


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as uint8 [N, 32, 32, 3] and ``y`` as the digits 0-9 [N] from an SVHN ``.mat`` file."""
    import scipy.io

    fix = "replace it with a fresh copy of the official file"
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except FileNotFoundError:
        raise DataError(f"missing raw data file {path}") from None
    except Exception as e:  # noqa: BLE001 - scipy raises many kinds for a damaged file
        raise DataError(f"{path} is not a readable MATLAB file ({e}): {fix}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the variables X and y of an SVHN file: {fix}")
    images, labels = mat["X"], mat["y"]
    n = images.shape[-1] if images.ndim == 4 else -1
    if images.shape[:3] != IMAGE_SHAPE or labels.size != n:
        raise DataError(
            f"{path} holds X {images.shape} and y {labels.shape}, not [32, 32, 3, N] and "
            f"[N, 1]: {fix}"
        )
    labels = labels.reshape(n)
    if n and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path} holds labels outside 1-10: {fix}")
    return np.moveaxis(images, -1, 0).astype(np.uint8, copy=False), (labels % 10).astype(np.int32)


def examples(paths: Mapping[str, Path], split: str) -> Iterator[tuple[int, dict]]:
    """The examples of the tfds split ``split`` (``train`` or ``test``) in file order, keyed by
    their index. Images are given as PIL images, which tfds PNG-encodes with PIL (a numpy array
    would need TensorFlow)."""
    images, labels = read_mat(Path(paths[SPLIT_FILES[split]]))
    for index, (image, label) in enumerate(zip(images, labels)):
        example = {
            "image": PIL.Image.fromarray(np.ascontiguousarray(image)),
            "label": int(label),
            "id": f"{split}_{index:06d}",  # as tfds' own builder names them
        }
        yield index, example


def decode(record: Mapping[str, Any]) -> Example:
    """A record (or an example) -> uint8 [32, 32, 3] image and its digit."""
    image = image_array(record["image"])
    if image.shape != IMAGE_SHAPE:
        raise ValueError(f"an svhn_cropped image of shape {image.shape}, not {IMAGE_SHAPE}")
    return Example(image, int(record["label"]), np.zeros(0, dtype=bool))
