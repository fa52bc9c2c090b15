"""tfds builders for ``mnist`` and ``fashion_mnist`` that need no TensorFlow.

They write exactly what tfds' own builders of the same name and version write
(``<data_dir>/<name>/3.0.1/``, features ``image`` uint8 [28, 28, 1] and ``label`` of 10 classes),
as array_record files, so ``tfds.data_source(name, data_dir=...)`` reads them. They differ from
tfds' own builders in three ways: the IDX files are read with ``gzip`` + numpy (tfds' own use
``tf.io.gfile``), the raw files may come from a local folder, and examples keep the order of
the raw files (``disable_shuffling``), so record ``i`` is image ``i`` of the official files.

Imported lazily: ``import tensorflow_datasets`` takes seconds.
"""

from __future__ import annotations

import os

import PIL.Image
import tensorflow_datasets as tfds

from vaejax.data import idx


class LocalDatasetInfo(tfds.core.DatasetInfo):
    """The info of a builder whose files are written here from raw files: it never looks for
    tfds' published metadata of the same name.

    That lookup runs whenever a builder opens a data dir not yet prepared, and makes an empty
    temporary folder before it checks whether it may look at all (it may not, by default), a
    folder it never removes (tensorflow-datasets 4.9.10): one more in the temp dir per
    preparation.
    """

    def initialize_from_bucket(self) -> None:
        return None


class QuietPreparation:
    """Mixed into the project's builders: without tfds' two lines around a preparation
    ("Downloading and preparing dataset Unknown size (download: Unknown size, ...)", "...
    downloaded and prepared to ...: Subsequent calls will reuse this data."), which give sizes
    these builders do not know and speak of a download where there is none; vaejax logs what it
    prepares, from where, and how long it took."""

    def _log_download_bytes(self) -> None:
        return None

    def _log_download_done(self) -> None:
        return None


class _IdxImageBuilder(QuietPreparation, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds a 28x28 grey-image classification dataset from the four IDX ``.gz`` files."""

    VERSION = tfds.core.Version(idx.TFDS_VERSION)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz in <manual_dir>/<name>/ or pass raw_data_dir."
    )

    def __init__(self, *, splits: dict[str, idx.ImageSplit] | None = None, **kwargs):
        self._splits = splits  # already read and checked from local raw files; None: download
        super().__init__(**kwargs)

    @property
    def spec(self) -> idx.DatasetSpec:
        return idx.DATASETS[self.name]

    def _info(self) -> tfds.core.DatasetInfo:
        return LocalDatasetInfo(
            builder=self,
            description=f"{self.name}: 28x28 grey images in 10 classes, read from raw IDX files.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=idx.IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(names=list(self.spec.class_names)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        splits = self._splits
        if splits is None:
            # download (not download_and_extract): the reader opens the .gz files itself
            urls = {
                stem: f"{self.spec.url}{stem}.gz"
                for pair in idx.IDX_FILES.values()
                for stem in pair
            }
            paths = dl_manager.download(urls)
            splits = {
                split: idx.read_idx_pair(paths[image_stem], paths[label_stem], split, self.spec)
                for split, (image_stem, label_stem) in idx.IDX_FILES.items()
            }
        return {split: self._generate_examples(arrays) for split, arrays in splits.items()}

    def _generate_examples(self, arrays: idx.ImageSplit):
        for index, (image, label) in enumerate(zip(arrays.images, arrays.labels)):
            # A PIL image is PNG-encoded by PIL; a numpy array would need TensorFlow to encode.
            yield index, {"image": PIL.Image.fromarray(image[..., 0]), "label": int(label)}


class Mnist(_IdxImageBuilder, skip_registration=True):
    name = "mnist"


class FashionMnist(_IdxImageBuilder, skip_registration=True):
    name = "fashion_mnist"


BUILDERS = {cls.name: cls for cls in (Mnist, FashionMnist)}


def builder(
    name: str, *, data_dir: os.PathLike | str, splits: dict[str, idx.ImageSplit] | None = None
) -> _IdxImageBuilder:
    """The array_record builder for ``name`` (``mnist`` or ``fashion_mnist``).

    ``splits``: the train and test arrays, read from local raw files; None downloads them.
    """
    idx.dataset_spec(name)  # a clear error for an unknown name
    return BUILDERS[name](data_dir=os.fspath(data_dir), splits=splits, file_format="array_record")
