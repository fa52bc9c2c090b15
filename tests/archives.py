"""Small synthetic raw files in the official layouts of CIFAR-10, SVHN and CelebA, with the arrays
vaejax must deliver from them.

The layouts, from the datasets' own pages and tfds 4.9.10's builders:

- ``cifar-10-binary.tar.gz``: a gzipped tar with a ``cifar-10-batches-bin/`` folder holding
  ``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin`` (3073-byte rows: a label
  byte, then 1024 red, 1024 green, 1024 blue bytes, each channel row by row),
  ``batches.meta.txt`` (a class name a line) and ``readme.html``. The members are written out
  of order here: readers must not rely on it.
- ``train_32x32.mat``, ``test_32x32.mat``: MATLAB v5 files with ``X`` uint8 [32, 32, 3, N] and
  ``y`` uint8 [N, 1], digits 1-10 (10 is digit 0).
- CelebA: ``img_align_celeba.zip`` (JPEGs ``img_align_celeba/000001.jpg`` ... of 218x178),
  ``list_eval_partition.txt`` (``000001.jpg 0`` lines, 0/1/2 = train/validation/test),
  ``list_attr_celeba.txt`` and ``list_landmarks_align_celeba.txt`` (a row count, a header
  line of column names, then one ``000001.jpg`` row a photo, values aligned with spaces; the
  attributes -1/1), ``identity_CelebA.txt`` (``000001.jpg 2880`` lines, no header).

Expected CelebA images are what the delivery convention gives from the decoded bytes of the
written JPEGs (PIL decodes, centre 148x148 crop, PIL bilinear resize to 64x64): the same JPEG
bytes decode to the same pixels, so the loader's arrays must equal them exactly. That the
convention itself is a centre crop and an antialiased bilinear reduction is checked separately,
against a numpy computation (within one level).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image

from vaejax.data.idx import ImageSplit
from vaejax.data.sources import RawFile, SourceSpec

CIFAR_CLASSES = (
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
)
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_LANDMARKS = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
    "rightmouth_x rightmouth_y"
).split()
# the partition of each synthetic photo 000001.jpg, 000002.jpg, ...: 0 train, 1 validation,
# 2 test (interleaved, so a reader must filter by the list)
CELEBA_PARTITIONS = (0, 0, 1, 2, 0, 2)


@dataclasses.dataclass
class Written:
    """Raw files written into ``folder`` and what vaejax must deliver from them."""

    folder: Path
    files: tuple[str, ...]
    expected: dict[str, ImageSplit]  # vaejax split -> arrays
    extra: dict = dataclasses.field(default_factory=dict)

    def spec(self, official: SourceSpec, base_url: str) -> SourceSpec:
        """``official`` with these files (sizes, SHA-256s, URLs ``base_url + name``) and
        their numbers of examples."""
        raw_files = tuple(
            RawFile(
                name=name,
                url=base_url + name,
                size=(self.folder / name).stat().st_size,
                sha256=hashlib.sha256((self.folder / name).read_bytes()).hexdigest(),
            )
            for name in self.files
        )
        counts = {split: len(arrays.labels) for split, arrays in self.expected.items()}
        return dataclasses.replace(official, raw_files=raw_files, num_examples=counts)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 1_244_000_000
    tar.addfile(info, io.BytesIO(payload))


def write_cifar10(folder: Path, per_file: int = 2, seed: int = 0) -> Written:
    """``cifar-10-binary.tar.gz`` with ``per_file`` images in each of its six batch files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches, expected = {}, {}
    for split, names in (
        ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
        ("test", ["test_batch.bin"]),
    ):
        images = rng.integers(0, 256, (len(names) * per_file, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, len(names) * per_file, dtype=np.uint8)
        for i, name in enumerate(names):
            part = slice(i * per_file, (i + 1) * per_file)
            planes = images[part].transpose(0, 3, 1, 2).reshape(per_file, 3072)  # R, G, B planes
            batches[name] = np.concatenate([labels[part, None], planes], axis=1).tobytes()
        expected[split] = ImageSplit(images, labels.astype(np.int32))
    meta = ("\n".join(CIFAR_CLASSES) + "\n\n").encode()
    order = [
        ("batches.meta.txt", meta),
        ("test_batch.bin", batches["test_batch.bin"]),
        ("data_batch_3.bin", batches["data_batch_3.bin"]),
        ("data_batch_1.bin", batches["data_batch_1.bin"]),
        ("readme.html", b"<meta HTTP-EQUIV='REFRESH' content='0; url=cifar.html'>\n"),
        ("data_batch_5.bin", batches["data_batch_5.bin"]),
        ("data_batch_2.bin", batches["data_batch_2.bin"]),
        ("data_batch_4.bin", batches["data_batch_4.bin"]),
    ]
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        folder_info = tarfile.TarInfo("cifar-10-batches-bin")
        folder_info.type = tarfile.DIRTYPE
        folder_info.mode = 0o755
        tar.addfile(folder_info)
        for name, payload in order:
            _add(tar, f"cifar-10-batches-bin/{name}", payload)
    return Written(folder, ("cifar-10-binary.tar.gz",), expected)


def write_svhn(folder: Path, counts=(3, 2), seed: int = 1) -> Written:
    """``train_32x32.mat`` and ``test_32x32.mat`` with ``counts`` images; every digit 0 is stored
    as 10, as in the official files (the first image of each file is a 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for split, n in zip(("train", "test"), counts):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        digits = rng.integers(0, 10, n)
        digits[0] = 0
        stored = np.where(digits == 0, 10, digits).astype(np.uint8)
        scipy.io.savemat(
            folder / f"{split}_32x32.mat",
            {"X": np.ascontiguousarray(images.transpose(1, 2, 3, 0)), "y": stored[:, None]},
            format="5",
        )
        expected[split] = ImageSplit(images, digits.astype(np.int32))
    return Written(folder, ("train_32x32.mat", "test_32x32.mat"), expected)


def celeba_delivered(jpeg: bytes) -> np.ndarray:
    """The delivery convention: decode, centre 148x148 square, PIL bilinear to 64x64."""
    with PIL.Image.open(io.BytesIO(jpeg)) as photo:
        square = photo.convert("RGB").crop((15, 35, 163, 183))  # (left, top, right, bottom)
    return np.asarray(square.resize((64, 64), PIL.Image.Resampling.BILINEAR))


def _photo(rng: np.random.Generator) -> PIL.Image.Image:
    """A smooth random 218x178 colour photo (JPEG keeps it close), with a bright frame outside
    the centre crop."""
    coarse = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    photo = np.asarray(PIL.Image.fromarray(coarse).resize((178, 218), PIL.Image.Resampling.BICUBIC))
    photo = photo.copy()
    photo[:20], photo[-20:], photo[:, :8], photo[:, -8:] = 255, 255, 255, 255
    return PIL.Image.fromarray(photo)


def write_celeba(folder: Path, seed: int = 2) -> Written:
    """The five CelebA raw files with one photo per entry of :data:`CELEBA_PARTITIONS`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(CELEBA_PARTITIONS)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    attributes = rng.choice(np.array([-1, 1]), size=(n, len(CELEBA_ATTRIBUTES)))
    attributes[:, CELEBA_ATTRIBUTES.index("Smiling")] = [1, -1, 1, 1, -1, -1]
    landmarks = rng.integers(60, 160, (n, len(CELEBA_LANDMARKS)))
    identities = rng.integers(1, 10_178, n)
    jpegs = []
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("img_align_celeba/", b"")
        for name in names:
            buffer = io.BytesIO()
            _photo(rng).save(buffer, format="JPEG", quality=95)
            jpegs.append(buffer.getvalue())
            zf.writestr(f"img_align_celeba/{name}", jpegs[-1])
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {part}\n" for name, part in zip(names, CELEBA_PARTITIONS))
    )
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(CELEBA_ATTRIBUTES)} \n"
        + "".join(
            name + " " + " ".join(f"{v:2d}" for v in row) + "\n"
            for name, row in zip(names, attributes)
        )
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{' '.join(CELEBA_LANDMARKS)}\n"
        + "".join(
            f"{name} " + "".join(f"{v:5d}" for v in row) + "\n"
            for name, row in zip(names, landmarks)
        )
    )
    (folder / "identity_CelebA.txt").write_text(
        "".join(f"{name} {identity}\n" for name, identity in zip(names, identities))
    )
    expected, photos = {}, {}
    for split, part in (("train", 0), ("test", 2)):
        chosen = [i for i, p in enumerate(CELEBA_PARTITIONS) if p == part]
        expected[split] = ImageSplit(
            np.stack([celeba_delivered(jpegs[i]) for i in chosen]),
            np.zeros(len(chosen), dtype=np.int32),
            attributes[chosen] > 0,
        )
        photos[split] = [jpegs[i] for i in chosen]
    files = (
        "img_align_celeba.zip",
        "list_eval_partition.txt",
        "list_attr_celeba.txt",
        "list_landmarks_align_celeba.txt",
        "identity_CelebA.txt",
    )
    extra = {
        "jpegs": photos,
        "landmarks": landmarks,
        "identities": identities,
        "validation": [names[i] for i, p in enumerate(CELEBA_PARTITIONS) if p == 1],
    }
    return Written(folder, files, expected, extra)


WRITERS = {"cifar10": write_cifar10, "svhn_cropped": write_svhn, "celeb_a": write_celeba}
