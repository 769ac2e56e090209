"""Checks that need the data, run before anything is written and without
importing JAX: load the config's dataset, build its scenario, check the
config against it (``clj.config.validate_with_data``).

:func:`load_scenario` is the JAX-free form of ``clj.train.loop.load_scenario``
(the loop can import it from here).
"""
from __future__ import annotations

from clj.errors import ConfigError


def load_scenario(config):
    """Loads ``config.dataset`` and builds the scenario of ``config.scenario``.

    Returns:
      clj.scenarios.Scenario (uint8 images, int32 labels, the task splits).

    Raises:
      whatever the data source raises for missing data (a message naming the
      dataset, the folders looked in and how to prepare it).
    """
    from clj.data import load_dataset
    from clj.scenarios import scenario_from_config

    kwargs = {}
    if config.dataset == "synthetic":
        s = config.synthetic
        kwargs = dict(image_shape=tuple(s.image_shape), num_classes=int(s.num_classes),
                      train_per_class=int(s.train_per_class), test_per_class=int(s.test_per_class))
    if config.dataset == "emnist" and config.get("emnist_split", ""):
        kwargs["split"] = config.emnist_split
    ds = load_dataset(config.dataset, config.data_dir or None, seed=int(config.get("data_seed", 0)), **kwargs)
    return scenario_from_config(ds, config.scenario)


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
        scenario = load_scenario(config)
    except ConfigError:
        raise
    except (OSError, ValueError, ImportError) as e:
        text = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"dataset={config.dataset!r}: {text}") from None
    finally:
        absl_logger.setLevel(level)
    validate_with_data(config, scenario)
    return scenario
