"""Data: dataset sources (numpy, host memory).

:mod:`clj.data.dataset` (the :class:`Dataset` every source returns),
:mod:`clj.data.idx` (IDX files), :mod:`clj.data.sources` (the table of
names and the sources read from disk), :mod:`clj.data.clutter` (generated
composites) and :mod:`clj.data.load` (:func:`load_dataset`, any name).
"""

from clj.data.dataset import Dataset
from clj.data.idx import EMNIST_SPLITS, read_idx
from clj.data.load import load_dataset
from clj.data.sources import DATASET_DOCS, DATASETS, PREPARED_SHAPES, TFDS_DATASETS

__all__ = [
    "DATASETS",
    "DATASET_DOCS",
    "EMNIST_SPLITS",
    "PREPARED_SHAPES",
    "TFDS_DATASETS",
    "Dataset",
    "load_dataset",
    "read_idx",
]
