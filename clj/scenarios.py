"""Continual-learning scenarios: an ordered list of tasks over one dataset.

A :class:`Scenario` is built once from a :class:`clj.data.Dataset` and never
changes.  It fixes

* the class order (seed-fixed, PyCIL convention) and relabels the dataset so
  that class ``class_order[k]`` becomes label ``k``; the classes of task ``t``
  are then the contiguous label range ``[offsets[t], offsets[t + 1])``;
* for every task, the indices of its training and test examples;
* for domain-incremental scenarios, the per-task input transformation
  (a pixel permutation or a rotation angle), applied on the device.

Kinds (the field's standard terms, van de Ven & Tolias 2019):

``class_il``          one head over all classes, no task id at test time.
``task_il``           the same split; evaluation masks logits to the task's
                      classes (the task id is given at test time).
``domain_il``         every task has all classes; tasks differ by an input
                      transformation (``permute`` or ``rotate``).
``data_incremental``  the class-incremental split fed as one stream: the
                      method sees no task boundary and no task id (SERENA,
                      CoPE); the evaluator still knows the tasks.

Class-IL and task-IL matrices are both measured for every split scenario
(Mammoth reports both for the same run); ``kind`` says which is primary.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

KINDS = ("class_il", "task_il", "domain_il", "data_incremental")
DOMAIN_TRANSFORMS = ("permute", "rotate")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a scenario.

    Attributes:
      task_id: position of the task in the sequence (0-based).
      classes: labels (after relabelling) of the task's classes, sorted.
      train_idx: int64 [n_train] indices into ``Scenario.x_train``.
      test_idx: int64 [n_test] indices into ``Scenario.x_test``.
    """

    task_id: int
    classes: tuple[int, ...]
    train_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def num_train(self) -> int:
        return int(self.train_idx.shape[0])


@dataclasses.dataclass(frozen=True)
class Scenario:
    """An ordered list of tasks over a relabelled dataset (see module doc).

    Attributes:
      kind: one of ``KINDS``.
      dataset_name: the source dataset's name.
      x_train, y_train, x_test, y_test: uint8 [N, H, W, C] images and int32
        labels *after* relabelling by ``class_order``.
      num_classes: C, the number of classes (width of the shared head).
      class_order: int64 [C]; ``class_order[k]`` is the original label of
        relabelled class ``k``.
      tasks: the tasks in training order.
      mean, std: per-channel normalisation constants (fractions of 255).
      domain: ``None`` or one of ``DOMAIN_TRANSFORMS``.
      domain_params: for ``permute``, int32 [T, H*W] pixel permutations
        (task 0 is the identity); for ``rotate``, float32 [T] angles in
        degrees; ``None`` otherwise.
    """

    kind: str
    dataset_name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_order: np.ndarray
    tasks: tuple[Task, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    domain: str | None = None
    domain_params: np.ndarray | None = None

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def classes_per_task(self) -> list[int]:
        return [len(t.classes) for t in self.tasks]

    @property
    def task_boundaries_visible(self) -> bool:
        """Whether the method is told where tasks begin and end."""
        return self.kind != "data_incremental"

    def class_task_matrix(self) -> np.ndarray:
        """bool [T, C]: entry [t, c] is True when class c belongs to task t."""
        m = np.zeros((self.num_tasks, self.num_classes), dtype=bool)
        for t in self.tasks:
            m[t.task_id, list(t.classes)] = True
        return m

    def seen_classes(self, upto_task: int) -> np.ndarray:
        """bool [C]: classes of tasks ``0..upto_task`` (inclusive)."""
        return self.class_task_matrix()[: upto_task + 1].any(axis=0)

    def describe(self) -> dict:
        """The ``scenario`` block of results.json."""
        return {
            "kind": self.kind,
            "num_tasks": self.num_tasks,
            "classes_per_task": self.classes_per_task,
            "class_order": [int(c) for c in self.class_order],
            "domain": self.domain,
            "train_examples_per_task": [t.num_train for t in self.tasks],
            "test_examples_per_task": [int(t.test_idx.shape[0]) for t in self.tasks],
        }


def class_split(num_classes: int, init_cls: int, increment: int) -> list[int]:
    """Sizes of the tasks of a class-incremental split, PyCIL convention.

    ``init_cls`` classes in the first task, then ``increment`` per task; a
    remainder smaller than ``increment`` forms a last, smaller task (as PyCIL's
    ``DataManager`` does).  ``init_cls=0`` means ``init_cls = increment``
    (PyCIL's "B0" settings).

    Raises:
      ValueError: ``increment < 1``, ``init_cls < 0`` or ``init_cls >
        num_classes``, naming the values and the valid range.
    """
    if increment < 1:
        raise ValueError(f"scenario.increment={increment} is invalid: it must be >= 1.")
    if init_cls == 0:
        init_cls = increment
    if init_cls < 0 or init_cls > num_classes:
        raise ValueError(
            f"scenario.init_cls={init_cls} is invalid for a dataset with {num_classes} classes: "
            f"it must be in [0, {num_classes}].")
    sizes = [init_cls]
    rest = num_classes - init_cls
    while rest > 0:
        sizes.append(min(increment, rest))
        rest -= increment
    return sizes


def make_class_order(num_classes: int, order: str | Sequence[int], seed: int) -> np.ndarray:
    """The class order: ``"fixed"`` (0..C-1, Mammoth), ``"seeded"`` (a
    permutation drawn with ``np.random.seed(seed)``, PyCIL's convention with
    seed 1993), or an explicit order of all C labels: a sequence, or a string
    of comma-separated labels (``"3,7,0,..."``, the command line's form,
    ``--config.scenario.class_order=3,7,0,...``).

    Returns:
      int64 [C]: ``order[k]`` is the original label of relabelled class ``k``.

    Raises:
      ValueError: an unknown order name or a sequence that is not a
        permutation of ``range(num_classes)``.
    """
    if isinstance(order, str) and "," in order:
        try:
            order = [int(v) for v in order.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"scenario.class_order={order!r} is not a comma-separated list of class labels; "
                             f"valid: 'fixed', 'seeded', or all {num_classes} labels as '3,7,0,...'.") from None
    if isinstance(order, str):
        if order == "fixed":
            return np.arange(num_classes)
        if order == "seeded":
            rs = np.random.RandomState(seed)
            return rs.permutation(num_classes)
        raise ValueError(
            f"scenario.class_order={order!r} is unknown; valid: 'fixed', 'seeded', or a list of "
            f"all {num_classes} class labels.")
    arr = np.asarray(list(order), dtype=np.int64)
    if sorted(arr.tolist()) != list(range(num_classes)):
        raise ValueError(
            f"scenario.class_order={list(order)} is not a permutation of range({num_classes}).")
    return arr


def make_scenario(dataset, kind: str = "class_il", *, init_cls: int = 0, increment: int = 2,
                  num_tasks: int = 0, class_order: str | Sequence[int] = "fixed",
                  class_order_seed: int = 1993, domain: str | None = None,
                  domain_seed: int = 0, rotation_step: float = 15.0,
                  train_fraction: float = 1.0) -> Scenario:
    """Builds a :class:`Scenario` from a :class:`clj.data.Dataset`.

    Args:
      dataset: a ``clj.data.Dataset`` (uint8 images, int labels).
      kind: one of ``KINDS``.
      init_cls, increment: the class split (``class_split``); ignored for
        ``domain_il``.
      num_tasks: for ``domain_il``, the number of tasks (>= 1); for split
        scenarios, 0 (derived) or the number the split must give.
      class_order, class_order_seed: see ``make_class_order``.
      domain: ``domain_il`` only: ``"permute"`` (task 0 unpermuted, task t a
        seeded pixel permutation; Goodfellow et al. 2013) or ``"rotate"``
        (task t rotated by ``t * rotation_step`` degrees).
      domain_seed: seed of the pixel permutations.
      train_fraction: the fraction of the training set each task uses (a
        seeded subset, per class for split scenarios; 1.0 = all).

    Raises:
      ValueError: unknown kind or domain, an impossible split (names the
        value and what is valid).
    """
    if kind not in KINDS:
        raise ValueError(f"scenario.kind={kind!r} is unknown; valid kinds: {', '.join(KINDS)}.")
    C = int(dataset.num_classes)
    order = make_class_order(C, class_order, class_order_seed)
    remap = np.empty(C, dtype=np.int32)
    remap[order] = np.arange(C, dtype=np.int32)
    y_train = remap[np.asarray(dataset.y_train)]
    y_test = remap[np.asarray(dataset.y_test)]

    tasks = []
    domain_params = None
    if kind == "domain_il":
        if domain not in DOMAIN_TRANSFORMS:
            raise ValueError(
                f"scenario.domain={domain!r} is unknown for domain_il; valid: {', '.join(DOMAIN_TRANSFORMS)}.")
        if num_tasks < 1:
            raise ValueError(f"scenario.num_tasks={num_tasks} is invalid for domain_il: it must be >= 1.")
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"scenario.train_fraction={train_fraction} must be in (0, 1].")
        H, W = dataset.x_train.shape[1:3]
        rs = np.random.RandomState(domain_seed)
        if domain == "permute":
            perms = [np.arange(H * W)] + [rs.permutation(H * W) for _ in range(num_tasks - 1)]
            domain_params = np.stack(perms).astype(np.int32)
        else:
            domain_params = (np.arange(num_tasks) * float(rotation_step)).astype(np.float32)
        n = y_train.shape[0]
        for t in range(num_tasks):
            if train_fraction < 1.0:
                idx = np.sort(rs.permutation(n)[: int(round(train_fraction * n))])
            else:
                idx = np.arange(n)
            tasks.append(Task(t, tuple(range(C)), idx, np.arange(y_test.shape[0])))
    else:
        if domain is not None:
            raise ValueError(f"scenario.domain={domain!r} is only valid with kind='domain_il'.")
        sizes = class_split(C, init_cls, increment)
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"scenario.train_fraction={train_fraction} must be in (0, 1].")
        rs_sub = np.random.RandomState(domain_seed)
        if num_tasks not in (0, len(sizes)):
            raise ValueError(
                f"scenario.num_tasks={num_tasks} is impossible: {C} classes split as init_cls={init_cls}, "
                f"increment={increment} give {len(sizes)} tasks ({sizes}); set num_tasks=0 or {len(sizes)}.")
        start = 0
        for t, s in enumerate(sizes):
            cls = tuple(range(start, start + s))
            start += s
            tr = np.flatnonzero((y_train >= cls[0]) & (y_train <= cls[-1]))
            if train_fraction < 1.0:  # a seeded, class-stratified subset (CPU-sized runs)
                keep = [rs_sub.permutation(np.flatnonzero(y_train == c))[: max(1, int(round(
                    train_fraction * np.sum(y_train == c))))] for c in cls]
                tr = np.sort(np.concatenate(keep))
            te = np.flatnonzero((y_test >= cls[0]) & (y_test <= cls[-1]))
            if tr.size == 0:
                raise ValueError(f"task {t} (classes {cls}) has no training examples in {dataset.name}.")
            tasks.append(Task(t, cls, tr, te))

    return Scenario(
        kind=kind, dataset_name=dataset.name, x_train=np.asarray(dataset.x_train), y_train=y_train,
        x_test=np.asarray(dataset.x_test), y_test=y_test, num_classes=C, class_order=order,
        tasks=tuple(tasks), mean=tuple(dataset.mean), std=tuple(dataset.std), domain=domain,
        domain_params=domain_params)


def scenario_from_config(dataset, cfg) -> Scenario:
    """``make_scenario`` from a ``config.scenario`` ConfigDict."""
    order = cfg.get("class_order", "fixed")
    return make_scenario(
        dataset, cfg.kind, init_cls=cfg.get("init_cls", 0), increment=cfg.get("increment", 2),
        num_tasks=cfg.get("num_tasks", 0), class_order=order if isinstance(order, str) else tuple(order),
        class_order_seed=cfg.get("class_order_seed", 1993), domain=cfg.get("domain", None) or None,
        domain_seed=cfg.get("domain_seed", 0), rotation_step=cfg.get("rotation_step", 15.0),
        train_fraction=cfg.get("train_fraction", 1.0))
