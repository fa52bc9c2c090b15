"""Folders of the user's own images (``--dataset folder:PATH``): prepared once into tfds' layout
without TensorFlow and read back as uint8 arrays."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from tests.helpers import REPO_ROOT
from tests.test_data_dirs import read_only
from vaejax.data import folder, idx
from vaejax.data.idx import DataError

FASHION = idx.DATASETS["fashion_mnist"]


def _save(path: Path, image: PIL.Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _noise(rng, height, width, channels=3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _hash(rel: str) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")


def _expected_order(rels: list[str]) -> dict[str, tuple[str, int]]:
    """rel -> (split, record index) by the documented rule for a folder without train/ and
    test/: test when the path's hash is below a tenth of 2**64, at least one image per split;
    records sorted by path."""
    test = {r for r in rels if _hash(r) < 2**64 // 10}
    if not test:
        test = {min(rels, key=_hash)}
    if len(test) == len(rels):
        test.remove(max(rels, key=_hash))
    order = {}
    for split, chosen in (("train", set(rels) - test), ("test", test)):
        order.update({rel: (split, i) for i, rel in enumerate(sorted(chosen))})
    return order


def _record(splits: dict, order: dict, rel: str) -> np.ndarray:
    split, i = order[rel]
    return splits[split].images[i]


def _load(dataset: str, size: int, data_dir: Path) -> dict:
    return {s: folder.load_folder_split(dataset, s, size, data_dir) for s in ("train", "test")}


def test_fashion_mnist_pngs_come_back_exactly(tmp_path, fashion_raw_dir):
    """2,000 Fashion-MNIST images exported as PNG into train/ and test/ folders of one folder per
    class come back with the same pixels and labels, in path order, through tfds' layout."""
    raw = {s: idx.read_idx_split(fashion_raw_dir, s, FASHION) for s in ("train", "test")}
    take = {"train": 1800, "test": 200}
    # "0_T-shirt-top" ... "9_Ankle boot": sorted, the folders keep the official label order
    class_dirs = [f"{i}_{name.replace('/', '-')}" for i, name in enumerate(FASHION.class_names)]
    root = tmp_path / "fashion pngs"
    expected = {}
    for split, n in take.items():
        images, labels = raw[split].images[:n], raw[split].labels[:n]
        for i, (image, label) in enumerate(zip(images, labels)):
            _save(
                root / split / class_dirs[label] / f"{i:05d}.png",
                PIL.Image.fromarray(image[..., 0]),
            )
        order = sorted(range(n), key=lambda i: (labels[i], i))  # class folder, then file name
        expected[split] = (images[order], labels[order])
    (root / "README.txt").write_text("not read: only train/ and test/ are")

    data_dir = tmp_path / "tfds"
    dataset = f"folder:{root}"
    spec = folder.folder_spec(dataset, 28, data_dir)
    assert spec.name == dataset and spec.image_shape == (28, 28, 1)
    assert spec.class_names == tuple(class_dirs) and spec.num_classes == 10
    assert spec.num_examples == take and spec.attribute_names == ()
    assert spec.summary == (
        f"folder {root}: 2,000 images (1,800 train, 200 test) in 10 classes, 28x28x1"
    )
    assert spec.builder_dir == data_dir / folder.prepared_name(root) / "28x28" / "1.0.0"
    assert folder.prepared_name(root).startswith("folder_fashion_pngs_")

    loaded = _load(dataset, 28, data_dir)
    for split in take:
        assert loaded[split].images.dtype == np.uint8 and loaded[split].labels.dtype == np.int32
        np.testing.assert_array_equal(loaded[split].images, expected[split][0])
        np.testing.assert_array_equal(loaded[split].labels, expected[split][1])
        assert (spec.builder_dir / f"vaejax_decoded_{split}" / "images.npy").is_file()
    again = folder.load_folder_split(dataset, "test", 28, data_dir)  # from the decoded cache
    np.testing.assert_array_equal(again.images, expected["test"][0])

    # the standard layout: tfds.data_source reads it by name
    import tensorflow_datasets as tfds

    source = tfds.data_source(
        f"{folder.prepared_name(root)}/28x28", split="test", data_dir=os.fspath(data_dir)
    )
    assert len(source) == 200
    first = source[0]
    np.testing.assert_array_equal(first["image"], expected["test"][0][0])
    assert first["label"] == expected["test"][1][0]
    info = json.loads((spec.builder_dir / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record"


def _mixed_folder(root: Path, rng) -> dict:
    """A folder of two classes holding every kind of file; returns the arrays it was made of."""
    made = {}
    made["colour"] = _noise(rng, 48, 64)
    _save(root / "a" / "colour.png", PIL.Image.fromarray(made["colour"]))
    _save(root / "a" / "photo.jpg", PIL.Image.fromarray(_noise(rng, 40, 40)), quality=90)
    made["grey"] = _noise(rng, 32, 32, 1)
    _save(root / "a" / "grey.png", PIL.Image.fromarray(made["grey"]))
    made["rgba"] = _noise(rng, 32, 32, 4)
    _save(root / "a" / "rgba.png", PIL.Image.fromarray(made["rgba"], "RGBA"))
    (root / "a" / "notes.txt").write_text("a few words, not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    palette = PIL.Image.fromarray(_noise(rng, 32, 32)).quantize(colors=16)
    made["palette"] = np.asarray(palette.getpalette(), np.uint8).reshape(-1, 3)[np.asarray(palette)]
    _save(root / "b" / "palette.png", palette)
    _save(root / "b" / "cmyk.jpg", PIL.Image.fromarray(_noise(rng, 32, 32, 4), "CMYK"))
    made["grey16"] = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    _save(root / "b" / "grey16.png", PIL.Image.fromarray(made["grey16"]))
    made["tall"] = _noise(rng, 96, 32)  # shorter side 32 already: only cropped
    _save(root / "b" / "tall.png", PIL.Image.fromarray(made["tall"]))
    wide = np.zeros((50, 100, 3), np.uint8)  # red sides, a green middle half
    wide[:, :25] = wide[:, 75:] = (255, 0, 0)
    wide[:, 25:75] = (0, 255, 0)
    made["wide"] = wide
    _save(root / "b" / "wide.png", PIL.Image.fromarray(wide))
    whole = (root / "a" / "colour.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    _save(root / "stray.png", PIL.Image.fromarray(_noise(rng, 32, 32)))  # outside the classes
    return made


def test_a_mixed_folder_is_converted_fitted_and_summarised(tmp_path, caplog):
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    made = _mixed_folder(root, rng)
    data_dir = tmp_path / "tfds"
    with caplog.at_level(logging.INFO, logger="vaejax.data.folder"):
        spec = folder.folder_spec(f"folder:{root}", 32, data_dir)
    usable = [
        "a/colour.png",
        "a/grey.png",
        "a/photo.jpg",
        "a/rgba.png",
        "b/cmyk.jpg",
        "b/grey16.png",
        "b/palette.png",
        "b/tall.png",
        "b/wide.png",
    ]
    order = _expected_order(usable)
    n_test = sum(split == "test" for split, _ in order.values())
    assert spec.num_examples == {"train": 9 - n_test, "test": n_test} and n_test >= 1
    assert spec.image_shape == (32, 32, 3) and spec.class_names == ("a", "b")
    summary = spec.summary
    assert summary.startswith(
        f"folder {root}: 9 images ({9 - n_test} train, {n_test} test) in 2 classes, 32x32x3; "
        "skipped 1 unreadable (first: b/truncated.png), 1 not an image, 1 outside class folders; "
        "converted "
    )
    converted = summary.split("; converted ")[1].split(";")[0].split(", ")
    assert sorted(converted) == ["1 16-bit", "1 CMYK", "1 RGBA", "1 grey", "1 palette"]
    assert summary.endswith("; resized 3, cropped 1") and "\n" not in summary
    assert [r.getMessage() for r in caplog.records].count(summary) == 1  # logged once

    splits = _load(f"folder:{root}", 32, data_dir)
    for split, n in {"train": 9 - n_test, "test": n_test}.items():
        assert splits[split].images.shape == (n, 32, 32, 3)
    for rel, (split, i) in order.items():
        assert splits[split].labels[i] == (0 if rel.startswith("a/") else 1)

    record = lambda rel: _record(splits, order, rel)
    np.testing.assert_array_equal(record("a/grey.png"), np.repeat(made["grey"][..., None], 3, -1))
    colour, alpha = made["rgba"][..., :3].astype(float), made["rgba"][..., 3:].astype(float)
    on_white = np.rint((colour * alpha + 255 * (255 - alpha)) / 255)
    np.testing.assert_array_equal(record("a/rgba.png"), on_white.astype(np.uint8))
    np.testing.assert_array_equal(record("b/palette.png"), made["palette"])
    grey16 = np.rint(made["grey16"] / 257).astype(np.uint8)
    np.testing.assert_array_equal(record("b/grey16.png"), np.repeat(grey16[..., None], 3, -1))
    np.testing.assert_array_equal(record("b/tall.png"), made["tall"][32:64])  # rows 32..63
    # 100x50 -> 64x32 (Lanczos), then columns 16..47: the green middle half of the original
    resized = PIL.Image.fromarray(made["wide"]).resize((64, 32), PIL.Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(record("b/wide.png"), np.asarray(resized)[:, 16:48])
    middle = record("b/wide.png")[:, 3:29].astype(int)
    assert np.abs(middle - (0, 255, 0)).max() <= 2, "the crop is not centred"
    # 64x48 -> 43x32 (48 * 32 / 48 = 32, 64 * 32 / 48 = 42.67 -> 43), then columns 5..36
    resized = PIL.Image.fromarray(made["colour"]).resize((43, 32), PIL.Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(record("a/colour.png"), np.asarray(resized)[:, 5:37])


def test_a_grey_unlabelled_folder(tmp_path, monkeypatch):
    """Images directly in the folder: no classes, labels 0. Every image grey (8-bit, 1-bit, with
    alpha, 16-bit): one channel. Without tfds the same arrays are decoded directly."""
    rng = np.random.default_rng(1)
    root = tmp_path / "grey"
    greys = [_noise(rng, 16, 16, 1) for _ in range(6)]
    for i, grey in enumerate(greys):
        _save(root / f"{i}.png", PIL.Image.fromarray(grey))
    _save(root / "bits.png", PIL.Image.fromarray(greys[0] > 127))
    la = np.stack([greys[1], np.full_like(greys[1], 255)], -1)
    _save(root / "la.png", PIL.Image.fromarray(la, "LA"))
    _save(root / "deep.png", PIL.Image.fromarray(greys[2].astype(np.uint16) * 257))
    spec = folder.folder_spec(f"folder:{root}", 16, tmp_path / "tfds")
    assert spec.class_names == () and spec.num_classes == 0 and spec.image_shape == (16, 16, 1)
    assert " unlabelled, 16x16x1; converted " in spec.summary
    assert sorted(spec.summary.split("; converted ")[1].split(", ")) == [
        "1 1-bit",
        "1 16-bit",
        "1 grey+alpha",
    ]
    splits = _load(f"folder:{root}", 16, tmp_path / "tfds")
    rels = [f"{i}.png" for i in range(6)] + ["bits.png", "deep.png", "la.png"]
    order = _expected_order(rels)
    for split in ("train", "test"):
        assert not splits[split].labels.any() and splits[split].images.shape[1:] == (16, 16, 1)
    for i in range(6):
        np.testing.assert_array_equal(_record(splits, order, f"{i}.png")[..., 0], greys[i])
    np.testing.assert_array_equal(_record(splits, order, "la.png")[..., 0], greys[1])
    np.testing.assert_array_equal(_record(splits, order, "deep.png")[..., 0], greys[2])
    bits = _record(splits, order, "bits.png")[..., 0]
    np.testing.assert_array_equal(bits, np.where(greys[0] > 127, 255, 0))

    monkeypatch.setattr(folder, "_have_tfds", lambda: False)
    direct_spec = folder.folder_spec(f"folder:{root}", 16, tmp_path / "unused")
    assert direct_spec.builder_dir is None and direct_spec.summary == spec.summary
    for split in ("train", "test"):
        direct = folder.load_folder_split(f"folder:{root}", split, 16)
        np.testing.assert_array_equal(direct.images, splits[split].images)
        np.testing.assert_array_equal(direct.labels, splits[split].labels)
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    "case, fix",
    [
        ("empty", "holds no files"),
        ("no images", "no image vaejax can read (1 unreadable (first: fake.png), 2 not images)"),
        ("one image", "holds a single usable image"),
        ("missing", "does not exist: pass --dataset folder:PATH"),
        ("a file", "is a file, not a folder: pass --dataset folder:"),
        ("empty test", "holds no usable image: put some of the images in it"),
        ("no path", "names no folder: pass --dataset folder:PATH"),
        ("tiny size", "is too small for a folder of images: pass --image_size 8 or more"),
    ],
)
def test_unusable_folders_are_one_line_errors(tmp_path, case, fix):
    root = tmp_path / "images"
    root.mkdir()
    image = PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    size, dataset = 8, f"folder:{root}"
    if case == "no images":
        (root / "notes.txt").write_text("words")
        (root / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
        (root / "sub").mkdir()
        (root / "sub" / "data.bin").write_bytes(bytes(range(256)))
        (root / ".DS_Store").write_bytes(bytes(16))
    elif case == "one image":
        _save(root / "only.png", image)
    elif case == "missing":
        dataset = f"folder:{root / 'nowhere'}"
    elif case == "a file":
        _save(root / "only.png", image)
        dataset = f"folder:{root / 'only.png'}"
    elif case == "empty test":
        _save(root / "train" / "x.png", image)
        (root / "test").mkdir()
    elif case == "no path":
        dataset = "folder:"
    elif case == "tiny size":
        _save(root / "only.png", image)
        size = 4
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError) as caught:
        folder.folder_spec(dataset, size, data_dir)
    message = str(caught.value)
    assert fix in message and "\n" not in message
    assert not list(data_dir.glob("*/*")), "a failed preparation left files behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_an_unreadable_folder_is_one_line_error(tmp_path):
    root = tmp_path / "locked"
    _save(root / "x.png", PIL.Image.fromarray(np.zeros((8, 8), np.uint8)))
    root.chmod(0)
    try:
        with pytest.raises(DataError, match="cannot read the folder .* make it readable"):
            folder.folder_spec(f"folder:{root}", 8, tmp_path / "tfds")
    finally:
        root.chmod(0o755)


def test_parse_folder_name():
    assert folder.parse_folder_name("mnist") is None
    assert folder.parse_folder_name("folder:~/pics") == Path.home() / "pics"
    assert folder.parse_folder_name("folder:/a b/c") == Path("/a b/c")


READ_ONLY_SCRIPT = """
import json, sys
from vaejax.data import folder
dataset, data_dir = sys.argv[1:3]
shapes = {}
for split in ("train", "test"):
    shapes[split] = folder.load_folder_split(dataset, split, 16, data_dir).images.shape
print(json.dumps(shapes))
"""


def test_a_changed_folder_is_prepared_again_and_an_unchanged_one_is_not(tmp_path, caplog):
    rng = np.random.default_rng(2)
    root = tmp_path / "pics"
    for i in range(8):
        _save(root / "c" / f"{i}.png", PIL.Image.fromarray(_noise(rng, 20, 16)))
    data_dir = tmp_path / "tfds"
    dataset = f"folder:{root}"
    caplog.set_level(logging.INFO, logger="vaejax.data.folder")
    spec = folder.folder_spec(dataset, 16, data_dir)
    info = spec.builder_dir / "dataset_info.json"
    before = (info.stat().st_ino, info.stat().st_mtime_ns)
    first = _load(dataset, 16, data_dir)
    caplog.clear()

    assert folder.folder_spec(dataset, 16, data_dir) == spec
    assert (info.stat().st_ino, info.stat().st_mtime_ns) == before
    assert not [r for r in caplog.records if "preparing" in r.getMessage()]

    # another size is another config beside it
    other = folder.folder_spec(dataset, 8, data_dir)
    assert other.builder_dir.parent.name == "8x8" and other.image_shape == (8, 8, 3)

    # a leftover of a killed preparation, then one more image
    leftover = spec.builder_dir.parent / "incomplete.KILLED_1.0.0"
    leftover.mkdir()
    _save(root / "c" / "new.png", PIL.Image.fromarray(_noise(rng, 16, 16)))
    caplog.clear()
    spec2 = folder.folder_spec(dataset, 16, data_dir)
    messages = [r.getMessage() for r in caplog.records]
    assert any("changed since it was prepared: preparing it again" in m for m in messages)
    assert sum(spec2.num_examples.values()) == 9 and spec2.builder_dir == spec.builder_dir
    assert sorted(p.name for p in spec.builder_dir.parent.iterdir()) == ["1.0.0"]
    second = _load(dataset, 16, data_dir)
    total = sum(len(s.labels) for s in second.values())
    assert total == 9 and sum(len(s.labels) for s in first.values()) == 8

    # a read-only data directory serves the up-to-date copy (without the decoded cache)
    shutil.rmtree(spec.builder_dir / "vaejax_decoded_test")
    with read_only([data_dir], probe_dir=data_dir) as prefix:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, dataset, str(data_dir)],
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "could not write the decoded copy" in done.stderr
    assert not (spec.builder_dir / "vaejax_decoded_test").exists()
    shapes = json.loads(done.stdout.strip().splitlines()[-1])
    assert shapes == {s: [len(second[s].labels), 16, 16, 3] for s in ("train", "test")}
