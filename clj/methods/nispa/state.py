"""NISPA's static settings, its State, the masks of the sparse network and
the State's construction from a config (``docs/nispa.md``, "Networks" and "Unit
states").
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.data.augment import Augment
from clj.errors import ConfigError
from clj.methods import common, sections
from clj.methods.nispa import section as nispa_section
from clj.methods.nispa import units as nu
from clj.data.holdout import is_val_np
from clj.models.nispa_nets import LayerSpec
from clj.models.registry import get_family_model
from clj.sparse import apply_masks, count_for, masked_optimizer, random_mask

PyTree = Any
TASK_IL_RULES = ("multiply", "restrict")


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      model: the Flax backbone (:mod:`clj.models.nispa_nets`).
      specs: unit-level description of every weight layer.
      num_classes, num_tasks: of the scenario.
      lr: Adam's learning rate (re-created every phase, no weight decay).
      a_f: the accuracy drop (percentage points) that stops a task.
      k: the cosine schedule's k (Eq. 3).
      phase_epochs: e, epochs per phase.
      min_phases: the accuracy stop needs t >= this (3 in the official code).
      tau_stop: stop once p_t <= this (percent).
      val_permille: validation share of each task's data, in 1/1000.
      val_cap, sel_cap: buffer capacities (multiples of ``chunk``).
      chunk: evaluation batch for the buffers.
      augment: the evaluation transform (uint8 -> float32).
      task_il_rule: the task-IL test rule of NISPA's comparisons
        (:func:`task_il_correct`; the official code's is 'multiply').
    """

    model: nn.Module
    specs: tuple[LayerSpec, ...]
    num_classes: int
    num_tasks: int
    lr: float = 0.01
    a_f: float = 0.75
    k: float = 30.0
    phase_epochs: int = 5
    min_phases: int = 3
    tau_stop: float = 5.0
    val_permille: int = 100
    val_cap: int = 0
    sel_cap: int = 0
    chunk: int = 512
    augment: Augment = Augment()
    task_il_rule: str = "multiply"

    @property
    def tx(self) -> optax.GradientTransformationExtraArgs:
        """Adam through the masked update (frozen and absent connections get
        exactly zero gradient, moments and update; ``docs/nispa.md``, "A task,
        phase by phase")."""
        return masked_optimizer(optax.adam(self.lr))

    @property
    def n_layers(self) -> int:
        return len(self.specs)


@struct.dataclass
class State:
    """Everything NISPA carries (all arrays but ``static``, the run's static settings).

    Attributes:
      params: the network's weights (absent connections exactly 0).
      conn: layer name -> bool unit-level connection matrix (see
        :mod:`clj.methods.nispa.units`).
      stable: bool vectors of unit layers 1..L (hidden layers, then outputs).
      cur_S: the stable+candidate sets that produced the current connectivity.
      opt_state: Adam's state (reset every phase).
      best_params, best_acc, have_best: this phase's best-epoch snapshot.
      prev_params, prev_conn, prev_S, prev_p, prev_valid: the rollback point
        (the previous phase's snapshot before its rewiring).
      acc_prev: best phase accuracy of the task so far (percent).
      phase: phases completed in this task; stopped: the task has stopped.
      cur_p: p of the selection behind ``cur_S``.
      task_id: the current task.
      class_mask: float32 [C] 1 at the current task's classes; seen: bool [C].
      val_x/val_y/val_n, sel_x/sel_y/sel_n: validation and selection buffers.
      phases_per_task, final_p: int32/float32 [T] bookkeeping per task.
      leftover: int32 [n_layers] growth budget lost so far (density deficit).
      key: PRNG key of the task-end re-initialisation.
    """

    params: PyTree
    conn: dict
    stable: tuple
    cur_S: tuple
    opt_state: PyTree
    best_params: PyTree
    best_acc: jax.Array
    have_best: jax.Array
    prev_params: PyTree
    prev_conn: dict
    prev_S: tuple
    prev_p: jax.Array
    prev_valid: jax.Array
    acc_prev: jax.Array
    phase: jax.Array
    stopped: jax.Array
    cur_p: jax.Array
    task_id: jax.Array
    class_mask: jax.Array
    seen: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    val_n: jax.Array
    sel_x: jax.Array
    sel_n: jax.Array
    phases_per_task: jax.Array
    final_p: jax.Array
    leftover: jax.Array
    key: jax.Array
    static: Static = struct.field(pytree_node=False)


def tree_where(pred, a, b):
    """``where(pred, a, b)`` leaf by leaf (pred: bool [])."""
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


# ---------------------------------------------------------------- masks / forward
def full_masks(static: Static, params: PyTree, conn: dict) -> PyTree:
    """The params-shaped bool masks (kernels: expanded ``conn``; biases: all
    True) for :func:`clj.sparse.apply_masks`."""
    out = {}
    for s in static.specs:
        k = params[s.name]["kernel"]
        out[s.name] = {"kernel": nu.expand(s, conn[s.name], k.shape),
                       "bias": jnp.ones(params[s.name]["bias"].shape, bool)}
    return out


def stable_full(static: Static, stable: tuple) -> list:
    """The stable vectors of every unit layer, the input layer (all stable) first."""
    return [jnp.ones((static.specs[0].n_src,), bool)] + list(stable)


def trainable(static: Static, params: PyTree, conn: dict, stable: tuple) -> PyTree:
    """The update mask: existing, non-frozen connections and the biases of
    non-stable units (``docs/nispa.md``, "A task, phase by phase")."""
    sf = stable_full(static, stable)
    out = {}
    for l, s in enumerate(static.specs):
        fr = nu.frozen_matrix(s, sf[l], sf[l + 1])
        k = params[s.name]["kernel"]
        out[s.name] = {"kernel": nu.expand(s, conn[s.name] & ~fr, k.shape), "bias": ~sf[l + 1]}
    return out


def forward(static: Static, params: PyTree, conn: dict, x: jax.Array):
    """(logits float32 [B, C], hidden activations) of the sparse network."""
    return static.model.apply({"params": apply_masks(params, full_masks(static, params, conn))}, x)


def buffer_capacities(scenario, permille: int, chunk: int, select_samples: int) -> tuple[int, int, int]:
    """(validation capacity, selection capacity, evaluation chunk) from the
    scenario's tasks (the hash split is deterministic): the largest task's
    validation and training counts (the latter capped at ``select_samples``
    when > 0), rounded up to whole chunks of at most ``chunk``."""
    nv, nt = [], []
    for t in scenario.tasks:
        v = is_val_np(scenario.x_train[t.train_idx], permille)
        nv.append(int(v.sum()))
        nt.append(int((~v).sum()))
    sel_cap = max(nt) if select_samples <= 0 else min(select_samples, max(nt))
    chunk = max(1, min(chunk, max(nv), sel_cap))
    val_cap = math.ceil(max(max(nv), 1) / chunk) * chunk
    sel_cap = math.ceil(max(sel_cap, 1) / chunk) * chunk
    return val_cap, sel_cap, chunk


def initial_connections(specs: tuple[LayerSpec, ...], key: jax.Array, mask_init: str) -> dict:
    """Random unit-level connection matrices at each layer's density:
    ``'exact'`` counts or ``'bernoulli'`` draws (the official code's); dense
    layers all True."""
    conn = {}
    for s, mk in zip(specs, jax.random.split(key, len(specs))):
        shp = (s.rows, s.cols)
        if s.density >= 1.0:
            conn[s.name] = jnp.ones(shp, bool)
        elif mask_init == "bernoulli":
            conn[s.name] = jax.random.bernoulli(mk, s.density, shp)
        else:
            conn[s.name] = random_mask(mk, shp, count_for(s.density, s.rows * s.cols))
    return conn


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: the sparse net of ``config.model`` (``nispa_mlp`` or
    ``nispa_conv``) with random connection masks at ``config.nispa.density``
    (first conv dense), empty unit sets, empty buffers.

    Raises:
      ConfigError: a bad ``config.nispa`` value or optimizer (names it and
        what is valid).
    """
    nv = sections.block(config, nispa_section.NISPA)  # the checked config.nispa
    density = float(nv["density"])
    e = int(nv["phase_epochs"])
    vf = float(nv["val_fraction"])
    mask_init = str(nv["mask_init"])
    rule = task_il_rule(config)
    name = config.model.name
    kw = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "name"}
    model = get_family_model(name, scenario.num_classes, "nispa", **kw)
    shape = scenario.image_shape
    if name == "nispa_mlp":
        specs = model.layer_specs(shape, density)
    else:
        specs = model.layer_specs(shape, density, dense_first=bool(nv["dense_first_conv"]))

    permille = int(round(1000 * vf))
    val_cap, sel_cap, chunk = buffer_capacities(scenario, permille, int(nv["eval_chunk"]),
                                                int(nv["select_samples"]))
    static = Static(model=model, specs=specs, num_classes=scenario.num_classes, num_tasks=scenario.num_tasks,
                    lr=float(config.optim.lr), a_f=float(nv["a_f"]), k=float(nv["k"]),
                    phase_epochs=e, min_phases=int(nv["min_phases"]), tau_stop=float(nv["tau_stop"]),
                    val_permille=permille, val_cap=val_cap, sel_cap=sel_cap,
                    chunk=chunk,
                    augment=common.augment_from_config(config.augment, scenario), task_il_rule=rule)

    k_init, k_mask, k_state = jax.random.split(rng, 3)
    params = model.init(k_init, jnp.zeros((1, *shape), jnp.float32))["params"]
    params = {k: dict(v) for k, v in params.items()}
    conn = initial_connections(specs, k_mask, mask_init)
    params = apply_masks(params, full_masks(static, params, conn))
    C, T = scenario.num_classes, scenario.num_tasks
    unit_sizes = [s.cols for s in specs]
    stable = tuple(jnp.zeros((n,), bool) for n in unit_sizes)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return State(
        params=params, conn=conn, stable=stable, cur_S=stable, opt_state=static.tx.init(params),
        best_params=params, best_acc=f0, have_best=b0, prev_params=params, prev_conn=conn, prev_S=stable,
        prev_p=jnp.full((), 100.0), prev_valid=b0, acc_prev=f0, phase=i0, stopped=b0,
        cur_p=jnp.full((), 100.0), task_id=i0, class_mask=jnp.zeros((C,), jnp.float32),
        seen=jnp.zeros((C,), bool), val_x=jnp.zeros((val_cap, *shape), jnp.uint8),
        val_y=jnp.zeros((val_cap,), jnp.int32), val_n=i0, sel_x=jnp.zeros((sel_cap, *shape), jnp.uint8),
        sel_n=i0, phases_per_task=jnp.zeros((T,), jnp.int32), final_p=jnp.zeros((T,), jnp.float32),
        leftover=jnp.zeros((len(specs),), jnp.int32), key=k_state, static=static)


def task_il_rule(config) -> str:
    """The task-IL test rule of NISPA's comparisons, ``config.nispa.task_il_rule``
    (default ``'multiply'``, the official code's; see :func:`task_il_correct`).

    Raises:
      ConfigError: an unknown rule.
    """
    rule = str(sections.block(config, nispa_section.NISPA)["task_il_rule"])
    if rule not in TASK_IL_RULES:
        raise ConfigError(f"nispa.task_il_rule={rule!r} is unknown; valid: {', '.join(TASK_IL_RULES)}.")
    return rule
