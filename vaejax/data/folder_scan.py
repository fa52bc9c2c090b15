"""An image folder (``--dataset folder:PATH``, :mod:`vaejax.data.folder`) scanned and read into
uint8 arrays: which files are listed, which split and label each image gets, the number of
channels, and the one-line summary of what was read; each file is decoded by
:mod:`vaejax.data.folder_decode`. Nothing here writes to disk: preparing the arrays into tfds'
layout is :mod:`vaejax.data.folder`'s.

**The folder.** Every file below ``PATH`` is looked at, recursively, following links to files
and folders (a folder reached twice is listed once); names starting with ``.`` (``.DS_Store``,
``._photo.jpg``, ``.git/``) are ignored, as are sockets, pipes and devices. Listing the folder
(:func:`scan`) opens no image; the listing's digest (relative paths, sizes, modification times)
says whether a copy prepared from it is still up to date.

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

Each image is made 8-bit and fitted to ``S x S`` (:mod:`vaejax.data.folder_decode`). The dataset
has 1 channel when every usable image is grey, else 3 (grey images then repeated in R, G and B).
Reading the folder (:func:`read_folder`) sums it up in one line, which preparing logs, also
:attr:`vaejax.data.folder.FolderSpec.summary`::

    folder /x: 3,120 images (2,808 train, 312 test) in 10 classes, 32x32x3; skipped 2 unreadable
    (first: cat/a.png), 5 not images; converted 7 grey, 1 RGBA, 1 CMYK; resized 40, cropped 2

(``resized``: scaled then cropped; ``cropped``: only cropped).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vaejax.data.folder_decode import (
    GREY_MODES,
    NOT_IMAGE,
    SIXTEEN_BIT_MODES,
    UNREADABLE,
    DecodedImage,
    Unusable,
    decode,
)
from vaejax.data.idx import DataError, ImageSplit

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
TEST_FRACTION = 0.1  # of the images, when the folder has no train/ and test/ folders
# Part of each listing's digest: a change to how images are read prepares every folder again.
RULES = 1
PROGRESS_EVERY_S = 10.0  # a line of progress while a large folder is read

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
OUTSIDE = "outside class folders"  # how the summary names the images skipped there


def in_test_split(relative_path: str) -> bool:
    """Whether the image at ``relative_path`` (``/``-separated, relative to the folder) is in the
    test split of a folder without ``train/`` and ``test/`` folders (before the rule that each
    split gets an image)."""
    return _path_hash(relative_path) < TEST_FRACTION * 2**64


# ---------------------------------------------------------------------------- the listing


class _Entry(NamedTuple):
    rel: str  # "/"-separated path relative to the folder
    split: str | None  # the split folder it lies in; None: chosen by in_test_split
    group: str | None  # the sub-folder of the split's folder it lies in (a class); None: none
    size: int  # -1: cannot be stat'ed (a broken link)
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Listing:
    """A folder's files as :func:`scan` found them."""

    root: Path
    entries: tuple[_Entry, ...]  # sorted by rel
    split_folders: bool

    def digest(self, image_size: int) -> str:
        """The SHA-256 of the listing and what else decides the arrays read from it."""
        h = hashlib.sha256(
            json.dumps(
                {"rules": RULES, "image_size": image_size, "split_folders": self.split_folders}
            ).encode()
        )
        for entry in self.entries:
            h.update(os.fsencode(entry.rel) + f"\0{entry.size}\0{entry.mtime_ns}\n".encode())
        return h.hexdigest()


def scan(root: Path) -> Listing:
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
    return Listing(root, tuple(entries), split_folders)


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


# ---------------------------------------------------------------------------- a whole folder


@dataclasses.dataclass(frozen=True)
class FolderImages:
    """A folder decoded: its splits and what :class:`vaejax.data.folder.FolderSpec` and
    ``metadata.json`` hold."""

    splits: dict[str, ImageSplit]
    meta: dict[str, Any]

    def __getitem__(self, split: str) -> ImageSplit:
        return self.splits[split]


def read_folder(listing: Listing, size: int, digest: str) -> FolderImages:
    """Decodes every file of ``listing`` into both splits and the metadata (its summary line
    included)."""
    root = listing.root
    usable, skipped, first_unreadable = _decode_all(listing, size)
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
    return FolderImages(splits, meta)


def _decode_all(
    listing: Listing, size: int
) -> tuple[list[tuple[_Entry, DecodedImage]], collections.Counter[str], str | None]:
    """(the usable files of ``listing`` decoded, in order; how many were skipped of each kind;
    the first unreadable one), logging progress while a large folder is read."""
    root = listing.root
    usable: list[tuple[_Entry, DecodedImage]] = []
    skipped: collections.Counter[str] = collections.Counter()
    first_unreadable = None
    said = time.monotonic()
    for n, entry in enumerate(listing.entries):
        if time.monotonic() - said > PROGRESS_EVERY_S:
            log.info("reading %s: %s of %s files", root, f"{n:,}", f"{len(listing.entries):,}")
            said = time.monotonic()
        try:
            if entry.size < 0:
                raise Unusable(UNREADABLE, "a broken link")
            image = decode(root / entry.rel, size)
        except Unusable as e:
            skipped[e.kind] += 1
            if e.kind == UNREADABLE and first_unreadable is None:
                first_unreadable = entry.rel
            log.debug("skipping %s: %s %s", root / entry.rel, e.kind, e)
            continue
        usable.append((entry, image))
    return usable, skipped, first_unreadable


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
