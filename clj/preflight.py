"""Checks that need the data, run before anything is written and without
importing JAX: load the config's dataset, build its scenario, check the
config against it (``clj.config.validate_with_data``).

:func:`load_scenario` is the JAX-free form of ``clj.train.loop.load_scenario``
(the loop can import it from here).
"""
from __future__ import annotations

import os

from clj.errors import ConfigError


class DataDirNotFound(ConfigError, FileNotFoundError):
    """An explicit ``data_dir`` that is not a folder (also a ``FileNotFoundError``)."""


def check_data_dir(config) -> None:
    """Refuses an explicit ``data_dir`` that does not exist, so that no other
    copy of the data is read in its place (each source otherwise falls back to
    its default locations).  Digits and synthetic data ignore ``data_dir``.

    Raises:
      DataDirNotFound: naming the folder and what to do.
    """
    d = str(config.get("data_dir", "") or "")
    if not d or prepared_name(config) is None:
        return
    path = os.path.expanduser(d)
    if not os.path.isdir(path):
        what = "is a file, not a folder" if os.path.exists(path) else "does not exist"
        raise DataDirNotFound(
            f"data_dir={d!r} {what}; give the folder that holds the files of dataset={config.dataset!r} (or its "
            f"records prepared with python -m clj.data.prepare), or data_dir='' for the default locations.")


def prepared_name(config) -> str | None:
    """The name ``config.dataset`` has in clj's record format (``clj:`` prefix
    dropped), or None for the sources that are never prepared (digits, synthetic)."""
    name = str(config.dataset)
    name = name[4:] if name.startswith("clj:") else name
    return None if name in ("digits", "synthetic") else name


def prepared_for_stream(config):
    """The folder of clj's records of ``config.dataset`` when its placement may
    stream it (``data.placement`` stream or auto and the dataset prepared in
    ``data_dir``), else None."""
    from clj.data.records import find_prepared

    placement = str((config.get("data") or {}).get("placement", "device"))
    name = prepared_name(config)
    if placement == "device" or name is None or not config.data_dir:
        return None
    found = find_prepared(config.data_dir, name)
    return str(found) if found is not None else None


def is_labels_only(scenario) -> bool:
    """Whether ``scenario``'s images are the zero-memory placeholders of
    :func:`load_scenario` with ``labels_only``."""
    return scenario.x_train.size > 0 and scenario.x_train.strides[0] == 0


def load_scenario(config, labels_only: str | None = None):
    """Loads ``config.dataset`` and builds the scenario of ``config.scenario``.

    Args:
      config: the run's config.
      labels_only: a folder of clj's records (the ``stream`` placement): only
        the labels are read, and the scenario's image arrays are read-only
        zero-stride placeholders of the right shape (no memory).

    Returns:
      clj.scenarios.Scenario (uint8 images, int32 labels, the task splits).

    Raises:
      DataDirNotFound: an explicit ``data_dir`` that is not a folder.
      whatever the data source raises for missing data (a message naming the
        dataset, the folders looked in and how to prepare it).
    """
    from clj.data import load_dataset
    from clj.scenarios import scenario_from_config

    check_data_dir(config)
    if labels_only is not None:
        return scenario_from_config(_labels_only(labels_only), config.scenario)

    kwargs = {}
    if config.dataset == "synthetic":
        s = config.synthetic
        kwargs = dict(image_shape=tuple(s.image_shape), num_classes=int(s.num_classes),
                      train_per_class=int(s.train_per_class), test_per_class=int(s.test_per_class))
    if config.dataset.startswith("clutter_") and config.get("clutter", None) is not None:
        kwargs = config.clutter.to_dict()   # clj.data.clutter.ClutterParams fields (canvas, num_train, ...)
    if config.dataset == "emnist" and config.get("emnist_split", ""):
        kwargs["split"] = config.emnist_split
    ds = load_dataset(config.dataset, config.data_dir or None, seed=int(config.get("data_seed", 0)), **kwargs)
    return scenario_from_config(ds, config.scenario)


def _labels_only(prepared: str):
    import numpy as np

    from clj.data import Dataset
    from clj.data.records import PreparedDataset

    with PreparedDataset(prepared) as pd:
        ys = {}
        for split in ("train", "test"):
            n = pd.num_examples(split)
            y = np.empty(n, np.int32)
            for lo in range(0, n, 8192):
                _, y[lo:lo + 8192] = pd.read(split, np.arange(lo, min(n, lo + 8192)))
            ys[split] = y
        H, W, C = pd.image_shape
        ghost = lambda n: np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), (n, H, W, C))  # noqa: E731
        return Dataset(name=pd.name, x_train=ghost(ys["train"].shape[0]), y_train=ys["train"],
                       x_test=ghost(ys["test"].shape[0]), y_test=ys["test"], num_classes=pd.num_classes,
                       mean=tuple(pd.mean), std=tuple(pd.std))


def check_data(config):
    """The scenario of ``config``, checked against the config.

    Raises:
      ConfigError: the data cannot be loaded (missing files: the source's
        one-line message) or does not fit the config (a buffer larger than
        the data, an impossible split).
    """
    from clj.config import validate_with_data

    import logging

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # TFDS warns about folders it skips: the error below says it all
    try:
        scenario = load_scenario(config, prepared_for_stream(config))
    except ConfigError:
        raise
    except (OSError, ValueError, ImportError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"dataset={config.dataset!r}: {text}") from None
    finally:
        absl_logger.setLevel(level)
    validate_with_data(config, scenario)
    return scenario
