"""Model registry: every backbone of clj, by name (one registry for the
standard classifiers, SERENA's cells, NISPA's sparse networks and the
backbones MEMO / DER (Yan) can grow, :mod:`clj.models.growing`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clj.models.cnn import SmallCNN
from clj.models.common import compute_dtype
from clj.models.mlp import MLP
from clj.models.nispa_nets import SparseConvNet, SparseMLP
from clj.models.resnet import (RESNET32_FEATURE_DIM, ResNet18, ResNet18Backbone, ResNet18Deep, ResNet18Shallow,
                               ResNet32, ResNet32Backbone, ResNet32Deep, ResNet32Shallow, check_stem)
from clj.models.serena_nets import SerenaMLP, SerenaResNet18


def _resnet18_reduced(num_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("width", 20)
    return ResNet18(num_classes=num_classes, **kwargs)


def _resnet18_imagenet(num_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("stem", "imagenet")
    check_stem(kwargs["stem"])
    return ResNet18(num_classes=num_classes, **kwargs)


def _dtype(kw: dict):
    return compute_dtype(kw.pop("dtype", "float32"))


def _serena(width_default: int | None = None, mlp: bool = False) -> Callable[..., nn.Module]:
    def build(num_classes: int, **kw: Any) -> nn.Module:
        if mlp:
            return SerenaMLP(num_classes, **kw)
        if width_default is not None:
            kw.setdefault("width", width_default)
        return SerenaResNet18(num_classes, **kw)
    return build


def _nispa_mlp(num_classes: int, **kw: Any) -> nn.Module:
    return SparseMLP(num_classes=num_classes, hidden=tuple(kw.get("hidden", (400, 400, 400))), dtype=_dtype(kw))


def _nispa_conv(num_classes: int, **kw: Any) -> nn.Module:
    return SparseConvNet(num_classes=num_classes, channels=tuple(kw.get("channels", (64, 64, 128, 128))),
                         fc_width=int(kw.get("fc_width", 1024)), dtype=_dtype(kw))


def _resnet32_split(shared: bool, num_blocks: int = 5, dtype: Any = jnp.float32) -> tuple:
    dtype = compute_dtype(dtype)
    if shared:  # MEMO: stem + stages 1-2 shared, stage 3 + pool per task
        return ResNet32Shallow(num_blocks, dtype), ResNet32Deep(num_blocks, dtype), RESNET32_FEATURE_DIM
    return None, ResNet32Backbone(num_blocks, dtype), RESNET32_FEATURE_DIM  # DER (Yan): the whole backbone per task


def _resnet18_split(shared: bool, width: int = 64, stem: str = "imagenet", dtype: Any = jnp.float32) -> tuple:
    dtype = compute_dtype(dtype)
    check_stem(stem)
    if shared:  # MEMO (PyCIL memo_resnet18): stem + stages 1-3 shared, stage 4 + pool per task
        return ResNet18Shallow(width, dtype, stem), ResNet18Deep(width, dtype), 8 * width
    return None, ResNet18Backbone(width, dtype, stem), 8 * width  # DER (Yan): the whole backbone per task


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One backbone of the registry.

    Attributes:
      build: ``build(num_classes, **kwargs) -> nn.Module``.
      conv: built from convolutions (the loop's CPU chunking depends on it:
        :func:`clj.train.runtime.auto_chunking`).
      family: ``"standard"`` (the shared classifier signature of
        :mod:`clj.models`, used by the replay, class-IL and regularisation
        methods), ``"serena"`` (bias-free, stateless BatchNorm: SERENA's
        cells) or ``"nispa"`` (NISPA's sparse networks with their torch
        initialisation).
      split: ``split(shared, **kwargs) -> (generalized module or None,
        specialized module, feature dim D)`` (``kwargs``: the backbone's
        own, e.g. ``num_blocks``, and ``dtype``), the backbone's cut for a
        growing network (:mod:`clj.models.growing`): ``shared=True`` keeps
        a generalized part for all tasks (MEMO), ``False`` replicates the
        whole backbone (DER (Yan)); None: the backbone cannot grow.
      split_fields: the ``config.model`` fields ``split`` takes (those a
        config sets are passed to it; :func:`clj.models.growing.split_modules`).
    """

    build: Callable[..., nn.Module]
    conv: bool
    family: str
    split: Callable[..., tuple] | None = None
    split_fields: tuple = ()


_REGISTRY: Dict[str, ModelEntry] = {
    "mlp": ModelEntry(MLP, False, "standard"),
    "small_cnn": ModelEntry(SmallCNN, True, "standard"),
    "resnet18": ModelEntry(ResNet18, True, "standard"),
    "resnet18_reduced": ModelEntry(_resnet18_reduced, True, "standard"),
    "resnet18_imagenet": ModelEntry(_resnet18_imagenet, True, "standard", split=_resnet18_split,
                                    split_fields=("width", "stem")),
    "resnet32": ModelEntry(ResNet32, True, "standard", split=_resnet32_split, split_fields=("num_blocks",)),
    "serena_mlp": ModelEntry(_serena(mlp=True), False, "serena"),
    "serena_resnet18": ModelEntry(_serena(), True, "serena"),
    "serena_resnet18_reduced": ModelEntry(_serena(width_default=20), True, "serena"),
    "nispa_mlp": ModelEntry(_nispa_mlp, False, "nispa"),
    "nispa_conv": ModelEntry(_nispa_conv, True, "nispa"),
}

MODEL_NAMES = tuple(n for n, e in _REGISTRY.items() if e.family == "standard")
"""The standard classifiers (one call signature; see :mod:`clj.models`)."""


def model_names(family: str | None = None, growing: bool = False) -> tuple:
    """Every registered backbone name, or those of one ``family``; with
    ``growing``, only those with a ``split`` (:class:`ModelEntry`)."""
    return tuple(n for n, e in _REGISTRY.items()
                 if (family is None or e.family == family) and (not growing or e.split is not None))


def is_conv(name: str) -> bool:
    """Whether the backbone called ``name`` (any family) is convolutional."""
    e = _REGISTRY.get(name)
    return bool(e is not None and e.conv)


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
      name: a registered backbone (:func:`model_names`): the standard
        ``"mlp"``, ``"small_cnn"``, ``"resnet18"``, ``"resnet18_reduced"``
        (ResNet18 with ``width=20``), ``"resnet18_imagenet"`` (ResNet18
        with ``stem="imagenet"``: torchvision's ``resnet18``), ``"resnet32"``; SERENA's
        ``"serena_mlp"``, ``"serena_resnet18"``, ``"serena_resnet18_reduced"``;
        NISPA's ``"nispa_mlp"``, ``"nispa_conv"``.
      num_classes: number of output logits.
      **kwargs: forwarded to the model constructor (e.g. ``hidden``,
        ``width``, ``stem`` (the ResNet-18s), ``use_bn``, ``dtype``: ``"float32"`` / ``"bfloat16"`` or
        the dtype, the computation dtype; parameters stay float32).

    Returns:
      An unbound ``flax.linen`` Module with call signature
      ``(x [B,H,W,C] float32, train=False, return_features=False)``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names), or
        a ``dtype`` other than float32 or bfloat16 (a ConfigError).
    """
    return get_family_model(name, num_classes, None, **kwargs)


def get_family_model(name: str, num_classes: int, family: str | None, **kwargs: Any) -> nn.Module:
    """:func:`get_model` restricted to one ``family`` (``None``: any).

    Raises:
      ValueError: ``name`` unknown or of another family, listing the valid names.
      clj.errors.ConfigError (a ValueError): a ``dtype`` other than float32
        or bfloat16 (:func:`clj.models.compute_dtype`).
    """
    e = _REGISTRY.get(name) if isinstance(name, str) else None
    if e is None or (family is not None and e.family != family):
        what = f"a {family} backbone" if family else "a registered model"
        raise ValueError(f"model.name={name!r} is not {what}; valid names are: {', '.join(model_names(family))}")
    if "dtype" in kwargs:  # a name ("bfloat16") or a dtype: the computation dtype
        kwargs["dtype"] = compute_dtype(kwargs["dtype"])
    return e.build(num_classes=num_classes, **kwargs)


def split_fields(name: str) -> tuple:
    """The ``config.model`` fields the split of backbone ``name`` takes
    (``()`` for a backbone that cannot grow or an unknown name)."""
    e = _REGISTRY.get(name) if isinstance(name, str) else None
    return () if e is None else tuple(e.split_fields)


def get_split(name: str, shared: bool, **kwargs: Any) -> tuple:
    """(generalized module or None, specialized module, feature dim D): the
    cut of backbone ``name`` for a growing network (:class:`ModelEntry`
    ``split``); ``kwargs`` (e.g. ``num_blocks``, and ``dtype``, the
    computation dtype of both modules: see :func:`clj.models.compute_dtype`)
    go to the backbone.

    Raises:
      ValueError: ``name`` unknown or not a backbone that can grow, listing the valid names.
      clj.errors.ConfigError (a ValueError): a ``dtype`` other than float32 or bfloat16.
    """
    e = _REGISTRY.get(name) if isinstance(name, str) else None
    if e is None or e.split is None:
        raise ValueError(f"model.name={name!r} cannot grow; valid names are: {', '.join(model_names(growing=True))}")
    return e.split(shared, **kwargs)


def feature_dim(model: nn.Module) -> int:
    """Dimension D of the penultimate features returned with ``return_features=True``."""
    return int(model.feature_dim)


def init_variables(
    model: nn.Module,
    key: jax.Array,
    input_shape: Sequence[int],
) -> Dict[str, Any]:
    """Initialise ``model`` on a zero input of shape ``input_shape`` ([B,H,W,C]).

    Returns the variables dict (``{"params": ...}`` plus ``"batch_stats"`` for
    BatchNorm models) as a plain ``dict``.
    """
    variables = model.init(key, jnp.zeros(tuple(input_shape), jnp.float32), train=False)
    return dict(variables)
