"""Datasets: raw files or image folders -> tfds layout -> uint8 arrays -> float batches on the
device. Every dataset by its name: :mod:`vaejax.data.catalog`."""

from vaejax.data.catalog import (
    attribute_mask,
    builtin_names,
    dataset_spec,
    describe,
    draw,
    fit_to_size,
    load_split,
    select,
    take,
)
from vaejax.data.datasets import (
    check_reachable,
    default_data_dir,
    find_raw_dir,
    prepare,
    read_tfds_split,
)
from vaejax.data.idx import (
    DATASETS,
    IDX_FILES,
    IMAGE_SHAPE,
    RAW_DATA_DIR_ENV,
    TFDS_VERSION,
    DataError,
    DatasetSpec,
    ImageSplit,
    read_idx,
    read_idx_pair,
    read_idx_split,
)
from vaejax.data.preprocess import (
    BINARIZATIONS,
    NOISES,
    STATIC_TRAIN_BINARIZATION_SEED,
    TEST_BINARIZATION_SEED,
    apply_binarization_protocol,
    binarize,
    corrupt,
    dequantize,
    fixed_binarization,
    gaussian_noise,
    make_batch_preprocessor,
    make_classifier_preprocessor,
    make_denoising_preprocessor,
    pad_images,
    random_shift,
    salt_and_pepper,
    to_tanh_range,
    to_unit_interval,
    with_labels,
)
