"""The one entry point of the datasets: :func:`load_dataset` for every name
of :data:`clj.data.sources.DATASETS`, read from disk (:mod:`clj.data.sources`)
or generated from two of them (the clutter composites, :mod:`clj.data.clutter`).
"""

from __future__ import annotations

import os
from typing import Any

from clj.data.clutter import CLUTTER_DATASETS, load_clutter
from clj.data.dataset import Dataset
from clj.data.sources import load_source

__all__ = ["load_dataset"]


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 seed: int = 0, **kwargs: Any) -> Dataset:
    """Loads a whole dataset into host memory as uint8 images and int32 labels.

    Args:
      name: one of :data:`clj.data.sources.DATASETS`, ``"tfds:<tfds name>"``, ``"clj:<name>"``
        or any name prepared in clj's format under ``data_dir``.
      data_dir: directory to read from: first clj's prepared format
        (``<data_dir>/clj/<name>/``, written by ``python -m clj.data.prepare``),
        then IDX files for mnist/fashion_mnist/emnist, a TFDS data directory
        for the TFDS names. Ignored by digits/synthetic.
      seed: seed of the ``"synthetic"`` generator; the other datasets have fixed
        splits and ignore it.
      **kwargs: per-dataset options:
        * emnist: ``split`` in :data:`clj.data.idx.EMNIST_SPLITS` (default ``"balanced"``).
        * clutter_mnist, clutter_fashion_mnist: the fields of
          :class:`clj.data.clutter.ClutterParams` (``canvas=48``,
          ``num_train=10000``, ``num_test=2000``, ...); ``seed`` seeds them.
        * synthetic: ``image_shape=(32, 32, 3)``, ``num_classes=10``,
          ``train_per_class=100``, ``test_per_class=20``, ``noise_std=48.0``
          (Gaussian noise, in 0..255 units, added to each class's random uint8
          prototype before clipping).
        * TFDS names: ``train_split="train"``, ``test_split="test"``,
          ``image_key="image"``, ``label_key="label"``.

    Returns:
      A :class:`clj.data.dataset.Dataset` with ``x_train uint8 [N, H, W, C]``, ``y_train int32
      [N]``, ``x_test uint8 [M, H, W, C]``, ``y_test int32 [M]``. Sizes:
      digits 1,347/450 (8x8x1, stratified, ``random_state=0``); mnist and
      fashion_mnist 60,000/10,000 (28x28x1); emnist as distributed (28x28x1,
      upright); synthetic ``num_classes * {train,test}_per_class``, shuffled.

    Raises:
      ValueError: unknown ``name`` (the message lists valid names), or a bad
        option value (e.g. unknown EMNIST split, malformed IDX file).
      TypeError: an option the dataset does not accept.
      FileNotFoundError: the data are not on disk; the message says where it
        looked and how to get them.
      RuntimeError: a TFDS dataset is prepared as tfrecord and TensorFlow is
        not installed to read it.
      ImportError: a TFDS name was requested without tensorflow-datasets.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    if name in CLUTTER_DATASETS:
        return load_clutter(name, data_dir, seed=seed, **kwargs).dataset
    return load_source(name, data_dir, seed=seed, **kwargs)
