"""The continual-learning loop: config -> data -> scenario -> method -> metrics.

For each task: ``begin_task`` -> many jitted train steps -> ``end_task`` ->
evaluate every task -> checkpoint.  The loop knows a method only through its
spec (:mod:`clj.methods.api`): the five functions and the declared
capabilities.

Why it is fast (one compile per run, the data on the device, many steps
per host call, the seeds x data mesh, derived randomness): ``docs/design.md``.

The loop reads top to bottom here; each concern lives beside it:
:mod:`clj.train.plans` (grid points, task plans, example order),
:mod:`clj.train.placement` (where the data live), :mod:`clj.train.chunk`
(the compiled chunk), :mod:`clj.train.boundaries` (``begin_task`` /
``end_task``), :mod:`clj.train.evaluate`, :mod:`clj.train.results` and
:mod:`clj.train.signals` (SIGTERM/SIGINT, mid-task checkpoints, divergence).
"""
from __future__ import annotations

import importlib
import math
import os
import time
import warnings

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from flax import serialization

from clj import config as config_lib
from clj.methods import get_spec
from clj.methods.common import TaskInfo, augment_from_config
from clj.metrics import MetricsLogger
from clj.scenarios import Scenario
from clj.train import distributed as dist
from clj.train import evaluate as evaluate_lib
from clj.train import plans as plans_lib
from clj.train import runtime
from clj.train.boundaries import Boundaries, task_info, what_the_method_sees
from clj.train.chunk import make_chunk, params_finite  # noqa: F401  (params_finite: imported from here)
from clj.train.placement import (PLACEMENTS, ChunkImages, DataLayout, apply_domain,  # noqa: F401
                                 apply_domain_per_example, choose_placement, lay_out_data)
from clj.train.results import (Progress, record_chunk, record_task, summarize_diverged,  # noqa: F401
                               write_configs, write_results)
from clj.train.seeds import check_seed_batching
from clj.train.runtime import DATA_MESH_AXIS, SEED_MESH_AXIS, auto_chunking, make_mesh  # noqa: F401
from clj.train.signals import Diverged, Interrupted, MidTaskSaver, NoLog, catch_signals, watch_divergence

_Progress = Progress  # the name older code imports


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
      abstract_data: put no data on the devices (shapes and shardings only):
        a runner made only to compile its programs and read their memory
        (:func:`clj.train.memory.program_memory`); it cannot :meth:`run`.

    Raises:
      ConfigError: a config value that cannot run, or a point that sets a
        field the method cannot sweep (before any work).
      clj.workdir.WorkdirBusy, clj.workdir.WorkdirError (from :meth:`run`,
        before any work): another process runs in ``workdir``, or it holds
        a different config's run and ``config.resume`` is True.
    """

    def __init__(self, config, workdir: str, scenario: Scenario | None = None, devices=None,
                 points: list[dict] | None = None, point_workdirs: list[str] | None = None,
                 abstract_data: bool = False):
        config_lib.validate(config)
        self.config = config
        self.workdir = os.path.abspath(workdir)
        self.spec = get_spec(config.method)
        self.caps = self.spec.caps(config)
        self.grid = points is not None
        self.points = [dict(p) for p in points] if points is not None else [{}]
        plans_lib.check_points(self.points, self.spec.sweepable, config.method)
        self.point_workdirs = plans_lib.point_workdirs(self.workdir, self.points, point_workdirs, self.grid)
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
        self.visible, self.reveal, self.give_new_task, self.give_step_info = what_the_method_sees(
            config, scenario, self.caps)
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
        # a device's runs batched (vmap) or one after another (map): clj.train.seeds
        try:
            self.seed_batching = check_seed_batching(str(config.loop.get("seed_batching", "vmap")))
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None
        self.shard_batch = bool(config.loop.shard_batch) and self.n_data_dev > 1 and self.B % self.n_data_dev == 0
        if bool(config.loop.shard_batch) and self.n_data_dev > 1 and not self.shard_batch:
            warnings.warn(f"train.batch_size={self.B} does not divide over the {self.n_data_dev} devices of the "
                          "data axis: the batch is replicated over them, not sharded.")
        # The seed axis and every output laid out on the mesh (also on one device:
        # outputs then keep the inputs' sharding, so the chunk's cache key never changes).
        self._replicated = NamedSharding(self.mesh, P())
        self._state_sharding = NamedSharding(self.mesh, P(SEED_MESH_AXIS))
        self._batch_sharding = NamedSharding(self.mesh, P(DATA_MESH_AXIS))

        # --- the plan of every task, then one chunk length for the run
        self.plans, self._state_info, self.K, self.unroll = plans_lib.plan_run(self.spec, config, scenario,
                                                                               self.caps, self.B)
        stream = self.placement == "stream"
        self.data = lay_out_data(scenario, self.placement, self.prepared,
                                 threads=int(config.data.get("threads", 4)) if stream else 0,
                                 eval_batch_size=int(config.loop.eval_batch_size), mesh=self.mesh,
                                 n_data_dev=self.n_data_dev, replicated=self._replicated,
                                 abstract=abstract_data, extras=tuple(self.caps.batch_extras))
        # the chunk's training images: with a method's per-image extras, {"image": X, name: extra}
        self._train_X = {"image": self.data.X, **self.data.extras} if self.data.extras else self.data.X
        self._chunk = None
        self._eval_fn = None
        self._boundaries = Boundaries(self.spec, self.caps.static_task_info, self._domain, SEED_MESH_AXIS,
                                      self._state_sharding, self.seed_batching)
        self.chunk_compiles = 0
        self._profiler = None  # loop.profile: a ChunkProfiler while the run trains (clj.train.profile)
        self.main = dist.is_main()  # process 0 alone prints and writes
        if config.progress and self.main:
            print(f"[clj] {jax.default_backend()}: {self.n_dev} device(s) as seeds x data = "
                  f"{self.n_seed_dev} x {self.n_data_dev}; {self.S} run(s); chunk {self.K} steps "
                  f"(unroll {self.unroll}); runs {'batched' if self.seed_batching == 'vmap' else 'one after another'}; "
                  f"data placement {self.placement}")

    def point_config(self, i: int):
        """The resolved config of point i (the config with its values set)."""
        return plans_lib.point_config(self.config, self.points[i])

    def __getattr__(self, name):
        """The data layout's fields (``X``, ``Y``, ``Xt``, ``Yt``, ``eval_idx``...:
        :class:`clj.train.placement.DataLayout`) read as the runner's own."""
        data = self.__dict__.get("data")
        if data is not None and name in DataLayout.__dataclass_fields__:
            return getattr(data, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _domain(self, x_raw, task_id):
        """Applies task ``task_id``'s input transform to uint8 [B, H, W, C]."""
        return apply_domain(x_raw, task_id, self.data.dom, self.scenario.domain)

    def _domain_per_example(self, x_raw, tasks):
        return apply_domain_per_example(x_raw, tasks, self.data.dom, self.scenario.domain)

    def _constrain_batch(self, a):
        return jax.lax.with_sharding_constraint(a, self._batch_sharding) if self.shard_batch else a

    def _index_stream(self, seed: int, t: int, pool: np.ndarray, steps: int) -> np.ndarray:
        """int32 [steps, B]: :func:`clj.train.plans.index_stream` with task t's plan."""
        b = self.plans[t].new_per_step if t < len(getattr(self, "plans", ())) else self.B
        return plans_lib.index_stream(seed, t, pool, steps, self.B, b)

    def _ckpt_id(self, t: int, chunks_done: int | None) -> int:
        """Checkpoint number (:func:`clj.train.plans.ckpt_id`)."""
        return plans_lib.ckpt_id(self.plans, self.K, t, chunks_done)

    # -------------------------------------------------------------- compiled
    def _chunk_fn(self):
        """The jitted chunk of K steps for every seed (compiled once per run)."""
        if self._chunk is None:
            self._chunk = make_chunk(
                self.spec, self.augment, B=self.B, K=self.K, unroll=self.unroll, reveal=self.reveal,
                give_new_task=self.give_new_task, give_step_info=self.give_step_info,
                streamed=self.placement == "stream", domain=self._domain, constrain_batch=self._constrain_batch,
                spmd_axis=SEED_MESH_AXIS, state_sharding=self._state_sharding, seed_batching=self.seed_batching)
        return self._chunk

    def _eval_counts_fn(self):
        if self._eval_fn is None:
            self._eval_fn = evaluate_lib.make_eval_counts(
                self.spec, self.caps, self.augment, num_tasks=self.scenario.num_tasks, top5=self.top5,
                domain_per_example=self._domain_per_example, batch_sharding=self._batch_sharding,
                n_data_dev=self.n_data_dev, spmd_axis=SEED_MESH_AXIS, state_sharding=self._state_sharding,
                seed_batching=self.seed_batching)
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
        group = int(self.config.data.get("eval_group", 16)) if self.placement == "stream" else 0
        return evaluate_lib.evaluate(self._eval_counts_fn(), state, self.data, self.scenario, top5=self.top5,
                                     seen=seen, upto=upto, eval_group=group, mesh=self.mesh,
                                     replicated=self._replicated)

    def _task_info(self, t: int, steps: int, spe: int) -> TaskInfo:
        """The boundary info of task t (:func:`clj.train.boundaries.task_info`)."""
        return task_info(self.scenario, self.caps.static_task_info, t, steps, spe)

    def _plan_task_info(self, t: int) -> TaskInfo:
        """Task t's boundary info from its plan: its own steps, or with hidden
        boundaries the whole stream's (one begin for the whole stream)."""
        plan = self.plans[t]
        steps = plan.steps if self.visible else sum(p.steps for p in self.plans)
        return self._task_info(t, steps, plan.steps_per_epoch)

    @property
    def _chunk_sharding(self) -> NamedSharding:
        """The layout of one chunk's ``[S, K, B]`` arrays (indices, streamed
        images and labels): runs over the seed axis, the batch over the data
        axis when it is sharded."""
        return NamedSharding(self.mesh, P(SEED_MESH_AXIS, None, DATA_MESH_AXIS if self.shard_batch else None))

    def _begin_task(self, state, info: TaskInfo):
        return self._boundaries.begin(state, info)

    def _end_task(self, state, info: TaskInfo, t: int):
        """``end_task`` with the task's training data, gathered on the device."""
        return self._boundaries.end(state, info, t, self.scenario, self.data.X, self.data.Y, self.data.records,
                                    self._replicated)

    # ------------------------------------------------------------ the run
    def init_state(self):
        """Every seed's fresh State, stacked on axis 0 and sharded over the
        mesh's seed axis (one jitted call)."""
        fn, keys, hv = self._init_program()
        return fn(keys, hv)

    def _init_program(self):
        """``(jitted init, keys [S, 2], swept values {field: float32 [S]})``:
        ``init(keys, values)`` is every run's fresh State."""
        keys = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s), 0)))
                         for s in self.seeds])
        # a grid's values, one per vmapped run (float32 [R] per swept field)
        hv = {k: np.asarray([self.points[p][k] for p in self.run_point], np.float32) for k in self.points[0]}

        def init(k, h):
            st = self.spec.init(k, self.config, self.scenario)
            return st.replace(swept={**st.swept, **h}) if h else st

        return jax.jit(jax.vmap(init), out_shardings=self._state_sharding), keys, hv

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
        write_configs(self.config, self.workdir, {d: self.point_config(i) for i, d in enumerate(self.point_workdirs)}
                      if self.grid else {})

    def _run(self, ckpt_dir: str):
        cfg, sc = self.config, self.scenario
        from clj.train.checkpoint import Checkpointer

        ck = cfg.get("checkpoint") or {}
        ckpt = Checkpointer(ckpt_dir, max_to_keep=int(ck.get("keep", 2)), asynchronous=bool(ck.get("asynchronous", True)))
        state = self.init_state()
        prog = Progress()
        in_task = None  # {"task", "chunks_done", "elapsed"} of a mid-task checkpoint
        # the newest readable checkpoint (a damaged one is reported in one line and skipped)
        found = ckpt.restore_latest(state, log=print if self.main else (lambda m: None)) if cfg.resume else None
        if found is not None:
            _, state, meta = found
            prog = Progress.from_json(meta)
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

        logger = MetricsLogger(os.path.join(self.workdir, "metrics.jsonl")) if self.main else NoLog()
        from clj.tracking import open_trackers, wandb_options

        n_seeds = len(self.config_seeds)
        run_dirs = [wd if n_seeds == 1 else os.path.join(wd, f"seed_{s}")
                    for wd in self.point_workdirs for s in self.config_seeds]  # one per vmapped run
        wandb = wandb_options(cfg) if self.main else None
        names = configs = None
        if wandb:  # each W&B run: its folder's name and its resolved config with its seed
            import json

            names = [os.path.basename(self.point_workdirs[p]) + ("" if n_seeds == 1 else f"/seed_{s}")
                     for p, s in zip(self.run_point, self.seeds)]
            points = [json.loads(self.point_config(i).to_json_best_effort()) for i in range(len(self.points))]
            configs = [{**points[p], "seed": s} for p, s in zip(self.run_point, self.seeds)]
        try:
            self._trackers = open_trackers(run_dirs, bool((cfg.get("tracking") or {}).get("tensorboard", False))
                                           and self.main, wandb=wandb, names=names,
                                           group=os.path.basename(self.workdir), configs=configs)
        except BaseException:
            logger.close()
            raise
        T = sc.num_tasks
        every = 60.0 * float((cfg.get("checkpoint") or {}).get("every_minutes", 0) or 0)
        self._signal = None
        self._prog = prog  # the divergence watch marks its runs
        if bool(cfg.loop.get("profile", False)) and self.main:
            from clj.train.profile import PROFILE_DIR, ChunkProfiler

            self._profiler = ChunkProfiler(os.path.join(self.workdir, PROFILE_DIR),
                                           int(cfg.loop.get("profile_chunks", 2)))
        restore_handlers = catch_signals(self)
        try:
            for t in range(prog.completed_tasks, T):
                t0 = time.perf_counter()
                info = self._plan_task_info(t)
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
                mid = MidTaskSaver(self, ckpt, prog, logger, t, t0, every)
                self._step0 = sum(prog.steps)  # steps of the finished tasks (TensorBoard's x axis)
                state, steps_done = self._train_task(state, t, logger, start_chunk, mid)
                if self.visible or t == T - 1:
                    state = self._end_task(state, info, t)
                jax.block_until_ready(state)
                t1 = time.perf_counter()
                seen = sc.seen_classes(t) if self.mask_unseen else np.ones(sc.num_classes, bool)
                accs = self.evaluate(state, seen, upto=t if self.eval_seen else None)
                record_task(prog, accs, t, t0=t0, t1=t1, steps=steps_done, trackers=self._trackers, logger=logger,
                            num_runs=self.S, num_tasks=T, show=cfg.progress and self.main)
                ckpt.save(self._ckpt_id(t, None), state, prog.to_json())
                if self._signal is not None and t < T - 1:
                    raise Interrupted(self._signal, self._ckpt_id(t, None))
                if 0 <= int(cfg.stop_after_task) == t and t < T - 1:
                    return {"stopped_after_task": t}
        except Interrupted as e:
            import signal as _signal

            ckpt.wait()  # written before saying so
            if self.main:
                print(f"[clj] {_signal.Signals(e.signum).name}: checkpoint {e.step} written; rerun the same "
                      "command to resume.", flush=True)
            return {"interrupted": _signal.Signals(e.signum).name, "checkpoint_step": e.step}
        except Diverged:  # every run diverged: nothing more to train; the results say so
            pass
        finally:
            restore_handlers()
            ckpt.close()
            logger.close()
            for tr in self._trackers:
                tr.close()
        self.final_state = state  # every seed's State after the last task (for inspection)
        return self._write_results(state, prog)

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
        chunks = None
        if self.placement == "stream":  # each chunk's images read from disk ahead of use
            chunks = ChunkImages(self.data.records, idx, self.mesh, self.shard_batch, idx_sharding,
                                 start_chunk=start_chunk, prefetch=int(self.config.data.get("prefetch", 2)),
                                 labels=self.scenario.y_train, extras=tuple(self.caps.batch_extras))
            self.stream_block = chunks.box
        else:
            idx = dist.put(idx, idx_sharding)
        # each chunk's indices laid out as the memory estimate compiled them (clj.train.memory):
        # an eager slice of idx drops the seed axis's sharding on a one-device mesh, which
        # would make the chunk a different program from the one already compiled
        chunk_idx_sharding = self._chunk_sharding
        task_keys = dist.put(np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s), t + 1)))
                                       for s in self.seeds]), self._state_sharding)
        fn = self._chunk_fn()
        if self._profiler is not None:  # loop.profile: a few chunks traced (the call is unchanged when off)
            fn = self._profiler.wrap(fn, t, start_chunk, n_chunks)
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
            watch_divergence(self._prog, metrics, t, s0, n, S=self.S, seeds=self.seeds, points=self.points,
                             run_point=self.run_point, grid=self.grid, num_tasks=self.scenario.num_tasks,
                             main=self.main)
            if bar is not None or self.main:
                record_chunk(metrics["loss"], t, s0, n, bar=bar, logger=logger, trackers=self._trackers,
                             step0=self._step0)
            return self.caps.early_stop and bool(np.all(metrics["task_done"][:, n - 1] > 0))

        if bar is not None and start_chunk:
            bar.update(min(start_chunk * K, plan.steps))
        try:
            for c in range(start_chunk, n_chunks):
                s0 = c * K
                X, Y, ix = chunks.next() if chunks is not None else (
                    self._train_X, self.data.Y, jax.device_put(idx[:, c], chunk_idx_sharding))
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
            if chunks is not None:
                chunks.close()
            if self._profiler is not None:
                self._profiler.stop()  # the task ended (or stopped) before its last traced chunk
        done = plan.steps if stopped_at is None else stopped_at
        return state, done

    def _write_results(self, state, prog: Progress) -> dict:
        state = dist.to_host(state)  # host copies: per-seed slices cost no device ops
        if not self.main:
            return None
        facts = {"devices": self.n_dev, "mesh": {"seed": self.n_seed_dev, "data": self.n_data_dev},
                 "backend": jax.default_backend(), "num_seeds_in_program": len(self.seeds),
                 "steps_per_call": self.K, "unroll": self.unroll,
                 "test_examples_per_task": self.data.eval_counts.tolist()}
        return write_results(state, prog, config=self.config, scenario=self.scenario, spec=self.spec,
                             seeds=self.seeds, config_seeds=self.config_seeds, points=self.points,
                             point_workdirs=self.point_workdirs, grid=self.grid, eval_counts=self.data.eval_counts,
                             facts=facts)


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
