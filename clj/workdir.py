"""A workdir belongs to one config and one running process.

* **Identity**: the workdir stores the resolved config's result-affecting
  fields and their fingerprint (``identity.json``).  A run resumes only when
  its config has the same fields; otherwise :func:`prepare` stops before any
  work, naming the fields that differ and the two ways out (a new
  ``--workdir``, or ``--config.resume=False`` to start over).  Fields that do
  not change results (``NON_RESULT_FIELDS``: progress bars, plots, where the
  output or the compilation cache go, resume itself) are left out.
* **One run at a time**: :func:`prepare` takes an OS file lock
  (``fcntl.flock`` on ``<workdir>/.lock``), released by the kernel when the
  process dies, however it dies; a second process stops at once with the
  holder's pid.
* **Damage**: an ``identity.json`` that cannot be read (truncated, not JSON,
  not an identity) is refused like another config's run: the run cannot know
  whose checkpoints these are.  ``--config.resume=False`` starts over in the
  workdir (its identity is rewritten); a new ``--workdir`` leaves it alone.
  A file where the workdir needs a folder (``checkpoints``) is refused before
  anything is written; :func:`os_error_line` puts any other file-system
  fault (read-only, full disk, no permission) in one line.

This module imports neither JAX nor numpy: the checks run before any heavy
import.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import os

from clj.errors import ConfigError

IDENTITY_FILE = "identity.json"
LOCK_FILE = ".lock"

# Dotted fields (or whole blocks) that do not change a run's results.
NON_RESULT_FIELDS = ("progress", "plots", "workdir", "resume", "stop_after_task", "data_dir",
                     "loop.compilation_cache", "loop.cache_dir", "loop.profile", "loop.profile_chunks", "loop.seed_batching", "checkpoint",
                     "tracking", "data.placement", "data.threads", "data.prefetch", "data.eval_group")


# Result fields added after runs existed, with the default that reproduces the earlier
# behaviour: at that default they are left out of the identity, so a workdir written
# before the field existed still resumes and default workdir names stay the same.
LATER_FIELDS = {"loop.eval_tasks": "all",
                # the augment fields of the ImageNet transforms (clj.config.AUGMENT_DEFAULTS)
                "augment.preset": "", "augment.resized_crop": 0, "augment.crop_scale": [0.08, 1.0],
                "augment.crop_ratio": [0.75, 4.0 / 3.0], "augment.brightness": 0.0, "augment.eval_resize": 0,
                "augment.eval_crop": 0, "augment.normalization": "dataset"}


class WorkdirError(ConfigError):
    """A workdir that cannot take this run (a file, another config's run)."""


class WorkdirBusy(WorkdirError):
    """Another live process holds the workdir's lock."""


class WorkdirDamaged(WorkdirError):
    """The workdir's ``identity.json`` (or legacy ``config.json``) cannot be read."""


def _excluded(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in NON_RESULT_FIELDS)


def _plain(v):
    # JSON-comparable form: tuples -> lists, ConfigDicts -> dicts
    return json.loads(json.dumps(v, sort_keys=True, default=lambda o: o.to_dict() if hasattr(o, "to_dict")
                                 else str(o)))


def result_fields(config) -> dict:
    """``{dotted field: JSON value}`` of every leaf of ``config`` that can
    change results (all but ``NON_RESULT_FIELDS``, and ``LATER_FIELDS`` at
    their defaults)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    out = {}

    def walk(node, prefix):
        for k in sorted(node):
            key = f"{prefix}{k}"
            if _excluded(key):
                continue
            if isinstance(node[k], dict):
                walk(node[k], key + ".")
            else:
                out[key] = _plain(node[k])

    walk(d, "")
    for k, default in LATER_FIELDS.items():
        if k in out and out[k] == default:
            del out[k]
    return out


def fingerprint(config) -> str:
    """SHA-256 (hex) of :func:`result_fields` as canonical JSON."""
    blob = json.dumps(result_fields(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def default_workdir(config, root: str = "runs") -> str:
    """``runs/<method>_<dataset>_seed<seed>_<8 hex of the fingerprint>``: two
    configs that differ in any result-affecting field (a ``--config.*``
    override included) never share a default workdir."""
    return os.path.join(root, f"{config.method}_{config.dataset}_seed{config.seed}_{fingerprint(config)[:8]}")


def differences(old: dict, new: dict) -> list[str]:
    """``"field: old -> new"`` for every field that differs (a field on one
    side only shows ``<absent>``)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


@dataclasses.dataclass
class Handle:
    """A prepared workdir: holds its lock until :meth:`release` or process exit.

    Attributes:
      path: absolute workdir path.
      fingerprint: the config's fingerprint, stored in ``identity.json``.
      fresh: True when the workdir had no identity (a new run).
    """

    path: str
    fingerprint: str
    fresh: bool
    _fd: int | None = None

    def release(self) -> None:
        """Drops the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if _HELD.get(self.path) is self:
                del _HELD[self.path]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# workdir path -> the Handle this process holds on it.  ``flock`` locks belong
# to an open file, so a second ``prepare`` of a workdir this process already
# holds would refuse itself; :func:`hold` reuses the held handle instead.
_HELD: dict[str, Handle] = {}


def _read_holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


def lock(workdir: str) -> int:
    """Takes the workdir's exclusive lock (non-blocking); returns its fd.

    Raises:
      WorkdirBusy: another process holds it (message names its pid).
    """
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise WorkdirBusy(f"workdir {workdir} is in use by another run (pid {_read_holder(path)}); wait for "
                              "it to end or choose another --workdir.") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    os.fsync(fd)
    return fd


def _stored_fields(workdir: str) -> tuple[dict | None, bool]:
    """(stored result fields or None, whether they came from identity.json).

    A workdir written before identity files existed is judged by its
    ``config.json`` when it holds checkpoints."""
    p = os.path.join(workdir, IDENTITY_FILE)
    if os.path.isfile(p):
        stored = _read_json(p, workdir)
        if not isinstance(stored, dict) or not isinstance(stored.get("fields"), dict):
            raise _damaged(workdir, p, "no 'fields' entry")
        return stored["fields"], True
    legacy = os.path.join(workdir, "config.json")
    if os.path.isfile(legacy) and os.path.isdir(os.path.join(workdir, "checkpoints")):
        cfg = _read_json(legacy, workdir)
        if not isinstance(cfg, dict):
            raise _damaged(workdir, legacy, "not a config")
        return result_fields(cfg), False
    return None, False


def _damaged(workdir: str, path: str, why: str) -> WorkdirDamaged:
    return WorkdirDamaged(f"workdir {workdir}: {path} is damaged ({why}), so which config's run this is cannot be "
                          "told; use another --workdir, or --config.resume=False to start over in this one (its "
                          "checkpoints are deleted).")


def _read_json(path: str, workdir: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: truncated or overwritten
        raise _damaged(workdir, path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def write_identity(workdir: str, config) -> str:
    """Writes ``identity.json`` atomically; returns the fingerprint."""
    fp = fingerprint(config)
    tmp = os.path.join(workdir, IDENTITY_FILE + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"fingerprint": fp, "fields": result_fields(config)}, f, indent=1, sort_keys=True)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, tmp) from None  # a failed write or close names no file: name it
    os.replace(tmp, os.path.join(workdir, IDENTITY_FILE))
    return fp


def check_path(workdir: str) -> str:
    """The absolute workdir path, refused when it cannot be a folder.

    Raises:
      WorkdirError: the path (or a parent) is a file.
    """
    path = os.path.abspath(workdir)
    p = path
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    if os.path.exists(p) and not os.path.isdir(p):
        what = "is a file" if p == path else f"is inside {p}, which is a file"
        raise WorkdirError(f"workdir {path} {what}; give a folder with --workdir=<dir>.")
    _check_layout(path)
    return path


# What a workdir holds as folders and as files (a wrong kind is refused before writing).
WORKDIR_FOLDERS = ("checkpoints",)
WORKDIR_FILES = (IDENTITY_FILE, LOCK_FILE)


def _check_layout(path: str) -> None:
    for name in WORKDIR_FOLDERS:
        p = os.path.join(path, name)
        if os.path.exists(p) and not os.path.isdir(p):
            raise WorkdirError(f"workdir {path}: {p} is a file where a folder should be; move it away, or choose "
                               "another --workdir.")
    for name in WORKDIR_FILES:
        p = os.path.join(path, name)
        if os.path.isdir(p):
            raise WorkdirError(f"workdir {path}: {p} is a folder where a file should be; move it away, or choose "
                               "another --workdir.")


# errno values that are faults of the file system even when the error names no file
FILE_FAULTS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
               errno.EEXIST, errno.ENOENT, errno.EIO)


def is_file_fault(e: BaseException) -> bool:
    """Whether ``e`` is a file-system fault (an ``OSError`` naming a file or
    with a file-system errno), not e.g. a refused network connection."""
    if not isinstance(e, OSError) or isinstance(e, (ConnectionError, TimeoutError)):
        return False
    return e.filename not in (None, "") or e.errno in FILE_FAULTS


def os_error_line(e: OSError, workdir: str | None = None) -> str:
    """One line for a file-system fault: the path, the cause and what to do
    (read-only or unwritable workdir, full disk, a file where a folder should
    be, ...).  ``workdir``: the run's folder, named in the advice when the
    path is in it (or above it)."""
    path = e.filename if e.filename not in (None, "") else None
    where = str(path) if path is not None else \
        (f"a file of the run (workdir {os.path.abspath(workdir)})" if workdir else "a file of the run")
    code = errno.errorcode.get(e.errno or 0, type(e).__name__)
    in_workdir = False
    if path is not None and workdir:
        a, w = os.path.abspath(os.fsdecode(path)), os.path.abspath(workdir)
        in_workdir = a == w or a.startswith(w + os.sep) or w.startswith(a + os.sep)
    other = "choose another --workdir" if in_workdir else "fix that path"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {where} ({code}); " + \
            ("choose a --workdir this user may write to, or change its permissions." if in_workdir else
             "change its permissions, or run as a user who may use it.")
    if e.errno == errno.EROFS:
        return f"cannot write {where}: the file system is read-only ({code}); " + \
            ("choose a --workdir on a writable file system." if in_workdir else "make it writable.")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {where}: no space left on the device ({code}); free some space and rerun the same " \
               "command (a run resumes from its last checkpoint), or choose a --workdir on another disk."
    if e.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(e, (NotADirectoryError, FileExistsError)):
        return f"cannot use {where}: a file stands where a folder should be ({code}); move it away, or {other}."
    if e.errno == errno.EISDIR or isinstance(e, IsADirectoryError):
        return f"cannot write {where}: it is a folder where a file should be ({code}); move it away, or {other}."
    reason = e.strerror or str(e) or type(e).__name__
    return f"{where}: {reason} ({code}); check that path and the disk, then rerun the same command."


def _check_identity(path: str, config) -> bool:
    """Raises WorkdirError when ``path`` holds another config's run (or a
    damaged identity) and the config asks to resume; returns whether the
    workdir has no identity yet."""
    try:
        stored, exact = _stored_fields(path)
    except WorkdirDamaged:
        if config.resume:
            raise
        return False  # resume=False: the run starts over and rewrites the identity
    if stored is None:
        return True
    if config.resume:
        new = result_fields(config)
        if not exact:  # legacy config.json: judge the fields both know
            common = set(stored) & set(new)
            stored, new = {k: stored[k] for k in common}, {k: new[k] for k in common}
        diff = differences(stored, new)
        if diff:
            shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
            raise WorkdirError(f"workdir {path} holds a run of a different config ({shown}); use a new "
                               "--workdir, or --config.resume=False to start over in this one.")
    return False


def check(workdir: str, config) -> str:
    """The checks of :func:`prepare` without writing anything (no folder, no
    lock file): path, busy, identity.  Returns the absolute path.

    Raises:
      WorkdirError, WorkdirBusy: as :func:`prepare`.
    """
    path = check_path(workdir)
    if not os.path.isdir(path):
        return path
    lock_path = os.path.join(path, LOCK_FILE)
    if os.path.exists(lock_path):
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirBusy(f"workdir {path} is in use by another run (pid {_read_holder(lock_path)}); "
                                  "wait for it to end or choose another --workdir.") from None
            raise
        finally:
            os.close(fd)
    _check_identity(path, config)
    return path


def prepare(workdir: str, config) -> Handle:
    """Makes ``workdir`` this run's: checks the path, takes the lock, checks
    the identity (``config.resume=True``) or takes the workdir over
    (``config.resume=False``: the caller then starts over), writes
    ``identity.json``.  Call after :func:`clj.config.validate` and before
    building anything; keep the handle until the run ends.

    Raises:
      WorkdirError: the path is a file, or holds a file where a folder should
        be; the workdir belongs to a different config (naming the fields that
        differ and the two ways out).
      WorkdirDamaged: its identity cannot be read and the config resumes.
      WorkdirBusy: another process runs in it (naming its pid).
      OSError: the folder cannot be written (:func:`os_error_line` says it
        in one line).
    """
    path = check_path(workdir)
    os.makedirs(path, exist_ok=True)
    fd = lock(path)
    try:
        fresh = _check_identity(path, config)
        fp = write_identity(path, config)
    except BaseException:
        os.close(fd)
        raise
    handle = Handle(path=path, fingerprint=fp, fresh=fresh, _fd=fd)
    _HELD[path] = handle
    return handle


class hold:
    """Context manager: ``workdir`` is this run's for the ``with`` body.

    When this process already holds the workdir (the command line prepared it
    before loading data), the held handle is used as is; otherwise
    :func:`prepare` runs (path, lock, identity) and the lock is released at
    exit.  :class:`clj.train.Runner` enters it, so every way of starting a run
    (``launch.py``, ``clj.train.run``, ``experiments/*.py``, sweeps) gets the
    same one-run-per-workdir and same-config-to-resume guarantees.

    Raises:
      WorkdirError, WorkdirBusy: as :func:`prepare`, on entry.
    """

    def __init__(self, workdir: str, config):
        self.path, self.config = os.path.abspath(workdir), config
        self._own: Handle | None = None

    def __enter__(self) -> Handle:
        held = _HELD.get(self.path)
        if held is not None:
            return held
        self._own = prepare(self.path, self.config)
        return self._own

    def __exit__(self, *exc):
        if self._own is not None:
            self._own.release()
            self._own = None
        return False
