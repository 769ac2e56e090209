"""The run configuration: defaults shared by every ``configs/*.py`` file and
the validation run before any work.

A config file under ``configs/`` calls :func:`base_config` and overrides what
its method and dataset need.  Every field can be overridden from the command
line (``--config.replay.buffer_size=500``).
"""
from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections

from clj.methods import METHODS


class ConfigError(ValueError):
    """A config value that cannot run; the message names it and what is valid."""


CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load_config(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(variant)`` of a config file, as ``--config=<file>[:variant]`` loads it.

    Args:
      name: a file path, or a name under ``configs/`` (``"derpp_digits"``).
      variant: passed to ``get_config`` (e.g. ``"official"``); None calls it
        with no argument.

    Raises:
      FileNotFoundError: no such file, naming the path and the configs/ folder.
    """
    path = name if name.endswith(".py") else os.path.join(CONFIGS_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config {name!r}: no file {path}; the shipped configs are the .py files "
                                f"in {CONFIGS_DIR}")
    # Config files import their shared parts as ``configs.<module>``: make the
    # folder that holds configs/ importable, as launch.py's own folder is.
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"clj_config_{os.path.basename(path)[:-3]}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config() if variant is None else mod.get_config(variant)


def base_config() -> ml_collections.ConfigDict:
    """Defaults of every field the loop and the core methods read."""
    c = ml_collections.ConfigDict()
    c.method = "finetune"
    c.dataset = "digits"
    c.data_dir = ""               # '' = each source's default locations
    # placement: device (the dataset on every device) | stream (clj's prepared records read
    # from disk chunk by chunk) | auto (stream when prepared and too big for the device)
    c.data = ml_collections.ConfigDict(dict(placement="auto", threads=4, prefetch=2, eval_group=16))
    c.synthetic = ml_collections.ConfigDict(
        dict(image_shape=(32, 32, 3), num_classes=10, train_per_class=100, test_per_class=20))
    c.seed = 0
    c.num_seeds = 1               # >1: that many seeds (seed, seed+1, ...) vmapped in one program

    c.scenario = ml_collections.ConfigDict(dict(
        kind="class_il", init_cls=0, increment=2, num_tasks=0, class_order="fixed",
        class_order_seed=1993, domain="", domain_seed=0, rotation_step=15.0, train_fraction=1.0,
        reveal_boundaries=False))

    # dtype: computation dtype of every network (float32 | bfloat16); parameters and
    # optimizer state stay float32, losses are computed in float32.
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100), dtype="float32"))
    c.optim = ml_collections.ConfigDict(dict(
        name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", milestones=(),
        gamma=0.1))
    c.augment = ml_collections.ConfigDict(dict(crop_pad=0, flip=False, normalize=True))
    c.train = ml_collections.ConfigDict(dict(epochs=1, batch_size=32, init_epochs=0))  # init_epochs: task 0 (0 = epochs)
    c.replay = ml_collections.ConfigDict(dict(buffer_size=200, minibatch_size=32, alpha=0.3, beta=0.5))

    c.loop = ml_collections.ConfigDict(dict(
        steps_per_call=0,         # 0 = auto by backend and model (see clj.train.loop.auto_chunking)
        unroll=0,                 # 0 = auto; 1 = rolled scan; n = unroll factor
        eval_batch_size=512,
        shard_batch=True,         # shard the batch axis over all devices when it divides
        mesh="auto",              # auto | seeds | data: what the devices divide (clj.train.mesh)
        compilation_cache=True,   # JAX's persistent compilation cache (loop.cache_dir, '' = user cache)
        cache_dir=""))
    c.workdir = ""
    c.resume = True               # resume from the workdir's last checkpoint when there is one
    c.stop_after_task = -1        # >=0: stop after that task (simulates a killed run; tests)
    c.progress = True
    c.plots = True
    return c


_VALID_DATASETS = ("digits", "mnist", "fashion_mnist", "emnist", "synthetic", "cifar10", "cifar100",
                   "svhn_cropped")


def _num_classes_hint(config) -> int | None:
    known = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
             "svhn_cropped": 10}
    if config.dataset == "synthetic":
        return int(config.synthetic.num_classes)
    return known.get(config.dataset)


def validate(config) -> None:
    """Checks a config before any work.

    Raises:
      ConfigError: unknown method or dataset, impossible split, a buffer
        larger than allowed, a non-positive learning rate, batch or epoch
        count, or num_seeds < 1; the message names the value and what is
        valid.  (Unknown fields are refused by ml_collections itself at
        override time.)
    """
    from clj.scenarios import KINDS, class_split

    if config.method not in METHODS:
        raise ConfigError(f"method={config.method!r} is unknown; valid methods: {', '.join(sorted(METHODS))}.")
    ds = config.dataset
    if not (ds in _VALID_DATASETS or ds.startswith("tfds:") or ds.startswith("clj:")):
        raise ConfigError(f"dataset={ds!r} is unknown; valid datasets: {', '.join(_VALID_DATASETS)}, "
                          f"'clj:<name>' for a dataset prepared with python -m clj.data.prepare, "
                          f"or 'tfds:<name>' for any prepared TFDS dataset.")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr={config.optim.lr} is invalid: the learning rate must be > 0.")
    if config.train.batch_size < 1:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is invalid: it must be >= 1.")
    if config.train.epochs <= 0:
        raise ConfigError(f"train.epochs={config.train.epochs} is invalid: it must be > 0.")
    if config.num_seeds < 1:
        raise ConfigError(f"num_seeds={config.num_seeds} is invalid: it must be >= 1.")
    sc = config.scenario
    if sc.kind not in KINDS:
        raise ConfigError(f"scenario.kind={sc.kind!r} is unknown; valid kinds: {', '.join(KINDS)}.")
    C = _num_classes_hint(config)
    if C is not None and sc.kind != "domain_il":
        try:
            sizes = class_split(C, int(sc.init_cls), int(sc.increment))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if sc.num_tasks not in (0, len(sizes)):
            raise ConfigError(
                f"scenario.num_tasks={sc.num_tasks} is impossible: {C} classes of {ds} split with init_cls="
                f"{sc.init_cls}, increment={sc.increment} give {len(sizes)} tasks; set num_tasks=0 or {len(sizes)}.")
    if "replay" in config and config.method in ("er", "der", "derpp", "er_ace") or config.method.startswith("ser"):
        if config.replay.buffer_size < 1:
            raise ConfigError(f"replay.buffer_size={config.replay.buffer_size} is invalid: it must be >= 1.")
        if config.replay.minibatch_size < 1:
            raise ConfigError(f"replay.minibatch_size={config.replay.minibatch_size} is invalid: it must be >= 1.")
    import importlib

    hook = getattr(importlib.import_module(METHODS[config.method]), "validate_config", None)
    if hook is not None:  # method-specific fields (optional module hook)
        hook(config)


def validate_with_data(config, scenario) -> None:
    """Checks that need the loaded data (buffer vs. data size)."""
    n = int(scenario.x_train.shape[0])
    if "replay" in config and config.replay.get("buffer_size", 0) > n:
        raise ConfigError(
            f"replay.buffer_size={config.replay.buffer_size} is larger than the {n} training examples of "
            f"{scenario.dataset_name}; valid: 1..{n}.")
