"""Model registry: build a model by name."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clj.models.cnn import SmallCNN
from clj.models.mlp import MLP
from clj.models.resnet import ResNet18, ResNet32


def _resnet18_reduced(num_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("width", 20)
    return ResNet18(num_classes=num_classes, **kwargs)


_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "resnet18": ResNet18,
    "resnet18_reduced": _resnet18_reduced,
    "resnet32": ResNet32,
}

MODEL_NAMES = tuple(_REGISTRY)

# Backbones built from convolutions, across every model family of clj (the
# loop's CPU chunking depends on it: clj.train.runtime.auto_chunking).
CONV_MODELS = frozenset({"small_cnn", "resnet18", "resnet18_reduced", "resnet32", "serena_resnet18",
                         "serena_resnet18_reduced", "nispa_conv"})


def is_conv(name: str) -> bool:
    """Whether the backbone called ``name`` (any clj model family) is convolutional."""
    return name in CONV_MODELS


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
      name: one of ``"mlp"``, ``"small_cnn"``, ``"resnet18"``,
        ``"resnet18_reduced"`` (ResNet18 with ``width=20``), ``"resnet32"``.
      num_classes: number of output logits.
      **kwargs: forwarded to the model constructor (e.g. ``hidden``,
        ``width``, ``use_bn``, ``dtype``).

    Returns:
      An unbound ``flax.linen`` Module with call signature
      ``(x [B,H,W,C] float32, train=False, return_features=False)``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names).
    """
    try:
        ctor = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown model name {name!r}; valid names are: {', '.join(MODEL_NAMES)}"
        ) from None
    return ctor(num_classes=num_classes, **kwargs)


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
