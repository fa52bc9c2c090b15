"""A folder of the user's own images (``--dataset folder:PATH``) as a tfds dataset, without
TensorFlow.

The folder is prepared once per image size into tfds' standard layout
(``<data_dir>/folder_<basename>_<8 hex>/<S>x<S>/1.0.0/``, array_record files that
``tfds.data_source`` reads) and read back as uint8 arrays, cached next to the prepared files
(``vaejax_decoded_<split>.npz``) like the other datasets (:mod:`vaejax.data.datasets`).

tfds' own ``tfds.folder_dataset.ImageFolder`` is not used: it lists the folder with
``tf.io.gfile`` and decodes the files with ``tf.image``, so without TensorFlow it fails as soon as
it is constructed (``No module named 'tensorflow'``). It also prepares nothing (it re-reads and
re-decodes the original files on every pass), needs ``train/`` and ``test/`` folders, has no
common image size, and stops at the first file it cannot decode.

**The folder.** Every file below ``PATH`` is looked at, recursively, following links to files
and folders (a folder reached twice is listed once); names starting with ``.`` (``.DS_Store``,
``._photo.jpg``, ``.git/``) are ignored, as are sockets, pipes and devices.

- Splits: when ``PATH`` holds both a ``train/`` and a ``test/`` folder, those are the splits
  (and nothing else in ``PATH`` is read). Otherwise an image is in the test split when the first
  8 bytes of the SHA-256 of its path relative to ``PATH`` (``/``-separated, the file system's
  bytes), read as a big-endian integer, are below a tenth of 2**64 (:func:`in_test_split`): about
  10% of the images, chosen the same way on every machine whatever the listing order, and an
  image keeps its split when others are added. With no image chosen, the one of smallest hash
  goes to the test split; with every image chosen, the one of largest hash stays in training.
  Both splits need an image: a folder needs at least 2.
- Labels: when a split's images lie in sub-folders, its immediate sub-folders holding usable
  images are the classes, their names sorted (Python's string order) -> labels 0..K-1, taken over
  both splits; images lying directly in the split's folder are then skipped (``outside class
  folders``). With no image in a sub-folder the dataset is unlabelled: no classes, label 0.
- Record order: each split's images sorted by their relative path (Python's string order), so
  record ``i`` of a split is its ``i``-th usable file in that order.

**Images.** Whatever PIL opens is accepted: PNG, JPEG, GIF, BMP, TIFF, WebP and the rest of
PIL's formats; of an animation or multi-page file, the first frame. The EXIF orientation is
applied. Files PIL does not recognise are skipped as ``not images``, unless their extension is an
image format's (``.png``, ``.jpg``, ...: a damaged image); those and the files PIL recognises but
cannot decode (truncated, damaged, too large for PIL) are skipped as ``unreadable``. Pixels
become 8-bit:

- grey images (PIL modes ``1``, ``L``, ``LA``, ``I;16``, ``I``, ``F``) stay grey: 1-bit as 0/255,
  16-bit (``I;16``, and ``I`` taken as 16-bit, clipped to 0..65535) as ``round(v / 257)``, float
  (``F``) rounded and clipped to 0..255;
- transparency (alpha channel or a transparent colour) is composited on **white**, as an image
  is shown on a page: ``round((c * a + 255 * (255 - a)) / 255)``;
- palette (``P``), CMYK, YCbCr and other colour modes become RGB by PIL's conversion.

The dataset has 1 channel when every usable image is grey, else 3 (grey images then repeated in
R, G and B). Each image is then fitted to ``S x S`` (``S`` = ``image_size``, at least 8): an
image already ``S x S`` is kept bit for bit; otherwise one whose shorter side is not ``S`` is
resized (PIL's antialiased Lanczos filter) so that its shorter side is ``S`` and its longer side
``round(long * S / short)`` (halves up), then the centred ``S x S`` square is cut out (left and
top offsets ``(length - S) // 2``). Preparing logs one line, also :attr:`FolderSpec.summary`::

    folder /x: 3,120 images (2,808 train, 312 test) in 10 classes, 32x32x3; skipped 2 unreadable
    (first: cat/a.png), 5 not images; converted 7 grey, 1 RGBA, 1 CMYK; resized 40, cropped 2

(``resized``: scaled then cropped; ``cropped``: only cropped).

**Preparing.** The prepared name identifies the folder: ``folder_<basename>_<8 hex>`` (the
basename in lower-case letters, digits and ``_``; the hex digits from the SHA-256 of the
resolved absolute path) with the image size as tfds config (``<S>x<S>``). Features: ``image``
``Image(shape=(S, S, C))`` and, for a labelled folder, ``label`` ``ClassLabel(names)``; an
unlabelled folder's records hold the image only. ``metadata.json`` in the prepared folder, written
by tfds with the rest before the folder takes its final name, holds the SHA-256 of the folder's
listing (relative paths, sizes, modification times) with the summary: each use lists the folder
again (no image is opened for it), and a folder whose listing changed is prepared again, the old
copy being moved aside (``incomplete.*``) and removed once the new one is in place. Preparing
takes the lock of :mod:`vaejax.data.datasets` and removes what killed preparations left; a
read-only data directory holding an up-to-date copy serves it without writing.

Without tensorflow-datasets installed, the folder is decoded directly on each run instead (the
same arrays, in the same order).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import operator
import os
import re
import shutil
import stat
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import PIL.ImageOps

from vaejax.data.datasets import (
    _WRITE_ERRNOS,
    _cache_path,
    _check_prepared,
    _is_prepared,
    _preparation_lock,
    _remove_leftovers,
    _save_cache,
    default_data_dir,
)
from vaejax.data.idx import DataError, ImageSplit

log = logging.getLogger(__name__)

FOLDER_PREFIX = "folder:"
MIN_IMAGE_SIZE = 8
VERSION = "1.0.0"
SPLITS = ("train", "test")
TEST_FRACTION = 0.1  # of the images, when the folder has no train/ and test/ folders
BACKGROUND = 255  # what transparent pixels become: white
METADATA_FILE = "metadata.json"  # written by tfds from DatasetInfo.metadata
# Part of each listing's digest: a change to how images are read prepares every folder again.
RULES = 1
PROGRESS_EVERY_S = 10.0  # a line of progress while a large folder is read

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa"})
# how the summary names the images of each PIL mode that were converted
MODE_NAMES = {
    "1": "1-bit",
    "L": "grey",
    "LA": "grey+alpha",
    "F": "float",
    "P": "palette",
    "PA": "palette",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    **{mode: "16-bit" for mode in SIXTEEN_BIT_MODES},
}
NOT_IMAGE, UNREADABLE, OUTSIDE = "not images", "unreadable", "outside class folders"


def parse_folder_name(dataset: str) -> Path | None:
    """``folder:PATH`` -> ``Path(PATH).expanduser()``; None for any other dataset name."""
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    path = dataset[len(FOLDER_PREFIX) :]
    if not path.strip():
        raise DataError(
            f"{dataset!r} names no folder: pass --dataset folder:PATH with PATH a folder of images"
        )
    return Path(path).expanduser()


def in_test_split(relative_path: str) -> bool:
    """Whether the image at ``relative_path`` (``/``-separated, relative to the folder) is in the
    test split of a folder without ``train/`` and ``test/`` folders (before the rule that each
    split gets an image)."""
    return _path_hash(relative_path) < TEST_FRACTION * 2**64


def prepared_name(folder: os.PathLike | str) -> str:
    """The tfds name ``folder`` is prepared under: ``folder_<basename>_<8 hex>``."""
    resolved = Path(folder).expanduser().resolve()
    base = re.sub(r"[^a-z0-9]+", "_", resolved.name.lower()).strip("_")[:40].strip("_")
    digest = hashlib.sha256(os.fsencode(str(resolved))).hexdigest()[:8]
    return f"folder_{base or 'root'}_{digest}"


def config_name(image_size: int) -> str:
    return f"{image_size}x{image_size}"


@dataclasses.dataclass(frozen=True)
class FolderSpec:
    """What a run needs to know of a prepared folder (the interface of the other datasets'
    specs), with where it was prepared and its summary line."""

    name: str  # "folder:PATH", as given
    path: Path
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]  # empty for an unlabelled folder (labels 0)
    num_examples: Mapping[str, int]
    summary: str
    builder_dir: Path | None  # None where tfds is missing and the folder is read directly
    attribute_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def folder_spec(
    dataset: str, image_size: int, data_dir: os.PathLike | str | None = None
) -> FolderSpec:
    """The spec of the folder ``dataset`` (``folder:PATH``) at ``image_size``, preparing it
    first when it is not prepared at that size or its listing changed since (which reads every
    image: minutes for a large folder, once)."""
    return _resolve(dataset, image_size, data_dir)[0]


def load_folder_split(
    dataset: str, split: str, image_size: int, data_dir: os.PathLike | str | None = None
) -> ImageSplit:
    """One split (``train`` or ``test``) of the folder ``dataset`` as uint8 images [N, S, S, C]
    and int32 labels [N] (0 for an unlabelled folder), in record order; prepares the folder
    first if needed (:func:`folder_spec`)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose train or test")
    spec, direct = _resolve(dataset, image_size, data_dir)
    if direct is not None:
        return direct.splits[split]
    cache = _cache_path(spec.builder_dir, split)
    loaded = _load_cache(cache, spec, split)
    if loaded is None:
        start = time.perf_counter()
        loaded = _read_prepared(spec, split)
        log.info("decoded %s/%s in %.1f s", spec.name, split, time.perf_counter() - start)
        _save_cache(cache, loaded)
    return loaded


def _resolve(
    dataset: str, image_size: int, data_dir: os.PathLike | str | None
) -> tuple[FolderSpec, _Read | None]:
    """The folder's spec, preparing it if needed; without tfds, also the folder decoded."""
    root = _folder(dataset)
    size = _check_size(image_size)
    listing = _scan(root)
    digest = listing.digest(size)
    if not _have_tfds():
        direct = _read_directly(listing, size, digest)
        return _spec(dataset, root, None, direct.meta), direct
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / prepared_name(root) / config_name(size) / VERSION
    meta = _current(builder_dir, digest)
    if meta is None:
        meta = _prepare_locked(listing, size, digest, data_dir)
    _check_prepared(builder_dir)
    return _spec(dataset, root, builder_dir, meta), None


# ---------------------------------------------------------------------------- the listing


class _Entry(NamedTuple):
    rel: str  # "/"-separated path relative to the folder
    split: str | None  # the split folder it lies in; None: chosen by in_test_split
    group: str | None  # the sub-folder of the split's folder it lies in (a class); None: none
    size: int  # -1: cannot be stat'ed (a broken link)
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class _Listing:
    root: Path
    entries: tuple[_Entry, ...]  # sorted by rel
    split_folders: bool

    def digest(self, image_size: int) -> str:
        h = hashlib.sha256(
            json.dumps(
                {"rules": RULES, "image_size": image_size, "split_folders": self.split_folders}
            ).encode()
        )
        for entry in self.entries:
            h.update(os.fsencode(entry.rel) + f"\0{entry.size}\0{entry.mtime_ns}\n".encode())
        return h.hexdigest()


def _folder(dataset: str) -> Path:
    root = parse_folder_name(dataset)
    if root is None:
        raise DataError(f"{dataset!r} is not a folder: pass --dataset folder:PATH")
    return root


def _check_size(image_size: int) -> int:
    try:
        size = operator.index(image_size)
    except TypeError:
        size = None
    if size is None or size < MIN_IMAGE_SIZE:
        raise DataError(
            f"image size {image_size!r} is too small for a folder of images: pass "
            f"--image_size {MIN_IMAGE_SIZE} or more"
        )
    return size


def _scan(root: Path) -> _Listing:
    """Lists ``root``'s files (no image is opened)."""
    try:
        st = root.stat()
    except FileNotFoundError:
        raise DataError(
            f"image folder {root} does not exist: pass --dataset folder:PATH with PATH an "
            f"existing folder of images"
        ) from None
    except OSError as e:
        raise DataError(
            f"cannot read the image folder {root} ({e.strerror or e}): make it readable or "
            f"pass another folder:PATH"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataError(
            f"{root} is a file, not a folder: pass --dataset folder:{root.parent} (the folder "
            f"holding it) or another folder of images"
        )
    split_folders = all((root / split).is_dir() for split in SPLITS)
    tops = [(root / s, f"{s}/", s) for s in SPLITS] if split_folders else [(root, "", None)]
    entries = []
    for top, prefix, split in tops:
        for rel, file_stat in _walk(top, prefix):
            inner = rel[len(prefix) :]
            group = inner.split("/", 1)[0] if "/" in inner else None
            size, mtime = (file_stat.st_size, file_stat.st_mtime_ns) if file_stat else (-1, 0)
            entries.append(_Entry(rel, split, group, size, mtime))
    if not entries:
        raise DataError(
            f"image folder {root} holds no files (names starting with '.' are ignored): put "
            f"PNG or JPEG images in it, in one sub-folder per class if they have classes"
        )
    entries.sort(key=lambda e: e.rel)
    return _Listing(root, tuple(entries), split_folders)


def _walk(top: Path, prefix: str) -> Iterator[tuple[str, os.stat_result | None]]:
    """(relative path, stat or None for a broken link) of each regular file below ``top``."""
    seen = set()
    stack = [(top, prefix)]
    while stack:
        folder, rel = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:  # a link to a folder already listed
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                items = list(it)
        except OSError as e:
            raise DataError(
                f"cannot read the folder {folder} ({e.strerror or e}): make it readable or "
                f"pass another folder:PATH"
            ) from None
        for item in items:
            if item.name.startswith("."):
                continue
            try:
                is_dir = item.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((Path(item.path), f"{rel}{item.name}/"))
                continue
            try:
                file_stat = item.stat()
            except OSError:
                yield f"{rel}{item.name}", None
                continue
            if stat.S_ISREG(file_stat.st_mode):
                yield f"{rel}{item.name}", file_stat


def _path_hash(relative_path: str) -> int:
    return int.from_bytes(hashlib.sha256(os.fsencode(relative_path)).digest()[:8], "big")


def _assign_splits(rels: list[str]) -> dict[str, str]:
    """rel -> split by :func:`in_test_split`, each split given at least one of 2+ images."""
    test = {rel for rel in rels if in_test_split(rel)}
    if not test:
        test = {min(rels, key=_path_hash)}
    if len(test) == len(rels):
        test.discard(max(rels, key=_path_hash))
    return {rel: "test" if rel in test else "train" for rel in rels}


# ---------------------------------------------------------------------------- the images


class _Unusable(Exception):
    def __init__(self, kind: str, reason: str = ""):
        super().__init__(reason)
        self.kind = kind


class _Image(NamedTuple):
    pixels: np.ndarray  # uint8 [S, S, 1] (grey) or [S, S, 3]
    mode: str  # the file's PIL mode
    resized: bool
    cropped: bool


def _decode(path: Path, size: int) -> _Image:
    try:
        with PIL.Image.open(path) as image:
            image.load()  # fails on a truncated file
            mode = image.mode
            picture = _to_8bit(_upright(image))
    except PIL.UnidentifiedImageError:
        if path.suffix.lower() in PIL.Image.registered_extensions():  # e.g. an empty photo.jpg
            raise _Unusable(UNREADABLE, "not recognised by PIL") from None
        raise _Unusable(NOT_IMAGE) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for damaged files
        raise _Unusable(UNREADABLE, f"{type(e).__name__}: {e}") from None
    picture, resized, cropped = _fit(picture, size)
    pixels = np.asarray(picture, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return _Image(pixels, mode, resized, cropped)


def _upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` turned as its EXIF orientation says (unchanged when it says nothing)."""
    try:
        return PIL.ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels are still good
        return image


def _to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` as 8-bit grey (``L``) when its mode is grey, else as ``RGB``; see the module
    docstring for the rules."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return PIL.Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        return PIL.Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if mode in ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:]
        flat = (rgba[..., :3] * alpha + BACKGROUND * (255 - alpha) + 127) // 255
        flat = flat.astype(np.uint8)
        return PIL.Image.fromarray(flat[..., 0] if mode in GREY_MODES else flat)
    if mode in ("L", "RGB"):
        return image
    return image.convert("L" if mode in GREY_MODES else "RGB")


def _fit(picture: PIL.Image.Image, size: int) -> tuple[PIL.Image.Image, bool, bool]:
    """(``picture`` fitted to ``size`` x ``size``, whether it was resized, whether only
    cropped)."""
    width, height = picture.size
    if width == height == size:
        return picture, False, False
    resized = min(width, height) != size
    if resized:
        short, long = min(width, height), max(width, height)
        scaled = (long * size + short // 2) // short
        width, height = (size, scaled) if width <= height else (scaled, size)
        picture = picture.resize((width, height), PIL.Image.Resampling.LANCZOS)
    left, top = (width - size) // 2, (height - size) // 2
    return picture.crop((left, top, left + size, top + size)), resized, not resized


# ---------------------------------------------------------------------------- a whole folder


@dataclasses.dataclass(frozen=True)
class _Read:
    """A folder decoded: its splits and what :class:`FolderSpec` and ``metadata.json`` hold."""

    splits: dict[str, ImageSplit]
    meta: dict[str, Any]

    def __getitem__(self, split: str) -> ImageSplit:
        return self.splits[split]


def _read_folder(listing: _Listing, size: int, digest: str) -> _Read:
    """Decodes every file of ``listing`` into both splits and the metadata (its summary line
    included)."""
    root = listing.root
    usable: list[tuple[_Entry, _Image]] = []
    skipped: collections.Counter[str] = collections.Counter()
    first_unreadable = None
    said = time.monotonic()
    for n, entry in enumerate(listing.entries):
        if time.monotonic() - said > PROGRESS_EVERY_S:
            log.info("reading %s: %s of %s files", root, f"{n:,}", f"{len(listing.entries):,}")
            said = time.monotonic()
        try:
            if entry.size < 0:
                raise _Unusable(UNREADABLE, "a broken link")
            image = _decode(root / entry.rel, size)
        except _Unusable as e:
            skipped[e.kind] += 1
            if e.kind == UNREADABLE and first_unreadable is None:
                first_unreadable = entry.rel
            log.debug("skipping %s: %s %s", root / entry.rel, e.kind, e)
            continue
        usable.append((entry, image))
    class_names = sorted({entry.group for entry, _ in usable if entry.group is not None})
    if class_names:
        skipped[OUTSIDE] = sum(entry.group is None for entry, _ in usable)
        usable = [(entry, image) for entry, image in usable if entry.group is not None]
    _check_class_names(root, class_names)
    skips = _skip_text(skipped, first_unreadable)
    fix = "put PNG or JPEG images in it, in one sub-folder per class if they have classes"
    if not usable:
        raise DataError(f"image folder {root} holds no image vaejax can read ({skips}): {fix}")
    if listing.split_folders:
        split_of = {entry.rel: entry.split for entry, _ in usable}
    elif len(usable) < 2:
        raise DataError(
            f"image folder {root} holds a single usable image ({skips or 'nothing skipped'}): "
            f"a dataset needs at least 2, one of them for the test split"
        )
    else:
        split_of = _assign_splits([entry.rel for entry, _ in usable])
    channels = 1 if all(image.mode in GREY_MODES for _, image in usable) else 3
    label_of = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split in SPLITS:
        chosen = [(e, image) for e, image in usable if split_of[e.rel] == split]
        if not chosen:
            raise DataError(
                f"{root / split} holds no usable image: put some of the images in it, or "
                f"remove {root}/train and {root}/test to let vaejax keep a tenth for testing"
            )
        images = np.stack([_with_channels(image.pixels, channels) for _, image in chosen])
        labels = np.asarray([label_of.get(e.group, 0) for e, _ in chosen], dtype=np.int32)
        splits[split] = ImageSplit(images, labels)
    converted = collections.Counter(_conversion(image.mode, channels) for _, image in usable)
    del converted[None]
    summary = _summary(
        root,
        {split: len(s.labels) for split, s in splits.items()},
        class_names,
        (size, size, channels),
        skips,
        converted,
        resized=sum(image.resized for _, image in usable),
        cropped=sum(image.cropped for _, image in usable),
    )
    meta = {
        "listing_digest": digest,
        "source": os.fsdecode(os.path.abspath(root)),
        "summary": summary,
        "image_shape": [size, size, channels],
        "class_names": class_names,
        "num_examples": {split: len(s.labels) for split, s in splits.items()},
    }
    return _Read(splits, meta)


def _with_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grey ``pixels`` [S, S, 1] repeated in R, G and B for a dataset of 3 channels."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] < channels else pixels


def _check_class_names(root: Path, names: list[str]) -> None:
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            bad = True
        else:
            bad = "\n" in name or "\r" in name
        if bad:
            raise DataError(
                f"the class folder {root / name!r} has a name that is not one line of text: "
                f"rename it"
            )


def _conversion(mode: str, channels: int) -> str | None:
    """How the summary names an image of ``mode`` that was converted; None: it was not."""
    if mode == "RGB" or (mode == "L" and channels == 1):
        return None
    return MODE_NAMES.get(mode, mode)


def _skip_text(skipped: Mapping[str, int], first_unreadable: str | None) -> str:
    parts = []
    for kind in (UNREADABLE, NOT_IMAGE, OUTSIDE):
        if skipped.get(kind):
            first = f" (first: {first_unreadable})" if kind == UNREADABLE else ""
            words = "not an image" if kind == NOT_IMAGE and skipped[kind] == 1 else kind
            parts.append(f"{skipped[kind]:,} {words}{first}")
    return ", ".join(parts)


def _summary(
    root: Path,
    counts: Mapping[str, int],
    class_names: list[str],
    shape: tuple[int, int, int],
    skips: str,
    converted: Mapping[str, int],
    resized: int,
    cropped: int,
) -> str:
    k = len(class_names)
    classes = f"in {k:,} class{'es' if k != 1 else ''}" if k else "unlabelled"
    line = (
        f"folder {root}: {sum(counts.values()):,} images ({counts['train']:,} train, "
        f"{counts['test']:,} test) {classes}, {'x'.join(map(str, shape))}"
    )
    if skips:
        line += f"; skipped {skips}"
    if converted:
        line += "; converted " + ", ".join(f"{n:,} {name}" for name, n in converted.items())
    fitted = [f"{word} {n:,}" for word, n in (("resized", resized), ("cropped", cropped)) if n]
    if fitted:
        line += "; " + ", ".join(fitted)
    return line


# ---------------------------------------------------------------------------- tfds


def _have_tfds() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


_DIRECT: dict[tuple[str, int, str], _Read] = {}  # the last folder read without tfds


def _read_directly(listing: _Listing, size: int, digest: str) -> _Read:
    key = (os.fspath(listing.root), size, digest)
    if key not in _DIRECT:
        _DIRECT.clear()
        _DIRECT[key] = _read_folder(listing, size, digest)
        log.info("%s", _DIRECT[key].meta["summary"])
    return _DIRECT[key]


def _current(builder_dir: Path, digest: str) -> dict[str, Any] | None:
    """The metadata of the copy in ``builder_dir`` if it was prepared from the listing
    ``digest``; None when there is none or it is out of date."""
    if not _is_prepared(builder_dir):
        return None
    try:
        meta = json.loads((builder_dir / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("listing_digest") != digest:
        return None
    return meta


def _spec(dataset: str, root: Path, builder_dir: Path | None, meta: Mapping) -> FolderSpec:
    return FolderSpec(
        name=dataset,
        path=root,
        image_shape=tuple(int(n) for n in meta["image_shape"]),
        class_names=tuple(meta["class_names"]),
        num_examples={split: int(meta["num_examples"][split]) for split in SPLITS},
        summary=meta["summary"],
        builder_dir=builder_dir,
    )


def _prepare_locked(listing: _Listing, size: int, digest: str, data_dir: Path) -> dict[str, Any]:
    """Prepares the folder under the lock of its prepared name, unless another process did
    meanwhile; returns the metadata."""
    name = prepared_name(listing.root)
    config_dir = data_dir / name / config_name(size)
    builder_dir = config_dir / VERSION
    with _preparation_lock(data_dir, name) as locked:
        meta = _current(builder_dir, digest)
        if meta is not None:
            log.info("%s was prepared in %s by another process", listing.root, data_dir)
            return meta
        if locked:
            _remove_leftovers(config_dir)
        read = _read_folder(listing, size, digest)  # before anything is written
        stale = None
        try:
            if builder_dir.exists() or builder_dir.is_symlink():
                stale = config_dir / f"incomplete.{uuid.uuid4().hex[:8]}_replaced_{VERSION}"
                log.info("%s changed since it was prepared: preparing it again", listing.root)
                builder_dir.rename(stale)
            log.info("preparing %s in %s (once)", listing.root, builder_dir)
            _builder(name, size, data_dir, read).download_and_prepare()
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS and "disk space" not in str(e):
                raise
            raise DataError(
                f"cannot prepare {listing.root} in {data_dir} ({e}): pass --data_dir to a "
                f"writable folder with room for it"
            ) from None
        finally:
            if stale is not None:
                shutil.rmtree(stale, ignore_errors=True)
    log.info("%s", read.meta["summary"])
    return read.meta


def _builder(name: str, size: int, data_dir: Path, read: _Read):
    """The tfds builder writing ``read`` as ``<data_dir>/<name>/<S>x<S>/1.0.0``."""
    import tensorflow_datasets as tfds

    config = tfds.core.BuilderConfig(
        name=config_name(size), description=f"the images fitted to {size}x{size}"
    )

    def body(namespace):
        namespace.update(name=name, BUILDER_CONFIGS=[config])

    base = _base_builder()
    cls = types.new_class("PreparedFolder", (base,), {"skip_registration": True}, body)
    return cls(
        read=read,
        data_dir=os.fspath(data_dir),
        config=config.name,
        file_format="array_record",
    )


@functools.cache
def _base_builder():
    """The builder class, made on first use: importing tfds takes a while."""
    import tensorflow_datasets as tfds

    class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Writes a decoded folder; examples keep the record order of the module docstring."""

        VERSION = tfds.core.Version(VERSION)

        def __init__(self, *, read: _Read, **kwargs):
            self._read = read
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            meta = self._read.meta
            features = {"image": tfds.features.Image(shape=tuple(meta["image_shape"]))}
            if meta["class_names"]:
                features["label"] = tfds.features.ClassLabel(names=meta["class_names"])
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"The images of {meta['source']}, prepared by vaejax.",
                features=tfds.features.FeaturesDict(features),
                supervised_keys=("image", "label") if meta["class_names"] else None,
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(meta),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split: str):
            arrays = self._read[split]
            labelled = bool(self._read.meta["class_names"])
            for index, (image, label) in enumerate(zip(arrays.images, arrays.labels)):
                # A PIL image is PNG-encoded by PIL; a numpy array would need TensorFlow.
                picture = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
                example = {"image": picture}
                if labelled:
                    example["label"] = int(label)
                yield index, example

    return FolderBuilder


def _read_prepared(spec: FolderSpec, split: str) -> ImageSplit:
    """Decodes a prepared split with tfds (every record, in order)."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.builder_from_directory(os.fspath(spec.builder_dir)).as_data_source(split)
        records = source.__getitems__(range(len(source)))
        images = np.stack([r["image"] for r in records]).astype(np.uint8)
        images = images.reshape(len(records), *spec.image_shape)
        if spec.class_names:
            labels = np.asarray([r["label"] for r in records], dtype=np.int32)
        else:
            labels = np.zeros(len(records), np.int32)
    except Exception as e:  # noqa: BLE001 - any failure here means damaged prepared files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot read the prepared {spec.name} {split} split ({reason}): delete "
            f"{spec.builder_dir} to prepare it again"
        ) from None
    if len(labels) != spec.num_examples[split]:
        raise DataError(
            f"the prepared {spec.name} {split} split holds {len(labels)} images, not "
            f"{spec.num_examples[split]}: delete {spec.builder_dir} to prepare it again"
        )
    return ImageSplit(images, labels)


def _load_cache(path: Path, spec: FolderSpec, split: str) -> ImageSplit | None:
    n = spec.num_examples[split]
    try:
        with np.load(path) as f:
            loaded = ImageSplit(f["images"], f["labels"])
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt from tfds
        log.warning("ignoring unreadable cache %s (%s); decoding again", path, e)
        return None
    if (
        loaded.images.shape != (n, *spec.image_shape)
        or loaded.images.dtype != np.uint8
        or loaded.labels.shape != (n,)
    ):
        log.warning("ignoring cache %s of the wrong shape; decoding again", path)
        return None
    return ImageSplit(loaded.images, loaded.labels.astype(np.int32))
