"""The datasets' specs and the raw IDX files: finding, reading and checking them."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

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
    # md5 of the *uncompressed* IDX bytes of the official files: re-compressed copies of the same
    # data are equally valid.
    md5: dict[str, str]
    # (size, SHA-256) of the official ``.gz`` downloads: the cheap check of a raw file.
    gz: dict[str, tuple[int, str]]
    num_examples: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"train": 60_000, "test": 10_000}
    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return IMAGE_SHAPE

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return ()


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


RAW_STEMS = tuple(stem for pair in IDX_FILES.values() for stem in pair)


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
        # from tensorflow_datasets 4.9.10, tensorflow_datasets/url_checksums/mnist.txt. A copy
        # re-compressed from the same data has other .gz bytes: it is recognised by ``md5``.
        gz={
            "train-images-idx3-ubyte": (
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            "train-labels-idx1-ubyte": (
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            "t10k-images-idx3-ubyte": (
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            "t10k-labels-idx1-ubyte": (
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
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
        # from tensorflow_datasets 4.9.10, tensorflow_datasets/url_checksums/fashion_mnist.txt;
        # the files with these digests have the gz md5s that Fashion-MNIST publishes
        # (8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...)
        gz={
            "train-images-idx3-ubyte": (
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            "train-labels-idx1-ubyte": (
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            "t10k-images-idx3-ubyte": (
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            "t10k-labels-idx1-ubyte": (
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
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
    """One split in memory: ``images`` uint8 [N, H, W, C], ``labels`` int32 [N] (0 for data
    without labels), ``attributes`` bool [N, A] for data with binary attributes (CelebA), else
    None."""

    images: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray | None = None


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


def file_sha256(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_raw_file(
    path: os.PathLike | str, spec: DatasetSpec, verified: tuple[str, ...] | list[str] = ()
) -> tuple[str, bool]:
    """The SHA-256 of the raw ``.gz`` file ``path`` and whether it proves the file official.

    True: the official download itself (its size and SHA-256, :attr:`DatasetSpec.gz`), or a file
    whose SHA-256 is in ``verified`` (copies found equal to the official data before). False:
    another gzip wrapper of possibly the same data (a re-compressed copy), which only its
    uncompressed bytes can tell: :func:`read_idx` with ``spec`` checks them. Raises
    :class:`DataError` for a file of the official size with another digest (damaged) and for
    another dataset's official file. Costs one read of the file (MNIST: ~20 ms for all four).
    """
    path = Path(path)
    stem = path.name.removesuffix(".gz")
    size, official = spec.gz[stem]
    try:
        got_size = path.stat().st_size
        digest = file_sha256(path)
    except FileNotFoundError:
        raise DataError(f"missing raw data file {path}") from None
    except OSError as e:
        raise DataError(f"cannot read the raw data file {path} ({e.strerror})") from None
    if digest == official or digest in verified:
        return digest, True
    others = [other.name for other in DATASETS.values() if other.gz[stem][1] == digest]
    if others:
        raise DataError(
            f"{path} is {others[0]} data, not {spec.name}: point the raw data folder at the "
            f"{spec.name} files"
        )
    if got_size == size:
        raise DataError(
            f"{path} is damaged (its SHA-256 is not the official {spec.name} file's): replace "
            f"it with a fresh copy of the official file"
        )
    return digest, False


def check_raw_files(
    raw_dir: os.PathLike | str, spec: DatasetSpec, memo: Path | None = None
) -> None:
    """Raises :class:`DataError` unless the four raw files in ``raw_dir`` are the official ones.

    The official downloads are recognised by size and SHA-256 (MNIST ~20 ms, Fashion-MNIST
    ~45 ms), as are files whose SHA-256 the JSON file ``memo`` lists. Another gzip wrapper of the
    data (a re-compressed copy) is decompressed and checked by the md5 of its content (MNIST
    ~0.5 s), then its SHA-256 is added to ``memo`` (when writable) for the next runs.
    """
    verified = read_verified(memo) if memo is not None else {}
    fresh = {}
    for stem in RAW_STEMS:
        path = Path(raw_dir) / f"{stem}.gz"
        digest, known = check_raw_file(path, spec, verified.get(stem, ()))
        if not known:
            read_idx(path, spec)
            fresh[stem] = digest
    if memo is not None:
        remember_verified(memo, fresh)


# Kept next to the prepared files: SHA-256s of raw files found equal to the official data
VERIFIED_FILE = "vaejax_verified_raw_files.json"


def read_verified(memo: Path) -> dict[str, list[str]]:
    try:
        verified = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    return verified if isinstance(verified, dict) else {}


def remember_verified(memo: Path, digests: dict[str, str]) -> None:
    """Adds ``digests`` (stem -> SHA-256) to ``memo`` if its folder is writable."""
    if not digests or not memo.parent.is_dir():
        return
    verified = read_verified(memo)
    for stem, digest in digests.items():
        known = verified.setdefault(stem, [])
        if isinstance(known, list) and digest not in known:
            known.append(digest)
    payload = json.dumps(verified, indent=1).encode()
    write_atomically(memo, lambda f: f.write(payload))


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> OSError | None:
    """Writes ``path`` with ``write(file)`` whole or not at all (a reader never sees half a
    file); returns the error when the folder is not writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # on a read-only file system unlink fails too
            tmp.unlink(missing_ok=True)
        return e
    return None


def search_raw_dir(
    name: str,
    urls: Mapping[str, str],
    raw_data_dir: os.PathLike | str | None = None,
    manual_dir: os.PathLike | str | None = None,
) -> Path | None:
    """The local folder holding every raw file of dataset ``name`` (``urls``: file name -> its
    official URL), or None to download them.

    Looked for, in this order: ``raw_data_dir`` (the ``--raw_data_dir`` flag), the environment
    variable ``VAEJAX_RAW_DATA_DIR``, tfds' manual directory ``<data_dir>/downloads/manual``.
    Each may be the folder holding the files or a parent with a ``<name>/`` folder holding them.
    A folder given explicitly (flag or environment) that holds neither is an error, naming the
    files it lacks.
    """
    holds = lambda folder: all((folder / file).is_file() for file in urls)
    files = ", ".join(urls)
    explicit = [
        (raw_data_dir, "--raw_data_dir"),
        (os.environ.get(RAW_DATA_DIR_ENV) or None, RAW_DATA_DIR_ENV),
    ]
    for folder, origin in explicit:
        if folder is None:
            continue
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"{origin}={folder} does not exist: point it at the folder with the {name} raw "
                f"files ({files})"
            )
        candidates = (folder, folder / name)
        for candidate in candidates:
            if holds(candidate):
                return candidate
        for candidate in candidates:  # some of the files: name the others
            missing = [file for file in urls if not (candidate / file).is_file()]
            if len(missing) < len(urls):
                raise DataError(
                    f"{origin}={folder}: {candidate} holds some {name} raw files but not "
                    f"{', '.join(missing)}: add {'it' if len(missing) == 1 else 'them'} "
                    f"({' '.join(urls[file] for file in missing)})"
                )
        raise DataError(
            f"{origin}={folder} holds neither the {name} raw files ({files}) nor a {name}/ "
            f"folder with them"
        )
    if manual_dir is not None:
        for candidate in (Path(manual_dir) / name, Path(manual_dir)):
            if holds(candidate):
                return candidate
    return None


def find_raw_dir(
    name: str,
    raw_data_dir: os.PathLike | str | None = None,
    manual_dir: os.PathLike | str | None = None,
) -> Path | None:
    """The local folder with the four raw ``.gz`` files of ``name`` (:func:`search_raw_dir`)."""
    spec = dataset_spec(name)
    urls = {f"{stem}.gz": f"{spec.url}{stem}.gz" for stem in RAW_STEMS}
    return search_raw_dir(name, urls, raw_data_dir, manual_dir)
