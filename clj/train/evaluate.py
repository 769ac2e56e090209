"""The loop's evaluation: every run's accuracy on the test set of each task,
counted on the devices by one compiled function (one compile whatever the
prefix of tasks evaluated), fed the whole test split (``device``
placement) or groups of batches read from disk (``stream``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from clj.train import distributed as dist
from clj.train.runtime import DATA_MESH_AXIS
from clj.train.seeds import over_runs


def make_eval_counts(spec, caps, augment, *, num_tasks: int, top5: bool, domain_per_example, batch_sharding,
                     n_data_dev: int, spmd_axis: str, state_sharding, seed_batching: str = "vmap"):
    """The jitted count of correct predictions per task.

    Args:
      spec: the method's spec (``predict``, ``prepare_predict``).
      caps: its capabilities (task id at test time, the task-IL rule,
        ``predict``'s ``valid`` argument).
      augment: the run's augmentation (``train=False``).
      num_tasks: T.
      top5: count class-IL top-5 hits too.
      domain_per_example: ``f(x_raw, tasks)``, each image's task input transform.
      batch_sharding: the sharding of a batch over the data axis.
      n_data_dev: devices of the data axis (a batch is constrained to
        ``batch_sharding`` when > 1).
      spmd_axis: the mesh axis the runs are sharded over.
      state_sharding: the sharding of the runs' stacked State (and the counts).
      seed_batching: ``"vmap"`` or ``"map"`` (:mod:`clj.train.seeds`).

    Returns:
      ``counts(state, Xt, Yt, eidx, etask, evalid, seen, task_cls, n_batches)
      -> (class_il, task_il, top5)``, each int32 [S, T]: correct predictions
      of each run on each task over the first ``n_batches`` rows of the
      evaluation batches ``eidx`` / ``etask`` / ``evalid`` [n, E] (indices
      into ``Xt`` / ``Yt``, their task, real or padding); ``seen`` bool [C]
      the classes a class-IL prediction may choose among; ``task_cls`` bool
      [T, C].  ``top5`` equals ``class_il`` when ``top5`` is False.
    """
    aug, T = augment, num_tasks
    use_tid, tid_cil = caps.task_id_at_test, caps.task_id_class_il
    kw_valid = caps.predict_uses_valid
    multiply = caps.task_il_rule == "multiply"

    def seed_eval(state, Xt, Yt, eidx, etask, evalid, seen, task_cls, n_batches):
        if spec.prepare_predict is not None:  # once per evaluation, not per batch
            state = spec.prepare_predict(state)

        def predict(x, tk, vd):
            return spec.predict(state, x, tk, **({"valid": vd} if kw_valid else {})).astype(jnp.float32)

        def body(inp):
            ix, tk, vd = inp
            x = aug(domain_per_example(Xt[ix], tk), None, train=False)
            x = jax.lax.with_sharding_constraint(x, batch_sharding) if n_data_dev > 1 else x
            y = Yt[ix]
            logits = predict(x, tk if tid_cil else None, vd)
            masked = jnp.where(seen[None, :], logits, -jnp.inf)
            cil = jnp.argmax(masked, -1) == y
            lt = predict(x, tk, vd) if use_tid and not tid_cil else logits
            if multiply:  # logits x 0/1 task mask, argmax over all classes (NISPA's official rule)
                til = jnp.argmax(lt * task_cls[tk].astype(lt.dtype), -1) == y
            else:
                til = jnp.argmax(jnp.where(task_cls[tk], lt, -jnp.inf), -1) == y
            if top5:  # y among the 5 largest scores of the seen classes
                c5 = jnp.any(jax.lax.top_k(masked, 5)[1] == y[:, None], -1) & seen[y]
            else:
                c5 = cil
            return cil & vd, til & vd, c5 & vd

        # The first n_batches batches only (a loop with a traced bound: one compile
        # whatever the prefix), counted per task as they go.
        def count(i, acc):
            cil, til, c5 = body((eidx[i], etask[i], evalid[i]))
            seg = lambda c: jax.ops.segment_sum(c.astype(jnp.int32), etask[i], T)  # noqa: E731
            return acc[0] + seg(cil), acc[1] + seg(til), acc[2] + seg(c5)

        zeros = jnp.zeros((T,), jnp.int32)
        return jax.lax.fori_loop(0, n_batches, count, (zeros, zeros, zeros))

    return jax.jit(over_runs(seed_eval, (0,) + (None,) * 8, seed_batching, spmd_axis_name=spmd_axis),
                   out_shardings=state_sharding)


def evaluate(counts_fn, state, data, scenario, *, top5: bool, seen=None, upto: int | None = None,
             eval_group: int, mesh, replicated) -> dict[str, np.ndarray]:
    """Accuracy of every run's State on the test set of each task.

    Args:
      counts_fn: the function of :func:`make_eval_counts`.
      state: the State of all S runs, as the loop holds it.
      data: the run's :class:`clj.train.placement.DataLayout` (its records
        when the test split is not on the devices).
      scenario: the run's scenario.
      top5: report ``class_il_top5``.
      seen: bool [num_classes], the classes a class-IL prediction may choose
        among (default: all classes).
      upto: evaluate only tasks 0..upto; the other tasks' entries are NaN.
        None = every task.
      eval_group: evaluation batches read from disk at a time (``stream``).
      mesh: the run's mesh; replicated: the sharding of a whole array on
        every device.

    Returns:
      ``{setting: float64 [S, T]}`` fractions in [0, 1] for ``class_il`` and
      ``task_il`` (plus ``class_il_top5`` when ``top5``), or
      ``{"domain_il": ...}`` for a domain-IL scenario.

    Raises:
      ValueError: ``upto`` outside [0, T-1] or ``seen`` of the wrong length.
    """
    T, C = scenario.num_tasks, scenario.num_classes
    seen = np.ones(C, bool) if seen is None else np.asarray(seen, bool)
    if seen.shape != (C,):
        raise ValueError(f"seen has shape {seen.shape}; it must be ({C},), one flag per class")
    if upto is not None and not 0 <= int(upto) < T:
        raise ValueError(f"upto={upto} is invalid: it must be a task index in [0, {T - 1}] or None")
    n_batches = int(data.eval_batches_upto[-1 if upto is None else int(upto)])
    if data.records is None:
        cil, til, c5 = counts_fn(state, data.Xt, data.Yt, data.eval_idx, data.eval_task, data.eval_valid, seen,
                                 data.task_cls, np.int32(n_batches))
        cil, til, c5 = dist.to_host((cil, til, c5))
    else:
        cil, til, c5 = evaluate_streamed(counts_fn, state, data, scenario, seen, n_batches, eval_group=eval_group,
                                         mesh=mesh, replicated=replicated)
    denom = np.maximum(data.eval_counts, 1)[None, :]
    out = {"class_il": np.asarray(cil) / denom, "task_il": np.asarray(til) / denom}
    if scenario.kind == "domain_il":
        out = {"domain_il": out["class_il"]}
    elif top5:
        out["class_il_top5"] = np.asarray(c5) / denom
    if upto is not None:
        for v in out.values():
            v[:, int(upto) + 1:] = np.nan
    return out


def evaluate_streamed(counts_fn, state, data, scenario, seen, n_batches: int, *, eval_group: int, mesh,
                      replicated):
    """Evaluation of the ``stream`` placement: groups of G = ``eval_group``
    evaluation batches (of the first ``n_batches``) read from disk, each put
    on the devices and counted by the same compiled function (the last group
    padded with invalid batches).  Returns the summed counts, each [S, T]."""
    from clj.data.stream import EvalStream

    total_nb, E = data.eval_idx_host.shape
    nb = n_batches
    G = max(1, min(total_nb, int(eval_group)))  # fixed: one compile
    n_groups = math.ceil(nb / G)
    pad = n_groups * G - nb
    idx = np.concatenate([data.eval_idx_host[:nb], np.repeat(data.eval_idx_host[:1], pad, 0)])
    tsk = np.concatenate([data.eval_task_host[:nb], np.repeat(data.eval_task_host[:1], pad, 0)])
    vld = np.concatenate([data.eval_valid_host[:nb], np.zeros((pad, E), bool)])
    local = dist.put(np.arange(G * E, dtype=np.int32).reshape(G, E), NamedSharding(mesh, P(None, DATA_MESH_AXIS)))
    shard = NamedSharding(mesh, P(None, DATA_MESH_AXIS))
    total = None
    with EvalStream(data.records, idx.reshape(n_groups, G * E), labels=scenario.y_test) as groups:
        for g, (x, y) in enumerate(groups):
            sl = slice(g * G, (g + 1) * G)
            out = counts_fn(state, dist.put(x, replicated), dist.put(y, replicated), local,
                            dist.put(tsk[sl], shard), dist.put(vld[sl], shard), np.asarray(seen), data.task_cls,
                            np.int32(G))
            out = dist.to_host(out)
            total = out if total is None else tuple(a + b for a, b in zip(total, out))
    return total
