"""Any tfds image dataset by its tfds name, read with ``tfds.data_source`` without TensorFlow.

tfds' own builders need TensorFlow to *prepare* a dataset (to download, decode and encode the
images), so vaejax reads one only once it is prepared as array_record files in the data directory
(``tfds build NAME --file_format=array_record --data_dir DIR`` where TensorFlow is installed; or
any machine's prepared copy, copied or on a shared bucket). With TensorFlow installed, vaejax
prepares it itself. The names vaejax prepares without TensorFlow (MNIST, Fashion-MNIST,
CIFAR-10, SVHN, CelebA) and image folders do not come here (:mod:`vaejax.data.catalog`).

The first image feature is the image, a ``label`` class feature (or the supervised label) the
label. The test split is tfds' ``test``, else ``validation``. Images of a fixed square size are
delivered as they are; others are centre-cropped and resized to ``--image_size`` (default 64).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vaejax.data.cache import decoded_split
from vaejax.data.datasets import check_prepared, default_data_dir
from vaejax.data.idx import DataError, ImageSplit
from vaejax.data.images import fit_to_size
from vaejax.data.sources import builtin_names

log = logging.getLogger(__name__)
DEFAULT_SIZE = 64


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """What vaejax reads of a prepared tfds dataset (see :func:`tfds_spec`)."""

    name: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    num_examples: Mapping[str, int]
    image_key: str
    label_key: str | None
    splits: Mapping[str, str]  # vaejax split -> tfds split
    data_dir: str
    attribute_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def _unknown(name: str, known: list[str]) -> DataError:
    close = difflib.get_close_matches(
        name, list(dict.fromkeys([*builtin_names(), *known])), 3, 0.75
    )
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return DataError(
        f"unknown dataset {name!r}{hint}: choose {', '.join(builtin_names())}, another tfds "
        f"image dataset by its tfds name, or folder:PATH for a folder of images"
    )


def _builder(name: str, data_dir: str):
    tfds = _tfds()
    base = name.split("/")[0].split(":")[0]
    known = tfds.list_builders(with_community_datasets=False)
    if base not in known:
        raise _unknown(name, known)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - a bad config or version name, said in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"tfds cannot open {name!r} ({reason}): check the name") from None


def _image_feature(features) -> tuple[str, tuple]:
    tfds = _tfds()
    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            return key, tuple(feature.shape)
    kinds = ", ".join(f"{k} ({type(f).__name__})" for k, f in features.items())
    raise DataError(f"has no image feature ({kinds}): choose an image dataset")


def _label_key(info) -> str | None:
    tfds = _tfds()
    features = info.features
    supervised = getattr(info, "supervised_keys", None)
    candidates = ["label"]
    if isinstance(supervised, tuple) and len(supervised) == 2 and isinstance(supervised[1], str):
        candidates.append(supervised[1])
    for key in candidates:
        if key in features and isinstance(features[key], tfds.features.ClassLabel):
            return key
    return None


def _prepare(builder, name: str, data_dir: str) -> None:
    if importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            f"{name} is not prepared in {data_dir}, and tfds' own {name} builder needs "
            f"TensorFlow to prepare it: run `tfds build {name} --file_format=array_record "
            f"--data_dir DIR` where TensorFlow is installed and pass --data_dir DIR, or put the "
            f"images in a folder and pass --dataset folder:PATH"
        )
    log.info("preparing %s in %s with tfds' own builder (once)", name, data_dir)
    builder.download_and_prepare(file_format="array_record")


def tfds_spec(
    name: str, data_dir: os.PathLike | str | None = None, image_size: int | None = None
) -> TfdsSpec:
    """The spec of the tfds dataset ``name`` prepared in ``data_dir`` (see the module)."""
    data_dir = os.fspath(Path(data_dir).expanduser() if data_dir else default_data_dir())
    builder = _builder(name, data_dir)
    try:
        key, shape = _image_feature(builder.info.features)
    except DataError as e:
        raise DataError(f"{name} {e}") from None
    if not builder.is_prepared():
        _prepare(builder, name, data_dir)
        builder = _builder(name, data_dir)
    check_prepared(Path(builder.data_dir))
    split_names = set(builder.info.splits.keys())
    test = next((s for s in ("test", "validation") if s in split_names), None)
    if "train" not in split_names or test is None:
        raise DataError(
            f"{name} has the splits {', '.join(sorted(split_names))}; vaejax needs train and "
            f"test (or validation)"
        )
    height, width, channels = (tuple(shape) + (None,) * 3)[:3]
    if height is None or height != width or image_size not in (None, height):
        size = image_size or DEFAULT_SIZE
        height = width = size
    label_key = _label_key(builder.info)
    names = tuple(builder.info.features[label_key].names) if label_key else ()
    splits = {"train": "train", "test": test}
    return TfdsSpec(
        name=name,
        image_shape=(int(height), int(width), int(channels or 3)),
        class_names=names,
        num_examples={s: builder.info.splits[t].num_examples for s, t in splits.items()},
        image_key=key,
        label_key=label_key,
        splits=splits,
        data_dir=data_dir,
    )


def load_tfds_split(
    name: str,
    split: str,
    data_dir: os.PathLike | str | None = None,
    image_size: int | None = None,
) -> ImageSplit:
    """One split of a prepared tfds dataset as uint8 [N, S, S, C] images and int32 labels:
    decoded once into the memory-mapped copy of :mod:`vaejax.data.cache` (one per delivered
    size), which later runs open without decoding."""
    spec = tfds_spec(name, data_dir, image_size)
    size, _, channels = spec.image_shape
    builder_dir = Path(_builder(name, spec.data_dir).data_dir)
    return decoded_split(
        builder_dir,
        f"{split}_{size}x{size}x{channels}",
        spec.num_examples[split],
        spec.image_shape,
        lambda out: _decode_into(spec, name, split, out),
        what=f"{name}/{split}",
    )


def _decode_into(spec, name: str, split: str, out: ImageSplit) -> None:
    """Decodes every record of the split into the rows of ``out``, 1,024 records at a time."""
    size, _, channels = spec.image_shape
    try:
        source = _tfds().data_source(
            name, split=spec.splits[split], data_dir=spec.data_dir, download=False
        )
        if len(source) != len(out.images):
            raise DataError(f"{len(source)} records where its info says {len(out.images)}")
        for start in range(0, len(source), 1024):
            rows = range(start, min(start + 1024, len(source)))
            for i, record in zip(rows, source.__getitems__(rows)):
                image = np.asarray(record[spec.image_key], np.uint8)
                image = image.reshape(*image.shape[:2], -1)
                out.images[i] = fit_to_size(_channels(image, channels)[None], size)[0]
                out.labels[i] = int(record[spec.label_key]) if spec.label_key else 0
    except Exception as e:  # noqa: BLE001 - damaged prepared files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot read the prepared {name} {split} split ({reason}): prepare it again"
        ) from None


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[H, W, c] -> [H, W, channels]: grey repeated, alpha dropped."""
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] == 1:
        return np.repeat(image, channels, axis=-1)
    return image[..., :channels]
