"""The continual-learning loop: config -> data -> scenario -> method -> metrics.

For each task: ``begin_task`` -> many jitted train steps -> ``end_task`` ->
evaluate every task -> checkpoint.  The loop knows nothing of the method
beyond the protocol of :mod:`clj.methods`.

Speed (DESIGN.md):

* the dataset lives on the device as uint8 arrays, replicated over a
  ``jax.sharding.Mesh`` of all devices; a batch is a gather by index inside the
  jitted step, the domain transform and the augmentation run on the device;
* ``steps_per_call`` steps run per host call under ``lax.scan`` (``unroll``
  sets its unrolling; see :func:`auto_chunking` and ``benchmarks/``);
* the batch axis is sharded over the mesh's ``data`` axis, the state is
  replicated (data parallel);
* seeds are a batch axis: ``num_seeds`` states are stacked and the step is
  ``vmap``-ed, so one program runs them all; each seed's numbers equal a
  separate run of that seed.

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from clj import config as config_lib
from clj.data.augment import permute_pixels, rotate
from clj.methods import get_method
from clj.methods.common import SEED_AXIS, TaskInfo, augment_from_config
from clj.metrics import MetricsLogger, build_results, summarize_seeds, write_json_atomic
from clj.scenarios import Scenario, scenario_from_config

CONV_MODELS_PREFIXES = ("resnet", "small_cnn", "cnn", "conv")


def auto_chunking(backend: str, model_name: str) -> tuple[int, int]:
    """Default (steps_per_call, unroll) for a backend and model.

    On the CPU, XLA runs the weight-gradient convolutions of a conv net inside
    a rolled ``lax.scan`` 20-50x slower than the same step alone, so conv nets
    get short, fully unrolled chunks there; MLPs gain from long rolled scans.
    On GPU/TPU a rolled scan of many steps removes the per-call overhead.
    ``benchmarks/bench_loop_chunking.py`` measures the choice.
    """
    conv = any(model_name.startswith(p) for p in CONV_MODELS_PREFIXES)
    if backend == "cpu":
        return (4, 4) if conv else (200, 1)
    return (50, 1)


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over all (or the given) devices."""
    devs = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devs, ("data",))


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


class Runner:
    """Runs one config (all its seeds) in a workdir.  See module doc."""

    def __init__(self, config, workdir: str, scenario: Scenario | None = None, devices=None):
        config_lib.validate(config)
        self.config = config
        self.workdir = os.path.abspath(workdir)
        if scenario is None:
            scenario = load_scenario(config)
        config_lib.validate_with_data(config, scenario)
        self.scenario = scenario
        self.method = get_method(config.method)
        self.mesh = make_mesh(devices)
        self.n_dev = self.mesh.devices.size
        self.seeds = [int(config.seed) + s for s in range(int(config.num_seeds))]
        self.B = int(config.train.batch_size)
        self.augment = augment_from_config(config.augment, scenario)
        K, U = auto_chunking(jax.default_backend(), config.model.name)
        self.K = int(config.loop.steps_per_call) or K
        self.unroll = int(config.loop.unroll) or min(U, self.K)
        self.shard_batch = bool(config.loop.shard_batch) and self.n_dev > 1 and self.B % self.n_dev == 0
        if bool(config.loop.shard_batch) and self.n_dev > 1 and not self.shard_batch:
            warnings.warn(f"train.batch_size={self.B} does not divide over {self.n_dev} devices: "
                          "the batch is replicated, not sharded.")
        self.cumulative = bool(getattr(self.method, "CUMULATIVE_DATA", False))
        self.task_id_at_test = bool(getattr(self.method, "USES_TASK_ID_AT_TEST", False))
        self.task_id_class_il = False
        if hasattr(self.method, "task_id_at_test"):  # config-dependent override (optional hook)
            til, cil = self.method.task_id_at_test(config)
            self.task_id_at_test, self.task_id_class_il = bool(til), bool(cil)
        self.visible = scenario.task_boundaries_visible
        self.reveal = self.visible or bool(config.scenario.get("reveal_boundaries", False))
        self.settings = ("domain_il",) if scenario.kind == "domain_il" else ("class_il", "task_il")
        self.mask_unseen = scenario.kind in ("class_il", "task_il")
        self.top5 = scenario.kind != "domain_il" and scenario.num_classes > 5  # PyCIL's class-IL top-5 curve
        self._replicated = NamedSharding(self.mesh, P())
        self._batch_sharding = NamedSharding(self.mesh, P("data"))
        self._dev_data()
        self._chunk_fns: dict[int, Any] = {}
        self._eval_fn = None

    # ------------------------------------------------------------------ data
    def _dev_data(self):
        sc = self.scenario
        put = lambda a: jax.device_put(a, self._replicated)  # noqa: E731
        self.X = put(sc.x_train)
        self.Y = put(sc.y_train.astype(np.int32))
        self.Xt = put(sc.x_test)
        self.Yt = put(sc.y_test.astype(np.int32))
        self.dom = put(sc.domain_params) if sc.domain_params is not None else None
        # Evaluation set: every task's test examples, padded to the eval batch.
        E = int(self.config.loop.eval_batch_size)
        idx = np.concatenate([t.test_idx for t in sc.tasks]).astype(np.int32)
        tsk = np.concatenate([np.full(t.test_idx.shape, t.task_id, np.int32) for t in sc.tasks])
        n = idx.shape[0]
        E = max(1, min(E, n))
        nb = math.ceil(n / E)
        pad = nb * E - n
        valid = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
        idx = np.concatenate([idx, np.zeros(pad, np.int32)])
        tsk = np.concatenate([tsk, np.zeros(pad, np.int32)])
        self.eval_idx = put(idx.reshape(nb, E))
        self.eval_task = put(tsk.reshape(nb, E))
        self.eval_valid = put(valid.reshape(nb, E))
        self.eval_counts = np.bincount(tsk[:n], minlength=sc.num_tasks)
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

    # -------------------------------------------------------------- compiled
    def _chunk_fn(self, K: int):
        if K in self._chunk_fns:
            return self._chunk_fns[K]
        method, aug, B = self.method, self.augment, self.B
        unroll = max(1, min(self.unroll, K))
        reveal = self.reveal

        def seed_chunk(state, X, Y, idx, task_key, step0, task_id, spe, n_task):
            def body(st, inp):
                k, ix = inp
                key = jax.random.fold_in(task_key, step0 + k)
                k_aug, k_step = jax.random.split(key)
                x_raw = self._domain(X[ix], task_id)
                y = Y[ix]
                if self.shard_batch:
                    x_raw = jax.lax.with_sharding_constraint(x_raw, self._batch_sharding)
                    y = jax.lax.with_sharding_constraint(y, self._batch_sharding)
                x = aug(x_raw, k_aug, train=True)
                shown = task_id if reveal else -1
                batch = {"x": x, "x_raw": x_raw, "y": y,
                         "task_id": jnp.full((B,), shown, jnp.int32),
                         "new_task": jnp.logical_and(reveal, step0 + k == 0),
                         # in-task step index, steps per epoch and task size, shared by all
                         # seeds (unbatched under vmap: a method may branch on them with lax.cond)
                         "step": step0 + k, "steps_per_epoch": spe, "task_size": n_task}
                st, metrics = method.train_step(st, batch, k_step)
                return st, metrics

            if K == 1:
                # A length-1 scan is no cheaper than a plain call, and on the CPU it
                # makes XLA keep the weight-gradient convolutions in a slow layout
                # (ResNet-18: ~100 s instead of ~1 s per step; benchmarks/README.md).
                st, metrics = body(state, (jnp.int32(0), idx[0]))
                return st, jax.tree.map(lambda m: m[None], metrics)
            return jax.lax.scan(body, state, (jnp.arange(K, dtype=jnp.int32), idx), unroll=unroll)

        fn = jax.vmap(seed_chunk, in_axes=(0, None, None, 0, 0, None, None, None, None), axis_name=SEED_AXIS)
        donate = (0,) if jax.default_backend() != "cpu" else ()
        jfn = jax.jit(fn, donate_argnums=donate)
        self._chunk_fns[K] = jfn
        return jfn

    def _evaluate(self, state, seen: np.ndarray) -> dict[str, np.ndarray]:
        """Per-seed, per-task accuracies {setting: float [S, T]}."""
        if self._eval_fn is None:
            method, aug, T = self.method, self.augment, self.scenario.num_tasks
            use_tid = self.task_id_at_test
            tid_cil = self.task_id_class_il
            top5 = self.top5

            def seed_eval(state, Xt, Yt, eidx, etask, evalid, seen, task_cls):
                def body(inp):
                    ix, tk, vd = inp
                    x = aug(self._domain_per_example(Xt[ix], tk), None, train=False)
                    y = Yt[ix]
                    logits = method.predict(state, x, tk if tid_cil else None).astype(jnp.float32)
                    masked = jnp.where(seen[None, :], logits, -jnp.inf)
                    cil = jnp.argmax(masked, -1) == y
                    lt = method.predict(state, x, tk).astype(jnp.float32) if use_tid and not tid_cil else logits
                    til = jnp.argmax(jnp.where(task_cls[tk], lt, -jnp.inf), -1) == y
                    if top5:  # y among the 5 largest scores of the seen classes
                        c5 = jnp.any(jax.lax.top_k(masked, 5)[1] == y[:, None], -1) & seen[y]
                    else:
                        c5 = cil
                    return cil & vd, til & vd, c5 & vd

                cil, til, c5 = jax.lax.map(body, (eidx, etask, evalid))
                seg = lambda c: jax.ops.segment_sum(c.reshape(-1).astype(jnp.int32), etask.reshape(-1), T)  # noqa: E731
                return seg(cil), seg(til), seg(c5)

            self._eval_fn = jax.jit(jax.vmap(seed_eval, in_axes=(0,) + (None,) * 7))
        cil, til, c5 = self._eval_fn(state, self.Xt, self.Yt, self.eval_idx, self.eval_task, self.eval_valid,
                                     jnp.asarray(seen), self.task_cls)
        denom = np.maximum(self.eval_counts, 1)[None, :]
        out = {"class_il": np.asarray(cil) / denom, "task_il": np.asarray(til) / denom}
        if self.scenario.kind == "domain_il":
            return {"domain_il": out["class_il"]}
        if self.top5:
            out["class_il_top5"] = np.asarray(c5) / denom
        return out

    # ------------------------------------------------------------ per task
    def _task_train_idx(self, t: int) -> np.ndarray:
        sc = self.scenario
        if self.cumulative:
            return np.concatenate([sc.tasks[i].train_idx for i in range(t + 1)])
        return sc.tasks[t].train_idx

    def _task_steps(self, n: int, t: int = 1) -> tuple[int, int]:
        epochs = float(self.config.train.epochs)
        init_epochs = float(self.config.train.get("init_epochs", 0) or 0)
        if t == 0 and init_epochs > 0:  # PyCIL's separate epoch count of the first task
            epochs = init_epochs
        return max(1, math.ceil(epochs * n / self.B)), max(1, math.ceil(n / self.B))

    def _index_stream(self, seed: int, t: int, pool: np.ndarray, steps: int) -> np.ndarray:
        """int32 [steps, B]: shuffled passes over ``pool`` (module doc)."""
        rng = np.random.default_rng([seed, t])
        need = steps * self.B
        parts, have = [], 0
        while have < need:
            parts.append(pool[rng.permutation(pool.shape[0])])
            have += pool.shape[0]
        return np.concatenate(parts)[:need].reshape(steps, self.B).astype(np.int32)

    def _task_info(self, t: int, steps: int, spe: int) -> TaskInfo:
        task = self.scenario.tasks[t]
        return TaskInfo(task_id=t, classes=task.classes, num_steps=steps, steps_per_epoch=spe,
                        num_classes=self.scenario.num_classes)

    # ------------------------------------------------------------ the run
    def init_state(self):
        keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 0) for s in self.seeds])
        state = jax.vmap(lambda k: self.method.init(k, self.config, self.scenario))(keys)
        return jax.device_put(state, self._replicated)

    def run(self) -> dict:
        """Trains and evaluates every task; writes the results folder.

        Returns the results dict (one seed) or the summary dict (several);
        with ``stop_after_task`` set, returns ``{"stopped_after_task": t}``.
        """
        cfg, sc = self.config, self.scenario
        os.makedirs(self.workdir, exist_ok=True)
        write_json_atomic(os.path.join(self.workdir, "config.json"), json.loads(cfg.to_json_best_effort()))
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
            state = jax.device_put(state, self._replicated)
            prog = _Progress.from_json(meta)
            print(f"[clj] resumed from {ckpt.directory} after task {prog.completed_tasks - 1}")
        if prog.completed_tasks == 0 and not prog.random_init:
            prog.random_init = self._evaluate(state, np.ones(sc.num_classes, bool))

        logger = MetricsLogger(os.path.join(self.workdir, "metrics.jsonl"))
        T = sc.num_tasks
        try:
            for t in range(prog.completed_tasks, T):
                t0 = time.perf_counter()
                pool = self._task_train_idx(t)
                steps, spe = self._task_steps(pool.shape[0], t)
                if not self.visible:  # one begin for the whole stream
                    total = sum(self._task_steps(self._task_train_idx(i).shape[0], i)[0] for i in range(T))
                    info = self._task_info(t, total, spe)
                else:
                    info = self._task_info(t, steps, spe)
                if self.visible or t == 0:
                    state = jax.jit(jax.vmap(lambda s: self.method.begin_task(s, info)))(state)
                idx = np.stack([self._index_stream(s, t, pool, steps) for s in self.seeds])
                idx = jax.device_put(idx, self._replicated)
                task_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), t + 1) for s in self.seeds])
                state = self._train_task(state, idx, task_keys, t, steps, logger, spe, pool.shape[0])
                if self.visible or t == T - 1:
                    tidx = jnp.asarray(sc.tasks[t].train_idx, jnp.int32)
                    data = {"x": self._domain(self.X[tidx], t), "y": self.Y[tidx]}
                    state = jax.jit(jax.vmap(lambda s, d: self.method.end_task(s, {**d, "info": info}),
                                             in_axes=(0, None)))(state, data)
                jax.block_until_ready(state)
                t1 = time.perf_counter()
                seen = sc.seen_classes(t) if self.mask_unseen else np.ones(sc.num_classes, bool)
                accs = self._evaluate(state, seen)
                for k, v in accs.items():
                    prog.acc.setdefault(k, []).append(v)
                prog.wall_time.append(t1 - t0)
                prog.eval_time.append(time.perf_counter() - t1)
                prog.steps.append(int(getattr(self, "steps_done", steps)))
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
        return self._write_results(state, prog)

    def _train_task(self, state, idx, task_keys, t, steps, logger, spe=1, n_task=0):
        K = min(self.K, steps)
        n_full = steps // K
        bar = None
        if self.config.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc=f"task {t + 1}/{self.scenario.num_tasks}", leave=False,
                       dynamic_ncols=True)
        done = 0
        try:
            while done < steps:
                k = K if done < n_full * K else 1
                fn = self._chunk_fn(k)
                state, metrics = fn(state, self.X, self.Y, idx[:, done:done + k], task_keys,
                                    jnp.int32(done), jnp.int32(t), jnp.int32(spe), jnp.int32(n_task))
                done += k
                # A method may report metrics["task_done"] (1 = nothing left to learn in this
                # task, e.g. NISPA's stopping rule fired): once every seed is done, the task ends.
                finished = "task_done" in metrics and bool(jnp.all(metrics["task_done"][:, -1] > 0))
                if finished and bar is not None:
                    bar.update(steps - bar.n)
                if finished:
                    break
                if bar is not None and (k == K or done == steps):
                    loss = float(jnp.mean(metrics["loss"]))
                    bar.update(k if k == K else (done - bar.n))
                    bar.set_postfix(loss=f"{loss:.4f}")
                    logger.log(event="chunk", task=t, step=done, loss=loss)
        finally:
            if bar is not None:
                bar.close()
        self.steps_done = done
        return state

    def _write_results(self, state, prog: _Progress) -> dict:
        cfg, sc = self.config, self.scenario
        one = jax.tree_util.tree_map(lambda a: a[0], state)
        mem = dict(getattr(self.method, "memory_bytes", lambda s: {})(one))
        mem.setdefault("buffer", 0)
        mem.setdefault("masks", 0)
        if "model" not in mem:
            from clj.methods.common import param_bytes
            mem["model"] = param_bytes(getattr(one, "net", one).params) if hasattr(getattr(one, "net", one), "params") else 0
        results = []
        for si, seed in enumerate(self.seeds):
            res = build_results(
                method=cfg.method, dataset=cfg.dataset, seed=seed, scenario=sc.describe(),
                # (a setting missing from some rows, e.g. one added since a resumed checkpoint, is left out)
                accuracy_matrices={k: np.stack([r[si] for r in rows]) for k, rows in prog.acc.items()
                                   if len(rows) == prog.completed_tasks},
                random_init_accuracy={k: v[si] for k, v in prog.random_init.items()},
                memory_bytes=mem, wall_time_per_task=prog.wall_time, steps_per_task=prog.steps,
                extra={"eval_time_s": prog.eval_time, "devices": self.n_dev,
                       "backend": jax.default_backend(), "num_seeds_in_program": len(self.seeds),
                       "steps_per_call": self.K, "unroll": self.unroll,
                       **dict(getattr(self.method, "result_extras", lambda s: {})(
                           jax.tree_util.tree_map(lambda a, i=si: a[i], state)))})  # this seed's state
            results.append(res)
        if len(results) == 1:
            out_dirs = [self.workdir]
        else:
            out_dirs = [os.path.join(self.workdir, f"seed_{s}") for s in self.seeds]
        for res, d in zip(results, out_dirs):
            write_json_atomic(os.path.join(d, "results.json"), res)
            if cfg.plots:
                from clj.metrics.plots import plot_results
                plot_results(res, d)
        if len(results) == 1:
            return results[0]
        summary = summarize_seeds(results)
        write_json_atomic(os.path.join(self.workdir, "summary.json"), summary)
        return summary


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
