"""Shared building blocks for the ``clj.models`` networks.

Every model in :mod:`clj.models` follows the same calling convention::

    logits = model.apply(variables, x, train=False)
    logits, feats = model.apply(variables, x, train=False, return_features=True)
    (logits, new_vars) = model.apply(variables, x, train=True, mutable=["batch_stats"])

and has two top-level submodules, ``backbone`` (input -> ``[B, D]`` features)
and ``head`` (an ``nn.Dense(num_classes)`` over those features).  Parameters
are always stored in float32; ``dtype`` selects the computation dtype, and
logits/features are returned as float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from clj.errors import ConfigError

Dtype = Any

PARAM_DTYPE = jnp.float32

MODEL_DTYPES = ("float32", "bfloat16")  # model.dtype (clj.config.MODEL_DTYPES mirrors it, JAX-free)
_COMPUTE_DTYPES = {name: getattr(jnp, name) for name in MODEL_DTYPES}  # "float32" -> jnp.float32, ...


def compute_dtype(config_or_name: Any = None) -> Dtype:
    """The computation dtype ``model.dtype`` names: the one conversion of it.

    Args:
      config_or_name: a model block (``config.model``: a ConfigDict or dict;
        a missing ``dtype`` field means float32), a whole config (its
        ``model`` block is read), a name (``"float32"`` or ``"bfloat16"``),
        a dtype (``jnp.bfloat16``, ``np.dtype("float32")``) or None
        (float32).

    Returns:
      ``jnp.float32`` or ``jnp.bfloat16``, as the networks' ``dtype=`` takes
      it (their parameters stay float32 whatever it is).

    Raises:
      ConfigError: any other dtype or value, naming it and the valid names.
    """
    v = config_or_name
    if hasattr(v, "get") and hasattr(v, "keys"):  # a config block
        if "dtype" not in v and "model" in v:
            v = v["model"]
        v = v.get("dtype", "float32")
    if v is None:
        v = "float32"
    name = v
    if not isinstance(v, str):
        try:
            name = np.dtype(v).name
        except TypeError:
            name = None
    if name not in _COMPUTE_DTYPES:
        raise ConfigError(f"model.dtype={v!r} is invalid; valid: {', '.join(MODEL_DTYPES)}.")
    return _COMPUTE_DTYPES[name]

# He/Kaiming normal initialisation (fan_out, ReLU gain), as used by the
# PyTorch CIFAR ResNets of Mammoth / PyCIL.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, dtype: Dtype, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with the library-wide settings (momentum 0.9, eps 1e-5).

    Statistics are reduced in float32 even when ``dtype`` is bfloat16; scale
    and bias are stored in float32.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        name=name,
    )


def classify(feats: jnp.ndarray, num_classes: int, dtype: Dtype, return_features: bool,
             kernel_init=nn.initializers.lecun_normal()):
    """Apply the ``head`` Dense layer to backbone features.

    Must be called from inside a ``@nn.compact`` method; the Dense layer is
    registered on the calling module under the name ``"head"``.

    Args:
      feats: ``[B, D]`` backbone features (any float dtype).
      num_classes: number of output units.
      dtype: computation dtype of the head.
      return_features: also return the float32 features.
      kernel_init: the head's weight initializer (Flax's LeCun normal by
        default); its bias starts at 0.

    Returns:
      float32 logits ``[B, num_classes]``, or ``(logits, feats)`` with float32
      feats ``[B, D]`` when ``return_features`` is true.
    """
    logits = nn.Dense(num_classes, dtype=dtype, param_dtype=PARAM_DTYPE, kernel_init=kernel_init,
                      name="head")(feats)
    logits = logits.astype(jnp.float32)
    if return_features:
        return logits, feats.astype(jnp.float32)
    return logits
