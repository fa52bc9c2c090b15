"""Data: IDX reader against the raw bytes, tfds preparation and caching, errors, pixel handling."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import struct
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaejax import data

# md5 of the uncompressed official MNIST image files and of the official Fashion-MNIST .gz files,
# as listed in ../shared/data/README.md (independent of the values in vaejax.data).
MNIST_IMAGE_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
}
FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def _parse_idx_by_hand(path):
    raw = gzip.decompress(path.read_bytes())
    (magic,) = struct.unpack(">i", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    return magic, dims, raw[4 + 4 * ndim :], raw


@pytest.mark.parametrize(
    "stem,magic,dims",
    [
        ("t10k-images-idx3-ubyte", 2051, (10000, 28, 28)),
        ("t10k-labels-idx1-ubyte", 2049, (10000,)),
        ("train-images-idx3-ubyte", 2051, (60000, 28, 28)),
        ("train-labels-idx1-ubyte", 2049, (60000,)),
    ],
)
def test_read_idx_returns_the_raw_bytes(mnist_raw_dir, stem, magic, dims):
    path = mnist_raw_dir / f"{stem}.gz"
    got_magic, got_dims, payload, raw = _parse_idx_by_hand(path)
    assert (got_magic, got_dims) == (magic, dims)
    array = data.read_idx(path, data.DATASETS["mnist"])
    assert array.shape == dims and array.dtype == np.uint8
    assert array.tobytes() == payload
    if stem in MNIST_IMAGE_MD5:
        assert hashlib.md5(raw).hexdigest() == MNIST_IMAGE_MD5[stem]


def test_mnist_known_first_labels(mnist_raw_dir):
    split = data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["mnist"])
    assert split.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert split.images.shape == (10000, 28, 28, 1)
    # the well-known statistics of MNIST's training pixels
    train = data.read_idx_split(mnist_raw_dir, "train", data.DATASETS["mnist"])
    pixels = train.images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(0.1307, abs=1e-4)
    assert pixels.std() == pytest.approx(0.3081, abs=1e-4)
    assert np.bincount(train.labels).tolist()[:3] == [5923, 6742, 5958]


def test_fashion_mnist_files_are_the_official_ones(fashion_raw_dir):
    for name, md5 in FASHION_GZ_MD5.items():
        assert hashlib.md5((fashion_raw_dir / name).read_bytes()).hexdigest() == md5
    split = data.read_idx_split(fashion_raw_dir, "train", data.DATASETS["fashion_mnist"])
    assert split.images.astype(np.float64).mean() / 255 == pytest.approx(0.2860, abs=1e-4)
    assert np.bincount(split.labels).tolist() == [6000] * 10


def _write_gz(path, payload: bytes):
    path.write_bytes(gzip.compress(payload))
    return path


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + bytes(100), "holds"),  # truncated
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 4) + bytes(16), "not a uint8 IDX"),  # float type
        (b"\x00\x00", "not a uint8 IDX"),
        (b"\x00\x00\x08\x03" + bytes(3), "truncated inside its header"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, message):
    path = _write_gz(tmp_path / "bad-idx3-ubyte.gz", payload)
    with pytest.raises(data.DataError, match=message) as e:
        data.read_idx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_read_idx_rejects_non_gzip_and_missing(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="not a readable gzip"):
        data.read_idx(path)
    with pytest.raises(data.DataError, match="missing raw data file"):
        data.read_idx(tmp_path / "nothing.gz")


def test_read_idx_rejects_changed_pixels(tmp_path, mnist_raw_dir):
    raw = bytearray(gzip.decompress((mnist_raw_dir / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[5000] ^= 0xFF  # one pixel of one image: the header stays valid
    path = _write_gz(tmp_path / "t10k-images-idx3-ubyte.gz", bytes(raw))
    assert data.read_idx(path).shape == (10000, 28, 28)  # without a spec: structurally fine
    with pytest.raises(data.DataError, match="does not match the official mnist"):
        data.read_idx(path, data.DATASETS["mnist"])


def test_the_wrong_dataset_folder_is_named(mnist_raw_dir):
    with pytest.raises(data.DataError, match="is mnist data, not fashion_mnist: point the raw"):
        data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["fashion_mnist"])


def test_a_mistyped_raw_data_dir_is_an_error_even_when_prepared(tmp_path, mnist_tfds_dir):
    with pytest.raises(data.DataError, match=f"--raw_data_dir={tmp_path / 'nope'} does not exist"):
        data.load_split("mnist", "test", data_dir=mnist_tfds_dir, raw_data_dir=tmp_path / "nope")


def test_find_raw_dir_forms(tmp_path, mnist_raw_dir, monkeypatch, no_raw_data_env):
    parent = mnist_raw_dir.parent
    assert data.find_raw_dir("mnist", mnist_raw_dir) == mnist_raw_dir
    assert data.find_raw_dir("mnist", parent) == mnist_raw_dir
    assert data.find_raw_dir("mnist") is None
    assert data.find_raw_dir("mnist", manual_dir=parent) == mnist_raw_dir
    monkeypatch.setenv(data.RAW_DATA_DIR_ENV, str(parent))
    assert data.find_raw_dir("mnist") == mnist_raw_dir
    with pytest.raises(data.DataError, match="--raw_data_dir=.* holds neither"):
        data.find_raw_dir("mnist", tmp_path)


def test_unknown_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(data.DataError, match=r"unknown dataset 'cifar1O' \(did you mean cifar10"):
        data.load_split("cifar1O", "train", data_dir=tmp_path)


def test_a_tfds_dataset_without_images_is_one_line(tmp_path):
    with pytest.raises(data.DataError, match="imdb_reviews has no image feature"):
        data.dataset_spec("imdb_reviews", data_dir=tmp_path)


def test_a_tfds_image_dataset_needing_tensorflow_names_the_way_out(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load_split("cifar100", "train", data_dir=tmp_path)
    assert "needs TensorFlow to prepare it" in str(e.value)
    assert "tfds build cifar100 --file_format=array_record" in str(e.value)
    assert "folder:PATH" in str(e.value)


def test_offline_without_raw_files_fails_fast(tmp_path, monkeypatch, no_raw_data_env):
    # a closed local port stands in for an unreachable download server
    dead = dataclasses.replace(data.DATASETS["mnist"], url="http://127.0.0.1:9/")
    monkeypatch.setitem(data.DATASETS, "mnist", dead)
    start = time.perf_counter()
    with pytest.raises(data.DataError) as e:
        data.load_split("mnist", "train", data_dir=tmp_path)
    assert time.perf_counter() - start < 15
    message = str(e.value)
    assert "--raw_data_dir" in message and data.RAW_DATA_DIR_ENV in message
    assert "cannot be downloaded" in message and "\n" not in message
    assert not (tmp_path / "mnist" / data.TFDS_VERSION).exists()


def test_online_path_downloads_through_tfds(tmp_path, monkeypatch, mnist_raw_dir, no_raw_data_env):
    """The download path for real: a local HTTP server stands in for the official one."""
    import functools
    import http.server
    import threading

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(mnist_raw_dir))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = dataclasses.replace(
            data.DATASETS["mnist"], url=f"http://127.0.0.1:{server.server_address[1]}/"
        )
        monkeypatch.setitem(data.DATASETS, "mnist", local)
        split = data.load_split("mnist", "test", data_dir=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    raw = data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["mnist"])
    assert np.array_equal(split.images, raw.images) and np.array_equal(split.labels, raw.labels)
    assert any((tmp_path / "downloads").iterdir())  # went through tfds' download manager


def test_check_reachable_gives_up_at_its_timeout(monkeypatch):
    import socket

    listener = socket.socket()  # accepts connections but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        start = time.perf_counter()
        with pytest.raises(data.DataError, match="cannot reach"):
            data.check_reachable(f"http://127.0.0.1:{port}/", timeout=1.0)
        assert time.perf_counter() - start < 5
    finally:
        listener.close()


def test_tfds_layout_and_data_source_match_raw(mnist_tfds_dir, mnist_raw_dir):
    import tensorflow_datasets as tfds

    version_dir = mnist_tfds_dir / "mnist" / data.TFDS_VERSION
    assert (version_dir / "dataset_info.json").is_file()
    assert sorted(p.name for p in version_dir.glob("mnist-*.array_record-*")) == [
        "mnist-test.array_record-00000-of-00001",
        "mnist-train.array_record-00000-of-00001",
    ]
    raw = data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["mnist"])
    source = tfds.data_source("mnist", split="test", data_dir=str(mnist_tfds_dir), download=False)
    assert len(source) == 10000
    for i in (0, 1, 4321, 9999):  # records keep the order of the raw files
        assert np.array_equal(source[i]["image"], raw.images[i])
        assert source[i]["label"] == raw.labels[i]


def test_load_split_equals_raw_and_uses_cache(mnist_tfds_dir, mnist_raw_dir, monkeypatch):
    for split in ("train", "test"):
        raw = data.read_idx_split(mnist_raw_dir, split, data.DATASETS["mnist"])
        folder = mnist_tfds_dir / "mnist" / data.TFDS_VERSION / f"vaejax_decoded_{split}"
        assert (folder / "images.npy").is_file() and (folder / "labels.npy").is_file()

        def no_tfds(*args, **kwargs):
            raise AssertionError("the cache should have been used")

        monkeypatch.setattr(data, "read_tfds_split", no_tfds)
        loaded = data.load_split("mnist", split, data_dir=mnist_tfds_dir)
        assert isinstance(loaded.images, np.memmap)  # opened, not read: rows page in when used
        assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int32
        assert np.array_equal(loaded.images, raw.images)
        assert np.array_equal(loaded.labels, raw.labels)


def test_corrupt_cache_is_rebuilt(tmp_path, mnist_tfds_dir, mnist_raw_dir, caplog):
    data_dir = tmp_path / "copy"
    shutil.copytree(mnist_tfds_dir / "mnist", data_dir / "mnist")
    cache = data_dir / "mnist" / data.TFDS_VERSION / "vaejax_decoded_test" / "images.npy"
    cache.write_bytes(b"garbage")
    loaded = data.load_split("mnist", "test", data_dir=data_dir)
    raw = data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["mnist"])
    assert np.array_equal(loaded.images, raw.images)
    assert "ignoring the unreadable decoded copy" in caplog.text
    assert np.load(cache).shape == (10000, 28, 28, 1)  # rewritten whole


def test_unreadable_or_tfrecord_preparations_are_explained(tmp_path):
    version_dir = tmp_path / "mnist" / data.TFDS_VERSION
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text('{"name": "mnist", "fileFormat": "tfrecord"}')
    with pytest.raises(data.DataError, match="holds tfrecord files, which tfds.data_source"):
        data.load_split("mnist", "test", data_dir=tmp_path)
    (version_dir / "dataset_info.json").write_text("{truncated")
    with pytest.raises(data.DataError, match=f"delete {version_dir} to prepare it again"):
        data.load_split("mnist", "test", data_dir=tmp_path)


def test_truncated_array_record_is_explained(tmp_path, mnist_tfds_dir):
    shutil.copytree(mnist_tfds_dir / "mnist", tmp_path / "mnist")
    version_dir = tmp_path / "mnist" / data.TFDS_VERSION
    shutil.rmtree(version_dir / "vaejax_decoded_test")
    record_file = version_dir / "mnist-test.array_record-00000-of-00001"
    record_file.write_bytes(record_file.read_bytes()[:100_000])
    with pytest.raises(data.DataError, match=f"delete {version_dir} to prepare it again") as e:
        data.load_split("mnist", "test", data_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_without_tfds_the_raw_files_are_read(monkeypatch, mnist_raw_dir, no_raw_data_env):
    import builtins

    real_import = builtins.__import__

    def import_without_tfds(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ImportError("simulated: no tensorflow_datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_without_tfds)
    split = data.load_split("mnist", "test", raw_data_dir=mnist_raw_dir)
    assert split.images.shape == (10000, 28, 28, 1)
    with pytest.raises(data.DataError, match="tensorflow-datasets is not installed"):
        data.load_split("mnist", "test")


# ---------------------------------------------------------------------------------------------
# Pixels


def test_to_unit_interval_and_padding():
    images = jnp.arange(2 * 28 * 28, dtype=jnp.uint8).reshape(2, 28, 28, 1)
    x = data.to_unit_interval(images)
    assert x.dtype == jnp.float32 and float(x.max()) == 1.0 and float(x.min()) == 0.0
    padded = data.pad_images(x, 32)
    assert padded.shape == (2, 32, 32, 1)
    assert np.array_equal(padded[:, 2:30, 2:30], x)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert float(jnp.abs(padded[:, border]).sum()) == 0.0
    with pytest.raises(ValueError, match="evenly"):
        data.pad_images(x, 31)


def test_dynamic_binarization_is_a_fresh_unbiased_draw():
    p = jnp.full((200_000,), 0.3)
    a = data.binarize(jax.random.key(0), p)
    b = data.binarize(jax.random.key(1), p)
    assert set(np.unique(np.asarray(a)).tolist()) == {0.0, 1.0}
    assert float(a.mean()) == pytest.approx(0.3, abs=0.005)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, data.binarize(jax.random.key(0), p))


def test_fixed_binarization_is_reproducible_and_unbiased():
    images = np.full((100, 28, 28, 1), 51, np.uint8)  # intensity 0.2
    first = data.fixed_binarization(images, seed=5)
    assert np.array_equal(first, data.fixed_binarization(images, seed=5))
    assert not np.array_equal(first, data.fixed_binarization(images, seed=6))
    assert set(np.unique(first).tolist()) == {0, 255}
    assert (first == 255).mean() == pytest.approx(0.2, abs=0.005)
    extremes = np.array([0, 255], np.uint8).reshape(1, 2, 1, 1)
    assert data.fixed_binarization(extremes, 0).ravel().tolist() == [0, 255]


def test_binarization_protocols():
    split = data.ImageSplit(np.full((10, 28, 28, 1), 128, np.uint8), np.zeros(10, np.int32))
    assert data.apply_binarization_protocol(split, "none", train=True) is split
    assert data.apply_binarization_protocol(split, "dynamic", train=True) is split
    dyn_test = data.apply_binarization_protocol(split, "dynamic", train=False)
    static_test = data.apply_binarization_protocol(split, "static", train=False)
    static_train = data.apply_binarization_protocol(split, "static", train=True)
    assert np.array_equal(dyn_test.images, static_test.images)  # one fixed test draw for both
    assert not np.array_equal(static_train.images, static_test.images)
    with pytest.raises(data.DataError, match="unknown binarization"):
        data.apply_binarization_protocol(split, "sometimes", train=True)


def test_batch_preprocessor():
    images = jnp.full((4, 28, 28, 1), 255, jnp.uint8)
    grey = data.make_batch_preprocessor(32)(images, None)
    assert grey.shape == (4, 32, 32, 1) and float(grey.sum()) == 4 * 28 * 28
    half = jnp.full((4, 28, 28, 1), 128, jnp.uint8)
    binary = data.make_batch_preprocessor(28, dynamic_binarization=True)(half, jax.random.key(3))
    assert set(np.unique(np.asarray(binary)).tolist()) == {0.0, 1.0}


def test_a_decoded_copy_that_does_not_fit_on_the_disk_is_skipped(
    tmp_path, mnist_tfds_dir, mnist_raw_dir, monkeypatch, caplog
):
    """The decoded copy reserves its blocks first: a full disk is a warning and the split is
    decoded into memory (a write into a mapped file on a full disk would kill the process)."""
    import errno

    from vaejax.data import cache

    data_dir = tmp_path / "copy"
    shutil.copytree(mnist_tfds_dir / "mnist", data_dir / "mnist")
    version_dir = data_dir / "mnist" / data.TFDS_VERSION
    shutil.rmtree(version_dir / "vaejax_decoded_test")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", full)
    loaded = data.load_split("mnist", "test", data_dir=data_dir)
    raw = data.read_idx_split(mnist_raw_dir, "test", data.DATASETS["mnist"])
    assert np.array_equal(loaded.images, raw.images) and not isinstance(loaded.images, np.memmap)
    assert "could not write the decoded copy" in caplog.text
    assert not any(
        p.name.startswith((".vaejax_decoded", "vaejax_decoded_test")) for p in version_dir.iterdir()
    )
