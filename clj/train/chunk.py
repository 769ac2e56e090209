"""The compiled training chunk: K train steps of every run (seeds x grid
points, one vmapped axis) in one jitted call, compiled once per run.

The chunk length K is fixed for the run; a task's last chunk masks its
extra steps as no-ops (state unchanged), and per-task values (task id,
first step, step count) are traced arguments.  The key of step k of a
task is ``fold_in(task_key, k)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clj.methods.common import SEED_AXIS
from clj.train.seeds import over_runs


def params_finite(state) -> jax.Array:
    """Whether every floating-point leaf of ``state`` that lies under a
    ``params`` field or key (the networks' weights, wherever a method keeps
    them) is finite; ``True`` when the state has no such leaf.

    Args:
      state: one run's State pytree (traced or concrete).

    Returns:
      bool scalar (a reduction over the parameters, cheap beside a chunk of
      training steps).
    """
    def under_params(path) -> bool:
        for k in path:
            name = getattr(k, "name", getattr(k, "key", None))
            if name == "params":
                return True
        return False

    leaves = [a for path, a in jax.tree_util.tree_flatten_with_path(state)[0]
              if under_params(path) and jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)]
    ok = jnp.bool_(True)
    for a in leaves:
        ok = ok & jnp.all(jnp.isfinite(a))
    return ok


def make_chunk(spec, augment, *, B: int, K: int, unroll: int, reveal: bool, give_new_task: bool,
               give_step_info: bool, streamed: bool, domain, constrain_batch, spmd_axis: str, state_sharding,
               seed_batching: str = "vmap"):
    """The jitted chunk of K steps for every run.

    Args:
      spec: the method's spec (its ``train_step``).
      augment: the run's augmentation, ``augment(x_raw, key, train=True)``.
      B: the batch size.
      K: steps per chunk.
      unroll: the scan's unroll.
      reveal: the batch carries the task id (else -1).
      give_new_task: the batch carries ``new_task`` (step == 0).
      give_step_info: the batch carries ``step``, ``steps_per_epoch`` and
        ``task_size``.
      streamed: the ``stream`` placement (X / Y are the chunk's batches, not
        the whole split).
      domain: ``domain(x_raw, task_id)``, the task's input transform.
      constrain_batch: the batch's sharding constraint (or the identity).
      spmd_axis: the mesh axis the runs are sharded over.
      state_sharding: the sharding of the state and the metrics.
      seed_batching: ``"vmap"`` or ``"map"``: the runs batched or one after
        another (:mod:`clj.train.seeds`).

    Returns:
      ``chunk(state, X, Y, idx, task_keys, step0, n_steps, task_id, spe,
      n_task) -> (state, metrics)``: ``state`` the runs' stacked State;
      device placement: X [N, ...] / Y [N] the whole split (shared by the
      runs) and idx int32 [S, K, B] each run's examples; stream placement:
      X [S, K, B, ...] / Y [S, K, B] each run's chunk, idx unused; X may be
      ``{"image": X, name: extra}`` with per-image extras laid out like the
      images, each gathered into the batch as ``batch[name]``;
      ``task_keys`` [S, 2] each run's task key; the rest int32 scalars.
      ``metrics`` holds the method's step metrics [S, K, ...] and
      ``params_finite`` bool [S].  The state is donated except on the CPU.
    """
    aug = augment

    def seed_chunk(state, X, Y, idx, task_key, step0, n_steps, task_id, spe, n_task):
        # device placement: X [N, ...] / Y [N] the whole split (shared by the seeds),
        # idx int32 [K, B] this seed's examples; stream placement: X [K, B, ...] /
        # Y [K, B] this seed's chunk as read from disk, idx unused.
        def body(st, inp):
            k, ix = inp
            step = step0 + k
            key = jax.random.fold_in(task_key, step)
            k_aug, k_step = jax.random.split(key)
            xb, yb = jax.tree.map(lambda a: a[k] if streamed else a[ix], (X, Y))
            extras = {}
            if isinstance(xb, dict):  # the images and their stored extras (Capabilities.batch_extras)
                extras = {n: constrain_batch(v) for n, v in xb.items() if n != "image"}
                xb = xb["image"]
            x_raw = constrain_batch(domain(xb, task_id))
            y = constrain_batch(yb)
            x = aug(x_raw, k_aug, train=True)
            batch = {"x": x, "x_raw": x_raw, "y": y,
                     "task_id": jnp.full((B,), jnp.where(reveal, task_id, -1), jnp.int32)}
            batch.update(extras)
            if give_new_task:
                batch["new_task"] = step == 0
            if give_step_info:  # shared by all seeds (unbatched under vmap)
                batch.update(step=step, steps_per_epoch=spe, task_size=n_task)
            new, metrics = spec.train_step(st, batch, k_step)
            # A last chunk's steps past the task's end are no-ops: state unchanged.
            live = step < n_steps
            new = jax.tree.map(lambda a, b: jnp.where(live, a, b), new, st)
            return new, metrics

        if K == 1:
            # A length-1 scan is no cheaper than a plain call, and on the CPU it
            # makes XLA keep the weight-gradient convolutions in a slow layout
            # (ResNet-18: ~100 s instead of ~1 s per step; benchmarks/README.md).
            st, metrics = body(state, (jnp.int32(0), idx[0]))
            metrics = jax.tree.map(lambda m: m[None], metrics)
        else:
            st, metrics = jax.lax.scan(body, state, (jnp.arange(K, dtype=jnp.int32), idx), unroll=unroll)
        # divergence watch: read by the host with the chunk's other metrics (no extra sync)
        return st, {**metrics, "params_finite": params_finite(st)}

    data_axis = 0 if streamed else None
    fn = over_runs(seed_chunk, (0, data_axis, data_axis, 0, 0) + (None,) * 5, seed_batching, axis_name=SEED_AXIS,
                   spmd_axis_name=spmd_axis)
    donate = (0,) if jax.default_backend() != "cpu" else ()
    return jax.jit(fn, donate_argnums=donate, out_shardings=(state_sharding, state_sharding))
