"""CIFAR-10, SVHN and CelebA: synthetic raw files in the official layouts -> tfds (downloaded from a
local server, or read from a raw-files folder) -> the arrays vaejax delivers; damaged, missing
and unreachable raw files."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from etils.epath import testing as epath_testing

from tests import archives
from tests.helpers import BUCKET, fake_bucket
from vaejax import cli, io
from vaejax.data import catalog, remote, source_builder, sources
from vaejax.data.idx import RAW_DATA_DIR_ENV, DataError
from vaejax.runs import vae as vae_run

# the module's fixtures write and prepare datasets: its tests share one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("sources")

NAMES = ("cifar10", "svhn_cropped", "celeb_a")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, archives.Written]:
    """Each dataset's synthetic raw files, in ``<root>/<name>/``."""
    root = tmp_path_factory.mktemp("raw")
    return {name: writer(root / name) for name, writer in archives.WRITERS.items()}


@pytest.fixture(scope="module")
def raw_root(written) -> Path:
    return written["cifar10"].folder.parent


@pytest.fixture(scope="module")
def server(raw_root):
    """A local HTTP server of the raw files: ``<url><name>/<file>``."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(raw_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def specs(written, server) -> dict[str, sources.SourceSpec]:
    """The official specs with the synthetic files' sizes, SHA-256s and local URLs."""
    return {
        name: written[name].spec(sources.source(name).SPEC, f"{server}{name}/") for name in NAMES
    }


@pytest.fixture(autouse=True)
def _no_raw_data_env(monkeypatch):
    monkeypatch.delenv(RAW_DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, specs):
    """A data_dir where the three datasets were downloaded from the server through tfds' download
    manager and prepared, and the splits they delivered."""
    data_dir = tmp_path_factory.mktemp("tfds_downloaded")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(RAW_DATA_DIR_ENV, raising=False)
        loaded = {
            (name, split): source_builder.load_source_split(specs[name], split, data_dir=data_dir)
            for name in NAMES
            for split in ("train", "test")
        }
    return data_dir, loaded


def _assert_equal(got, want):
    assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32
    assert np.array_equal(got.images, want.images)
    assert np.array_equal(got.labels, want.labels)
    if want.attributes is None:
        assert got.attributes is None
    else:
        assert got.attributes.dtype == bool
        assert np.array_equal(got.attributes, want.attributes)


@pytest.mark.parametrize("name", NAMES)
def test_downloaded_through_tfds_deliver_the_raw_data(name, downloaded, written, specs):
    data_dir, loaded = downloaded
    for split in ("train", "test"):
        got = loaded[name, split]
        assert got.images.shape[1:] == sources.source(name).SPEC.image_shape
        _assert_equal(got, written[name].expected[split])
    # the files came through tfds' download manager, not from the raw folder
    downloads = [p.name for p in (data_dir / "downloads" / name).iterdir()]
    assert sum(f.startswith("127.0.0.1_") and f.endswith(".INFO") for f in downloads) == len(
        specs[name].raw_files
    ), downloads
    spec = specs[name]
    folder = data_dir / name / spec.version
    assert {p.name for p in folder.glob("vaejax_decoded_*")} == {
        "vaejax_decoded_train",
        "vaejax_decoded_test",
    }
    again = source_builder.load_source_split(spec, "test", data_dir=data_dir)  # from the cache
    _assert_equal(again, written[name].expected["test"])


def test_celeba_attributes_and_smiling(downloaded, written):
    _, loaded = downloaded
    smiling = sources.source("celeb_a").SPEC.attribute_names.index("Smiling")
    assert smiling == 31  # the 32nd column of list_attr_celeba.txt
    # photos 000001, 000002, 000005 are train; 000004, 000006 test (archives.CELEBA_PARTITIONS)
    assert loaded["celeb_a", "train"].attributes[:, smiling].tolist() == [True, False, False]
    assert loaded["celeb_a", "test"].attributes[:, smiling].tolist() == [True, False]
    assert loaded["celeb_a", "train"].attributes.shape == (3, 40)
    # the attribute-vector tools take the mask: mean code with the attribute minus without
    from vaejax import data
    from vaejax.evaluation import latent

    spec, train = sources.source("celeb_a").SPEC, loaded["celeb_a", "train"]
    mask = data.attribute_mask(train, spec, "Smiling")
    codes = np.arange(6.0).reshape(3, 2)
    assert latent.attribute_vector(codes, mask, ~mask).tolist() == [-3.0, -3.0]
    with pytest.raises(data.DataError, match="has no attribute 'Smiles'"):
        data.attribute_mask(train, spec, "Smiles")


@pytest.mark.parametrize("name", NAMES)
def test_raw_folder_gives_the_same_arrays(name, tmp_path, raw_root, written, specs, downloaded):
    _, loaded = downloaded
    for split in ("train", "test"):
        # the parent folder holds a <name>/ folder with the files
        got = source_builder.load_source_split(
            specs[name], split, data_dir=tmp_path, raw_data_dir=raw_root
        )
        _assert_equal(got, written[name].expected[split])
        _assert_equal(got, loaded[name, split])
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]  # none made


def _copy(written: archives.Written, dest: Path) -> Path:
    shutil.copytree(written.folder, dest)
    return dest


@pytest.mark.parametrize("name", NAMES)
def test_damaged_raw_file_is_one_line_naming_it(name, tmp_path, written, specs):
    raw_dir = _copy(written[name], tmp_path / "raw")
    damaged = raw_dir / written[name].files[0]
    payload = bytearray(damaged.read_bytes())
    payload[len(payload) // 2] ^= 0x01
    damaged.write_bytes(bytes(payload))
    with pytest.raises(DataError) as e:
        source_builder.load_source_split(
            specs[name], "train", data_dir=tmp_path / "data", raw_data_dir=raw_dir
        )
    message = str(e.value)
    assert str(damaged) in message and "damaged" in message and "\n" not in message
    assert not (tmp_path / "data" / name).exists()  # checked before anything was written


@pytest.mark.parametrize("name", NAMES)
def test_missing_raw_file_is_one_line_naming_it(name, tmp_path, written, specs):
    raw_dir = _copy(written[name], tmp_path / "raw")
    missing = written[name].files[-1]
    (raw_dir / missing).unlink()
    with pytest.raises(DataError) as e:
        source_builder.load_source_split(
            specs[name], "test", data_dir=tmp_path / "data", raw_data_dir=raw_dir
        )
    message = str(e.value)
    assert missing in message and "--raw_data_dir" in message and "\n" not in message
    assert not (tmp_path / "data" / name).exists()


def test_folder_without_the_files_lists_them(tmp_path, specs):
    with pytest.raises(DataError) as e:
        source_builder.prepare_source(specs["celeb_a"], tmp_path / "data", raw_data_dir=tmp_path)
    message = str(e.value)
    assert "holds neither" in message and "\n" not in message
    for raw in specs["celeb_a"].raw_files:
        assert raw.name in message


def test_damaged_download_is_named(tmp_path, specs):
    """A download that is not the file of the spec: checked after tfds' download manager."""
    spec = specs["cifar10"]
    wrong = dataclasses.replace(spec.raw_files[0], sha256="0" * 64)
    with pytest.raises(DataError) as e:
        source_builder.prepare_source(dataclasses.replace(spec, raw_files=(wrong,)), tmp_path)
    message = str(e.value)
    assert "damaged" in message and "delete it to download it again" in message
    assert str(tmp_path / "downloads") in message and "\n" not in message
    assert not (tmp_path / "cifar10" / spec.version).exists()


@pytest.mark.parametrize("name", NAMES)
def test_plain_tfds_data_source_reads_tfds_own_features(name, tmp_path, downloaded, written, specs):
    import tensorflow_datasets as tfds

    data_dir, _ = downloaded
    spec = specs[name]
    own = tfds.builder_cls(name)  # tfds' own builder: the same name, version and features
    assert str(own.VERSION) == spec.version
    ours = sources.source(name).features()
    own_features = own(data_dir=str(tmp_path)).info.features  # from its code, not our folder
    assert own_features.get_serialized_info() == ours.get_serialized_info()
    test = tfds.data_source(name, split="test", data_dir=str(data_dir), download=False)
    assert len(test) == len(written[name].expected["test"].labels)
    record = test[0]
    if name == "celeb_a":
        assert sorted(record) == ["attributes", "identity", "image", "landmarks"]
        assert record["image"].shape == (218, 178, 3) and record["image"].dtype == np.uint8
        assert sorted(record["attributes"]) == sorted(archives.CELEBA_ATTRIBUTES)
        assert sorted(record["landmarks"]) == sorted(archives.CELEBA_LANDMARKS)
        assert list(record["identity"]) == ["Identity_No"]
        # the JPEG bytes of the zip are stored unchanged
        raw = tfds.data_source(
            name,
            split="test",
            data_dir=str(data_dir),
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        assert [r["image"] for r in raw] == written[name].extra["jpegs"]["test"]
        photo_4 = 3  # 000004.jpg, the first test photo
        assert record["identity"]["Identity_No"] == written[name].extra["identities"][photo_4]
        assert record["landmarks"]["nose_x"] == written[name].extra["landmarks"][photo_4, 4]
        validation = tfds.data_source(name, split="validation", data_dir=str(data_dir))
        assert len(validation) == len(written[name].extra["validation"])
    else:
        assert sorted(record) == ["id", "image", "label"]
        assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
        assert np.array_equal(record["image"], written[name].expected["test"].images[0])
        assert record["label"] == written[name].expected["test"].labels[0]
        assert record["id"] == (b"test_00000" if name == "cifar10" else b"test_000000")
        names = tfds.builder(name, data_dir=str(data_dir)).info.features["label"].names
        assert tuple(names) == sources.source(name).SPEC.class_names


def test_offline_without_raw_files_fails_fast(tmp_path, specs):
    probe = socket.socket()  # a port that was free a moment ago: nothing listens there
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    spec = specs["svhn_cropped"]
    dead = tuple(
        dataclasses.replace(raw, url=f"http://127.0.0.1:{port}/{raw.name}")
        for raw in spec.raw_files
    )
    start = time.perf_counter()
    with pytest.raises(DataError) as e:
        source_builder.load_source_split(
            dataclasses.replace(spec, raw_files=dead), "train", data_dir=tmp_path
        )
    assert time.perf_counter() - start < 10
    message = str(e.value)
    assert "cannot be downloaded" in message and "--raw_data_dir" in message
    assert RAW_DATA_DIR_ENV in message and "train_32x32.mat, test_32x32.mat" in message
    assert "\n" not in message
    assert not (tmp_path / "svhn_cropped" / spec.version).exists()


@pytest.mark.parametrize("name", NAMES)
def test_without_tfds_the_raw_files_are_read_directly(name, monkeypatch, raw_root, written, specs):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    got = source_builder.load_source_split(specs[name], "test", raw_data_dir=raw_root)
    _assert_equal(got, written[name].expected["test"])


def _reduce_axis(image: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Antialiased bilinear reduction of one axis: each output sample is the mean of the input
    under a triangle twice as wide as the reduction factor, centred on it."""
    size = image.shape[axis]
    scale = size / out
    centres = (np.arange(out) + 0.5) * scale
    positions = np.arange(size) + 0.5
    weights = np.clip(1 - np.abs(positions[None, :] - centres[:, None]) / scale, 0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.moveaxis(np.tensordot(weights, np.moveaxis(image, axis, 0), axes=1), 0, axis)


def test_celeba_delivery_is_a_centre_crop_and_an_antialiased_reduction(written):
    """The expected images (PIL) agree with a numpy centre crop and triangle-filter reduction."""
    import io

    import PIL.Image

    for split in ("train", "test"):
        for jpeg, want in zip(
            written["celeb_a"].extra["jpegs"][split], written["celeb_a"].expected[split].images
        ):
            photo = np.asarray(PIL.Image.open(io.BytesIO(jpeg)), dtype=np.float64)
            square = photo[35:183, 15:163]  # the centre 148x148 of 218x178
            reference = _reduce_axis(_reduce_axis(square, 64, 0), 64, 1)
            assert np.abs(reference - want).max() <= 1.0
            # the white frame lies outside the crop: no white edge in the delivered image
            assert want[0].mean() < 250 and want[:, 0].mean() < 250
    from vaejax.data import celeba

    record = {"image": written["celeb_a"].extra["jpegs"]["test"][0], "attributes": {}}
    record["attributes"] = dict.fromkeys(celeba.ATTRIBUTE_NAMES, True)
    example = celeba.decode(record)
    assert np.array_equal(example.image, written["celeb_a"].expected["test"].images[0])
    assert example.label == 0 and example.attributes.all() and example.attributes.shape == (40,)


def test_unknown_names_and_splits():
    with pytest.raises(DataError, match="unknown dataset 'cifar100': choose one of celeb_a"):
        source_builder.load_source_split("cifar100", "train")
    with pytest.raises(DataError, match="unknown split 'validation': choose train or test"):
        source_builder.load_source_split("celeb_a", "validation")


@pytest.mark.parametrize("name", NAMES)
def test_the_generic_tfds_reader_reads_a_prepared_folder_alike(name, downloaded, written):
    """Any tfds dataset prepared as array_record files is read by its tfds name: here the
    folders prepared above, read as if tfds had prepared them."""
    from vaejax.data import tfds_any

    data_dir, loaded = downloaded
    size = sources.source(name).SPEC.image_shape[0]
    spec = tfds_any.tfds_spec(name, data_dir, size)
    assert spec.image_shape == sources.source(name).SPEC.image_shape
    got = tfds_any.load_tfds_split(name, "test", data_dir, size)
    want = loaded[name, "test"]
    if name == "celeb_a":  # the generic reader crops the largest centre square, not 148x148
        assert got.images.shape == want.images.shape
        assert not got.labels.any()  # no class feature
    else:
        assert np.array_equal(got.images, want.images)
        assert np.array_equal(got.labels, want.labels)
    # decoded once, into a copy that later runs open memory-mapped
    again = tfds_any.load_tfds_split(name, "test", data_dir, size)
    assert isinstance(again.images, np.memmap) and np.array_equal(again.images, got.images)
    shape = "x".join(map(str, spec.image_shape))
    assert list(Path(data_dir).glob(f"{name}/*/vaejax_decoded_test_{shape}/images.npy"))


def test_data_folders_in_a_bucket_are_read_through_a_local_mirror(
    tmp_path, monkeypatch, written, specs
):
    bucket = tmp_path / "bucket"  # gs://bucket/ (epath's mock backend)
    shutil.copytree(written["cifar10"].folder, bucket / "raw" / "cifar10")
    monkeypatch.setattr(sources.source("cifar10"), "SPEC", specs["cifar10"])
    monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "machine_a"))
    with fake_bucket(bucket):
        got = catalog.load_split("cifar10", "train", BUCKET + "tfds", BUCKET + "raw")
        _assert_equal(got, written["cifar10"].expected["train"])
        stored = {
            p.relative_to(bucket / "tfds").as_posix()
            for p in (bucket / "tfds").rglob("*")
            if p.is_file()
        }
        version = specs["cifar10"].version
        assert f"cifar10/{version}/dataset_info.json" in stored
        assert f"cifar10/{version}/cifar10-train.array_record-00000-of-00001" in stored
        assert not [f for f in stored if "vaejax_decoded" in f or "lock" in f], stored
        mirror = tmp_path / "machine_a" / "gs" / "bucket"
        assert (mirror / "raw" / "cifar10" / written["cifar10"].files[0]).is_file()
        # another machine, with neither raw files nor a mirror: the prepared files come down
        monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "machine_b"))
        again = catalog.load_split("cifar10", "test", BUCKET + "tfds")
        _assert_equal(again, written["cifar10"].expected["test"])
        mirror = tmp_path / "machine_b" / "gs" / "bucket"
        assert (mirror / "tfds" / "cifar10" / version / "dataset_info.json").is_file()
        assert not (mirror / "tfds" / "downloads").exists()  # copied down, not downloaded
        assert not (mirror / "raw").exists()
        # a whole training run from the command line, its data from the bucket (a third
        # machine's empty mirror)
        monkeypatch.setenv(remote.CACHE_ENV, str(tmp_path / "machine_c"))
        n = len(written["cifar10"].expected["train"].images)
        argv = ["--dataset", "cifar10", "--data_dir", BUCKET + "tfds", "--epochs", "1"]
        argv += ["--batch_size", str(n), "--hidden_dim", "16", "--workdir", str(tmp_path / "run")]
        assert cli.main(vae_run.VAEConfig(), argv=argv) == 0
        assert io.read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]["epoch"] == 1
        assert (tmp_path / "machine_c" / "gs" / "bucket" / "tfds" / "cifar10").is_dir()
    refused = lambda original, *args, **kwargs: (_ for _ in ()).throw(PermissionError("403"))
    with epath_testing.mock_epath(isdir=refused, exists=refused):
        with pytest.raises(DataError, match=r"^cannot use --data_dir gs://bucket/tfds \(.*gcsfs"):
            catalog.load_split("cifar10", "test", BUCKET + "tfds")


def test_the_latent_study_adds_a_celeba_attribute_vector(
    downloaded, specs, tmp_path, capsys, monkeypatch
):
    """--attribute Smiling: its vector (mean code of the smiling training photos minus the
    others) added to the test photos without it; an unknown attribute is one line."""
    import PIL.Image

    from vaejax import cli
    from vaejax.runs import latent_study

    data_dir, loaded = downloaded
    monkeypatch.setattr(sources.source("celeb_a"), "SPEC", specs["celeb_a"])  # 3 + 2 photos
    workdir = tmp_path / "study"
    argv = ["--dataset", "celeb_a", "--data_dir", str(data_dir), "--model", "mlp"]
    argv += ["--batch_size", "1", "--epochs", "1", "--vae_epochs", "1", "--knn_k", "1"]
    argv += ["--attribute", "Smiling", "--workdir", str(workdir)]
    config = latent_study.LatentStudyConfig()
    assert cli.main(config, argv=argv) == 0
    for model in ("ae", "vae"):
        grid = np.asarray(PIL.Image.open(workdir / f"attributes_{model}.png"))
        assert grid.ndim == 3 and grid.shape[2] == 3  # colour pictures
    run_config = dataclasses.replace(config, dataset="celeb_a", data_dir=str(data_dir))
    spec = specs["celeb_a"]
    train, test = loaded["celeb_a", "train"], loaded["celeb_a", "test"]
    with_it, without_it, shifted = latent_study.second_attribute(
        dataclasses.replace(run_config, attribute="Smiling"), train, test, spec
    )
    assert with_it.tolist() == [True, False, False] and without_it.tolist() == [False, True, True]
    assert np.array_equal(shifted, test.images[[1]])  # the one test photo without a smile
    capsys.readouterr()
    bad = argv[:-4] + ["--attribute", "Smiles", "--workdir", str(tmp_path / "bad")]
    assert cli.main(config, argv=bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --attribute Smiles is not an attribute of celeb_a (its ")
    assert "Smiling" in err and "\n" not in err
