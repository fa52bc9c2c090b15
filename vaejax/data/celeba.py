"""CelebA: aligned 218x178 face photos with 40 binary attributes, delivered as 64x64 crops.

The prepared folder is what tfds' own ``celeb_a`` builder (version 2.1.0) writes: splits
``train``, ``validation`` and ``test`` (by ``list_eval_partition.txt``), features ``image``
(the original JPEG, [218, 178, 3]), ``landmarks`` (10 int64 coordinates), ``attributes`` (40
bools) and ``identity`` (``Identity_No``, int64). The JPEG bytes of ``img_align_celeba.zip``
are stored unchanged, as tfds' own builder stores them. It differs from tfds' own builder in
that the raw files are read from a local path with :mod:`zipfile` (tfds' own goes through its
download manager's archive iterator), one split at a time instead of every image in memory at
once, and records keep the order of ``list_eval_partition.txt`` (sorted by file name, as tfds'
own builder sorts them before shuffling, which this one does not).

vaejax delivers its ``train`` and ``test`` splits (``validation`` is prepared but not
delivered) as 64x64 images: the centre 148x148 square of each photo (rows 35-182, columns
15-162), resized to 64x64 with PIL's bilinear filter, which widens with the reduction
(antialiased). This is the CelebA convention of PyTorch-VAE (``CenterCrop(148)``, then
``Resize(64)`` of a PIL image; its random horizontal flip is left to training). Images are
decoded by PIL; other JPEG decoders (OpenCV, TensorFlow) may differ by a level or two. Each
image comes with its 40 attributes (-1/1 in the file, False/True here) in the order of
:data:`ATTRIBUTE_NAMES`; there is no class label (0).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from vaejax.data.idx import DataError
from vaejax.data.images import image_array
from vaejax.data.source_spec import Example, RawFile, SourceSpec

ZIP = "img_align_celeba.zip"
ZIP_FOLDER = "img_align_celeba/"  # the photos' folder inside the zip
PARTITIONS = "list_eval_partition.txt"
ATTRIBUTES = "list_attr_celeba.txt"
LANDMARKS = "list_landmarks_align_celeba.txt"
IDENTITIES = "identity_CelebA.txt"

# the split ids of list_eval_partition.txt
PARTITION_IDS = {"train": 0, "validation": 1, "test": 2}

RECORD_SHAPE = (218, 178, 3)  # the aligned photos, as tfds' records hold them
CROP = 148
IMAGE_SHAPE = (64, 64, 3)

# the header line of list_attr_celeba.txt (and of tfds' own builder)
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
# the header line of list_landmarks_align_celeba.txt
LANDMARK_NAMES = (
    "lefteye_x",
    "lefteye_y",
    "righteye_x",
    "righteye_y",
    "nose_x",
    "nose_y",
    "leftmouth_x",
    "leftmouth_y",
    "rightmouth_x",
    "rightmouth_y",
)
IDENTITY_NAME = "Identity_No"  # identity_CelebA.txt has no header: tfds' own builder's name

_DRIVE = "https://drive.google.com/uc?export=download&id="

SPEC = SourceSpec(
    name="celeb_a",
    version="2.1.0",  # tfds' own celeb_a builder
    image_shape=IMAGE_SHAPE,
    class_names=(),
    num_examples={"train": 162_770, "test": 19_962},  # validation: 19,867
    # tensorflow_datasets 4.9.10, datasets/celeb_a/checksums.tsv (the authors' Google Drive)
    raw_files=(
        RawFile(
            name=ZIP,
            url=_DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
            size=1_443_490_838,
            sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
        ),
        RawFile(
            name=PARTITIONS,
            url=_DRIVE + "0B7EVK8r0v71pY0NSMzRuSXJEVkk",
            size=2_836_386,
            sha256="fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
        ),
        RawFile(
            name=ATTRIBUTES,
            url=_DRIVE + "0B7EVK8r0v71pblRyaVFSWGxPY0U",
            size=26_721_026,
            sha256="f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
        ),
        RawFile(
            name=LANDMARKS,
            url=_DRIVE + "0B7EVK8r0v71pd0FJY3Blby1HUTQ",
            size=12_156_055,
            sha256="6c02a87569907f6db2ba99019085697596730e8129f67a3d61659f198c48d43b",
        ),
        RawFile(
            name=IDENTITIES,
            url=_DRIVE + "1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS",
            size=3_424_458,
            sha256="c6143857c3e2630ac2da9f782e9c1232e5e59be993a9d44e8a7916c78a6158c0",
        ),
    ),
    attribute_names=ATTRIBUTE_NAMES,
    other_splits=("validation",),
    homepage="http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    description=(
        "CelebA: 202,599 aligned face photos of 10,177 people with 40 binary attributes and 5 "
        "landmarks each; delivered as 64x64 centre crops."
    ),
)


def features() -> Any:
    """tfds' own ``celeb_a`` features."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=RECORD_SHAPE, encoding_format="jpeg"),
            "landmarks": {name: np.int64 for name in LANDMARK_NAMES},
            "attributes": {name: np.bool_ for name in ATTRIBUTE_NAMES},
            "identity": {IDENTITY_NAME: np.int64},
        }
    )


def _fix(path: Path) -> str:
    url = {raw.name: raw.url for raw in SPEC.raw_files}.get(path.name, "the official file")
    return f"replace it with a fresh copy of {url}"


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the raw data file {path} ({e})") from None


def read_partition(path: Path, split: str) -> list[str]:
    """The photo names of ``split`` in ``list_eval_partition.txt`` (``000001.jpg 0`` lines), in
    file order."""
    wanted, names = str(PARTITION_IDS[split]), []
    for number, line in enumerate(_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"{path} line {number} is not 'NAME.jpg 0|1|2': {_fix(path)}")
        if fields[1] == wanted:
            names.append(fields[0])
    return names


def read_table(
    path: Path, columns: tuple[str, ...], wanted: set[str], header: bool = True
) -> dict[str, list[int]]:
    """The integer rows of ``wanted`` photos in a CelebA list file.

    With ``header``: a line with the number of rows, a line naming ``columns``, then one
    ``NAME.jpg v1 v2 ...`` line a photo (values aligned with spaces). Without: only the rows.
    """
    lines = _lines(path)
    if header:
        if len(lines) < 2 or tuple(lines[1].split()) != columns:
            raise DataError(
                f"{path} does not start with a row count and the header "
                f"'{' '.join(columns[:3])} ...': {_fix(path)}"
            )
        lines = lines[2:]
    rows = {}
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            try:
                values = [int(v) for v in fields[1:]]
            except ValueError:
                values = []
            if len(values) != len(columns):
                raise DataError(
                    f"{path}: the row of {fields[0]} is not {len(columns)} integers: {_fix(path)}"
                )
            rows[fields[0]] = values
    missing = wanted.difference(rows)
    if missing:
        raise DataError(f"{path} lacks the row of {min(missing)}: {_fix(path)}")
    return rows


def examples(paths: Mapping[str, Path], split: str) -> Iterator[tuple[int, dict]]:
    """The examples of the tfds split ``split`` (``train``, ``validation`` or ``test``) in the
    order of ``list_eval_partition.txt``, keyed by their index. Images are the JPEG bytes of the
    zip, which tfds stores as they are (no TensorFlow needed, no re-encoding)."""
    paths = {name: Path(path) for name, path in paths.items()}
    names = read_partition(paths[PARTITIONS], split)
    wanted = set(names)
    attributes = read_table(paths[ATTRIBUTES], ATTRIBUTE_NAMES, wanted)
    landmarks = read_table(paths[LANDMARKS], LANDMARK_NAMES, wanted)
    identities = read_table(paths[IDENTITIES], (IDENTITY_NAME,), wanted, header=False)
    archive = paths[ZIP]
    try:
        with zipfile.ZipFile(archive) as zf:
            for index, name in enumerate(names):
                try:
                    jpeg = zf.read(ZIP_FOLDER + name)
                except KeyError:
                    raise DataError(
                        f"{archive} lacks {ZIP_FOLDER}{name}: {_fix(archive)}"
                    ) from None
                example = {
                    "image": jpeg,
                    "landmarks": dict(zip(LANDMARK_NAMES, landmarks[name])),
                    "attributes": {
                        key: value > 0 for key, value in zip(ATTRIBUTE_NAMES, attributes[name])
                    },
                    "identity": {IDENTITY_NAME: identities[name][0]},
                }
                yield index, example
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{archive} is not a readable zip file ({e}): {_fix(archive)}") from None


def deliver(photo: np.ndarray) -> np.ndarray:
    """A 218x178 photo -> its centre 148x148 square resized to 64x64 (PIL bilinear, which
    antialiases when it reduces): uint8 [64, 64, 3]."""
    height, width = photo.shape[:2]
    # torchvision's CenterCrop rounds (size - crop) / 2; both differences (70, 30) are even
    top, left = (height - CROP) // 2, (width - CROP) // 2
    square = PIL.Image.fromarray(photo).crop((left, top, left + CROP, top + CROP))
    resized = square.resize(IMAGE_SHAPE[:2][::-1], PIL.Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def decode(record: Mapping[str, Any]) -> Example:
    """A record (or an example) -> the delivered uint8 [64, 64, 3] image, label 0 and the 40
    attributes in the order of :data:`ATTRIBUTE_NAMES`."""
    photo = image_array(record["image"])
    if photo.shape != RECORD_SHAPE:
        raise ValueError(f"a celeb_a photo of shape {photo.shape}, not {RECORD_SHAPE}")
    attributes = record["attributes"]
    flags = np.array([bool(attributes[name]) for name in ATTRIBUTE_NAMES], dtype=bool)
    return Example(deliver(photo), 0, flags)
