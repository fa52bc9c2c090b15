"""CIFAR-10: 32x32 colour images in 10 classes, read from the official binary tarball.

The prepared folder is what tfds' own ``cifar10`` builder (version 3.0.2) writes: features
``id`` (text, ``train_00000``...), ``image`` uint8 [32, 32, 3] and ``label`` (10 classes named
by ``batches.meta.txt``). It differs from tfds' own builder in three ways: the tarball is read
with :mod:`tarfile` (tfds' own extracts it and reads with ``tf.io.gfile``), images are
PNG-encoded by PIL rather than TensorFlow (other bytes, the same pixels), and records keep the
order of the raw files (``data_batch_1.bin`` ... ``data_batch_5.bin``, then ``test_batch.bin``),
which tfds' own builder shuffles.

Binary layout (https://www.cs.toronto.edu/~kriz/cifar.html): each ``.bin`` file is a run of
3073-byte rows, a label byte then the 1024 red, 1024 green and 1024 blue bytes of one image,
each channel row by row.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from vaejax.data.idx import DataError
from vaejax.data.images import image_array
from vaejax.data.source_spec import Example, RawFile, SourceSpec

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin/"  # every member lies in this folder of the tarball
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
META_FILE = "batches.meta.txt"
IMAGE_SHAPE = (32, 32, 3)
ROW_BYTES = 1 + 32 * 32 * 3

SPEC = SourceSpec(
    name="cifar10",
    version="3.0.2",  # tfds' own cifar10 builder
    image_shape=IMAGE_SHAPE,
    class_names=(
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    num_examples={"train": 50_000, "test": 10_000},
    # tensorflow_datasets 4.9.10, url_checksums/cifar10.txt
    raw_files=(
        RawFile(
            name=ARCHIVE,
            url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            size=170_052_171,
            sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        ),
    ),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    description=(
        "CIFAR-10: 60,000 32x32 colour images in 10 classes, 50,000 for training and 10,000 "
        "for testing."
    ),
)


def features() -> Any:
    """tfds' own ``cifar10`` features (the label names are those of ``batches.meta.txt``)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=IMAGE_SHAPE),
            "label": tfds.features.ClassLabel(names=list(SPEC.class_names)),
        }
    )


def _read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    """The members ``names`` (inside :data:`FOLDER`) of the tarball, read in one pass."""
    wanted = {FOLDER + name for name in names}
    found = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:  # a stream: no seeking back and forth
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name.removeprefix(FOLDER)] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{archive} is not a readable tar.gz file ({e}): replace it with a fresh copy of "
            f"{SPEC.raw_files[0].url}"
        ) from None
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(
            f"{archive} lacks {', '.join(FOLDER + name for name in missing)}: replace it with "
            f"a fresh copy of {SPEC.raw_files[0].url}"
        )
    return found


def label_names(meta: bytes) -> tuple[str, ...]:
    """The class names of ``batches.meta.txt``: one a line, blank lines ignored."""
    return tuple(line.strip() for line in meta.decode().splitlines() if line.strip())


def examples(paths: Mapping[str, Path], split: str) -> Iterator[tuple[int, dict]]:
    """The examples of the tfds split ``split`` in file order, keyed by their index.

    Images are given as PIL images, which tfds PNG-encodes with PIL (a numpy array would need
    TensorFlow).
    """
    archive = Path(paths[ARCHIVE])
    files = list(SPLIT_FILES[split])
    members = _read_members(archive, [*files, META_FILE])
    names = label_names(members[META_FILE])
    if names != SPEC.class_names:
        raise DataError(
            f"{archive}: {FOLDER}{META_FILE} names the classes {', '.join(names)}, not "
            f"CIFAR-10's: replace it with a fresh copy of {SPEC.raw_files[0].url}"
        )
    index = 0
    for name in files:
        data = members.pop(name)  # frees each file once read
        if len(data) % ROW_BYTES:
            raise DataError(
                f"{archive}: {FOLDER}{name} holds {len(data):,} bytes, not a whole number of "
                f"{ROW_BYTES}-byte rows: replace it with a fresh copy of {SPEC.raw_files[0].url}"
            )
        rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, ROW_BYTES)
        images = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for label, image in zip(rows[:, 0], images):
            if label >= len(names):
                raise DataError(
                    f"{archive}: {FOLDER}{name} has the label {label}, not one of 0-9: "
                    f"replace it with a fresh copy of {SPEC.raw_files[0].url}"
                )
            example = {
                "id": f"{split}_{index:05d}",  # as tfds' own builder names them
                "image": PIL.Image.fromarray(np.ascontiguousarray(image)),
                "label": int(label),
            }
            yield index, example
            index += 1


def decode(record: Mapping[str, Any]) -> Example:
    """A record (or an example) -> uint8 [32, 32, 3] image and its label."""
    image = image_array(record["image"])
    if image.shape != IMAGE_SHAPE:
        raise ValueError(f"a cifar10 image of shape {image.shape}, not {IMAGE_SHAPE}")
    return Example(image, int(record["label"]), np.zeros(0, dtype=bool))
