"""Where the data live during a run and how they reach the devices.

``device`` placement: the whole dataset sits on every device as uint8
arrays, and a batch is a gather by index inside the jitted step.
``stream`` placement: clj's prepared records are read from disk chunk by
chunk (:class:`clj.data.stream.ChunkStream`) and each chunk's images are
put on the devices laid out like the state (seeds) and the batch (data).

The evaluation set is laid out here too: each task's test examples padded
to whole batches of E, so that no batch mixes two tasks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from clj import config as config_lib
from clj.data.augment import permute_pixels, rotate
from clj.train import distributed as dist
from clj.train.runtime import DATA_MESH_AXIS, SEED_MESH_AXIS

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
        from clj.data.prepare import prepare_command

        raise config_lib.ConfigError(
            f"data.placement='stream' reads clj's prepared records, and dataset={config.dataset!r} is not prepared in "
            f"data_dir={config.data_dir!r}; prepare it with `{prepare_command(name or config.dataset, config.data_dir or 'DIR')}` "
            f"or use data.placement='device'.")
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


@dataclasses.dataclass
class DataLayout:
    """The run's data as the devices see them.

    Attributes:
      X, Y: the training split on every device, uint8 [N, H, W, C] and int32
        [N] (None with the ``stream`` placement).
      Xt, Yt: the test split likewise, [M, ...] and [M] (None with ``stream``).
      records: the open :class:`clj.data.records.PreparedDataset` of the
        ``stream`` placement (None with ``device``).
      dom: the scenario's per-task domain parameters on every device
        (permutations or angles), or None.
      eval_idx_host, eval_task_host, eval_valid_host: int32 / int32 / bool
        [n_batches, E], the evaluation batches (test example, its task,
        whether it is real or padding), grouped by task in task order.
      eval_idx, eval_task, eval_valid: the same on the devices, each batch
        sharded over the data axis.
      eval_counts: int [T] test examples of each task.
      eval_batches_upto: int [T] evaluation batches of tasks 0..t.
      task_cls: bool [T, num_classes] the classes of each task, on every device.
      extras: ``{name: uint8 [N, *shape]}`` the training split's stored
        per-image extras a method asked for (``Capabilities.batch_extras``),
        on every device with the ``device`` placement (empty with ``stream``,
        whose chunks read them with the images).
      extra_shapes: ``{name: shape}`` of one image's extra (both placements).
    """

    X: jax.Array | None
    Y: jax.Array | None
    Xt: jax.Array | None
    Yt: jax.Array | None
    records: object | None
    dom: jax.Array | None
    eval_idx_host: np.ndarray
    eval_task_host: np.ndarray
    eval_valid_host: np.ndarray
    eval_idx: jax.Array
    eval_task: jax.Array
    eval_valid: jax.Array
    eval_counts: np.ndarray
    eval_batches_upto: np.ndarray
    task_cls: jax.Array
    extras: dict = dataclasses.field(default_factory=dict)
    extra_shapes: dict = dataclasses.field(default_factory=dict)


def lay_out_data(scenario, placement: str, prepared: str | None, *, threads: int, eval_batch_size: int,
                 mesh, n_data_dev: int, replicated, abstract: bool = False, extras: tuple = ()) -> DataLayout:
    """Puts the scenario's data on the devices of ``mesh`` (or opens its
    records, ``stream``) and lays out its evaluation set.

    Args:
      scenario: the run's scenario.
      placement: ``device`` or ``stream`` (see :func:`choose_placement`).
      prepared: the folder of the dataset's records (``stream``).
      threads: reader threads of the records (``stream``).
      eval_batch_size: test examples per evaluation batch, at most; rounded
        up to a multiple of ``n_data_dev``.
      mesh: the run's seeds x data mesh.
      n_data_dev: devices of its data axis.
      replicated: the sharding of an array held whole by every device.
      abstract: lay out ``jax.ShapeDtypeStruct``s with their shardings
        instead of arrays (nothing is put on a device; the records of
        ``stream`` are not opened): the layout a program is compiled for
        when only its memory is wanted (:mod:`clj.train.memory`).
      extras: names of the records' per-image extras to put on the devices
        with the training images (``device``; read from ``prepared``).

    Raises:
      ConfigError: ``extras`` asked of a dataset whose records do not store
        them (or that is not prepared).
    """
    sc = scenario
    extra_arrays, extra_shapes = {}, {}
    if extras:
        from clj.data.records import PreparedDataset

        if prepared is None:
            raise config_lib.ConfigError(
                f"the method reads the per-image extras {', '.join(extras)} stored in a dataset's prepared records, "
                "and this dataset is not prepared; prepare it with python -m clj.data.prepare (docs/data.md).")
        rec = PreparedDataset(prepared, num_threads=max(1, threads))
        try:
            missing = [e for e in extras if e not in rec.extras]
            if missing:
                raise config_lib.ConfigError(
                    f"the method reads the per-image extra {missing[0]!r}, and the records in {prepared} store "
                    f"{', '.join(rec.extras) or 'none'}; prepare the dataset with its extras (docs/data.md).")
            extra_shapes = {e: tuple(rec.extras[e]) for e in extras}
            if placement == "device":
                if rec.num_examples("train") != len(sc.y_train):
                    raise config_lib.ConfigError(
                        f"the records in {prepared} hold {rec.num_examples('train')} training images and the "
                        f"scenario {len(sc.y_train)}: their extras {', '.join(extras)} cannot be aligned with them.")
                for e in extras:
                    shape = (rec.num_examples("train"), *rec.extras[e])
                    extra_arrays[e] = (jax.ShapeDtypeStruct(shape, np.uint8, sharding=replicated) if abstract
                                       else dist.put(rec.read_extra("train", e), replicated))
        finally:
            rec.close()

    def put(a, sharding=replicated):
        a = np.asarray(a)
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) if abstract else dist.put(a, sharding)

    if placement == "device":
        X = put(sc.x_train)
        Y = put(sc.y_train.astype(np.int32))
        Xt = put(sc.x_test)
        Yt = put(sc.y_test.astype(np.int32))
        records = None
    elif abstract:
        records, X, Y, Xt, Yt = None, None, None, None, None
    else:  # stream: read from disk per chunk / per evaluation group / per end_task
        from clj.data.records import PreparedDataset

        records = PreparedDataset(prepared, num_threads=threads)
        X = Y = Xt = Yt = None
    dom = put(sc.domain_params) if sc.domain_params is not None else None
    # Evaluation set: each task's test examples padded to whole batches of E, so
    # no batch mixes two tasks (a method with batch statistics at test time sees
    # one task per batch, and `valid` marks the padding).  E divides over the
    # data axis of the mesh.
    counts = np.array([t.test_idx.shape[0] for t in sc.tasks])
    E = max(1, min(int(eval_batch_size), int(counts.max())))
    E = n_data_dev * math.ceil(E / n_data_dev)
    idx, tsk, valid = [], [], []
    for t in sc.tasks:
        n = t.test_idx.shape[0]
        nb = max(1, math.ceil(n / E))
        pad = nb * E - n
        idx.append(np.concatenate([t.test_idx, np.full(pad, t.test_idx[0] if n else 0)]).astype(np.int32))
        tsk.append(np.full(nb * E, t.task_id, np.int32))
        valid.append(np.concatenate([np.ones(n, bool), np.zeros(pad, bool)]))
    shard = NamedSharding(mesh, P(None, DATA_MESH_AXIS))
    eval_idx_host = np.concatenate(idx).reshape(-1, E)
    eval_task_host = np.concatenate(tsk).reshape(-1, E)
    eval_valid_host = np.concatenate(valid).reshape(-1, E)
    return DataLayout(
        X=X, Y=Y, Xt=Xt, Yt=Yt, records=records, dom=dom,
        eval_idx_host=eval_idx_host, eval_task_host=eval_task_host, eval_valid_host=eval_valid_host,
        eval_idx=put(eval_idx_host, shard), eval_task=put(eval_task_host, shard),
        eval_valid=put(eval_valid_host, shard), eval_counts=counts,
        # evaluation batches of tasks 0..t (the batches are grouped by task, in task order)
        eval_batches_upto=np.cumsum([max(1, math.ceil(n / E)) for n in counts]),
        task_cls=put(sc.class_task_matrix()), extras=extra_arrays,
        extra_shapes=extra_shapes)


def apply_domain(x_raw, task_id, dom, domain: str):
    """Task ``task_id``'s input transform of uint8 [B, H, W, C] images:
    ``dom[task_id]`` is a pixel permutation (``domain == "permute"``) or a
    rotation angle; the images unchanged when ``dom`` is None."""
    if dom is None:
        return x_raw
    if domain == "permute":
        return permute_pixels(x_raw, dom[task_id])
    return rotate(x_raw, dom[task_id])


def apply_domain_per_example(x_raw, tasks, dom, domain: str):
    """:func:`apply_domain` of each image of [B, H, W, C] with its own task
    (int32 [B])."""
    if dom is None:
        return x_raw
    return jax.vmap(lambda x, t: apply_domain(x[None], t, dom, domain)[0])(x_raw, tasks)


class ChunkImages:
    """The ``stream`` placement's chunks of one task: each chunk's images
    [S, K, B] are read from disk ahead of use (a background thread) and put
    on the devices laid out like the state (seeds) and the batch (data), so
    the example order, and so the results, are the device path's.  Each
    process reads only the block its own devices hold (:attr:`box`).

    Args:
      records: the open prepared dataset.
      idx: int32 [S, n_chunks, K, B] the task's example indices.
      mesh: the run's mesh.
      shard_batch: the batch axis is sharded over the data axis.
      idx_sharding: the sharding of the device placement's indices (the
        chunk's unused index argument is laid out alike).
      start_chunk: the first chunk read.
      prefetch: chunks read ahead.
      labels: the scenario's training labels (its class order).
      extras: stored per-image extras read with the images (``"saliency"``).
    """

    def __init__(self, records, idx: np.ndarray, mesh, shard_batch: bool, idx_sharding, *, start_chunk: int,
                 prefetch: int, labels: np.ndarray, extras: tuple = ()):
        from clj.data.stream import ChunkStream

        S, _, K, B = idx.shape
        self.shape = (S, K, B)
        self.sharding = NamedSharding(mesh, P(SEED_MESH_AXIS, None, DATA_MESH_AXIS if shard_batch else None))
        self.box = dist.local_box(self.shape, self.sharding)
        self._stream = ChunkStream(records, idx[self.box[0], :, :, self.box[2]], start_chunk=start_chunk,
                                   prefetch=prefetch, labels=labels, extras=extras)
        self._chunks = iter(self._stream)
        # the chunk's unused index argument, laid out as the device placement's chunk indices
        spec = tuple(idx_sharding.spec) + (None,) * (4 - len(tuple(idx_sharding.spec)))
        self.no_idx = dist.put(np.zeros((S, K, B), np.int32), NamedSharding(mesh, P(spec[0], spec[2], spec[3])))

    def next(self):
        """(X [S, K, B, ...], Y [S, K, B], unused indices) of the next chunk;
        with ``extras``, X is ``{"image": ..., name: [S, K, B, *shape]}``."""
        xs, ys = next(self._chunks)   # this process's block: [S', K, B', ...]
        X = jax.tree.map(lambda a: dist.put_local(a, self.box, self.shape + a.shape[3:], self.sharding), xs)
        Y = dist.put_local(ys, self.box, self.shape, self.sharding)
        return X, Y, self.no_idx

    def close(self) -> None:
        self._stream.close()
