"""The datasets of :data:`vaejax.data.sources.SOURCES`: raw files -> tfds (array_record) -> uint8
arrays.

The path a dataset takes is that of MNIST (:mod:`vaejax.data.datasets`):

1. Raw files: the official files of its :class:`~vaejax.data.sources.SourceSpec`, found in a
   local folder (:func:`vaejax.data.sources.find_raw_dir`) or downloaded through tfds'
   download manager (downloaded, not extracted: each source opens its archives itself), and
   checked by size and SHA-256 before anything is written.
2. tfds: one builder class for every source (:func:`builder`) writes tfds' standard layout
   ``<data_dir>/<name>/<version>/`` with the name, version and features of tfds' own builder,
   as array_record files, without TensorFlow. Records keep the order of the raw files
   (``disable_shuffling``), which tfds' own builders shuffle.
3. Arrays: the prepared split is read back and decoded by the source (e.g. CelebA's photos
   cropped to 64x64); the uint8 arrays are cached next to the tfds files
   (:mod:`vaejax.data.cache`) so later runs open them memory-mapped at once.

Preparing holds the same lock as MNIST's (``<data_dir>/<name>/.vaejax-prepare.lock``) and
removes what killed preparations left; reading prepared data writes nothing but the optional
cache. Raw files given explicitly are checked by size on every run once the data are prepared
(a SHA-256 of CelebA's 1.4 GB zip would cost seconds each time), in full when they are used.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import os
import time
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vaejax.data.cache import decoded_split
from vaejax.data.datasets import (
    check_prepared,
    check_reachable,
    default_data_dir,
    is_prepared,
    preparation_lock,
    remove_leftovers,
    writing_into,
)
from vaejax.data.idx import RAW_DATA_DIR_ENV, DataError, ImageSplit
from vaejax.data.source_spec import (
    Example,
    Source,
    SourceSpec,
    check_raw_file,
    find_raw_dir,
    raw_file_names,
)
from vaejax.data.sources import source

log = logging.getLogger(__name__)

_CHUNK = 512  # records decoded per batch of work handed to the decoding threads


def resolve(spec_or_name: SourceSpec | str) -> tuple[SourceSpec, Source]:
    """The spec and the module of a dataset given by name or by spec (a spec's module is that of
    its name: a spec may point at other raw files, e.g. a local server's)."""
    if isinstance(spec_or_name, SourceSpec):
        return spec_or_name, source(spec_or_name.name)
    module = source(spec_or_name)
    return module.SPEC, module


@functools.cache
def _generic_builder() -> type:
    import tensorflow_datasets as tfds  # takes seconds: imported on first use

    from vaejax.data.tfds_builders import LocalDatasetInfo, QuietPreparation

    class SourceBuilder(QuietPreparation, tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Prepares a source's tfds folder from its raw files, without TensorFlow.

        ``raw_paths`` (raw file name -> local path) are files already checked; None downloads
        them through the download manager and checks them.
        """

        VERSION = tfds.core.Version("0.0.0")  # each dataset's subclass sets tfds' version

        def __init__(
            self,
            *,
            source: Source,
            spec: SourceSpec,
            raw_paths: Mapping[str, Path] | None = None,
            **kwargs,
        ):
            self._source = source
            self._spec = spec
            self._raw_paths = raw_paths
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            return LocalDatasetInfo(
                builder=self,
                description=self._spec.description,
                features=self._source.features(),
                supervised_keys=("image", "label") if self._spec.class_names else None,
                homepage=self._spec.homepage or None,
                disable_shuffling=True,  # record i is example i of the raw files
            )

        def _split_generators(self, dl_manager):
            paths = self._raw_paths
            if paths is None:
                spec = self._spec
                # download, not download_and_extract: the source opens its archives itself
                downloaded = dl_manager.download({raw.name: raw.url for raw in spec.raw_files})
                paths = {name: Path(path) for name, path in downloaded.items()}
                for raw in spec.raw_files:
                    check_raw_file(
                        paths[raw.name], raw, spec.name, fix="delete it to download it again"
                    )
            return {
                split: self._generate_examples(paths, split) for split in self._spec.tfds_splits
            }

        def _generate_examples(self, paths: Mapping[str, Path], split: str):
            yield from self._source.examples(paths, split)

    SourceBuilder.__qualname__ = "SourceBuilder"
    return SourceBuilder


def __getattr__(name: str) -> Any:
    # ``SourceBuilder``, the generic builder class, is defined on first use: it needs tfds
    if name == "SourceBuilder":
        return _generic_builder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def builder_class(name: str, version: str) -> type:
    """The tfds builder class of the dataset ``name`` at ``version`` (not registered with tfds:
    ``tfds.builder(name)`` stays tfds' own, which reads the prepared folder as well)."""
    import tensorflow_datasets as tfds

    def body(namespace):
        namespace.update(name=name, VERSION=tfds.core.Version(version), __module__=__name__)

    class_name = "".join(part.title() for part in name.split("_")) + "Source"
    return types.new_class(class_name, (_generic_builder(),), {"skip_registration": True}, body)


def builder(
    spec_or_name: SourceSpec | str,
    data_dir: os.PathLike | str,
    raw_paths: Mapping[str, Path] | None = None,
) -> Any:
    """The array_record builder of a dataset. ``raw_paths``: its raw files (name -> path),
    already checked; None downloads them."""
    spec, module = resolve(spec_or_name)
    cls = builder_class(spec.name, spec.version)
    return cls(
        source=module,
        spec=spec,
        raw_paths=raw_paths,
        data_dir=os.fspath(data_dir),
        file_format="array_record",
    )


def prepare_source(
    spec_or_name: SourceSpec | str,
    data_dir: os.PathLike | str | None = None,
    raw_data_dir: os.PathLike | str | None = None,
) -> Path:
    """Makes sure ``<data_dir>/<name>/<version>`` is prepared; returns that folder.

    Nothing is written when it already is: a read-only ``data_dir`` serves prepared data.
    Otherwise the raw files come from :func:`vaejax.data.sources.find_raw_dir` (checked by size
    and SHA-256 first), or are downloaded; with neither possible this fails within seconds
    naming the offline option.
    """
    spec, module = resolve(spec_or_name)
    data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
    builder_dir = data_dir / spec.name / spec.version
    explicit = find_raw_dir(spec, raw_data_dir)  # flag or environment: checked even when prepared
    if not is_prepared(builder_dir):
        raw_dir = explicit or find_raw_dir(spec, manual_dir=data_dir / "downloads" / "manual")
        raw_paths = _checked_raw_files(spec, data_dir, raw_dir)  # before anything is written
        _prepare_locked(spec, module, data_dir, raw_dir, raw_paths)
    check_prepared(builder_dir)
    if explicit is not None:
        for raw in spec.raw_files:  # the size only: a SHA-256 would cost seconds every run
            check_raw_file(explicit / raw.name, raw, spec.name, digest=False)
    return builder_dir


def _offline_fix(spec: SourceSpec) -> str:
    return (
        f"pass --raw_data_dir DIR (or set {RAW_DATA_DIR_ENV}=DIR) where DIR holds "
        f"{raw_file_names(spec)}"
    )


def _checked_raw_files(
    spec: SourceSpec, data_dir: Path, raw_dir: Path | None
) -> dict[str, Path] | None:
    """The raw files of ``raw_dir``, each checked; None when they are to be downloaded (the
    server must answer)."""
    if raw_dir is None:
        try:
            check_reachable(spec.url)
        except DataError as e:
            raise DataError(
                f"{spec.name} is not prepared in {data_dir} and cannot be downloaded: {e}. "
                f"Offline, {_offline_fix(spec)}"
            ) from None
        return None
    paths = {}
    for raw in spec.raw_files:
        paths[raw.name] = raw_dir / raw.name
        check_raw_file(paths[raw.name], raw, spec.name)
    return paths


def _prepare_locked(
    spec: SourceSpec,
    module: Source,
    data_dir: Path,
    raw_dir: Path | None,
    raw_paths: Mapping[str, Path] | None,
) -> None:
    """Prepares under the lock of ``<data_dir>/<name>``, unless another process did meanwhile."""
    builder_dir = data_dir / spec.name / spec.version
    with preparation_lock(data_dir, spec.name) as locked:
        if is_prepared(builder_dir):
            log.info("%s was prepared in %s by another process", spec.name, data_dir)
            return
        if locked:
            remove_leftovers(data_dir / spec.name)
        prepared = builder(spec, data_dir, raw_paths)
        log.info("preparing %s in %s from %s (once)", spec.name, builder_dir, raw_dir or spec.url)
        start = time.perf_counter()
        with writing_into(data_dir, spec.name):
            prepared.download_and_prepare()
        log.info("prepared %s in %.1f s", spec.name, time.perf_counter() - start)


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def decode_all(
    records: Iterable[Mapping[str, Any]],
    decode: Callable[[Mapping[str, Any]], Example],
    spec: SourceSpec,
    split: str,
    out: ImageSplit | None = None,
) -> ImageSplit:
    """Decodes ``records`` (tfds records or examples) into the arrays of one split (``out``'s,
    or new ones), which must hold ``spec.num_examples[split]``; PIL decodes in threads (it
    releases the GIL)."""
    n = spec.num_examples[split]
    if out is None:
        attributes = (
            np.empty((n, len(spec.attribute_names)), bool) if spec.attribute_names else None
        )
        out = ImageSplit(
            np.empty((n, *spec.image_shape), np.uint8), np.empty(n, np.int32), attributes
        )
    images, labels = out.images, out.labels
    attributes = out.attributes if out.attributes is not None else np.empty((n, 0), bool)
    count = 0
    records = iter(records)
    with concurrent.futures.ThreadPoolExecutor(_threads()) as pool:
        while chunk := list(itertools.islice(records, _CHUNK)):
            if count + len(chunk) > n:
                raise DataError(f"{spec.name} {split} holds more than {n:,} examples")
            for example in pool.map(decode, chunk):
                images[count], labels[count], attributes[count] = example
                count += 1
    if count != n:
        raise DataError(f"{spec.name} {split} holds {count:,} examples, not {n:,}")
    return ImageSplit(images, labels, attributes if spec.attribute_names else None)


def read_prepared_split(
    spec_or_name: SourceSpec | str,
    split: str,
    data_dir: os.PathLike | str,
    out: ImageSplit | None = None,
) -> ImageSplit:
    """Decodes a prepared split (every record, in file order) with the source's ``decode``.

    Images are read as their encoded bytes and decoded by PIL, whichever decoder tfds would
    pick (OpenCV, where installed, decodes JPEGs a little differently)."""
    import tensorflow_datasets as tfds

    spec, module = resolve(spec_or_name)
    folder = Path(data_dir) / spec.name / spec.version
    try:
        data_source = builder(spec, data_dir).as_data_source(
            split=spec.splits[split], decoders={"image": tfds.decode.SkipDecoding()}
        )

        def records():
            for start in range(0, len(data_source), _CHUNK):
                stop = min(start + _CHUNK, len(data_source))
                yield from data_source.__getitems__(list(range(start, stop)))

        return decode_all(records(), module.decode, spec, split, out)
    except Exception as e:  # noqa: BLE001 - any failure here means damaged prepared files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"cannot read the prepared {spec.name} {split} split ({reason}): delete "
            f"{folder} to prepare it again"
        ) from None


def read_raw_split(
    spec_or_name: SourceSpec | str, split: str, raw_data_dir: os.PathLike | str | None = None
) -> ImageSplit:
    """One split decoded straight from the raw files, without tfds (checked first)."""
    spec, module = resolve(spec_or_name)
    raw_dir = find_raw_dir(spec, raw_data_dir)
    if raw_dir is None:
        raise DataError(
            f"tensorflow-datasets is not installed and no raw {spec.name} files are given: "
            f"{_offline_fix(spec)}"
        )
    paths = {}
    for raw in spec.raw_files:
        paths[raw.name] = raw_dir / raw.name
        check_raw_file(paths[raw.name], raw, spec.name)
    examples = (example for _, example in module.examples(paths, spec.splits[split]))
    return decode_all(examples, module.decode, spec, split)


def load_source_split(
    name_or_spec: SourceSpec | str,
    split: str,
    data_dir: os.PathLike | str | None = None,
    raw_data_dir: os.PathLike | str | None = None,
) -> ImageSplit:
    """One split (``train`` or ``test``) of a dataset as uint8 arrays at its delivered
    ``image_shape``, preparing the tfds files first if needed.

    Without tensorflow-datasets installed the raw files are decoded directly from the raw data
    folder instead (slower: no cache).
    """
    spec, _ = resolve(name_or_spec)
    if split not in spec.splits:
        raise DataError(f"unknown split {split!r}: choose {' or '.join(spec.splits)}")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return read_raw_split(spec, split, raw_data_dir)
    builder_dir = prepare_source(spec, data_dir, raw_data_dir)
    return decoded_split(
        builder_dir,
        split,
        spec.num_examples[split],
        spec.image_shape,
        lambda out: read_prepared_split(spec, split, builder_dir.parent.parent, out),
        len(spec.attribute_names),
        what=f"{spec.name}/{split}",
    )
