"""Data: dataset sources (numpy, host memory)."""

from clj.data.sources import (
    DATASETS,
    EMNIST_SPLITS,
    TFDS_DATASETS,
    Dataset,
    load_dataset,
    read_idx,
)

__all__ = [
    "DATASETS",
    "EMNIST_SPLITS",
    "TFDS_DATASETS",
    "Dataset",
    "load_dataset",
    "read_idx",
]
