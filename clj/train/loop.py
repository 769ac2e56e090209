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
import json
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from clj import config as config_lib
from clj.data.augment import permute_pixels, rotate
from clj.methods import get_spec
from clj.methods.common import SEED_AXIS, TaskInfo, augment_from_config, param_bytes
from clj.metrics import MetricsLogger, build_results, summarize_seeds, write_json_atomic
from clj.scenarios import Scenario, scenario_from_config
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

    def to_json(self) -> dict:
        return {"completed_tasks": self.completed_tasks,
                "acc": {k: [np.asarray(r).tolist() for r in v] for k, v in self.acc.items()},
                "random_init": {k: np.asarray(v).tolist() for k, v in self.random_init.items()},
                "wall_time": self.wall_time, "eval_time": self.eval_time, "steps": self.steps}

    @classmethod
    def from_json(cls, d: dict) -> "_Progress":
        return cls(completed_tasks=d["completed_tasks"],
                   acc={k: [np.asarray(r) for r in v] for k, v in d["acc"].items()},
                   random_init={k: np.asarray(v) for k, v in d["random_init"].items()},
                   wall_time=list(d["wall_time"]), eval_time=list(d["eval_time"]), steps=list(d["steps"]))


@dataclasses.dataclass(frozen=True)
class _TaskPlan:
    """Host facts of one task, fixed before the run starts."""

    pool: np.ndarray       # int32 [n] training examples the task draws from
    steps: int             # train steps
    steps_per_epoch: int


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
        if scenario is None:
            scenario = load_scenario(config)
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
        self._replicated = NamedSharding(self.mesh, P())
        self._state_sharding = NamedSharding(self.mesh, P(SEED_MESH_AXIS))
        self._batch_sharding = NamedSharding(self.mesh, P(DATA_MESH_AXIS))

        # --- the plan of every task, then one chunk length for the run
        self.plans = [self._plan(t) for t in range(scenario.num_tasks)]
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
        if config.progress:
            print(f"[clj] {jax.default_backend()}: {self.n_dev} device(s) as seeds x data = "
                  f"{self.n_seed_dev} x {self.n_data_dev}; {self.S} seed(s); chunk {self.K} steps "
                  f"(unroll {self.unroll})")

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
        if self.spec.task_steps is not None:
            steps = int(self.spec.task_steps(self.config, n, self.B, t))
        else:
            epochs = float(self.config.train.epochs)
            init_epochs = float(self.config.train.get("init_epochs", 0) or 0)
            if t == 0 and init_epochs > 0:  # PyCIL's separate epoch count of the first task
                epochs = init_epochs
            steps = max(1, math.ceil(epochs * n / self.B))
        return _TaskPlan(pool=np.asarray(pool, np.int32), steps=steps, steps_per_epoch=max(1, math.ceil(n / self.B)))

    def _dev_data(self):
        sc = self.scenario
        put = lambda a: jax.device_put(a, self._replicated)  # noqa: E731
        self.X = put(sc.x_train)
        self.Y = put(sc.y_train.astype(np.int32))
        self.Xt = put(sc.x_test)
        self.Yt = put(sc.y_test.astype(np.int32))
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
        self.eval_idx = jax.device_put(np.concatenate(idx).reshape(-1, E), shard)
        self.eval_task = jax.device_put(np.concatenate(tsk).reshape(-1, E), shard)
        self.eval_valid = jax.device_put(np.concatenate(valid).reshape(-1, E), shard)
        self.eval_counts = counts
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

        def seed_chunk(state, X, Y, idx, task_key, step0, n_steps, task_id, spe, n_task):
            def body(st, inp):
                k, ix = inp
                step = step0 + k
                key = jax.random.fold_in(task_key, step)
                k_aug, k_step = jax.random.split(key)
                x_raw = self._constrain_batch(self._domain(X[ix], task_id))
                y = self._constrain_batch(Y[ix])
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
                return st, jax.tree.map(lambda m: m[None], metrics)
            return jax.lax.scan(body, state, (jnp.arange(K, dtype=jnp.int32), idx), unroll=unroll)

        fn = jax.vmap(seed_chunk, in_axes=(0, None, None, 0, 0) + (None,) * 5, axis_name=SEED_AXIS,
                      spmd_axis_name=SEED_MESH_AXIS)
        donate = (0,) if jax.default_backend() != "cpu" else ()
        self._chunk = jax.jit(fn, donate_argnums=donate,
                              out_shardings=(self._state_sharding, self._state_sharding))
        return self._chunk

    def _eval_counts_fn(self):
        if self._eval_fn is not None:
            return self._eval_fn
        spec, aug, T = self.spec, self.augment, self.scenario.num_tasks
        use_tid, tid_cil = self.caps.task_id_at_test, self.caps.task_id_class_il
        kw_valid = self.caps.predict_uses_valid
        top5 = self.top5

        def seed_eval(state, Xt, Yt, eidx, etask, evalid, seen, task_cls):
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
                til = jnp.argmax(jnp.where(task_cls[tk], lt, -jnp.inf), -1) == y
                if top5:  # y among the 5 largest scores of the seen classes
                    c5 = jnp.any(jax.lax.top_k(masked, 5)[1] == y[:, None], -1) & seen[y]
                else:
                    c5 = cil
                return cil & vd, til & vd, c5 & vd

            cil, til, c5 = jax.lax.map(body, (eidx, etask, evalid))
            seg = lambda c: jax.ops.segment_sum(c.reshape(-1).astype(jnp.int32), etask.reshape(-1), T)  # noqa: E731
            return seg(cil), seg(til), seg(c5)

        self._eval_fn = jax.jit(jax.vmap(seed_eval, in_axes=(0,) + (None,) * 7, spmd_axis_name=SEED_MESH_AXIS),
                                out_shardings=self._state_sharding)
        return self._eval_fn

    def _evaluate(self, state, seen: np.ndarray) -> dict[str, np.ndarray]:
        """Per-seed, per-task accuracies {setting: float [S, T]}."""
        cil, til, c5 = self._eval_counts_fn()(state, self.Xt, self.Yt, self.eval_idx, self.eval_task,
                                             self.eval_valid, np.asarray(seen), self.task_cls)
        denom = np.maximum(self.eval_counts, 1)[None, :]
        out = {"class_il": np.asarray(cil) / denom, "task_il": np.asarray(til) / denom}
        if self.scenario.kind == "domain_il":
            return {"domain_il": out["class_il"]}
        if self.top5:
            out["class_il_top5"] = np.asarray(c5) / denom
        return out

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
                f = jax.vmap(lambda s: self.spec.begin_task(s, info), spmd_axis_name=SEED_MESH_AXIS)
                fn = jax.jit(lambda s, i: f(s), out_shardings=self._state_sharding)
            else:
                fn = jax.jit(jax.vmap(self.spec.begin_task, in_axes=(0, None), spmd_axis_name=SEED_MESH_AXIS),
                             out_shardings=self._state_sharding)
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
                return jax.vmap(lambda s: spec.end_task(s, data), spmd_axis_name=SEED_MESH_AXIS)(state)

            fn = jax.jit(f, out_shardings=self._state_sharding)
            self._end_fns[key] = fn
        tidx = np.asarray(self.scenario.tasks[t].train_idx, np.int32)
        return fn(state, self.X, self.Y, tidx, None if static else info)

    def _index_stream(self, seed: int, t: int, pool: np.ndarray, steps: int) -> np.ndarray:
        """int32 [steps, B]: shuffled passes over ``pool`` (module doc)."""
        rng = np.random.default_rng([seed, t])
        need = steps * self.B
        parts, have = [], 0
        while have < need:
            parts.append(pool[rng.permutation(pool.shape[0])])
            have += pool.shape[0]
        return np.concatenate(parts)[:need].reshape(steps, self.B).astype(np.int32)

    # ------------------------------------------------------------ the run
    def init_state(self):
        """Every seed's fresh State, stacked on axis 0 and sharded over the
        mesh's seed axis (one jitted call)."""
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 0) for s in self.seeds])
        # a grid's values, one per vmapped run (float32 [R] per swept field)
        hv = {k: np.asarray([self.points[p][k] for p in self.run_point], np.float32) for k in self.points[0]}

        def init(k, h):
            st = self.spec.init(k, self.config, self.scenario)
            return st.replace(hparams={**st.hparams, **h}) if h else st

        return jax.jit(jax.vmap(init), out_shardings=self._state_sharding)(keys, hv)

    def run(self) -> dict:
        """Trains and evaluates every task; writes the results folder.

        Returns the results dict (one seed) or the summary dict (several);
        with ``stop_after_task`` set, returns ``{"stopped_after_task": t}``.
        """
        cfg, sc = self.config, self.scenario
        os.makedirs(self.workdir, exist_ok=True)
        write_json_atomic(os.path.join(self.workdir, "config.json"), json.loads(cfg.to_json_best_effort()))
        if self.grid:
            for i, d in enumerate(self.point_workdirs):
                os.makedirs(d, exist_ok=True)
                write_json_atomic(os.path.join(d, "config.json"),
                                  json.loads(self.point_config(i).to_json_best_effort()))
        from clj.train.checkpoint import Checkpointer

        ckpt_dir = os.path.join(self.workdir, "checkpoints")
        if not cfg.resume and os.path.isdir(ckpt_dir):
            import shutil
            shutil.rmtree(ckpt_dir)  # resume=False: start over, never mix two runs' checkpoints
        ckpt = Checkpointer(ckpt_dir)
        state = self.init_state()
        prog = _Progress()
        if cfg.resume and ckpt.latest() is not None:
            state, meta = ckpt.restore(state)
            state = jax.device_put(state, self._state_sharding)
            prog = _Progress.from_json(meta)
            print(f"[clj] resumed from {ckpt.directory} after task {prog.completed_tasks - 1}")
        if prog.completed_tasks == 0 and not prog.random_init:
            prog.random_init = self._evaluate(state, np.ones(sc.num_classes, bool))

        logger = MetricsLogger(os.path.join(self.workdir, "metrics.jsonl"))
        T = sc.num_tasks
        try:
            for t in range(prog.completed_tasks, T):
                t0 = time.perf_counter()
                plan = self.plans[t]
                if not self.visible:  # one begin for the whole stream
                    info = self._task_info(t, sum(p.steps for p in self.plans), plan.steps_per_epoch)
                else:
                    info = self._task_info(t, plan.steps, plan.steps_per_epoch)
                if self.visible or t == 0:
                    state = self._begin_task(state, info)
                state, steps_done = self._train_task(state, t, logger)
                if self.visible or t == T - 1:
                    state = self._end_task(state, info, t)
                jax.block_until_ready(state)
                t1 = time.perf_counter()
                seen = sc.seen_classes(t) if self.mask_unseen else np.ones(sc.num_classes, bool)
                accs = self._evaluate(state, seen)
                for k, v in accs.items():
                    prog.acc.setdefault(k, []).append(v)
                prog.wall_time.append(t1 - t0)
                prog.eval_time.append(time.perf_counter() - t1)
                prog.steps.append(int(steps_done))
                prog.completed_tasks = t + 1
                logger.log(event="task_end", task=t, wall_time_s=t1 - t0,
                           **{f"acc_{k}": v.mean(0)[: t + 1].mean().item() for k, v in accs.items()})
                if cfg.progress:
                    msg = ", ".join(f"{k} {100 * v[:, : t + 1].mean():.2f}%" for k, v in accs.items())
                    print(f"[clj] task {t + 1}/{T} done in {t1 - t0:.1f}s: avg acc on seen tasks {msg}")
                ckpt.save(t, state, prog.to_json())
                if 0 <= int(cfg.stop_after_task) == t and t < T - 1:
                    return {"stopped_after_task": t}
        finally:
            logger.close()
        self.final_state = state  # every seed's State after the last task (for inspection)
        return self._write_results(state, prog)

    def _train_task(self, state, t: int, logger):
        """Runs task t's steps in chunks of K; returns (state, steps run).

        Chunk i+1 is dispatched before chunk i's metrics are read, so the host
        never waits for the device in steady state; a method's early stop
        (``metrics["task_done"]`` of every seed) is seen one chunk late, which
        changes nothing since steps after the stop are no-ops.
        """
        plan, K = self.plans[t], self.K
        n_chunks = math.ceil(plan.steps / K)
        idx = np.stack([self._index_stream(s, t, plan.pool, plan.steps) for s in self.seeds])
        idx = np.pad(idx, ((0, 0), (0, n_chunks * K - plan.steps), (0, 0)))  # masked steps read example 0
        idx = jax.device_put(idx.reshape(self.S, n_chunks, K, self.B),
                             NamedSharding(self.mesh, P(SEED_MESH_AXIS, None, None,
                                                        DATA_MESH_AXIS if self.shard_batch else None)))
        task_keys = jax.device_put(
            jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), t + 1) for s in self.seeds]), self._state_sharding)
        fn = self._chunk_fn()
        bar = None
        if self.config.progress:
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
            metrics = jax.device_get(metrics)  # ready (or nearly): the next chunk is already queued
            if bar is not None or logger is not None:
                loss = float(np.mean(metrics["loss"][:, :n]))
                if bar is not None:
                    bar.update(n)
                    bar.set_postfix(loss=f"{loss:.4f}")
                logger.log(event="chunk", task=t, step=s0 + n, loss=loss)
            return self.caps.early_stop and bool(np.all(metrics["task_done"][:, n - 1] > 0))

        try:
            for c in range(n_chunks):
                s0 = c * K
                state, metrics = fn(state, self.X, self.Y, idx[:, c], task_keys, np.int32(s0), n_steps, tid,
                                    spe, n_task)
                if pending is not None and read(pending):
                    stopped_at = pending[1] + pending[2]
                    pending = None
                    break
                pending = (metrics, s0, min(K, plan.steps - s0))
            if pending is not None and read(pending):
                stopped_at = pending[1] + pending[2]
        finally:
            if bar is not None:
                bar.close()
        done = plan.steps if stopped_at is None else stopped_at
        return state, done

    def _write_results(self, state, prog: _Progress) -> dict:
        cfg, sc = self.config, self.scenario
        state = jax.device_get(state)  # host copies: per-seed slices cost no device ops
        one = jax.tree_util.tree_map(lambda a: a[0], state)
        mem = dict(self.spec.memory_bytes(one)) if self.spec.memory_bytes is not None else {}
        mem.setdefault("buffer", 0)
        mem.setdefault("masks", 0)
        mem.setdefault("model", _default_model_bytes(one))
        results = []  # one per vmapped run (point-major)
        for si, seed in enumerate(self.seeds):
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
                if cfg.plots:
                    from clj.metrics.plots import plot_results
                    plot_results(res, d)
            if n == 1:
                outs.append(mine[0])
            else:
                summary = summarize_seeds(mine)
                write_json_atomic(os.path.join(wd, "summary.json"), summary)
                outs.append(summary)
        return outs if self.grid else outs[0]


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
        if k == 0 or setting not in res["metrics"] or np.isnan(R[:, :k]).any():
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


def load_scenario(config) -> Scenario:
    """Loads the config's dataset and builds its scenario."""
    from clj.data import load_dataset

    kwargs = {}
    if config.dataset == "synthetic":
        s = config.synthetic
        kwargs = dict(image_shape=tuple(s.image_shape), num_classes=int(s.num_classes),
                      train_per_class=int(s.train_per_class), test_per_class=int(s.test_per_class))
    if config.dataset == "emnist" and config.get("emnist_split", ""):
        kwargs["split"] = config.emnist_split
    ds = load_dataset(config.dataset, config.data_dir or None, seed=int(config.get("data_seed", 0)), **kwargs)
    return scenario_from_config(ds, config.scenario)


def run(config, workdir: str | None = None) -> dict:
    """Runs a config end to end (see :class:`Runner`)."""
    workdir = workdir or config.workdir or default_workdir(config)
    return Runner(config, workdir).run()


def default_workdir(config) -> str:
    return os.path.join("runs", f"{config.method}_{config.dataset}_seed{config.seed}")
