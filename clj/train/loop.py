"""The continual-learning loop: config -> data -> scenario -> method -> metrics.

For each task: ``begin_task`` -> many jitted train steps -> ``end_task`` ->
evaluate every task -> checkpoint.  The loop knows a method only through its
spec (:mod:`clj.methods.api`): the five functions and the declared
capabilities.

Speed (DESIGN.md, "Speed and scale"):

* the dataset lives on the device as uint8 arrays; a batch is a gather by
  index inside the jitted step, the domain transform and the augmentation run
  on the device;
* one compile of the training chunk per run: the chunk length K is fixed for
  the run (:func:`clj.train.runtime.choose_chunk`), a task's last chunk masks
  its extra steps as no-ops (state unchanged), and per-task values (task id,
  first step, step count) are traced arguments;
* no host round-trip on the hot path: the progress bar, ``metrics.jsonl`` and
  early stopping read the previous chunk's metrics while the next chunk runs;
* a 2-D mesh, seeds x data (:func:`clj.train.runtime.make_mesh`): seeds are a
  ``vmap`` axis sharded over the ``seed`` mesh axis (each device holds its own
  seeds' states); the batch and the evaluation examples are sharded over the
  ``data`` axis; each seed's numbers equal a separate run of that seed;
* ``init`` is one jitted call; ``begin_task`` / ``end_task`` compile once per
  distinct shape (per task only for methods that declare
  ``static_task_info``).

Randomness is derived, never carried: the key of step k of task t of seed s
is ``fold_in(fold_in(PRNGKey(s), t + 1), k)`` and the example order of a task
comes from ``numpy.random.default_rng([s, t])``, so a run resumed from a
checkpoint after task t ends exactly as an uninterrupted one.

Batches: each task's stream is its epochs' shuffles concatenated and cut into
batches of B; a last partial batch is completed from a further shuffle, so
shapes stay static (at most B - 1 examples are seen once more).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from flax import serialization

from clj import config as config_lib
from clj.data.augment import permute_pixels, rotate
from clj.methods import get_spec
from clj.methods.common import SEED_AXIS, TaskInfo, augment_from_config, param_bytes
from clj.metrics import MetricsLogger, build_results, summarize_seeds, write_json_atomic
from clj.scenarios import Scenario
from clj.train import distributed as dist
from clj.train import runtime
from clj.train.runtime import DATA_MESH_AXIS, SEED_MESH_AXIS, auto_chunking, make_mesh  # noqa: F401


@dataclasses.dataclass
class _Progress:
    completed_tasks: int = 0
    acc: dict = dataclasses.field(default_factory=dict)        # setting -> list of rows [S, T]
    random_init: dict = dataclasses.field(default_factory=dict)  # setting -> [S, T]
    wall_time: list = dataclasses.field(default_factory=list)
    eval_time: list = dataclasses.field(default_factory=list)
    steps: list = dataclasses.field(default_factory=list)
    diverged: dict = dataclasses.field(default_factory=dict)    # run index -> {"seed", "task", "step", "cause"}

    def to_json(self) -> dict:
        return {"completed_tasks": self.completed_tasks, "diverged": {str(k): v for k, v in self.diverged.items()},
                "acc": {k: [np.asarray(r).tolist() for r in v] for k, v in self.acc.items()},
                "random_init": {k: np.asarray(v).tolist() for k, v in self.random_init.items()},
                "wall_time": self.wall_time, "eval_time": self.eval_time, "steps": self.steps}

    @classmethod
    def from_json(cls, d: dict) -> "_Progress":
        return cls(completed_tasks=d["completed_tasks"],
                   acc={k: [np.asarray(r) for r in v] for k, v in d["acc"].items()},
                   random_init={k: np.asarray(v) for k, v in d["random_init"].items()},
                   wall_time=list(d["wall_time"]), eval_time=list(d["eval_time"]), steps=list(d["steps"]),
                   diverged={int(k): dict(v) for k, v in (d.get("diverged") or {}).items()})


@dataclasses.dataclass(frozen=True)
class _TaskPlan:
    """Host facts of one task, fixed before the run starts."""

    pool: np.ndarray       # int32 [n] training examples the task draws from
    steps: int             # train steps
    steps_per_epoch: int
    new_per_step: int      # fresh examples at the head of each batch (B unless the method plans less)


class Runner:
    """Runs one config (all its seeds) in a workdir.  See module doc.

    Args:
      config: a validated-on-entry ``ml_collections.ConfigDict``.
      workdir: the run's folder.
      scenario: a prebuilt :class:`~clj.scenarios.Scenario` (default: loaded
        from the config).
      devices: the devices to use (default: all).
      points: a hyperparameter grid run as one program: a list of dicts
        ``{config path: value}`` over the method's ``sweepable`` fields, the
        same paths in each; every point runs every seed of the config, all
        of them one vmapped axis.  None = the config's own values.
      point_workdirs: the results folder of each point (default
        ``<workdir>/point_<i>``); the group's checkpoints stay in ``workdir``.

    Raises:
      ConfigError: a config value that cannot run, or a point that sets a
        field the method cannot sweep (before any work).
      clj.workdir.WorkdirBusy, clj.workdir.WorkdirError (from :meth:`run`,
        before any work): another process runs in ``workdir``, or it holds
        a different config's run and ``config.resume`` is True.
    """

    def __init__(self, config, workdir: str, scenario: Scenario | None = None, devices=None,
                 points: list[dict] | None = None, point_workdirs: list[str] | None = None):
        config_lib.validate(config)
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.spec = get_spec(config.method)
        self.caps = self.spec.caps(config)
        self.grid = points is not None
        self.points = [dict(p) for p in points] if points is not None else [{}]
        self._check_points()
        if point_workdirs is None:
            point_workdirs = [self.workdir] if not self.grid else \
                [os.path.join(self.workdir, f"point_{i}") for i in range(len(self.points))]
        if len(point_workdirs) != len(self.points):
            raise config_lib.ConfigError(f"point_workdirs has {len(point_workdirs)} folders for "
                                         f"{len(self.points)} points; give one per point.")
        self.point_workdirs = [os.path.abspath(d) for d in point_workdirs]
        self.placement, self.prepared = choose_placement(config, devices)
        from clj.preflight import is_labels_only

        if scenario is None or (self.placement == "device" and is_labels_only(scenario)):
            scenario = load_scenario(config, self.prepared if self.placement == "stream" else None)
        config_lib.validate_with_data(config, scenario)
        self.scenario = scenario
        self.config_seeds = [int(config.seed) + s for s in range(int(config.num_seeds))]
        # one vmapped run per (point, seed), point-major
        self.seeds = [s for _ in self.points for s in self.config_seeds]
        self.run_point = [i for i in range(len(self.points)) for _ in self.config_seeds]
        self.S = len(self.seeds)
        self.B = int(config.train.batch_size)
        self.augment = augment_from_config(config.augment, scenario)
        if bool(config.loop.get("compilation_cache", True)):
            runtime.enable_compilation_cache(str(config.loop.get("cache_dir", "")))

        # --- what the method may see (its spec decides; never more than the protocol allows)
        self.visible = scenario.task_boundaries_visible
        asks_reveal = bool(config.scenario.get("reveal_boundaries", False))
        if asks_reveal and not self.visible and not self.caps.sees_boundaries:
            raise config_lib.ConfigError(
                f"scenario.reveal_boundaries=True, but method={config.method!r} does not see task boundaries "
                "in a data-incremental stream; valid: reveal_boundaries=False for this method.")
        self.reveal = self.visible or asks_reveal
        self.give_new_task = self.reveal and self.caps.sees_boundaries
        self.give_step_info = self.reveal and self.caps.step_info
        self.settings = ("domain_il",) if scenario.kind == "domain_il" else ("class_il", "task_il")
        self.mask_unseen = scenario.kind in ("class_il", "task_il")
        # loop.eval_tasks="seen": after task t only tasks <= t are evaluated (Mammoth's and
        # PyCIL's habit); the accuracy matrix's upper triangle is then NaN (not measured) and
        # the random-init evaluation (FWT's baseline) is skipped.
        self.eval_seen = str(config.loop.get("eval_tasks", "all")) == "seen"
        self.top5 = scenario.kind != "domain_il" and scenario.num_classes > 5  # PyCIL's class-IL top-5 curve

        # --- devices: a seeds x data mesh
        try:
            self.mesh = make_mesh(self.S, devices, str(config.loop.get("mesh", "auto")))
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None
        self.n_dev = self.mesh.devices.size
        self.n_seed_dev, self.n_data_dev = self.mesh.devices.shape
        self.shard_batch = bool(config.loop.shard_batch) and self.n_data_dev > 1 and self.B % self.n_data_dev == 0
        if bool(config.loop.shard_batch) and self.n_data_dev > 1 and not self.shard_batch:
            warnings.warn(f"train.batch_size={self.B} does not divide over the {self.n_data_dev} devices of the "
                          "data axis: the batch is replicated over them, not sharded.")
        # The seed axis and every output laid out on the mesh (also on one device:
        # outputs then keep the inputs' sharding, so the chunk's cache key never changes).
        self._spmd = SEED_MESH_AXIS
        self._out = lambda sh: {"out_shardings": sh}
        self._replicated = NamedSharding(self.mesh, P())
        self._state_sharding = NamedSharding(self.mesh, P(SEED_MESH_AXIS))
        self._batch_sharding = NamedSharding(self.mesh, P(DATA_MESH_AXIS))

        # --- the plan of every task, then one chunk length for the run
        self._state_info = None
        self.plans = [self._plan(t) for t in range(scenario.num_tasks)]
        short = [(t, p.pool.shape[0]) for t, p in enumerate(self.plans) if 0 < p.pool.shape[0] < p.new_per_step]
        if short:  # every batch of such a task would repeat examples
            t, n = short[0]
            fit = min(p.pool.shape[0] for p in self.plans if p.pool.shape[0] > 0)
            raise config_lib.ConfigError(
                f"train.batch_size={self.B} is larger than the {n} training examples of task {t}: every batch of "
                f"that task would repeat examples; valid: 1..{fit} (the smallest task's examples).")
        conv = self.caps.conv
        if conv is None:
            from clj.models import is_conv
            conv = is_conv(config.model.name)
        K_max, U = auto_chunking(jax.default_backend(), bool(conv), self.caps.heavy_step)
        K_max = int(config.loop.steps_per_call) or K_max
        self.K = runtime.choose_chunk([p.steps for p in self.plans], K_max)
        self.unroll = max(1, min(int(config.loop.unroll) or U, self.K))
        self._dev_data()
        self._chunk = None
        self._eval_fn = None
        self._begin_fns: dict = {}
        self._end_fns: dict = {}
        self.chunk_compiles = 0
        self.main = dist.is_main()  # process 0 alone prints and writes
        if config.progress and self.main:
            print(f"[clj] {jax.default_backend()}: {self.n_dev} device(s) as seeds x data = "
                  f"{self.n_seed_dev} x {self.n_data_dev}; {self.S} run(s); chunk {self.K} steps "
                  f"(unroll {self.unroll}); data placement {self.placement}")

    def _check_points(self):
        keys = set(self.points[0])
        allowed = set(self.spec.sweepable)
        for p in self.points:
            if set(p) != keys:
                raise config_lib.ConfigError(f"every point of a grid must set the same fields; got {sorted(p)} "
                                             f"and {sorted(keys)}.")
            for k, v in p.items():
                if k not in allowed:
                    raise config_lib.ConfigError(
                        f"{k}={v!r} cannot be a vmapped grid axis of method={self.config.method!r}; its sweepable "
                        f"fields are: {', '.join(self.spec.sweepable) or 'none'} (run other fields as separate "
                        "programs).")
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise config_lib.ConfigError(f"{k}={v!r} is invalid in a grid: sweepable values are numbers.")

    def point_config(self, i: int):
        """The resolved config of point i (the config with its values set)."""
        c = self.config.copy_and_resolve_references()
        with c.unlocked():
            for k, v in self.points[i].items():
                node = c
                *path, last = k.split(".")
                for name in path:
                    node = node[name]
                node[last] = type(node[last])(v) if isinstance(node[last], float) else v
        return c

    # ------------------------------------------------------------------ data
    def _plan(self, t: int) -> _TaskPlan:
        sc = self.scenario
        if self.caps.cumulative_data:
            pool = np.concatenate([sc.tasks[i].train_idx for i in range(t + 1)])
        else:
            pool = sc.tasks[t].train_idx
        n = int(pool.shape[0])
        spe, new = max(1, math.ceil(n / self.B)), self.B
        if self.spec.task_steps is not None:
            if self._state_info is None:  # one seed's State as shapes: the static fields are real
                self._state_info = jax.eval_shape(lambda k: self.spec.init(k, self.config, self.scenario),
                                                  jax.random.PRNGKey(0))
            plan = self.spec.task_steps(self.config, n, self.B, t, self._state_info)
            if isinstance(plan, dict):
                steps, spe, new = int(plan["steps"]), int(plan["steps_per_epoch"]), int(plan["new_per_step"])
            else:
                steps = int(plan)
        else:
            epochs = float(self.config.train.epochs)
            init_epochs = float(self.config.train.get("init_epochs", 0) or 0)
            if t == 0 and init_epochs > 0:  # PyCIL's separate epoch count of the first task
                epochs = init_epochs
            steps = max(1, math.ceil(epochs * n / self.B))
        return _TaskPlan(pool=np.asarray(pool, np.int32), steps=steps, steps_per_epoch=spe,
                         new_per_step=min(new, self.B))

    def _dev_data(self):
        sc = self.scenario
        put = lambda a: dist.put(a, self._replicated)  # noqa: E731
        if self.placement == "device":
            self.X = put(sc.x_train)
            self.Y = put(sc.y_train.astype(np.int32))
            self.Xt = put(sc.x_test)
            self.Yt = put(sc.y_test.astype(np.int32))
        else:  # stream: read from disk per chunk / per evaluation group / per end_task
            from clj.data.records import PreparedDataset

            self.records = PreparedDataset(self.prepared, num_threads=int(self.config.data.get("threads", 4)))
            self.X = self.Y = self.Xt = self.Yt = None
        self.dom = put(sc.domain_params) if sc.domain_params is not None else None
        # Evaluation set: each task's test examples padded to whole batches of E, so
        # no batch mixes two tasks (a method with batch statistics at test time sees
        # one task per batch, and `valid` marks the padding).  E divides over the
        # data axis of the mesh.
        counts = np.array([t.test_idx.shape[0] for t in sc.tasks])
        E = max(1, min(int(self.config.loop.eval_batch_size), int(counts.max())))
        E = self.n_data_dev * math.ceil(E / self.n_data_dev)
        idx, tsk, valid = [], [], []
        for t in sc.tasks:
            n = t.test_idx.shape[0]
            nb = max(1, math.ceil(n / E))
            pad = nb * E - n
            idx.append(np.concatenate([t.test_idx, np.full(pad, t.test_idx[0] if n else 0)]).astype(np.int32))
            tsk.append(np.full(nb * E, t.task_id, np.int32))
            valid.append(np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]))
        shard = NamedSharding(self.mesh, P(None, DATA_MESH_AXIS))
        self.eval_idx_host = np.concatenate(idx).reshape(-1, E)
        self.eval_task_host = np.concatenate(tsk).reshape(-1, E)
        self.eval_valid_host = np.concatenate(valid).reshape(-1, E)
        self.eval_idx = dist.put(self.eval_idx_host, shard)
        self.eval_task = dist.put(self.eval_task_host, shard)
        self.eval_valid = dist.put(self.eval_valid_host, shard)
        self.eval_counts = counts
        # evaluation batches of tasks 0..t (the batches are grouped by task, in task order)
        self.eval_batches_upto = np.cumsum([max(1, math.ceil(n / E)) for n in counts])
        self.task_cls = put(sc.class_task_matrix())

    def _domain(self, x_raw, task_id):
        """Applies task ``task_id``'s input transform to uint8 [B, H, W, C]."""
        if self.dom is None:
            return x_raw
        if self.scenario.domain == "permute":
            return permute_pixels(x_raw, self.dom[task_id])
        return rotate(x_raw, self.dom[task_id])

    def _domain_per_example(self, x_raw, tasks):
        if self.dom is None:
            return x_raw
        return jax.vmap(lambda x, t: self._domain(x[None], t)[0])(x_raw, tasks)

    def _constrain_batch(self, a):
        return jax.lax.with_sharding_constraint(a, self._batch_sharding) if self.shard_batch else a

    # -------------------------------------------------------------- compiled
    def _chunk_fn(self):
        """The jitted chunk of K steps for every seed (compiled once per run)."""
        if self._chunk is not None:
            return self._chunk
        spec, aug, B, K = self.spec, self.augment, self.B, self.K
        unroll = self.unroll
        give_new_task, give_step_info, reveal = self.give_new_task, self.give_step_info, self.reveal

        streamed = self.placement == "stream"

        def seed_chunk(state, X, Y, idx, task_key, step0, n_steps, task_id, spe, n_task):
            # device placement: X [N, ...] / Y [N] the whole split (shared by the seeds),
            # idx int32 [K, B] this seed's examples; stream placement: X [K, B, ...] /
            # Y [K, B] this seed's chunk as read from disk, idx unused.
            def body(st, inp):
                k, ix = inp
                step = step0 + k
                key = jax.random.fold_in(task_key, step)
                k_aug, k_step = jax.random.split(key)
                xb, yb = (X[k], Y[k]) if streamed else (X[ix], Y[ix])
                x_raw = self._constrain_batch(self._domain(xb, task_id))
                y = self._constrain_batch(yb)
                x = aug(x_raw, k_aug, train=True)
                batch = {"x": x, "x_raw": x_raw, "y": y,
                         "task_id": jnp.full((B,), jnp.where(reveal, task_id, -1), jnp.int32)}
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
        fn = jax.vmap(seed_chunk, in_axes=(0, data_axis, data_axis, 0, 0) + (None,) * 5, axis_name=SEED_AXIS,
                      spmd_axis_name=self._spmd)
        donate = (0,) if jax.default_backend() != "cpu" else ()
        self._chunk = jax.jit(fn, donate_argnums=donate, **self._out((self._state_sharding, self._state_sharding)))
        return self._chunk

    def _eval_counts_fn(self):
        if self._eval_fn is not None:
            return self._eval_fn
        spec, aug, T = self.spec, self.augment, self.scenario.num_tasks
        use_tid, tid_cil = self.caps.task_id_at_test, self.caps.task_id_class_il
        kw_valid = self.caps.predict_uses_valid
        top5 = self.top5
        multiply = self.caps.task_il_rule == "multiply"

        def seed_eval(state, Xt, Yt, eidx, etask, evalid, seen, task_cls, n_batches):
            if spec.prepare_predict is not None:  # once per evaluation, not per batch
                state = spec.prepare_predict(state)

            def predict(x, tk, vd):
                return spec.predict(state, x, tk, **({"valid": vd} if kw_valid else {})).astype(jnp.float32)

            def body(inp):
                ix, tk, vd = inp
                x = aug(self._domain_per_example(Xt[ix], tk), None, train=False)
                x = jax.lax.with_sharding_constraint(x, self._batch_sharding) if self.n_data_dev > 1 else x
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

        self._eval_fn = jax.jit(jax.vmap(seed_eval, in_axes=(0,) + (None,) * 8, spmd_axis_name=self._spmd),
                                **self._out(self._state_sharding))
        return self._eval_fn

    def evaluate(self, state, seen=None, upto: int | None = None) -> dict[str, np.ndarray]:
        """Accuracy of every run's State on the test set of each task.

        Args:
          state: the State of all S runs (seeds x grid points), as the loop holds it
            (e.g. ``Runner.final_state`` or a restored checkpoint's).
          seen: bool [num_classes], the classes a class-IL prediction may choose
            among (default: all classes).
          upto: evaluate only tasks 0..upto (their test batches form a prefix of the
            evaluation set); the other tasks' entries are NaN.  None = every task.

        Returns:
          ``{setting: float64 [S, T]}`` fractions in [0, 1] for ``class_il`` and
          ``task_il`` (plus ``class_il_top5`` with more than 5 classes), or
          ``{"domain_il": ...}`` for a domain-IL scenario.

        Raises:
          ValueError: ``upto`` outside [0, T-1] or ``seen`` of the wrong length.
        """
        T, C = self.scenario.num_tasks, self.scenario.num_classes
        seen = np.ones(C, bool) if seen is None else np.asarray(seen, bool)
        if seen.shape != (C,):
            raise ValueError(f"seen has shape {seen.shape}; it must be ({C},), one flag per class")
        if upto is not None and not 0 <= int(upto) < T:
            raise ValueError(f"upto={upto} is invalid: it must be a task index in [0, {T - 1}] or None")
        n_batches = int(self.eval_batches_upto[-1 if upto is None else int(upto)])
        if self.placement == "device":
            cil, til, c5 = self._eval_counts_fn()(state, self.Xt, self.Yt, self.eval_idx, self.eval_task,
                                                 self.eval_valid, seen, self.task_cls, np.int32(n_batches))
            cil, til, c5 = dist.to_host((cil, til, c5))
        else:
            cil, til, c5 = self._evaluate_streamed(state, seen, n_batches)
        denom = np.maximum(self.eval_counts, 1)[None, :]
        out = {"class_il": np.asarray(cil) / denom, "task_il": np.asarray(til) / denom}
        if self.scenario.kind == "domain_il":
            out = {"domain_il": out["class_il"]}
        elif self.top5:
            out["class_il_top5"] = np.asarray(c5) / denom
        if upto is not None:
            for v in out.values():
                v[:, int(upto) + 1:] = np.nan
        return out

    def _evaluate_streamed(self, state, seen, n_batches: int):
        """Evaluation of the ``stream`` placement: groups of G evaluation
        batches (of the first ``n_batches``) read from disk, each put on the
        devices and counted by the same compiled function (the last group
        padded with invalid batches)."""
        from clj.data.stream import EvalStream

        total_nb, E = self.eval_idx_host.shape
        nb = n_batches
        G = max(1, min(total_nb, int(self.config.data.get("eval_group", 16))))  # fixed: one compile
        n_groups = math.ceil(nb / G)
        pad = n_groups * G - nb
        idx = np.concatenate([self.eval_idx_host[:nb], np.repeat(self.eval_idx_host[:1], pad, 0)])
        tsk = np.concatenate([self.eval_task_host[:nb], np.repeat(self.eval_task_host[:1], pad, 0)])
        vld = np.concatenate([self.eval_valid_host[:nb], np.zeros((pad, E), bool)])
        local = dist.put(np.arange(G * E, dtype=np.int32).reshape(G, E), NamedSharding(self.mesh, P(None, DATA_MESH_AXIS)))
        shard = NamedSharding(self.mesh, P(None, DATA_MESH_AXIS))
        fn, total = self._eval_counts_fn(), None
        with EvalStream(self.records, idx.reshape(n_groups, G * E), labels=self.scenario.y_test) as groups:
            for g, (x, y) in enumerate(groups):
                sl = slice(g * G, (g + 1) * G)
                out = fn(state, dist.put(x, self._replicated), dist.put(y, self._replicated), local,
                         dist.put(tsk[sl], shard), dist.put(vld[sl], shard), np.asarray(seen), self.task_cls,
                         np.int32(G))
                out = dist.to_host(out)
                total = out if total is None else tuple(a + b for a, b in zip(total, out))
        return total

    def _task_info(self, t: int, steps: int, spe: int) -> TaskInfo:
        """The boundary info of task t: host values for a method that declares
        ``static_task_info``, traced-ready arrays otherwise."""
        task, C = self.scenario.tasks[t], self.scenario.num_classes
        mask = np.zeros(C, bool)
        mask[list(task.classes)] = True
        if self.caps.static_task_info:
            return TaskInfo(task_id=t, classes=tuple(task.classes), num_steps=steps, steps_per_epoch=spe,
                            num_classes=C, class_mask=mask)
        i32 = lambda v: np.asarray(v, np.int32)  # noqa: E731
        return TaskInfo(task_id=i32(t), classes=(), num_steps=i32(steps), steps_per_epoch=i32(spe),
                        num_classes=C, class_mask=mask)

    def _begin_task(self, state, info: TaskInfo):
        key = (int(info.task_id), info.classes, int(info.num_steps), int(info.steps_per_epoch)) \
            if self.caps.static_task_info else "traced"
        fn = self._begin_fns.get(key)
        if fn is None:
            if self.caps.static_task_info:
                f = jax.vmap(lambda s: self.spec.begin_task(s, info), spmd_axis_name=self._spmd)
                fn = jax.jit(lambda s, i: f(s), **self._out(self._state_sharding))
            else:
                fn = jax.jit(jax.vmap(self.spec.begin_task, in_axes=(0, None), spmd_axis_name=self._spmd),
                             **self._out(self._state_sharding))
            self._begin_fns[key] = fn
        return fn(state, info)

    def _end_task(self, state, info: TaskInfo, t: int):
        """``end_task`` with the task's training data, gathered on the device."""
        static = self.caps.static_task_info
        key = (int(info.task_id), info.classes, int(info.num_steps), int(info.steps_per_epoch)) if static \
            else "traced"
        fn = self._end_fns.get(key)
        if fn is None:
            spec = self.spec

            def f(state, X, Y, tidx, info_arg):
                inf = info if static else info_arg
                data = {"x": self._domain(X[tidx], inf.task_id if not static else t), "y": Y[tidx], "info": inf}
                return jax.vmap(lambda s: spec.end_task(s, data), spmd_axis_name=self._spmd)(state)

            fn = jax.jit(f, **self._out(self._state_sharding))
            self._end_fns[key] = fn
        tidx = np.asarray(self.scenario.tasks[t].train_idx, np.int32)
        if self.placement == "stream":  # the task's training images, read from disk once
            x, _ = self.records.read("train", tidx)
            y = np.asarray(self.scenario.y_train, np.int32)[tidx]  # the scenario's labels (its class order)
            return fn(state, dist.put(x, self._replicated), dist.put(y, self._replicated),
                      np.arange(tidx.shape[0], dtype=np.int32), None if static else info)
        return fn(state, self.X, self.Y, tidx, None if static else info)

    def _index_stream(self, seed: int, t: int, pool: np.ndarray, steps: int) -> np.ndarray:
        """int32 [steps, B]: shuffled passes over ``pool`` (module doc).  When
        the method's plan takes b < B fresh examples per step, each row holds
        b fresh indices repeated over its B columns (column j -> j mod b)."""
        b = self.plans[t].new_per_step if t < len(getattr(self, "plans", ())) else self.B
        rng = np.random.default_rng([seed, t])
        need = steps * max(b, 1)
        parts, have = [], 0
        while have < need:
            parts.append(pool[rng.permutation(pool.shape[0])])
            have += pool.shape[0]
        if b <= 0:
            return np.zeros((steps, self.B), np.int32)
        rows = np.concatenate(parts)[:need].reshape(steps, b)
        return (rows if b == self.B else rows[:, np.arange(self.B) % b]).astype(np.int32)

    # ------------------------------------------------------------ the run
    def init_state(self):
        """Every seed's fresh State, stacked on axis 0 and sharded over the
        mesh's seed axis (one jitted call)."""
        keys = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s), 0)))
                         for s in self.seeds])
        # a grid's values, one per vmapped run (float32 [R] per swept field)
        hv = {k: np.asarray([self.points[p][k] for p in self.run_point], np.float32) for k in self.points[0]}

        def init(k, h):
            st = self.spec.init(k, self.config, self.scenario)
            return st.replace(swept={**st.swept, **h}) if h else st

        return jax.jit(jax.vmap(init), **self._out(self._state_sharding))(keys, hv)

    def run(self) -> dict:
        """Trains and evaluates every task; writes the results folder.

        Returns the results dict (one seed) or the summary dict (several);
        with ``stop_after_task`` set, returns ``{"stopped_after_task": t}``.
        """
        if not self.main:
            return self._run_in_workdir()
        from clj import workdir as workdir_lib

        with workdir_lib.hold(self.workdir, self.config):  # one run per workdir, same config to resume
            return self._run_in_workdir()

    def _run_in_workdir(self) -> dict:
        cfg = self.config
        if self.main:
            self._write_configs()
            if cfg.plots:  # matplotlib loads (~0.7 s) in the background while the run compiles and trains
                import threading
                threading.Thread(target=importlib.import_module, args=("clj.metrics.plots",), daemon=True).start()
        ckpt_dir = os.path.join(self.workdir, "checkpoints")
        if self.main and not cfg.resume and os.path.isdir(ckpt_dir):
            import shutil
            shutil.rmtree(ckpt_dir)  # resume=False: start over, never mix two runs' checkpoints
        dist.barrier("clj:workdir-ready")
        return self._run(ckpt_dir)

    def _write_configs(self):
        cfg = self.config
        os.makedirs(self.workdir, exist_ok=True)
        write_json_atomic(os.path.join(self.workdir, "config.json"), json.loads(cfg.to_json_best_effort()))
        if self.grid:
            for i, d in enumerate(self.point_workdirs):
                os.makedirs(d, exist_ok=True)
                write_json_atomic(os.path.join(d, "config.json"),
                                  json.loads(self.point_config(i).to_json_best_effort()))

    def _run(self, ckpt_dir: str):
        cfg, sc = self.config, self.scenario
        from clj.train.checkpoint import Checkpointer

        ckpt = Checkpointer(ckpt_dir, max_to_keep=int((cfg.get("checkpoint") or {}).get("keep", 2)))
        state = self.init_state()
        prog = _Progress()
        in_task = None  # {"task", "chunks_done", "elapsed"} of a mid-task checkpoint
        # the newest readable checkpoint (a damaged one is reported in one line and skipped)
        found = ckpt.restore_latest(state, log=print if self.main else (lambda m: None)) if cfg.resume else None
        if found is not None:
            _, state, meta = found
            prog = _Progress.from_json(meta)
            in_task = meta.get("in_task")
            where = f"task {prog.completed_tasks - 1}" if in_task is None else \
                f"step {in_task['chunks_done'] * self.K} of task {in_task['task']}"
            if self.main:
                print(f"[clj] resumed from {ckpt.directory} after {where}")
        if prog.completed_tasks == 0 and not prog.random_init and not self.eval_seen:
            prog.random_init = self.evaluate(state)
            # No FWT for top-5: a random network's top-5 over all classes is not the
            # baseline of a top-5 over the classes seen so far (it read -0.53 on digits).
            prog.random_init.pop("class_il_top5", None)

        logger = MetricsLogger(os.path.join(self.workdir, "metrics.jsonl")) if self.main else _NoLog()
        from clj.tracking import log_task_accuracies, open_trackers

        n_seeds = len(self.config_seeds)
        run_dirs = [wd if n_seeds == 1 else os.path.join(wd, f"seed_{s}")
                    for wd in self.point_workdirs for s in self.config_seeds]  # one per vmapped run
        self._trackers = open_trackers(run_dirs, bool((cfg.get("tracking") or {}).get("tensorboard", False))
                                       and self.main)
        T = sc.num_tasks
        every = 60.0 * float((cfg.get("checkpoint") or {}).get("every_minutes", 0) or 0)
        self._signal = None
        self._prog = prog  # the divergence watch marks its runs
        restore_handlers = _catch_signals(self)
        try:
            for t in range(prog.completed_tasks, T):
                t0 = time.perf_counter()
                plan = self.plans[t]
                if not self.visible:  # one begin for the whole stream
                    info = self._task_info(t, sum(p.steps for p in self.plans), plan.steps_per_epoch)
                else:
                    info = self._task_info(t, plan.steps, plan.steps_per_epoch)
                start_chunk, elapsed0 = 0, 0.0
                if in_task is not None and in_task["task"] == t:  # begin_task is inside the checkpoint
                    start_chunk, elapsed0 = int(in_task["chunks_done"]), float(in_task.get("elapsed", 0.0))
                    if self.caps.static_task_info:
                        # A checkpoint holds arrays only: the task's static fields (classes seen,
                        # quotas...) come from begin_task again; the arrays stay the checkpoint's.
                        state = serialization.from_state_dict(self._begin_task(state, info),
                                                              serialization.to_state_dict(state))
                elif self.visible or t == 0:
                    state = self._begin_task(state, info)
                in_task = None
                t0 -= elapsed0
                mid = _MidTaskSaver(self, ckpt, prog, logger, t, t0, every)
                self._step0 = sum(prog.steps)  # steps of the finished tasks (TensorBoard's x axis)
                state, steps_done = self._train_task(state, t, logger, start_chunk, mid)
                if self.visible or t == T - 1:
                    state = self._end_task(state, info, t)
                jax.block_until_ready(state)
                t1 = time.perf_counter()
                seen = sc.seen_classes(t) if self.mask_unseen else np.ones(sc.num_classes, bool)
                accs = self.evaluate(state, seen, upto=t if self.eval_seen else None)
                for k, v in accs.items():
                    prog.acc.setdefault(k, []).append(v)
                for r, tr in enumerate(self._trackers):
                    if r not in prog.diverged:
                        log_task_accuracies(tr, {k: v[r] for k, v in accs.items()}, t)
                prog.wall_time.append(t1 - t0)
                prog.eval_time.append(time.perf_counter() - t1)
                prog.steps.append(int(steps_done))
                prog.completed_tasks = t + 1
                ok = [r for r in range(self.S) if r not in prog.diverged]  # a diverged run's numbers are not shown
                logger.log(event="task_end", task=t, wall_time_s=t1 - t0,
                           **{f"acc_{k}": v[ok].mean(0)[: t + 1].mean().item() for k, v in accs.items()})
                if cfg.progress and self.main:
                    msg = ", ".join(f"{k} {100 * v[ok, : t + 1].mean():.2f}%" for k, v in accs.items())
                    print(f"[clj] task {t + 1}/{T} done in {t1 - t0:.1f}s: avg acc on seen tasks {msg}")
                ckpt.save(self._ckpt_id(t, None), state, prog.to_json())
                if self._signal is not None and t < T - 1:
                    raise _Interrupted(self._signal, self._ckpt_id(t, None))
                if 0 <= int(cfg.stop_after_task) == t and t < T - 1:
                    return {"stopped_after_task": t}
        except _Interrupted as e:
            import signal as _signal

            if self.main:
                print(f"[clj] {_signal.Signals(e.signum).name}: checkpoint {e.step} written; rerun the same "
                      "command to resume.", flush=True)
            return {"interrupted": _signal.Signals(e.signum).name, "checkpoint_step": e.step}
        except _Diverged:  # every run diverged: nothing more to train; the results say so
            pass
        finally:
            restore_handlers()
            ckpt.close()
            logger.close()
            for tr in self._trackers:
                tr.close()
        self.final_state = state  # every seed's State after the last task (for inspection)
        return self._write_results(state, prog)

    def _watch_divergence(self, metrics: dict, t: int, s0: int, n: int) -> None:
        """Marks the runs that diverged in the chunk of steps ``s0 .. s0+n-1``
        of task ``t``: a non-finite loss at any of those steps, or non-finite
        parameters after them (``metrics``: host arrays, ``loss`` [S, K, ...],
        ``params_finite`` bool [S]).  Each newly diverged run is one line on
        stderr; once every run of the program diverged, raises ``_Diverged``
        (nothing more to train).  The chunk's metrics are already on the host
        for the log: this costs no device sync."""
        prog = self._prog
        loss = np.asarray(metrics["loss"])
        loss = loss.reshape(loss.shape[0], loss.shape[1], -1)[:, :n]
        finite = np.asarray(metrics["params_finite"]).reshape(self.S)
        for r in range(self.S):
            if r in prog.diverged:
                continue
            bad = ~np.isfinite(loss[r]).all(-1)
            if bad.any():
                step, cause = s0 + int(np.argmax(bad)) + 1, "loss"
            elif not finite[r]:
                step, cause = s0 + n, "parameters"
            else:
                continue
            info = {"seed": int(self.seeds[r]), "task": int(t), "step": int(step), "cause": cause}
            where = f"seed {info['seed']}"
            if self.grid:
                info["point"] = dict(self.points[self.run_point[r]])
                where += " at " + ", ".join(f"{k}={v}" for k, v in info["point"].items())
            prog.diverged[r] = info
            if self.main:
                import sys

                print(f"[clj] diverged: {where}, non-finite {cause} at step {step} of task {t + 1}/"
                      f"{self.scenario.num_tasks}; its results will be marked diverged (lower optim.lr or "
                      "check the data).", file=sys.stderr, flush=True)
        if len(prog.diverged) == self.S:
            raise _Diverged()

    def _ckpt_id(self, t: int, chunks_done: int | None) -> int:
        """Checkpoint number, increasing through the run: mid-task checkpoints
        of task t (after ``chunks_done`` chunks) come before its end-of-task
        one, which comes before any of task t + 1."""
        before = sum(p.steps for p in self.plans[:t])
        if chunks_done is None:
            return 2 * (before + self.plans[t].steps) + 1
        return 2 * (before + chunks_done * self.K)

    def _train_task(self, state, t: int, logger, start_chunk: int = 0, save_mid=None):
        """Runs task t's steps in chunks of K from chunk ``start_chunk``;
        returns (state, steps run).

        Chunk i+1 is dispatched before chunk i's metrics are read, so the host
        never waits for the device in steady state; a method's early stop
        (``metrics["task_done"]`` of every seed) is seen one chunk late, which
        changes nothing since steps after the stop are no-ops.  When
        ``save_mid.due()`` (timer or signal), the pending metrics are read and
        ``save_mid(state, chunks_done)`` writes a mid-task checkpoint.
        """
        plan, K = self.plans[t], self.K
        n_chunks = math.ceil(plan.steps / K)
        idx = np.stack([self._index_stream(s, t, plan.pool, plan.steps) for s in self.seeds])
        idx = np.pad(idx, ((0, 0), (0, n_chunks * K - plan.steps), (0, 0)))  # masked steps read example 0
        idx = idx.reshape(self.S, n_chunks, K, self.B)
        idx_sharding = NamedSharding(self.mesh, P(SEED_MESH_AXIS, None, None,
                                                  DATA_MESH_AXIS if self.shard_batch else None))
        stream = None
        if self.placement == "stream":
            # Each chunk's images [S, K, B] are read from disk ahead of use (a background
            # thread) and put on the devices laid out like the state (seeds) and the batch
            # (data): the example order, and so the results, are the device path's.  Each
            # process reads only the block its own devices hold.
            from clj.data.stream import ChunkStream

            x_sharding = NamedSharding(self.mesh, P(SEED_MESH_AXIS, None, DATA_MESH_AXIS if self.shard_batch else None))
            box = dist.local_box((self.S, K, self.B), x_sharding)
            self.stream_block = box
            chunk_stream = ChunkStream(self.records, idx[box[0], :, :, box[2]], start_chunk=start_chunk,
                                       prefetch=int(self.config.data.get("prefetch", 2)),
                                       labels=self.scenario.y_train)
            stream = iter(chunk_stream)
            no_idx = dist.put(np.zeros((self.S, 1, K, self.B), np.int32), idx_sharding)
        else:
            idx = dist.put(idx, idx_sharding)
        task_keys = dist.put(np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s), t + 1)))
                                       for s in self.seeds]), self._state_sharding)
        fn = self._chunk_fn()
        bar = None
        if self.config.progress and self.main:
            from tqdm.auto import tqdm
            bar = tqdm(total=plan.steps, desc=f"task {t + 1}/{self.scenario.num_tasks}", leave=False,
                       dynamic_ncols=True)
        spe, n_task = np.int32(plan.steps_per_epoch), np.int32(plan.pool.shape[0])
        n_steps, tid = np.int32(plan.steps), np.int32(t)
        pending = None   # (metrics, first step, steps) of the chunk whose numbers are not read yet
        done = stopped_at = None

        def read(pending):
            """Logs a finished chunk; returns True when every seed reported task_done."""
            metrics, s0, n = pending
            metrics = dist.to_host(metrics)  # ready (or nearly): the next chunk is already queued
            self._watch_divergence(metrics, t, s0, n)
            if bar is not None or self.main:
                loss = float(np.mean(metrics["loss"][:, :n]))
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(loss=f"{loss:.4f}")
                logger.log(event="chunk", task=t, step=s0 + n, loss=loss)
                per_run = np.mean(metrics["loss"][:, :n], axis=1)
                for r, tr in enumerate(self._trackers):
                    tr.scalar("train/loss", per_run[r], self._step0 + s0 + n)
            return self.caps.early_stop and bool(np.all(metrics["task_done"][:, n - 1] > 0))

        if bar is not None and start_chunk:
            bar.update(min(start_chunk * K, plan.steps))
        try:
            for c in range(start_chunk, n_chunks):
                s0 = c * K
                if stream is None:
                    X, Y, ix = self.X, self.Y, idx[:, c]
                else:
                    xs, ys = next(stream)   # this process's block: [S', K, B', ...]
                    X = dist.put_local(xs, box, (self.S, K, self.B) + xs.shape[3:], x_sharding)
                    Y = dist.put_local(ys, box, (self.S, K, self.B), x_sharding)
                    ix = no_idx[:, 0]
                state, metrics = fn(state, X, Y, ix, task_keys, np.int32(s0), n_steps, tid, spe, n_task)
                if pending is not None and read(pending):
                    stopped_at = pending[1] + pending[2]
                    pending = None
                    break
                pending = (metrics, s0, min(K, plan.steps - s0))
                if save_mid is not None and c + 1 < n_chunks and save_mid.due():
                    if read(pending):
                        stopped_at, pending = s0 + pending[2], None
                        break
                    pending = None
                    save_mid(state, c + 1)
            if pending is not None and read(pending):
                stopped_at = pending[1] + pending[2]
        finally:
            if bar is not None:
                bar.close()
            if stream is not None:
                chunk_stream.close()
        done = plan.steps if stopped_at is None else stopped_at
        return state, done

    def _write_results(self, state, prog: _Progress) -> dict:
        cfg, sc = self.config, self.scenario
        state = dist.to_host(state)  # host copies: per-seed slices cost no device ops
        if not self.main:
            return None
        one = jax.tree_util.tree_map(lambda a: a[0], state)
        mem = dict(self.spec.memory_bytes(one)) if self.spec.memory_bytes is not None else {}
        mem.setdefault("buffer", 0)
        mem.setdefault("masks", 0)
        mem.setdefault("model", _default_model_bytes(one))
        results = []  # one per vmapped run (point-major)
        for si, seed in enumerate(self.seeds):
            if si in prog.diverged:  # no numbers: they would not be this run's results
                results.append({"method": cfg.method, "dataset": cfg.dataset, "seed": seed, "status": "diverged",
                                "diverged": prog.diverged[si], "scenario": sc.describe()})
                continue
            this = jax.tree_util.tree_map(lambda a, i=si: a[i], state)  # this seed's state
            extras = dict(self.spec.result_extras(this)) if self.spec.result_extras is not None else {}
            res = build_results(
                method=cfg.method, dataset=cfg.dataset, seed=seed, scenario=sc.describe(),
                # (a setting missing from some rows, e.g. one added since a resumed checkpoint, is left out)
                accuracy_matrices={k: np.stack([r[si] for r in rows]) for k, rows in prog.acc.items()
                                   if len(rows) == prog.completed_tasks},
                random_init_accuracy={k: v[si] for k, v in prog.random_init.items()},
                memory_bytes=mem, wall_time_per_task=prog.wall_time, steps_per_task=prog.steps,
                extra={"eval_time_s": prog.eval_time, "devices": self.n_dev,
                       "mesh": {"seed": self.n_seed_dev, "data": self.n_data_dev},
                       "backend": jax.default_backend(), "num_seeds_in_program": len(self.seeds),
                       "steps_per_call": self.K, "unroll": self.unroll,
                       "test_examples_per_task": self.eval_counts.tolist(), **extras})
            _add_pooled(res, self.eval_counts)
            res["status"] = "completed"
            results.append(res)
        outs = []
        n = len(self.config_seeds)
        for pi, wd in enumerate(self.point_workdirs):
            mine = results[pi * n:(pi + 1) * n]
            for res in mine:
                if self.grid:
                    res["hparams"] = dict(self.points[pi])
            out_dirs = [wd] if n == 1 else [os.path.join(wd, f"seed_{s}") for s in self.config_seeds]
            for res, d in zip(mine, out_dirs):
                write_json_atomic(os.path.join(d, "results.json"), res)
                if cfg.plots and res["status"] == "completed":
                    from clj.metrics.plots import plot_results
                    plot_results(res, d)
            if n == 1:
                outs.append(mine[0])
            else:
                summary = summarize_diverged(mine)
                write_json_atomic(os.path.join(wd, "summary.json"), summary)
                outs.append(summary)
        return outs if self.grid else outs[0]


class _Diverged(Exception):
    """Every run of the program diverged: training stops, the results say so."""


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


class _Interrupted(Exception):
    """SIGTERM/SIGINT arrived and a checkpoint was written: the run returns."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = int(signum), int(step)


class _NoLog:
    """The metrics log of processes other than 0 (they write nothing)."""

    def log(self, *a, **k):
        pass

    def close(self):
        pass


class _MidTaskSaver:
    """Writes mid-task checkpoints every ``every`` seconds (0 = never) and when
    a SIGTERM/SIGINT arrived (then exits with status 128 + signal)."""

    def __init__(self, runner, ckpt, prog, logger, t: int, t0: float, every: float):
        self.r, self.ckpt, self.prog, self.logger = runner, ckpt, prog, logger
        self.t, self.t0, self.every = t, t0, every
        self.last = time.perf_counter()

    def due(self) -> bool:
        """Whether to save now; with several processes, process 0's answer (all must agree)."""
        sig = int(self.r._signal or 0)
        timer = self.every > 0 and time.perf_counter() - self.last >= self.every
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            sig, timer = (int(v) for v in multihost_utils.broadcast_one_to_all(np.asarray([sig, int(timer)])))
            if sig and self.r._signal is None:
                self.r._signal = sig  # every process saves, then exits together
        return bool(sig) or bool(timer)

    def __call__(self, state, chunks_done: int) -> None:
        t, K = self.t, self.r.K
        meta = {**self.prog.to_json(), "in_task": {"task": t, "chunks_done": chunks_done,
                                                   "elapsed": time.perf_counter() - self.t0}}
        self.ckpt.save(self.r._ckpt_id(t, chunks_done), state, meta)
        self.last = time.perf_counter()
        self.logger.log(event="checkpoint", task=t, step=chunks_done * K)
        if self.r._signal is not None:
            raise _Interrupted(self.r._signal, self.r._ckpt_id(t, chunks_done))


def _catch_signals(runner):
    """Makes SIGTERM / SIGINT set ``runner._signal`` (the chunk loop then saves
    and exits) instead of killing the run mid-write; returns the function
    that restores the previous handlers.  A second signal acts at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {}

    def handler(signum, frame):
        if runner._signal is not None:  # second signal: the default action
            signal.signal(signum, old.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        runner._signal = signum

    for s in (signal.SIGTERM, signal.SIGINT):
        old[s] = signal.getsignal(s)
        signal.signal(s, handler)

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def summarize_diverged(results: list[dict]) -> dict:
    """The ``summary.json`` of several seeds' results, some of which may
    have diverged (``status == "diverged"``): the mean ± std of the completed
    seeds only (:func:`clj.metrics.summarize_seeds`), with ``status``
    ``"completed"`` when no seed diverged and ``"diverged"`` otherwise, and
    ``diverged`` listing where each diverged seed stopped.  With every seed
    diverged, the summary holds no numbers."""
    ok = [r for r in results if r.get("status") != "diverged"]
    bad = [r["diverged"] for r in results if r.get("status") == "diverged"]
    if ok:
        summary = summarize_seeds(ok)
    else:
        summary = {"method": results[0]["method"], "dataset": results[0]["dataset"], "seeds": []}
    summary["status"] = "diverged" if bad else "completed"
    if bad:
        summary["diverged"] = bad
    return summary


def _add_pooled(res: dict, counts: np.ndarray) -> None:
    """Adds ``final_average_accuracy_pooled`` and
    ``average_incremental_accuracy_pooled`` to every setting of
    ``res["metrics"]``: the same averages weighted by each task's test
    examples (accuracy over all test examples seen so far, the figure of
    codes that pool their test sets, e.g. SERENA's)."""
    from clj.metrics import average_incremental_accuracy, final_average_accuracy

    for setting, R in res["accuracy_matrix"].items():
        R = np.asarray(R, np.float64)
        k = R.shape[0]
        if k == 0 or setting not in res["metrics"] or np.isnan(np.tril(R[:, :k])).any():
            continue
        res["metrics"][setting]["final_average_accuracy_pooled"] = final_average_accuracy(R[:, :k], counts[:k])
        res["metrics"][setting]["average_incremental_accuracy_pooled"] = average_incremental_accuracy(
            R[:, :k], counts[:k])


def _default_model_bytes(state) -> int:
    """Bytes of ``state.params`` or ``state.net.params`` (0 if neither)."""
    for holder in (state, getattr(state, "net", None)):
        params = getattr(holder, "params", None)
        if params is not None:
            return param_bytes(params)
    return 0


PLACEMENTS = ("device", "stream", "auto")
AUTO_DEVICE_FRACTION = 0.3  # auto: the dataset goes on the device if it takes at most this much of its memory


def choose_placement(config, devices=None) -> tuple[str, str | None]:
    """(placement, prepared folder or None) of ``config.data.placement``.

    ``device``: the dataset on every device (today's default for data that
    fits).  ``stream``: read from clj's prepared records on disk chunk by
    chunk (``python -m clj.data.prepare``).  ``auto``: ``stream`` when the
    dataset is prepared on disk and train + test would take more than
    ``AUTO_DEVICE_FRACTION`` of one device's memory, ``device`` otherwise
    (always on devices that do not report their memory, e.g. the CPU).

    Raises:
      ConfigError: an unknown placement, or ``stream`` for a dataset that is
        not prepared (naming the command that prepares it).
    """
    from clj.data.records import find_prepared

    data = config.get("data") or {}
    placement = str(data.get("placement", "device"))
    if placement not in PLACEMENTS:
        raise config_lib.ConfigError(f"data.placement={placement!r} is unknown; valid: {', '.join(PLACEMENTS)}.")
    from clj.preflight import prepared_name

    name = prepared_name(config)
    found = find_prepared(config.data_dir or None, name) if name is not None else None
    if placement == "stream" and found is None:
        raise config_lib.ConfigError(
            f"data.placement='stream' reads clj's prepared records, and dataset={config.dataset!r} is not prepared in "
            f"data_dir={config.data_dir!r}; prepare it with `python -m clj.data.prepare {name or config.dataset} --source DIR "
            f"--data_dir {config.data_dir or 'DIR'}` or use data.placement='device'.")
    if placement == "auto":
        placement = "device"
        if found is not None:
            meta = json.load(open(os.path.join(found, "metadata.json")))
            n = sum(int(s["num_examples"]) for s in meta["splits"].values())
            need = n * int(np.prod(meta["image_shape"]))
            dev = (devices or jax.devices())[0]
            limit = (dev.memory_stats() or {}).get("bytes_limit") if hasattr(dev, "memory_stats") else None
            if limit and need > AUTO_DEVICE_FRACTION * limit:
                placement = "stream"
    return placement, (str(found) if found is not None else None)


def load_scenario(config, prepared: str | None = None) -> Scenario:
    """Loads the config's dataset and builds its scenario (labels only, with
    zero-memory image placeholders, from the records in ``prepared``): see
    :func:`clj.preflight.load_scenario`."""
    from clj.preflight import load_scenario as load

    return load(config, prepared)


def run(config, workdir: str | None = None, scenario: Scenario | None = None) -> dict:
    """Runs a config end to end (see :class:`Runner`); ``scenario``: the one
    the command line already loaded (not loaded twice)."""
    from clj.workdir import default_workdir

    workdir = workdir or config.workdir or default_workdir(config)
    return Runner(config, workdir, scenario=scenario).run()
