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

from clj.config_fields import FIELD_DOCS  # dotted field -> meaning, for --describe
from clj.errors import ConfigError
from clj.methods import entry

__all__ = ["ConfigError", "base_config", "load_config", "validate", "validate_with_data"]


class ConfigFileNotFound(ConfigError, FileNotFoundError):
    """A config file that does not exist (also a ``FileNotFoundError``)."""


def configs_dir() -> str:
    """The folder of the shipped ``configs/*.py``: the package ``clj.configs``,
    which is ``configs/`` at the top of a source checkout and ``clj/configs``
    inside an installed wheel."""
    import clj.configs

    return os.path.abspath(list(clj.configs.__path__)[0])


CONFIGS_DIR = configs_dir()


def list_configs() -> list[str]:
    """Names (no ``.py``) of the shipped config files that define ``get_config``."""
    d = configs_dir()
    if not os.path.isdir(d):
        return []
    out = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".py") and not f.startswith("_"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                if "def get_config" in fh.read():
                    out.append(f[:-3])
    return out


def resolve_config_path(name: str) -> str:
    """The file a ``--config`` value names: an existing path, or a shipped
    config by name (``derpp_digits``, ``derpp_digits.py`` or
    ``configs/derpp_digits.py`` when that path does not exist here).

    Raises:
      ConfigFileNotFound: no such file, naming the path and where the shipped
        configs are.
    """
    if os.path.isfile(name):
        return name
    base = os.path.basename(name)
    stem = base[:-3] if base.endswith(".py") else base
    shipped = os.path.join(configs_dir(), f"{stem}.py")
    # a bare name, or configs/<name>.py typed outside a source checkout
    if (os.sep not in name or os.path.dirname(os.path.normpath(name)) == "configs") and os.path.isfile(shipped):
        return shipped
    raise ConfigFileNotFound(f"config file {name!r} does not exist; the shipped configs are the .py files in "
                             f"{configs_dir()} (python launch.py --help lists them).")


def add_import_root(path: str) -> None:
    """Lets a config file of the user's own import its neighbours as its
    folder's package (``from myconfigs.common import ...`` in
    ``myconfigs/foo.py``): puts the folder above the file's folder on
    ``sys.path``.  The shipped configs need nothing: they import their
    helpers as ``clj.configs.<module>``."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.realpath(folder) == os.path.realpath(configs_dir()):
        return
    root = os.path.dirname(folder)
    if root not in sys.path:
        sys.path.append(root)


def load_config(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(variant)`` of a config file, as ``--config=<file>[:variant]`` loads it.

    Args:
      name: a file path, or a name under ``configs/`` (``"derpp_digits"``).
      variant: passed to ``get_config`` (e.g. ``"official"``); None calls it
        with no argument.

    Raises:
      ConfigFileNotFound (a FileNotFoundError): no such file, naming the path
        and the configs/ folder.
    """
    path = os.path.abspath(resolve_config_path(name))
    add_import_root(path)
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
    # wandb: also log to Weights & Biases (the optional extra: pip install 'clj-jax[wandb]'), offline by default
    c.tracking = ml_collections.ConfigDict(dict(tensorboard=False, wandb=False, wandb_project="clj",
                                                wandb_mode="offline"))
    c.synthetic = ml_collections.ConfigDict(
        dict(image_shape=(32, 32, 3), num_classes=10, train_per_class=100, test_per_class=20))
    c.seed = 0
    c.num_seeds = 1               # >1: that many seeds (seed, seed+1, ...) vmapped in one program

    c.scenario = ml_collections.ConfigDict(dict(
        kind="class_il", init_cls=0, increment=2, num_tasks=0, class_order="fixed",
        class_order_seed=1993, domain="", domain_seed=0, rotation_step=15.0, train_fraction=1.0,
        reveal_boundaries=False, uneven_last_task=False))

    # dtype: computation dtype of every network (float32 | bfloat16); parameters and
    # optimizer state stay float32, losses are computed in float32.
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(100, 100), dtype="float32"))
    c.optim = ml_collections.ConfigDict(dict(
        name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant", milestones=(),
        gamma=0.1))
    c.augment = ml_collections.ConfigDict(dict(AUGMENT_DEFAULTS))  # preset: one switch per reference transform
    c.train = ml_collections.ConfigDict(dict(epochs=1, batch_size=32, init_epochs=0))  # init_epochs: task 0 (0 = epochs)
    c.replay = ml_collections.ConfigDict(dict(buffer_size=200, minibatch_size=32, alpha=0.3, beta=0.5))

    c.loop = ml_collections.ConfigDict(dict(
        steps_per_call=0,         # 0 = auto by backend and model (see clj.train.runtime.auto_chunking)
        unroll=0,                 # 0 = auto; 1 = rolled scan; n = unroll factor
        eval_batch_size=512,
        eval_tasks="all",         # all | seen: after task t, evaluate every task's test set or only tasks <= t
        shard_batch=True,         # shard the batch axis over all devices when it divides
        mesh="auto",              # auto | seeds | data: what the devices divide (clj.train.mesh)
        seed_batching="vmap",     # vmap | map: a device's runs batched or one after another (clj.train.seeds)
        compilation_cache=True,   # JAX's persistent compilation cache (loop.cache_dir, '' = user cache)
        cache_dir="",
        profile=False,            # a JAX profiler trace of a few chunks in <workdir>/profile (clj.train.profile)
        profile_chunks=2))
    # Checkpoints: mid-task every `every_minutes` of training (0 = only at task ends) and at
    # SIGTERM/SIGINT; the `keep` newest are kept; written by orbax's background thread while
    # training goes on (`asynchronous`).  Not a result field (resuming ends the same).
    c.checkpoint = ml_collections.ConfigDict(dict(every_minutes=30.0, keep=2, asynchronous=True))
    c.workdir = ""
    c.resume = True               # resume from the workdir's last checkpoint when there is one
    c.stop_after_task = -1        # >=0: stop after that task (simulates a killed run; tests)
    c.progress = True
    c.plots = True
    return c


def __getattr__(name: str):
    """``DATASETS``: the dataset table of :mod:`clj.data.sources` (name -> one
    line), read on first use (the data package imports numpy)."""
    if name == "DATASETS":
        from clj.data.sources import DATASET_DOCS

        return DATASET_DOCS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")




def _num_classes_hint(config) -> int | None:
    known = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
             "svhn_cropped": 10}
    if config.dataset == "synthetic":
        return int(config.synthetic.num_classes)
    return known.get(config.dataset)


def _class_split(num_classes: int, init_cls: int, increment: int) -> list[int]:
    # the rule of clj.scenarios.class_split (PyCIL), without importing numpy
    if increment < 1:
        raise ConfigError(f"scenario.increment={increment} is invalid: it must be >= 1.")
    first = increment if init_cls == 0 else init_cls
    if first < 0 or first > num_classes:
        raise ConfigError(f"scenario.init_cls={first} is invalid for a dataset with {num_classes} classes: "
                          f"it must be in [0, {num_classes}].")
    sizes, rest = [first], num_classes - first
    while rest > 0:
        sizes.append(min(increment, rest))
        rest -= increment
    return sizes


EVAL_TASKS = ("all", "seen")  # loop.eval_tasks
WANDB_MODES = ("offline", "online", "disabled")  # tracking.wandb_mode (clj.tracking.WandbTracker)
DIST_NAME = "clj-jax"  # the distribution (pyproject.toml's [project] name), for the install hint of the extras
# Valid names, kept here so that validate needs no JAX (tests/test_faults.py checks
# that each equals the set it mirrors).
OPTIMIZERS = ("sgd", "adam", "adamw")                   # clj.methods.common.OptimSpec.make
SCHEDULES = ("constant", "cosine", "multistep")         # clj.methods.common.OptimSpec.lr_at
MODEL_NAMES = ("mlp", "small_cnn", "resnet18", "resnet18_reduced", "resnet18_imagenet", "resnet32", "serena_mlp",
               "serena_resnet18", "serena_resnet18_reduced", "nispa_mlp", "nispa_conv")  # clj.models.registry
RESNET_STEMS = ("cifar", "imagenet", "conv3_maxpool")   # model.stem; clj.models.resnet.RESNET_STEMS
STEM_MODELS = ("resnet18", "resnet18_reduced", "resnet18_imagenet")  # the models that take model.stem
MLP_INITS = ("lecun_normal", "xavier_uniform")           # model.weight_init (name "mlp"); clj.models.mlp.MLP_INITS
MESH_MODES = ("auto", "seeds", "data")                  # clj.train.runtime.MESH_MODES
SEED_BATCHING = ("vmap", "map")                         # clj.train.seeds.SEED_BATCHING
PLACEMENTS = ("device", "stream", "auto")               # clj.train.placement.PLACEMENTS
MODEL_DTYPES = ("float32", "bfloat16")                  # model.dtype; clj.models.common.MODEL_DTYPES
from clj.data.augment_presets import AUGMENT_DEFAULTS, AUGMENT_NORMALIZATIONS, AUGMENT_PRESETS  # noqa: E402,F401
from clj.data.augment_presets import resolve_augment  # noqa: E402,F401

def _check_augment(config) -> None:
    """The ``augment`` block's values (no data needed)."""
    a = config.get("augment", None)
    if a is None:
        return
    r = resolve_augment(a)
    for k in ("crop_pad", "resized_crop", "eval_resize", "eval_crop"):
        v = r[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"augment.{k}={v!r} is invalid: it must be an integer >= 0 (0 = off).")
    for k in ("flip", "normalize"):
        if not isinstance(r[k], bool):
            raise ConfigError(f"augment.{k}={r[k]!r} is invalid; valid: True, False.")
    if r["crop_pad"] > 0 and r["resized_crop"] > 0:
        raise ConfigError(f"augment.crop_pad={r['crop_pad']} and augment.resized_crop={r['resized_crop']} are both "
                          "on: choose one random crop (set the other to 0).")
    lo, hi = r["crop_scale"] if len(r["crop_scale"]) == 2 else (0.0, -1.0)
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"augment.crop_scale={tuple(r['crop_scale'])!r} is invalid: it must be (lo, hi) with "
                          "0 < lo <= hi <= 1 (fractions of the image area).")
    lo, hi = r["crop_ratio"] if len(r["crop_ratio"]) == 2 else (0.0, -1.0)
    if not 0.0 < lo <= hi:
        raise ConfigError(f"augment.crop_ratio={tuple(r['crop_ratio'])!r} is invalid: it must be (lo, hi) with "
                          "0 < lo <= hi (width / height).")
    b = r["brightness"]
    if isinstance(b, bool) or not isinstance(b, (int, float)) or b < 0:
        raise ConfigError(f"augment.brightness={b!r} is invalid: it must be a number >= 0 (0 = off).")
    if r["normalization"] not in AUGMENT_NORMALIZATIONS:
        raise ConfigError(f"augment.normalization={r['normalization']!r} is unknown; valid: "
                          f"{', '.join(AUGMENT_NORMALIZATIONS)}.")


def augment_output_side(n_h: int, n_w: int, cfg, train: bool) -> tuple[int, int]:
    """(H, W) of the images the ``augment`` block ``cfg`` makes from ``n_h x
    n_w`` ones (``train``: the training transform, else the evaluation one);
    the arithmetic of :meth:`clj.data.augment.Augment.output_shape`.

    Raises:
      ConfigError: an evaluation centre crop larger than the resized image.
    """
    r = resolve_augment(cfg)
    if train:
        s = int(r["resized_crop"])
        return (s, s) if s > 0 else (n_h, n_w)
    h, w = n_h, n_w
    if r["eval_resize"] > 0:  # the shorter side to eval_resize, the longer in proportion (torchvision Resize)
        short, long_ = min(h, w), max(h, w)
        new_short, new_long = int(r["eval_resize"]), int(int(r["eval_resize"]) * long_ / short)
        h, w = (new_short, new_long) if h <= w else (new_long, new_short)
    c = int(r["eval_crop"])
    if c > 0:
        if c > h or c > w:
            raise ConfigError(f"augment.eval_crop={c} is larger than the {h}x{w} evaluation images "
                              f"(augment.eval_resize={r['eval_resize']}); valid: 1..{min(h, w)}.")
        h, w = c, c
    return h, w


# models whose parameters do not depend on the input size (global pooling):
# the ones an augment that resizes (resized_crop, eval_resize / eval_crop) may feed
SIZE_FREE_MODELS = ("resnet18", "resnet18_reduced", "resnet18_imagenet", "resnet32")
# model fields that are layer widths or counts: each must be >= 1
MODEL_SIZE_FIELDS = ("hidden", "width", "channels", "fc_width", "num_blocks")


def _non_finite(node, prefix=""):
    """``(dotted field, value)`` of the first float in ``node`` (a ConfigDict,
    walked with its tuples and lists) that is nan or +-inf, else None."""
    import math

    items = node.items() if hasattr(node, "items") else enumerate(node)
    for k, v in items:
        key = f"{prefix}{k}" if hasattr(node, "items") else f"{prefix[:-1]}[{k}]"
        if isinstance(v, float) and not math.isfinite(v):
            return key, v
        if hasattr(v, "items") or isinstance(v, (tuple, list)):
            found = _non_finite(v, key + ".")
            if found is not None:
                return found
    return None


def _check_model_sizes(model) -> None:
    for k in MODEL_SIZE_FIELDS:
        if k not in model:
            continue
        v = model[k]
        sizes = list(v) if isinstance(v, (tuple, list)) else [v]
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                raise ConfigError(f"model.{k}={v!r} is invalid: every width or count must be an integer >= 1.")


def _check_names(config) -> None:
    """The names and sizes that can be checked without data or JAX."""
    op = config.optim
    if op.get("name", "sgd") not in OPTIMIZERS:
        raise ConfigError(f"optim.name={op.name!r} is unknown; valid: {', '.join(OPTIMIZERS)}.")
    if op.get("schedule", "constant") not in SCHEDULES:
        raise ConfigError(f"optim.schedule={op.schedule!r} is unknown; valid: {', '.join(SCHEDULES)}.")
    if config.model.get("name", "mlp") not in MODEL_NAMES:
        raise ConfigError(f"model.name={config.model.name!r} is unknown; valid: {', '.join(MODEL_NAMES)}.")
    _check_model_sizes(config.model)
    if "stem" in config.model:
        if config.model.get("name", "mlp") not in STEM_MODELS:
            raise ConfigError(f"model.stem={config.model.stem!r} does not apply to model.name={config.model.name!r}; "
                              f"it applies to {', '.join(STEM_MODELS)}.")
        if config.model.stem not in RESNET_STEMS:
            raise ConfigError(f"model.stem={config.model.stem!r} is unknown; valid: {', '.join(RESNET_STEMS)}.")
    if "weight_init" in config.model:
        wi = config.model.weight_init
        if config.model.get("name", "mlp") != "mlp":
            raise ConfigError(f"model.weight_init={wi!r} does not apply to model.name={config.model.name!r}; "
                              "it applies to mlp.")
        if wi not in MLP_INITS:
            raise ConfigError(f"model.weight_init={wi!r} is unknown; valid: {', '.join(MLP_INITS)}.")
    _check_augment(config)
    if int(config.seed) < 0:
        raise ConfigError(f"seed={config.seed} is invalid: it must be >= 0.")
    lp = config.get("loop", None)
    if lp is not None and lp.get("mesh", "auto") not in MESH_MODES:
        raise ConfigError(f"loop.mesh={lp.mesh!r} is unknown; valid: {', '.join(MESH_MODES)}.")
    if lp is not None and lp.get("seed_batching", "vmap") not in SEED_BATCHING:
        raise ConfigError(f"loop.seed_batching={lp.seed_batching!r} is unknown; valid: {', '.join(SEED_BATCHING)}.")
    data = config.get("data", None)
    if data is not None and data.get("placement", "auto") not in PLACEMENTS:
        raise ConfigError(f"data.placement={data.placement!r} is unknown; valid: {', '.join(PLACEMENTS)}.")


def _check_tracking(config) -> None:
    """``tracking``'s fields, and that W&B, when on, can be imported (the
    package is looked up, not imported)."""
    import importlib.util

    tr = config.get("tracking", None)
    if tr is None:
        return
    on = tr.get("wandb", False)
    if not isinstance(on, bool):
        raise ConfigError(f"tracking.wandb={on!r} is invalid; valid: True, False.")
    mode = tr.get("wandb_mode", "offline")
    if mode not in WANDB_MODES:
        raise ConfigError(f"tracking.wandb_mode={mode!r} is unknown; valid: {', '.join(WANDB_MODES)}.")
    project = tr.get("wandb_project", "clj")
    if not isinstance(project, str) or not project.strip():
        raise ConfigError(f"tracking.wandb_project={project!r} is invalid: it must be a non-empty name.")
    if on and mode != "disabled" and importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"tracking.wandb=True needs the wandb package, which is not installed: "
                          f"pip install '{DIST_NAME}[wandb]' (or set tracking.wandb=False).")


def follow_seed(config) -> None:
    """Ties ``config.scenario.class_order_seed`` to ``config.seed`` (in place).

    The field becomes a lazy reference (``seed + 0``): it reads the current
    ``seed`` whenever it is read, so ``--config.seed=s`` moves the order too.
    Assigning an int to ``scenario.class_order_seed`` later replaces the
    reference (ml_collections drops a computed reference's operations on
    ``set``) and leaves ``seed`` alone.
    """
    config.scenario.class_order_seed = config.get_ref("seed") + 0


def class_order_follows_seed(config) -> bool:
    """Whether ``scenario.class_order`` is ``"seeded"`` with a seed that moves
    with ``seed`` (:func:`follow_seed`).  Probed on a copy: raise ``seed`` by
    one and see whether ``class_order_seed`` follows."""
    import copy

    if config.scenario.get("class_order", "fixed") != "seeded":
        return False
    probe = copy.deepcopy(config)
    probe.seed = int(probe.seed) + 1
    return int(probe.scenario.class_order_seed) != int(config.scenario.class_order_seed)


def validate(config) -> None:
    """Checks a config before any work: the core fields here, then the
    method's config blocks and checks as its registry entry declares them
    (:mod:`clj.methods`; JAX-free for every built-in method; a method named
    by its module path is imported).

    Raises:
      ConfigError: unknown method or dataset, impossible split (a class-IL
        increment that does not divide the classes unless
        ``scenario.uneven_last_task=True``), a nan or infinite number
        anywhere, a non-positive learning rate, batch or epoch count, an
        unknown optimizer, schedule, model, ``loop.mesh`` or
        ``data.placement``, a model width or count < 1, seed < 0,
        num_seeds < 1, a ``model.dtype`` other than float32 or bfloat16,
        a bad ``loop.profile`` / ``tracking`` field, W&B on without its package,
        or a bad value of the method's blocks; the message
        names the value and what is valid.  (Unknown
        fields are refused by ml_collections itself at override time, and
        by the method blocks' checks.)
    """
    from clj.methods import sections

    entry(config.method)  # an unknown method, or an outside module that cannot be imported
    from clj.data.sources import DATASETS

    ds = config.dataset
    if not (ds in DATASETS or ds.startswith("tfds:") or ds.startswith("clj:")):
        raise ConfigError(f"dataset={ds!r} is unknown; valid datasets: {', '.join(DATASETS)}, "
                          f"'clj:<name>' for a dataset prepared with python -m clj.data.prepare, "
                          f"or 'tfds:<name>' for any prepared TFDS dataset.")
    bad = _non_finite(config)
    if bad is not None:
        raise ConfigError(f"{bad[0]}={bad[1]} is invalid: every number of the config must be finite (not nan or "
                          "inf).")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr={config.optim.lr} is invalid: the learning rate must be > 0.")
    _check_names(config)
    if config.train.batch_size < 1:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is invalid: it must be >= 1.")
    if config.train.epochs <= 0:
        raise ConfigError(f"train.epochs={config.train.epochs} is invalid: it must be > 0.")
    if config.num_seeds < 1:
        raise ConfigError(f"num_seeds={config.num_seeds} is invalid: it must be >= 1.")
    if config.model.get("dtype", "float32") not in MODEL_DTYPES:
        raise ConfigError(f"model.dtype={config.model.dtype!r} is invalid; valid: {', '.join(MODEL_DTYPES)}.")
    if int(config.num_seeds) > 1 and class_order_follows_seed(config):
        raise ConfigError(f"num_seeds={config.num_seeds} is invalid while scenario.class_order_seed follows seed "
                          "(each seed its own class order, as the official SERENA code): run one process per seed, "
                          "or set scenario.class_order_seed=<int> for one order shared by every seed.")
    ck = config.get("checkpoint", None)
    if ck is not None:
        if float(ck.get("every_minutes", 0)) < 0:
            raise ConfigError(f"checkpoint.every_minutes={ck.every_minutes} is invalid: it must be >= 0 "
                              "(0 = at task ends only).")
        if int(ck.get("keep", 1)) < 1:
            raise ConfigError(f"checkpoint.keep={ck.keep} is invalid: it must be >= 1.")
        if not isinstance(ck.get("asynchronous", True), bool):
            raise ConfigError(f"checkpoint.asynchronous={ck.asynchronous!r} is invalid; valid: True, False.")
    lp = config.get("loop", None)
    if lp is not None and lp.get("eval_tasks", "all") not in EVAL_TASKS:
        raise ConfigError(f"loop.eval_tasks={lp.eval_tasks!r} is invalid; valid values: {', '.join(EVAL_TASKS)}.")
    if lp is not None:
        if not isinstance(lp.get("profile", False), bool):
            raise ConfigError(f"loop.profile={lp.profile!r} is invalid; valid: True, False.")
        pc = lp.get("profile_chunks", 2)
        if isinstance(pc, bool) or not isinstance(pc, int) or pc < 1:
            raise ConfigError(f"loop.profile_chunks={pc!r} is invalid: it must be an integer >= 1.")
    _check_tracking(config)
    sc = config.scenario
    kinds = ("class_il", "task_il", "domain_il", "data_incremental")  # clj.scenarios.KINDS
    if sc.kind not in kinds:
        raise ConfigError(f"scenario.kind={sc.kind!r} is unknown; valid kinds: {', '.join(kinds)}.")
    C = _num_classes_hint(config)
    if C is not None and sc.kind != "domain_il":
        sizes = _class_split(C, int(sc.init_cls), int(sc.increment))
        if sc.num_tasks not in (0, len(sizes)):
            raise ConfigError(
                f"scenario.num_tasks={sc.num_tasks} is impossible: {C} classes of {ds} split with init_cls="
                f"{sc.init_cls}, increment={sc.increment} give {len(sizes)} tasks; set num_tasks=0 or {len(sizes)}.")
        if (C - sizes[0]) % int(sc.increment) != 0 \
                and not sc.get("uneven_last_task", False):
            raise ConfigError(
                f"scenario.increment={sc.increment} does not divide the {C - sizes[0]} classes of {ds} left after "
                f"the first task of {sizes[0]}: the last task would have {sizes[-1]} class(es); choose an increment "
                f"that divides {C - sizes[0]}, or set scenario.uneven_last_task=True to accept a smaller last task.")
    sections.check(config)  # the method's blocks and checks, from its registry entry


def describe(config) -> str:
    """The config as ``field = value  # meaning`` lines, one per leaf field,
    the method blocks' missing fields shown with their defaults."""
    from clj.methods import sections

    docs = dict(FIELD_DOCS)
    docs.update(sections.field_docs(config))
    flat = {}

    def walk(node, prefix):
        for k in node.keys():
            v = node[k]
            key = f"{prefix}{k}"
            if isinstance(v, ml_collections.ConfigDict):
                walk(v, key + ".")
            else:
                flat[key] = v

    walk(config, "")
    defaults = {}
    for sec in sections.method_sections(config.method):
        for k, v in sec.defaults.items():
            if f"{sec.name}.{k}" not in flat:
                defaults[f"{sec.name}.{k}"] = v
    keys = list(flat) + list(defaults)
    width = max(len(f"{k} = {flat.get(k, defaults.get(k))!r}") for k in keys)
    lines = []
    for k in keys:
        v = flat[k] if k in flat else defaults[k]
        left = f"{k} = {v!r}"
        note = docs.get(k, "")
        if k in defaults:
            note = f"{note} (default; not in the config)".strip()
        lines.append(f"{left.ljust(width)}  # {note}" if note else left)
    return "\n".join(lines)


def validate_with_data(config, scenario) -> None:
    """Checks that need the loaded data (buffer and batch vs. data size).

    Raises:
      ConfigError: ``replay.buffer_size`` larger than the training set, or
        ``augment.eval_crop`` larger than the (resized) evaluation images,
        an augment that changes the image size with a model whose
        parameters depend on it (:data:`SIZE_FREE_MODELS` do not),
        ``train.batch_size`` larger than the first task's training examples
        (every method draws a whole batch of them per step there, so every
        batch would repeat examples).  The loop checks every later task
        against the method's own plan (:class:`clj.train.loop.Runner`).
    """
    from clj.methods import sections

    shape = tuple(scenario.image_shape)
    if len(shape) == 3 and config.get("augment", None) is not None:
        sides = {augment_output_side(shape[0], shape[1], config.augment, train=t) for t in (True, False)}
        name = config.model.get("name", "mlp")
        if sides != {tuple(shape[:2])} and name not in SIZE_FREE_MODELS:
            raise ConfigError(f"augment resizes the {shape[0]}x{shape[1]} images of {scenario.dataset_name} to "
                              f"{' and '.join(f'{h}x{w}' for h, w in sorted(sides))}, but model.name={name!r} "
                              f"depends on the input size; valid with a resize: {', '.join(SIZE_FREE_MODELS)}.")
    n0 = int(scenario.tasks[0].train_idx.shape[0]) if scenario.tasks else 0
    B = int(config.train.batch_size)
    if 0 < n0 < B:
        raise ConfigError(
            f"train.batch_size={B} is larger than the {n0} training examples of the first task of "
            f"{scenario.dataset_name}: every batch would repeat examples; valid: 1..{n0}.")
    sections.check_with_data(config, scenario)  # e.g. a replay buffer larger than the training set
