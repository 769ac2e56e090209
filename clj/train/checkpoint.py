"""Checkpoints of the whole run: the State pytree plus the loop's progress.

Written with orbax's ``CheckpointManager`` (after every task, and wherever
the loop asks: a checkpoint's step is any increasing integer and its
metadata any JSON dict, so mid-task checkpoints use the same calls); orbax writes
each step into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoint intact (atomic).  The State is
saved as its state dict of global ``jax.Array``s (``flax.serialization.to_state_dict``: arrays only;
the static fields -- model, optimizer spec, hyperparameters -- are rebuilt
from the config) and restored into a freshly initialised State of the same
structure.

Integrity: every checkpoint carries SHA-256 digests of its arrays (each
leaf's dtype, shape and host bytes, taken from the global array) and of its
metadata, saved as a third item (``digests``) in the same atomic commit.  A
checkpoint is used only when the restored arrays and metadata match them;
one that does not (garbled bytes, an edited value, a deleted ``digests``
item) is handled like an unreadable one: reported in one line, moved to
``<directory>_unreadable/<step>``, and the previous one is tried.  A
checkpoint written before digests existed (orbax's metadata of the step
lists no ``digests`` item) is restored unverified, with one line saying so.
With several processes the digests are of the global arrays (each leaf
gathered to every process's host in turn, so host memory holds one leaf at
a time), every process reaches the same verdict, and process 0 alone moves
folders.

Asynchronous saves (``asynchronous=True``, the loop's default, as orbax's and
MaxText's): :meth:`Checkpointer.save` returns once orbax holds a host copy of
the arrays and its digests are taken; the files are written by orbax's
background thread while training goes on.  A save is finished (waited for)
before the next save, before any read of the directory (:meth:`latest`,
:meth:`steps`, :meth:`restore`, :meth:`restore_latest`), by :meth:`wait`, and
by :meth:`close`; a write fault of the background thread is raised there, as
the same :class:`CheckpointWriteError` a synchronous save raises.  Still
atomic: the step's folder is renamed into place only once complete, so a
process killed mid-write resumes from the previous checkpoint.

Write faults (full disk, quota, read-only file system, no permission) raise
one :class:`CheckpointWriteError` with a one-line message; orbax's own error
logs of that save are held back, and its temporary folder is removed.
Temporary folders left by a process killed mid-write
(``<step>.orbax-checkpoint-tmp*``) are removed when a :class:`Checkpointer`
opens the directory (process 0 alone).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

DIGESTS_ITEM = "digests"
"""The checkpoint item holding the digests (``<step>/digests``)."""
TMP_MARK = ".orbax-checkpoint-tmp"
"""What orbax puts in the name of a folder it has not finished writing."""


def _none_to_empty(tree):
    # orbax stores neither None leaves nor zero-size arrays: encode both as an
    # empty dict; restore takes them from the target (they hold no data).
    if tree is None:
        return {}
    if isinstance(tree, dict):
        return {k: _none_to_empty(v) for k, v in tree.items()}
    if getattr(tree, "size", 1) == 0:
        return {}
    return tree


class CheckpointError(RuntimeError):
    """A checkpoint fault, its message one line saying what to do; raised as
    such when no checkpoint of the workdir can be read."""


class CheckpointDigestError(CheckpointError):
    """A checkpoint whose arrays or metadata differ from its digests, or whose
    digests are missing.  ``str()`` names the checkpoint and ``reason``;
    ``reason`` alone says what differs (the first array, or the metadata)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"checkpoint {path} does not match its digests ({reason})")
        self.path, self.reason = path, reason

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written: full disk or quota (``ENOSPC``,
    ``EDQUOT``), read-only file system (``EROFS``), no permission (``EACCES``,
    ``EPERM``).  An ``OSError`` with that ``errno`` and ``filename`` (the
    checkpoint directory); ``str()`` is one line naming the path and what to
    do."""

    def __init__(self, path: str, err: int, message: str):
        OSError.__init__(self, err, message)
        self.filename = path
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # pickled with its own arguments (sweep workers send it back)
        return type(self), (self.filename, self.errno, self.message)


# errno -> what to do; a save failing for another cause keeps its own exception
_WRITE_ADVICE = {
    errno.ENOSPC: "free space under {d} or choose another --workdir",
    errno.EDQUOT: "free space (or raise the quota) under {d} or choose another --workdir",
    errno.EROFS: "{d} is on a read-only file system; choose another --workdir",
    errno.EACCES: "give this user write access to {d} or choose another --workdir",
    errno.EPERM: "give this user write access to {d} or choose another --workdir",
}
_ERRNO_TEXT = (("No space left on device", errno.ENOSPC), ("Disk quota exceeded", errno.EDQUOT),
               ("Read-only file system", errno.EROFS), ("Permission denied", errno.EACCES),
               ("Operation not permitted", errno.EPERM))


def _errno_of(e: BaseException) -> int | None:
    """The errno behind an exception of a save: an ``OSError``'s own, the code
    tensorstore puts in its message (``[os_error_code='28']``), or the C
    library's text; searched along the exception's causes."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return int(e.errno)
        text = str(e)
        m = re.search(r"os_error_code='?(\d+)", text)
        if m:
            return int(m.group(1))
        for needle, code in _ERRNO_TEXT:
            if needle in text:
                return code
        e = e.__cause__ or e.__context__
    return None


def _write_error(e: BaseException, step: int | None, directory: str) -> CheckpointWriteError | None:
    """The :class:`CheckpointWriteError` of a write fault, or None (another cause)."""
    code = _errno_of(e)
    if code not in _WRITE_ADVICE:
        return None
    what = f"checkpoint {step}" if step is not None else "checkpoints"
    return CheckpointWriteError(directory, code, f"cannot write {what} under {directory}: {os.strerror(code)} "
                                f"({errno.errorcode.get(code, code)}); {_WRITE_ADVICE[code].format(d=directory)}.")


class _HoldOrbaxErrors(logging.Filter):
    """Drops orbax's ERROR records (its worker threads log each failure with a
    traceback) while a save or restore runs; the failure itself is raised once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in (record.pathname or ""))


_LOGGERS = ("absl", None)  # the loggers orbax's threads write through (None: the root)


def _hold_orbax_errors() -> _HoldOrbaxErrors:
    f = _HoldOrbaxErrors()
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(f)
    return f


def _release_orbax_errors(f: _HoldOrbaxErrors) -> None:
    for name in _LOGGERS:
        logging.getLogger(name).removeFilter(f)


@contextlib.contextmanager
def _quiet_orbax():
    f = _hold_orbax_errors()
    try:
        yield
    finally:
        _release_orbax_errors(f)


def _canonical(meta) -> bytes:
    # as it reads back from JSON (int keys become strings, tuples lists), keys sorted
    return json.dumps(json.loads(json.dumps(meta)), sort_keys=True, separators=(",", ":")).encode()


def _array_digest(leaf) -> str:
    """``"<dtype> <shape> <sha256 hex>"`` of one leaf's global value."""
    from clj.train import distributed as dist

    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    a = np.asarray(dist.to_host(leaf))
    h = hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)
    return f"{a.dtype.name} {list(a.shape)} {h.hexdigest()}"


def compute_digests(state_dict, metadata: dict) -> dict:
    """The digests of a checkpoint: ``{"format": 1, "arrays": {leaf path:
    "<dtype> <shape> <sha256 hex>"}, "meta": sha256 hex of the metadata as
    canonical JSON}``.

    Args:
      state_dict: the saved tree (nested dicts of arrays of any shape and
        dtype, e.g. ``float32 [seeds, ...]`` stacked over seeds).  Each leaf
        is hashed as its global value, gathered across processes one leaf at
        a time: with several processes every process must call this.
      metadata: the JSON-serialisable metadata dict.

    Raises:
      TypeError: metadata that is not JSON-serialisable.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(state_dict)
    return {"format": 1, "arrays": {jax.tree_util.keystr(p): _array_digest(x) for p, x in flat},
            "meta": hashlib.sha256(_canonical(metadata)).hexdigest()}


def _first_difference(saved, now: dict) -> str | None:
    """Where ``now`` (recomputed) differs from ``saved`` (the checkpoint's), or None."""
    if not isinstance(saved, dict) or not isinstance(saved.get("arrays"), dict):
        return "its digests are not a digest record"
    a, b = saved["arrays"], now["arrays"]
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            return f"array {k} is {'not in the digests' if k not in a else 'missing'}"
        if a[k] != b[k]:
            return f"array {k} differs from its digest"
    if saved.get("meta") != now["meta"]:
        return "the metadata differs from its digest"
    return None


def _all_agree(ok: bool) -> bool:
    """Whether every process has ``ok`` (a collective with several processes)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.min(multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


class Checkpointer:
    """Saves and restores (State, metadata dict) under integer steps in ``directory``.

    A step is any non-negative integer that grows with the run (the loop's
    completed-task count, or a global step count for mid-task checkpoints);
    ``max_to_keep`` newest checkpoints are kept, older ones deleted after each
    save.  Every checkpoint carries digests of its arrays and metadata (see
    the module doc); unreadable checkpoints, and those that do not match
    their digests, are skipped by :meth:`restore_latest` and moved to
    ``<directory>_unreadable/<step>``.  Opening the directory removes the
    temporary folders a killed save left (process 0; their names are in
    :attr:`removed_leftovers`).

    Args:
      directory: where the steps' folders go (created when missing).
      max_to_keep: newest checkpoints kept, >= 1.
      asynchronous: whether :meth:`save` returns before the files are
        written (see the module doc); False blocks until they are.

    Raises (constructor):
      ValueError: ``max_to_keep`` < 1.
      CheckpointWriteError: the directory cannot be created (no space, read-only, no permission).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, asynchronous: bool = False):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep} is invalid: it must be >= 1.")
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        self.asynchronous = bool(asynchronous)
        self._pending: int | None = None  # the step of an asynchronous save not yet waited for
        self._held = None  # the log filter holding orbax's error records while it is written
        # Only process 0 deletes: the others never look at temporary folders, and process 0
        # is done here before any save of this run can create a new one.
        self.removed_leftovers = self._remove_leftovers() if jax.process_index() == 0 else []
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                            enable_async_checkpointing=self.asynchronous)
        try:
            with _quiet_orbax():
                self.manager = ocp.CheckpointManager(self.directory, options=opts)
        except Exception as e:  # noqa: BLE001 - a write fault becomes one line, anything else stays as is
            err = _write_error(e, None, self.directory)
            if err is None:
                raise
            raise err from None

    def _remove_leftovers(self, step: int | None = None) -> list[str]:
        """Deletes orbax's unfinished folders in the directory (those of ``step``
        alone when given); returns their names."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:  # no directory yet (or unreadable: orbax reports that itself)
            return []
        gone = []
        for name in names:
            if TMP_MARK not in name or (step is not None and name.split(".", 1)[0] != str(step)):
                continue
            path = os.path.join(self.directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
            gone.append(name)
        return gone

    def wait(self) -> None:
        """Blocks until an asynchronous save is written (nothing to do when
        none is pending or saves are synchronous).

        Raises:
          CheckpointWriteError: the background write met a write fault (its
            temporary folder is removed; older checkpoints are intact).
          Exception: any other failure of the background write, as orbax raised it.
        """
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            with _quiet_orbax():
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise ValueError for an OS error
            self._failed(e, step)
        finally:
            if self._held is not None:
                _release_orbax_errors(self._held)
                self._held = None

    def _failed(self, e: BaseException, step: int):
        """Raises the CheckpointWriteError of ``e`` (after removing the step's
        temporary folder), or ``e`` itself when it is no write fault."""
        err = _write_error(e, step, self.directory)
        if err is None:
            raise e
        if jax.process_index() == 0:
            self._remove_leftovers(step)  # frees the space the partial write took
        raise err from None

    def close(self) -> None:
        """Finishes a pending asynchronous save, then releases orbax's
        resources (the manager's threads).

        Raises:
          CheckpointWriteError: the pending save met a write fault (the
            resources are released all the same).
        """
        try:
            self.wait()
        finally:
            with _quiet_orbax():
                self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def latest(self) -> int | None:
        """The newest step with a (complete) checkpoint, or None (waits for a
        pending asynchronous save first)."""
        self.wait()
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Every step with a complete checkpoint, ascending (waits for a
        pending asynchronous save first)."""
        self.wait()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, metadata: dict) -> None:
        """Writes the checkpoint of ``step`` with its digests (atomic: a
        process killed mid-write leaves the older checkpoints intact, and its
        temporary folder is removed at the next open).  Synchronous saves
        return once the files are written; asynchronous ones once orbax holds
        the arrays' host copy (the previous pending save is waited for first,
        and its fault raised here).

        Args:
          step: int >= 0, larger than every saved step.
          state: the State pytree of global ``jax.Array``s (with several
            processes, each writes its own shards; every process must call
            this: the digests gather each array).
          metadata: any JSON-serialisable dict (the loop's progress: completed
            tasks, in-task step, metric rows, ...).

        Raises:
          ValueError: ``step`` not larger than the newest saved step.
          CheckpointWriteError: a write fault (full disk, quota, read-only,
            no permission) of this save, or of the pending asynchronous one;
            one line naming the directory, the step and what to do.  The
            failed save's temporary folder is removed; the older checkpoints
            are intact.
        """
        last = self.latest()
        if last is not None and step <= last:
            raise ValueError(f"checkpoint step={step} is invalid: it must be > the newest saved step {last}.")
        sd = _none_to_empty(serialization.to_state_dict(state))
        # a copy: an asynchronous save writes the JSON later, and the caller goes on changing its dict
        metadata = json.loads(json.dumps(metadata))
        record = compute_digests(sd, metadata)
        held = _hold_orbax_errors()  # released when the write is finished (at once, or in wait())
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(sd), meta=ocp.args.JsonSave(metadata),
                **{DIGESTS_ITEM: ocp.args.JsonSave(record)}))
            if not self.asynchronous:
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise ValueError for an OS error
            _release_orbax_errors(held)
            self._failed(e, step)
        if self.asynchronous:
            self._pending, self._held = step, held
        else:
            _release_orbax_errors(held)

    def restore(self, target_state, task: int | None = None):
        """Restores step ``task`` (default: the newest) into the structure of
        ``target_state`` and checks it against its digests; returns
        ``(state, metadata)``.  No fallback: see :meth:`restore_latest`.

        Raises:
          FileNotFoundError: no checkpoint at all.
          CheckpointDigestError: the arrays or metadata differ from the
            digests, or the digests are missing.
          Exception: whatever orbax raises for an unreadable checkpoint.
        """
        self.wait()
        task = self.latest() if task is None else task
        if task is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        state, meta, read = self._read(target_state, task)
        self._verify(task, state, meta, read)
        return state, meta

    def _has_digests(self, step: int) -> bool:
        """Whether the checkpoint carries digests.

        Raises:
          CheckpointDigestError: it was written with digests (orbax's metadata
            of the step names the item, or cannot be read) and they are gone.
        """
        d = os.path.join(self.directory, str(step))
        if os.path.isdir(os.path.join(d, DIGESTS_ITEM)):
            return True
        try:
            with open(os.path.join(d, "_CHECKPOINT_METADATA"), encoding="utf-8") as f:
                handlers = json.load(f).get("item_handlers") or {}
            listed = DIGESTS_ITEM in handlers
        except (OSError, ValueError, AttributeError, TypeError):
            listed = True  # no proof that it predates digests
        if listed:
            raise CheckpointDigestError(d, "its digests are missing")
        return False

    def _read(self, target_state, step: int):
        """``(state, metadata, (restored tree, digest record or None))`` of
        ``step``, unverified."""
        # restored into the target's shardings (each process reads its shards)
        target = _none_to_empty(serialization.to_state_dict(target_state))
        items = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        with_digests = self._has_digests(step)
        if with_digests:
            items[DIGESTS_ITEM] = ocp.args.JsonRestore()
        with _quiet_orbax():
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        record = out[DIGESTS_ITEM] if with_digests else None
        if with_digests and record is None:
            raise CheckpointDigestError(os.path.join(self.directory, str(step)), "its digests are missing")
        sd = _restore_nones(serialization.to_state_dict(target_state), out["state"])
        return serialization.from_state_dict(target_state, sd), out["meta"], (out["state"], record)

    def _verify(self, step: int, state, meta, read) -> None:
        """Raises CheckpointDigestError when the restored tree or metadata
        differ from the digests saved with them (nothing to check when the
        checkpoint predates digests: ``read[1] is None``)."""
        restored, record = read
        if record is None:
            return
        where = os.path.join(self.directory, str(step))
        try:
            now = compute_digests(restored, meta)
        except TypeError as e:  # metadata that is not JSON any more
            raise CheckpointDigestError(where, f"the metadata cannot be hashed: {e}") from None
        why = _first_difference(record, now)
        if why is not None:
            raise CheckpointDigestError(where, why)

    def restore_latest(self, target_state, log=None):
        """The newest *readable, verified* checkpoint: ``(step, state,
        metadata)``, or ``None`` when the directory holds no checkpoint.

        A checkpoint that fails to restore (truncated or missing file, wrong
        structure) or does not match its digests (garbled bytes, an edited
        metadata value, lost digests) is reported in one line through
        ``log`` (default: stderr), moved to ``<directory>_unreadable/<step>``
        (by process 0) so later saves of that step number succeed, and the
        previous one is tried.  With several processes every process must
        call this; a checkpoint is used only when every process read it.

        Raises:
          CheckpointError: checkpoints exist but none can be read.
        """
        log = log or (lambda msg: print(msg, file=sys.stderr))
        steps = self.steps()
        if not steps:
            return None
        bad = []
        for step in reversed(steps):
            where = os.path.join(self.directory, str(step))
            err, found = None, None
            try:
                found = self._read(target_state, step)
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a damaged file
                err = e
            if not _all_agree(err is None) and err is None:  # (a collective: every process gets here)
                err = CheckpointError("another process could not read it")
            if err is None:
                state, meta, read = found
                try:
                    self._verify(step, state, meta, read)
                except CheckpointDigestError as e:  # the same verdict on every process
                    err = e
            if err is None:
                if read[1] is None:
                    log(f"[clj] checkpoint {where} has no digests (written before they existed); "
                        "restored unverified.")
                self._quarantine(bad)
                return step, state, meta
            why = f"does not match its digests: {err.reason}" if isinstance(err, CheckpointDigestError) \
                else _one_line(err)
            log(f"[clj] checkpoint {where} is unreadable ({why}); moved to {self.directory}_unreadable, "
                "trying the previous one.")
            bad.append(step)
        self._quarantine(bad)
        raise CheckpointError(f"no readable checkpoint in {self.directory} (steps {', '.join(map(str, steps))} "
                              f"moved to {self.directory}_unreadable); start over with --config.resume=False "
                              "or use a new --workdir.")

    def _quarantine(self, steps) -> None:
        """Moves the checkpoints of ``steps`` to ``<directory>_unreadable/``
        (process 0; every process then waits for it and rereads the steps)."""
        if not steps:
            return
        if jax.process_index() == 0:
            dest = self.directory + "_unreadable"
            os.makedirs(dest, exist_ok=True)
            for step in steps:
                src = os.path.join(self.directory, str(step))
                if os.path.exists(src):
                    target = os.path.join(dest, str(step))
                    if os.path.exists(target):
                        shutil.rmtree(target)
                    shutil.move(src, target)
        from clj.train import distributed as dist

        dist.barrier("clj:checkpoint-quarantine")
        self.manager.reload()


def _restore_nones(template, restored):
    if template is None:
        return None
    if isinstance(template, dict):
        return {k: _restore_nones(v, restored[k]) for k, v in template.items()}
    if getattr(template, "size", 1) == 0:
        return template
    return restored
