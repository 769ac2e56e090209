"""The sparse backbones of NISPA (Gurbuz & Dovrolis, ICML 2022), as Flax modules.

Both networks are plain (dense-weight) Flax modules without normalisation or
dropout; sparsity comes from connection masks of :mod:`clj.sparse` that the
method multiplies into the parameters before calling ``apply``
(``model.apply({"params": clj.sparse.apply_masks(params, masks)}, x)``).
Besides the logits they return the post-ReLU activation of every hidden
*unit layer* (the per-unit statistics NISPA selects stable units from).

Layouts (``docs/nispa.md``, "Networks"):

* :class:`SparseMLP` - flatten -> ``hidden`` Dense+ReLU layers -> Dense(C).
  The EF-MNIST net is 784-400-400-400-C at 20 % density in every layer.
* :class:`SparseConvNet` - conv3x3(64) ReLU, conv3x3(64) ReLU maxpool2,
  conv3x3(128) ReLU, conv3x3(128) ReLU maxpool2, flatten, Dense(1024) ReLU,
  Dense(C).  Activations of the pooled layers are taken after the pool.  The
  flatten is NHWC, so flattened feature ``f`` comes from channel ``f % 128``
  (:meth:`SparseConvNet.layer_specs` records that map).

:func:`layer_specs` describes every weight layer in unit terms (which unit
layer it reads, how its rows map to source units, its kernel size), which is
all the NISPA bookkeeping needs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

def _untruncated(mode: str):
    """Kaiming normal, ReLU gain, *untruncated* (PyTorch's kaiming_normal_)."""
    return nn.initializers.variance_scaling(2.0, mode, "normal")  # "normal" = untruncated in jax


def _torch_bias_init(fan_in: int):
    """PyTorch's default Linear bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One weight layer in unit terms (hashable).

    Attributes:
      name: the params key of the layer (``params[name]["kernel"|"bias"]``).
      kind: ``dense`` (rows = source units), ``conv`` (HWIO kernel; a
        connection is a whole kh x kw kernel between two channels) or
        ``flat`` (dense over a flattened NHWC feature map; row ``r`` comes
        from channel ``r % channels``).
      rows: rows of the unit-level connection matrix (``dense``/``flat``:
        kernel rows; ``conv``: input channels).
      cols: target units (output features / channels).
      n_src: units of the source unit layer.
      ksize: kernel elements per connection (9 for 3x3 conv, else 1).
      density: initial connection density of the layer.
    """

    name: str
    kind: str
    rows: int
    cols: int
    n_src: int
    ksize: int
    density: float


class SparseMLP(nn.Module):
    """NISPA's MLP: flatten -> [Dense(h) ReLU]* -> Dense(num_classes).

    Call ``apply(vars, x)`` with float32 ``x`` [B, ...]; returns
    ``(logits float32 [B, C], [activation float32 [B, h] per hidden layer])``.
    Kernels: Kaiming normal fan_out (ReLU gain), biases PyTorch's default
    uniform (``docs/nispa.md``, "Networks").  Params: ``fc0 .. fc{L-1}``, ``out``.
    """

    num_classes: int
    hidden: Sequence[int] = (400, 400, 400)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        acts = []
        names = [f"fc{i}" for i in range(len(self.hidden))] + ["out"]
        widths = list(self.hidden) + [self.num_classes]
        for i, (name, h) in enumerate(zip(names, widths)):
            x = nn.Dense(h, kernel_init=_untruncated("fan_out"), bias_init=_torch_bias_init(x.shape[-1]),
                         dtype=self.dtype, param_dtype=jnp.float32, name=name)(x)
            if i < len(widths) - 1:
                x = nn.relu(x)
                acts.append(x.astype(jnp.float32))
        return x.astype(jnp.float32), acts

    def layer_specs(self, input_shape: Sequence[int], density: float) -> tuple[LayerSpec, ...]:
        """Unit-level description of every weight layer (all at ``density``)."""
        n_in = int(math.prod(input_shape))
        widths = [n_in] + list(self.hidden) + [self.num_classes]
        names = [f"fc{i}" for i in range(len(self.hidden))] + ["out"]
        return tuple(LayerSpec(n, "dense", widths[i], widths[i + 1], widths[i], 1, float(density))
                     for i, n in enumerate(names))


class SparseConvNet(nn.Module):
    """NISPA's CIFAR ConvNet (``docs/nispa.md``, "Networks"), NHWC.

    Call ``apply(vars, x)`` with float32 ``x`` [B, H, W, C]; returns
    ``(logits [B, num_classes], [5 activations])``: conv0 [B,H,W,64], conv1
    after pool [B,H/2,W/2,64], conv2 [B,H/2,W/2,128], conv3 after pool
    [B,H/4,W/4,128], fc0 [B,1024].  Kernels Kaiming normal fan_in, biases 0.
    """

    num_classes: int
    channels: Sequence[int] = (64, 64, 128, 128)
    fc_width: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False):
        del train
        dt = self.dtype
        x = x.astype(dt)
        acts = []
        for i, ch in enumerate(self.channels):
            x = nn.Conv(ch, (3, 3), padding="SAME", kernel_init=_untruncated("fan_in"),
                        bias_init=nn.initializers.zeros, dtype=dt, param_dtype=jnp.float32, name=f"conv{i}")(x)
            x = nn.relu(x)
            if i % 2 == 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            acts.append(x.astype(jnp.float32))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.fc_width, kernel_init=_untruncated("fan_in"),
                             bias_init=nn.initializers.zeros, dtype=dt, param_dtype=jnp.float32, name="fc0")(x))
        acts.append(x.astype(jnp.float32))
        x = nn.Dense(self.num_classes, kernel_init=_untruncated("fan_in"), bias_init=nn.initializers.zeros,
                     dtype=dt, param_dtype=jnp.float32, name="out")(x)
        return x.astype(jnp.float32), acts

    def layer_specs(self, input_shape: Sequence[int], density: float,
                    dense_first: bool = True) -> tuple[LayerSpec, ...]:
        """Unit-level description of every weight layer; the first conv is
        dense when ``dense_first`` (``docs/nispa.md``, "Networks")."""
        H, W, C = input_shape
        specs, cin = [], C
        for i, ch in enumerate(self.channels):
            d = 1.0 if (i == 0 and dense_first) else float(density)
            specs.append(LayerSpec(f"conv{i}", "conv", cin, ch, cin, 9, d))
            cin = ch
        h, w = H, W
        for i in range(len(self.channels)):
            if i % 2 == 1:
                h, w = -(-h // 2), -(-w // 2)
        specs.append(LayerSpec("fc0", "flat", h * w * cin, self.fc_width, cin, 1, float(density)))
        specs.append(LayerSpec("out", "dense", self.fc_width, self.num_classes, self.fc_width, 1,
                               float(density)))
        return tuple(specs)


def reinit_kernel(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """A fresh Kaiming-normal (fan_out, ReLU gain, untruncated) kernel of
    ``shape`` (Dense (in, out) or Conv HWIO): NISPA's re-initialisation at a
    task boundary (``docs/nispa.md``, "The task boundary:
    promote, freeze, re-initialise", step 3)."""
    return _untruncated("fan_out")(key, tuple(shape), jnp.float32)
