"""Pieces shared by the exemplar-based class-incremental methods (iCaRL, WA,
Replay, DER, MEMO): their config block, the two-phase optimizer (PyCIL's
"init" task-0 and "update" later-task settings), the knowledge-distillation
loss, weight aligning, and the per-task static quantities.

Config block ``config.cil`` (every field has the PyCIL default; see
``docs/memo.md``, "Two optimizer phases", "The exemplar memory" and "The
memory-aligned (fair) budget"):

* ``memory_size`` (2000), ``fixed_memory`` (False), ``memory_per_class`` (20):
  the exemplar budget (:mod:`clj.replay.exemplars`);
* ``budget``: ``"fixed"`` uses ``memory_size``; ``"fair"`` computes it from
  the parameter counts so every method has DER's byte budget (T backbones +
  ``base_exemplars``), :func:`clj.replay.exemplars.fair_exemplars`;
* ``base_exemplars`` (2000): DER's exemplar count in the fair budget;
* ``batching``: how new data and exemplars make a step's batch.
  ``"pycil"`` (PyCIL's loader over the union of the task's data and the
  memory): every step is one batch of B examples, ``b_new`` new ones (the
  first ``b_new`` rows of the loop's batch) and ``B - b_new`` exemplars,
  ``b_new = round(B n_new / (n_new + n_mem))``; the exemplars of a step are
  consecutive slots of a per-epoch permutation of the memory (each exemplar
  once per epoch); an epoch has ``ceil((n_new + n_mem) / B)`` steps
  (:func:`batch_plan`; the loop asks the method's ``task_steps``).
  ``"concat"``: the loop's B new examples plus ``R`` exemplars drawn with
  replacement, ``ceil(n_new / B)`` steps per epoch;
* ``replay_batch_size`` (``"concat"`` only): R; -1 = in proportion to the
  stored memory / new-data ratio of the task, 0 = none;
* ``wa_loss``: WA's objective, ``"kd2"`` = CE + 2 KD (PyCIL before February
  2023, the CIL-survey / MEMO code that produced the MEMO paper's and the
  survey's WA numbers) or ``"lambda"`` = (1 - l) CE + l KD with
  l = known / total (PyCIL since February 2023);
* ``scheduler``: ``""`` keeps ``config.optim.schedule`` (task 0) and
  ``update_schedule`` (tasks >= 1); ``"cosine"`` is MEMO's ``--scheduler
  cosine`` (both phases cosine, T_max = the phase's epochs, ``t_max`` > 0
  overrides the later phases'); ``"steplr"`` both multistep.  Every
  schedule steps once per epoch, as PyCIL's schedulers;
* ``growth`` (MEMO / DER): ``"loop"`` runs the live old blocks one by one
  and differentiates only the trainable parameters; ``"vmap"`` is the
  earlier version (``vmap`` over the stacked blocks, gradient of every
  parameter), kept as the reference of the tests and the benchmark;
* ``predict``: ``"cnn"`` (the linear head) or ``"nme"`` (nearest mean of
  exemplars);
* ``kd_T`` (2.0): distillation temperature; ``kd_weight``: weight of the KD
  term (-1 = the method's PyCIL value: iCaRL 1, WA 2);
* ``update_lr``, ``update_weight_decay``, ``update_milestones``,
  ``update_schedule``: the optimizer of tasks >= 1 (``config.optim`` is task
  0's; ``config.train.init_epochs`` / ``epochs`` the epochs);
* ``train_base`` (True), ``alpha_aux`` (1.0): MEMO / DER only.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from clj.methods import sections
from clj.methods.cil import section as cil_section
from clj.methods.common import OptimSpec, optim_spec_from_config

NEG = -1e9

# Defaults and checks of config.cil live in the JAX-free clj.methods.cil.section.
CIL_DEFAULTS = dict(cil_section.CIL.defaults)
PREDICT_RULES = cil_section.CIL_PREDICT_RULES
BUDGETS = cil_section.CIL_BUDGETS
BATCHING = cil_section.CIL_BATCHING
WA_LOSSES = cil_section.CIL_WA_LOSSES
SCHEDULERS = cil_section.CIL_SCHEDULERS
GROWTH = cil_section.CIL_GROWTH


@dataclasses.dataclass(frozen=True)
class EpochOptimSpec(OptimSpec):
    """:class:`~clj.methods.common.OptimSpec` whose cosine schedule steps once
    per epoch, as PyTorch's ``CosineAnnealingLR`` stepped after every epoch
    in PyCIL / MEMO: ``lr_e = lr (1 + cos(pi e / t_max)) / 2`` for epoch
    ``e = floor(task_step / steps_per_epoch)`` (``t_max`` in epochs, the
    phase's epoch count).  Multistep and constant are the parent's (already
    per epoch / flat)."""

    t_max: float = 1.0

    def lr_at(self, task_step: jax.Array, task_steps: jax.Array, steps_per_epoch: jax.Array,
              base_lr: jax.Array | None = None) -> jax.Array:
        if self.schedule != "cosine":
            return super().lr_at(task_step, task_steps, steps_per_epoch, base_lr)
        epoch = jnp.floor(task_step.astype(jnp.float32) / jnp.maximum(steps_per_epoch.astype(jnp.float32), 1.0))
        lr0 = jnp.asarray(self.lr if base_lr is None else base_lr, jnp.float32)
        return lr0 * 0.5 * (1.0 + jnp.cos(math.pi * epoch / self.t_max))


def phase_epochs(config) -> tuple[float, float]:
    """(task-0 epochs, later-task epochs): ``train.init_epochs`` (when > 0,
    else ``train.epochs``) and ``train.epochs``."""
    ep = float(config.train.epochs)
    init_ep = float(config.train.get("init_epochs", 0) or 0) or ep
    return init_ep, ep


def optim_specs(config, cil) -> tuple[OptimSpec, OptimSpec]:
    """(task-0 spec from ``config.optim``, tasks>=1 spec from ``cil.update_*``),
    both :class:`EpochOptimSpec`; ``cil.scheduler`` overrides both schedules
    (module doc)."""
    base = optim_spec_from_config(config.optim)
    init_ep, ep = phase_epochs(config)
    init = EpochOptimSpec(**dataclasses.asdict(base), t_max=init_ep)
    update = dataclasses.replace(init, lr=float(cil.update_lr), weight_decay=float(cil.update_weight_decay),
                                 milestones=tuple(int(m) for m in cil.update_milestones),
                                 schedule=str(cil.update_schedule), t_max=float(cil.t_max) or ep)
    if cil.scheduler:
        sched = "cosine" if cil.scheduler == "cosine" else "multistep"
        init = dataclasses.replace(init, schedule=sched)
        update = dataclasses.replace(update, schedule=sched)
    return init, update


def class_sizes(scenario) -> tuple[int, ...]:
    """Training images per class (remapped labels) over all tasks of the
    scenario (host ints; what herding can store at most per class)."""
    import numpy as np

    idx = np.concatenate([t.train_idx for t in scenario.tasks])
    return tuple(int(n) for n in np.bincount(np.asarray(scenario.y_train)[idx], minlength=scenario.num_classes))


def stored_exemplars(sizes: tuple[int, ...], known: int, quota: int, capacity: int) -> int:
    """Exemplars in the memory at the start of a task whose old classes are
    ``[0, known)``: ``sum_c min(quota, n_c)`` (herding stops when a class
    runs out of images), at most ``capacity``.  This, not ``quota * known``,
    is what a step can replay."""
    if known <= 0:
        return 0
    return int(min(capacity, sum(min(int(quota), int(n)) for n in sizes[:known])))


def batch_plan(batching: str, batch_size: int, n_new: int, n_mem: int, epochs: float,
               replay_batch_size: int = -1, max_replay_batch: int = 512) -> dict:
    """The batches of one task (host ints).

    Args:
      batching: ``"pycil"`` or ``"concat"`` (module doc).
      batch_size: B; n_new: the task's training images; n_mem: stored
        exemplars (:func:`stored_exemplars`); epochs: the phase's epochs.

    Returns:
      ``{"steps", "steps_per_epoch", "new_per_step", "replay"}``: ``pycil``:
      ``steps_per_epoch = ceil((n_new + n_mem) / B)``, ``steps = epochs *
      steps_per_epoch``, ``new_per_step = round(B n_new / (n_new + n_mem))``
      (1..B-1 when both are present), ``replay = B - new_per_step``;
      ``concat``: ``ceil(n_new / B)`` per epoch, ``ceil(epochs n_new / B)``
      steps (the loop's count), B new, ``replay`` from :func:`replay_batch`.
    """
    B = int(batch_size)
    if batching == "pycil":
        N = n_new + n_mem
        spe = max(1, math.ceil(N / B))
        b_new = B if n_mem <= 0 else (0 if n_new <= 0 else min(B - 1, max(1, round(B * n_new / N))))
        return {"steps": max(1, math.ceil(epochs * spe)), "steps_per_epoch": spe, "new_per_step": b_new,
                "replay": B - b_new}
    spe = max(1, math.ceil(n_new / B))
    return {"steps": max(1, math.ceil(epochs * n_new / B)), "steps_per_epoch": spe, "new_per_step": B,
            "replay": replay_batch(replay_batch_size, max_replay_batch, B, spe * B, n_mem)}


def draw_replay(mem, st, batching: str, key: jax.Array | None, task_step: jax.Array, rng: jax.Array):
    """Memory slots of one step: int32 [st.replay] and bool [st.replay] valid.

    ``concat``: uniform with replacement among the filled slots.  ``pycil``:
    slots ``j * R ... j * R + R - 1`` (mod n_mem) of the epoch's permutation
    of the ``st.n_mem`` stored exemplars, j = step within the epoch; the
    permutation's key is ``fold_in(fold_in(key, task), epoch)``, so every
    exemplar appears once per epoch (``steps_per_epoch * R >= n_mem``).
    """
    from clj.replay import exemplars as ex

    if batching != "pycil" or key is None:
        return ex.sample_exemplars(mem, rng, st.replay)
    spe = max(st.steps_per_epoch, 1)
    epoch = task_step // spe
    j = task_step % spe
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, st.task), epoch), st.n_mem)
    pos = (j * st.replay + jnp.arange(st.replay)) % st.n_mem
    idx = perm[pos].astype(jnp.int32)
    return idx, idx < mem.count()


def replay_batch(replay_batch_size: int, max_replay_batch: int, batch_size: int, n_new_approx: int,
                 n_mem_max: int) -> int:
    """Static exemplars per step for a task: ``replay_batch_size`` or, when
    -1, ``round(B * n_mem / n_new)`` (the share of exemplars in a batch of
    PyCIL's shuffled union), capped by ``max_replay_batch``; 0 while the
    memory is empty."""
    r = int(replay_batch_size)
    if n_mem_max <= 0:
        return 0
    if r >= 0:
        return r
    return int(min(int(max_replay_batch), max(1, round(batch_size * n_mem_max / max(n_new_approx, 1)))))


def mask_logits(logits: jax.Array, num: int | jax.Array) -> jax.Array:
    """Logits of classes >= ``num`` set to -1e9 (heads are allocated for all
    classes of the scenario; unseen ones take no part in softmaxes)."""
    col = jnp.arange(logits.shape[-1])
    return jnp.where(col < num, logits, NEG)


def kd_loss(logits: jax.Array, old_logits: jax.Array, num_old: int | jax.Array, T: float,
            weights: jax.Array | None = None) -> jax.Array:
    """Softened-softmax distillation over the first ``num_old`` classes
    (Hinton et al. 2015; PyCIL's iCaRL / WA ``_KD_loss``, no T^2 factor):
    ``-sum_c softmax(old / T)_c * log_softmax(new / T)_c``, averaged over the
    rows selected by ``weights`` [B] (all when None).  float32 []."""
    new = mask_logits(logits.astype(jnp.float32), num_old) / T
    old = mask_logits(old_logits.astype(jnp.float32), num_old) / T
    col = jnp.arange(logits.shape[-1]) < num_old
    p = jax.nn.softmax(old, -1) * col
    lp = jnp.where(col, jax.nn.log_softmax(new, -1), 0.0)
    per = -jnp.sum(p * lp, -1)
    if weights is None:
        return per.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def weight_align(kernel: jax.Array, known: int | jax.Array, total: int | jax.Array) -> jax.Array:
    """Weight Aligning (Zhao et al., CVPR 2020, Eq. 6).

    Args:
      kernel: float32 [D, C] a Flax Dense kernel (column c = class c's weight
        vector).
      known, total: old classes are ``[0, known)``, new ``[known, total)``.

    Returns:
      The kernel with the new columns multiplied by
      ``gamma = mean ||w_old|| / mean ||w_new||``; everything else (old
      columns, unseen columns, the bias) is unchanged.
    """
    norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0)
    col = jnp.arange(kernel.shape[1])
    old = col < known
    new = (col >= known) & (col < total)
    r_old = jnp.sum(norms * old) / jnp.maximum(jnp.sum(old), 1)
    r_new = jnp.sum(norms * new) / jnp.maximum(jnp.sum(new), 1)
    gamma = r_old / jnp.maximum(r_new, 1e-12)
    return jnp.where(new[None, :], kernel * gamma, kernel).astype(kernel.dtype)


@dataclasses.dataclass(frozen=True)
class TaskStatics:
    """Per-task static quantities (hashable; a new value recompiles once).

    Attributes:
      task: index of the current task (-1 before the first).
      known: classes of earlier tasks.
      total: classes seen including the current task.
      replay: exemplars per train step.
      quota: exemplars per class after this task (for ``end_task``).
      n_new, n_mem: the task's training images and the stored exemplars.
      new_per_step: new examples per step (the first rows of the loop's
        batch; B in ``concat`` mode).
      steps_per_epoch, steps: the task's batches (:func:`batch_plan`).
    """

    task: int = -1
    known: int = 0
    total: int = 0
    replay: int = 0
    quota: int = 0
    n_new: int = 0
    n_mem: int = 0
    new_per_step: int = 0
    steps_per_epoch: int = 1
    steps: int = 1


COUNT_FIELDS = ("task", "known", "total", "replay", "quota", "n_new", "n_mem", "new_per_step", "steps_per_epoch",
                "steps")


@struct.dataclass
class TaskCounts:
    """The current task's :class:`TaskStatics` as int32 [] arrays of the
    State: a method that keeps them here (not in its static fields) runs
    every task >= 1 with one compiled training chunk and one evaluation
    program (with :class:`Phase` the only per-task statics).  Fields as
    :class:`TaskStatics` (``replay`` there is the exemplar rows a step
    uses: ``B - new_per_step`` under ``"pycil"`` batching)."""

    task: jax.Array
    known: jax.Array
    total: jax.Array
    replay: jax.Array
    quota: jax.Array
    n_new: jax.Array
    n_mem: jax.Array
    new_per_step: jax.Array
    steps_per_epoch: jax.Array
    steps: jax.Array

    @classmethod
    def of(cls, st: "TaskStatics | None" = None) -> "TaskCounts":
        """The counts of ``st`` (zeros, task -1, before the first task)."""
        st = st or TaskStatics()
        return cls(**{f: jnp.asarray(getattr(st, f), jnp.int32) for f in COUNT_FIELDS})


@dataclasses.dataclass(frozen=True)
class Phase:
    """What of a task decides the compiled step (hashable): ``first`` (task
    0: the init optimizer, nothing to distil) and ``rows``, the exemplar
    rows a step draws (``"concat"``: R, the replay batch; ``"pycil"``: B
    once the memory holds exemplars, one candidate per batch row of which
    rows >= ``new_per_step`` are used, else 0).  Under ``"pycil"`` batching
    every task >= 1 has the same phase."""

    first: bool = True
    rows: int = 0


def phase_of(st: TaskStatics, batching: str, batch_size: int) -> Phase:
    """The :class:`Phase` of the task whose statics are ``st``."""
    if batching == "pycil":
        return Phase(first=st.task <= 0, rows=int(batch_size) if st.replay > 0 else 0)
    return Phase(first=st.task <= 0, rows=int(st.replay))


def draw_replay_rows(mem, counts, phase: Phase, batching: str, key: jax.Array | None, task_step: jax.Array,
                     rng: jax.Array, spread: bool = False):
    """Memory slots of one step's ``phase.rows`` exemplar rows: int32
    [rows], bool [rows] (the row holds a stored exemplar that counts).

    ``counts`` is a :class:`TaskCounts` (traced) or a :class:`TaskStatics`
    (host ints).  ``"concat"`` (or no ``key``): uniform with replacement
    among the filled slots.  ``"pycil"``: row i of the batch (i >=
    ``new_per_step``; the rows below are the new data's and are marked
    invalid) takes position ``j R + i - new_per_step`` (mod n_mem) of the
    epoch's permutation of the n_mem stored exemplars, j = step within the
    epoch, R = ``B - new_per_step``; the permutation (the ranks of uniform
    keys over the slots, the empty slots last) is drawn from
    ``fold_in(fold_in(key, task), epoch)``, so every exemplar appears once
    per epoch (``steps_per_epoch * R >= n_mem``).  ``spread``: the epoch's
    S = ``steps_per_epoch * R`` exemplar positions carry the n_mem stored
    exemplars once each, spread evenly (position p holds exemplar
    ``perm[floor(p n_mem / S)]`` and counts when that index steps up), as
    the exemplars of PyCIL's / Mammoth's shuffled union are spread over the
    epoch (``exemplar_repeats="once"`` of BiC and LUCIR).
    """
    from clj.replay import exemplars as ex

    if batching != "pycil" or key is None:
        return ex.sample_exemplars(mem, rng, phase.rows)
    spe = jnp.maximum(jnp.asarray(counts.steps_per_epoch, jnp.int32), 1)
    n_mem = jnp.asarray(counts.n_mem, jnp.int32)
    epoch, j = task_step // spe, task_step % spe
    cap = mem.y.shape[0]
    u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, counts.task), epoch), (cap,))
    perm = jnp.argsort(jnp.where(jnp.arange(cap) < n_mem, u, 2.0))
    i = jnp.arange(phase.rows) - counts.new_per_step
    p = j * counts.replay + i
    if spread:
        S = jnp.maximum(spe * jnp.asarray(counts.replay, jnp.int32), 1)
        q0, q1 = (p * n_mem) // S, ((p + 1) * n_mem) // S
        idx = perm[jnp.clip(q0, 0, jnp.maximum(n_mem - 1, 0))].astype(jnp.int32)
        return idx, (i >= 0) & (q1 > q0) & (idx < mem.count())
    idx = perm[p % jnp.maximum(n_mem, 1)].astype(jnp.int32)
    return idx, (i >= 0) & (idx < mem.count())
