"""Datasets: raw IDX files -> tfds layout -> uint8 arrays -> float batches on the device."""

from vaejax.data.datasets import (
    check_reachable,
    default_data_dir,
    find_raw_dir,
    load_split,
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
    dataset_spec,
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
