"""MNIST and Fashion-MNIST: raw IDX files -> tfds (array_record) -> uint8 arrays -> device batches.

The path a dataset takes:

1. Raw files: the four IDX ``.gz`` files, found in a local folder (offline) or downloaded from
   the official URLs through tfds' download manager (online).
2. tfds: the builders in :mod:`vaejax.tfds_builders` read them with ``gzip`` + numpy and write the
   standard layout ``<data_dir>/<name>/3.0.1/`` (array_record files) — no TensorFlow needed.
3. Arrays: ``tfds.data_source`` reads the prepared split once; the decoded uint8 arrays are
   cached next to the tfds files (``vaejax_decoded_<split>.npz``) so later runs load in
   milliseconds.
4. Device: the whole split is placed on the device(s) as uint8 and turned into float batches
   there (:func:`make_batch_preprocessor`): scaling to [0, 1], dynamic binarization, padding.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

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
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
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


# ---------------------------------------------------------------------------------------------
# Raw IDX files


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
                raise DataError(f"{path} is {others[0]} data, not {spec.name}: point the raw data "
                                f"folder at the {spec.name} files")
            raise DataError(f"{path} does not match the official {spec.name} data (md5): {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(raw_dir: os.PathLike | str, split: str, spec: DatasetSpec) -> ImageSplit:
    """Reads one split from a folder holding the raw ``.gz`` files; checks shapes and md5."""
    image_file, label_file = IDX_FILES[split]
    return read_idx_pair(Path(raw_dir) / f"{image_file}.gz", Path(raw_dir) / f"{label_file}.gz",
                         split, spec)


def read_idx_pair(image_path: os.PathLike | str, label_path: os.PathLike | str, split: str,
                  spec: DatasetSpec) -> ImageSplit:
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


def _holds_raw_files(folder: Path) -> bool:
    return all((folder / f"{stem}.gz").is_file() for pair in IDX_FILES.values() for stem in pair)


def find_raw_dir(name: str, raw_data_dir: os.PathLike | str | None = None,
                 manual_dir: os.PathLike | str | None = None) -> Path | None:
    """The local folder with the four raw ``.gz`` files of ``name``, or None to download.

    Looked for, in this order: ``raw_data_dir`` (the ``--raw_data_dir`` flag), the environment
    variable ``VAEJAX_RAW_DATA_DIR``, tfds' manual directory ``<data_dir>/downloads/manual``.
    Each may be the folder holding the files or a parent with a ``<name>/`` folder holding them.
    A folder given explicitly (flag or environment) that holds neither is an error.
    """
    explicit = [(raw_data_dir, "--raw_data_dir"),
                (os.environ.get(RAW_DATA_DIR_ENV) or None, RAW_DATA_DIR_ENV)]
    for folder, origin in explicit:
        if folder is None:
            continue
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"{origin}={folder} does not exist: point it at the folder with "
                            f"the {name} raw .gz files")
        for candidate in (folder, folder / name):
            if _holds_raw_files(candidate):
                return candidate
        files = ", ".join(f"{stem}.gz" for pair in IDX_FILES.values() for stem in pair)
        raise DataError(
            f"{origin}={folder} holds neither the {name} raw files ({files}) nor a {name}/ "
            f"folder with them"
        )
    if manual_dir is not None:
        for candidate in (Path(manual_dir) / name, Path(manual_dir)):
            if _holds_raw_files(candidate):
                return candidate
    return None


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fails within ``timeout`` seconds if ``url`` cannot be reached.

    tfds' downloader retries a dead connection for minutes; this probe is asked first so an
    offline user hears about the offline option at once.
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered: downloads can go ahead (a directory URL may say 403/404)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot reach {url} ({reason})") from None


# ---------------------------------------------------------------------------------------------
# tfds preparation and the decoded-array cache


def default_data_dir() -> Path:
    """tfds' data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def prepare(name: str, data_dir: os.PathLike | str | None = None,
            raw_data_dir: os.PathLike | str | None = None) -> Path:
    """Makes sure ``<data_dir>/<name>/3.0.1`` is prepared; returns that folder.

    Nothing is done when it already is. Otherwise the raw files come from
    :func:`find_raw_dir`, or are downloaded; with neither possible this fails within seconds
    naming the offline option.
    """
    spec = dataset_spec(name)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / name / TFDS_VERSION
    if raw_data_dir is not None:
        find_raw_dir(name, raw_data_dir)  # a mistyped flag is an error even when not needed
    if (builder_dir / "dataset_info.json").is_file():
        _check_prepared(builder_dir)
        return builder_dir
    raw_dir = find_raw_dir(name, raw_data_dir, manual_dir=data_dir / "downloads" / "manual")
    splits = None
    if raw_dir is not None:  # read and checked before tfds starts writing anything
        splits = {split: read_idx_split(raw_dir, split, spec) for split in IDX_FILES}
    else:
        try:
            check_reachable(spec.url)
        except DataError as e:
            raise DataError(
                f"{name} is not prepared in {data_dir} and cannot be downloaded: {e}. Offline, "
                f"pass --raw_data_dir DIR (or set {RAW_DATA_DIR_ENV}=DIR) where DIR holds the "
                f"four raw .gz files, e.g. ../shared/data/{name}"
            ) from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the tfds data directory {data_dir} ({e}): "
                        "pass --data_dir to a writable folder") from None
    from vaejax import tfds_builders  # imports tensorflow_datasets, which takes seconds

    builder = tfds_builders.builder(name, data_dir=data_dir, splits=splits)
    log.info("preparing %s in %s from %s (once)", name, builder_dir, raw_dir or spec.url)
    try:
        builder.download_and_prepare()
    finally:
        if (data_dir / name).is_dir() and not any((data_dir / name).iterdir()):
            (data_dir / name).rmdir()  # leave no empty folder behind a failed preparation
    return builder_dir


def _check_prepared(builder_dir: Path) -> None:
    """A prepared folder must be readable by ``tfds.data_source``: array_record files."""
    try:
        info = json.loads((builder_dir / "dataset_info.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{builder_dir}/dataset_info.json is unreadable ({e}): delete "
                        f"{builder_dir} to prepare it again") from None
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "array_record":
        raise DataError(f"{builder_dir} holds {file_format} files, which tfds.data_source cannot "
                        f"read: pass another --data_dir (vaejax prepares array_record files)")


def _cache_path(builder_dir: Path, split: str) -> Path:
    return builder_dir / f"vaejax_decoded_{split}.npz"


def _load_cache(path: Path, expected_n: int) -> ImageSplit | None:
    try:
        with np.load(path) as f:
            split = ImageSplit(f["images"], f["labels"])
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt from tfds
        log.warning("ignoring unreadable cache %s (%s); decoding again", path, e)
        return None
    if split.images.shape != (expected_n, *IMAGE_SHAPE) or split.labels.shape != (expected_n,):
        log.warning("ignoring cache %s of the wrong shape; decoding again", path)
        return None
    return split


def _save_cache(path: Path, split: ImageSplit) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, images=split.images, labels=split.labels)
        os.replace(tmp, path)  # atomic: a reader never sees half a cache
    except OSError as e:
        log.warning("could not write the cache %s (%s); continuing without it", path, e)
        tmp.unlink(missing_ok=True)


def read_tfds_split(name: str, split: str, data_dir: os.PathLike | str) -> ImageSplit:
    """Decodes a prepared split with ``tfds.data_source`` (every image, in file order)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir),
                                  download=False)
        records = source.__getitems__(range(len(source)))
        images = np.stack([r["image"] for r in records]).astype(np.uint8)
        labels = np.asarray([r["label"] for r in records], dtype=np.int32)
        images = images.reshape(len(records), *IMAGE_SHAPE)
    except Exception as e:  # noqa: BLE001 - any failure here means damaged prepared files
        folder = Path(data_dir) / name / TFDS_VERSION
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read the prepared {name} {split} split ({reason}): delete "
                        f"{folder} to prepare it again") from None
    return ImageSplit(images, labels)


def load_split(name: str, split: str, data_dir: os.PathLike | str | None = None,
               raw_data_dir: os.PathLike | str | None = None) -> ImageSplit:
    """One split of ``name`` as uint8 arrays, preparing the tfds files first if needed.

    Without tensorflow-datasets installed (e.g. a bare accelerator image) the raw files are
    read directly from the raw data folder instead.
    """
    spec = dataset_spec(name)
    if split not in IDX_FILES:
        raise DataError(f"unknown split {split!r}: choose train or test")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        raw_dir = find_raw_dir(name, raw_data_dir)
        if raw_dir is None:
            raise DataError(
                f"tensorflow-datasets is not installed: pass --raw_data_dir DIR (or set "
                f"{RAW_DATA_DIR_ENV}) to the folder with the {name} raw .gz files"
            ) from None
        return read_idx_split(raw_dir, split, spec)
    builder_dir = prepare(name, data_dir, raw_data_dir)
    cache = _cache_path(builder_dir, split)
    loaded = _load_cache(cache, spec.num_examples[split])
    if loaded is None:
        start = time.perf_counter()
        loaded = read_tfds_split(name, split, builder_dir.parent.parent)
        log.info("decoded %s/%s in %.1f s", name, split, time.perf_counter() - start)
        _save_cache(cache, loaded)
    return loaded


# ---------------------------------------------------------------------------------------------
# Pixels

BINARIZATIONS = ("none", "dynamic", "static")


def fixed_binarization(images: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli draw per pixel with P(1) = intensity / 255, reproducible from ``seed``.

    Returns uint8 images with values in {0, 255}, so that they flow through the same
    uint8 -> [0, 1] path as grey images. Uses numpy's PCG64, the same on every platform.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    threshold = rng.random(images.shape, dtype=np.float32)
    return np.where(threshold < images.astype(np.float32) / 255.0, 255, 0).astype(np.uint8)


# Seeds of the fixed draws: the test set is binarized once with the same draw for every run
# and both binarization protocols; static training data gets its own draw.
TEST_BINARIZATION_SEED = 0
STATIC_TRAIN_BINARIZATION_SEED = 1


def apply_binarization_protocol(split: ImageSplit, binarization: str, train: bool) -> ImageSplit:
    """The host-side part of a binarization protocol.

    ``none``: unchanged. ``static``: both splits binarized once with fixed seeds. ``dynamic``:
    the test split binarized once with a fixed seed; the training split stays grey and is drawn
    afresh on the device each time an image is visited (once an epoch).
    """
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}: choose {', '.join(BINARIZATIONS)}")
    if binarization == "none" or (binarization == "dynamic" and train):
        return split
    seed = STATIC_TRAIN_BINARIZATION_SEED if train else TEST_BINARIZATION_SEED
    return ImageSplit(fixed_binarization(split.images, seed), split.labels)


def to_unit_interval(images: jax.Array) -> jax.Array:
    """uint8 [..., H, W, C] -> float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def binarize(key: jax.Array, images: jax.Array) -> jax.Array:
    """A Bernoulli draw per pixel with P(1) = the pixel's value in [0, 1]; float32 in {0, 1}."""
    return jax.random.bernoulli(key, images).astype(jnp.float32)


def pad_images(images: jax.Array, size: int) -> jax.Array:
    """Zero-pads [B, H, W, C] images evenly to [B, size, size, C] (28 -> 32 adds 2 each side)."""
    height, width = images.shape[-3], images.shape[-2]
    if size < height or size < width or (size - height) % 2 or (size - width) % 2:
        raise ValueError(f"cannot pad {height}x{width} images evenly to {size}x{size}")
    pad_h, pad_w = (size - height) // 2, (size - width) // 2
    return jnp.pad(images, [(0, 0)] * (images.ndim - 3) + [(pad_h, pad_h), (pad_w, pad_w), (0, 0)])


def make_batch_preprocessor(image_size: int = 28, dynamic_binarization: bool = False
                            ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Returns ``preprocess(images_uint8, key) -> float32 [B, image_size, image_size, 1]``.

    Runs on the device inside the compiled step: scale to [0, 1], optionally binarize with
    ``key``, zero-pad to ``image_size``.
    """

    def preprocess(images: jax.Array, key: jax.Array) -> jax.Array:
        x = to_unit_interval(images)
        if dynamic_binarization:
            x = binarize(key, x)
        if image_size != x.shape[-2]:
            x = pad_images(x, image_size)
        return x

    return preprocess
