"""Verified checkpoints: digests of the arrays and the metadata are checked on
restore (garbled bytes or an edited value fall back to the previous
checkpoint, and the finished run equals an uninterrupted one), a write fault
is one exception with a one-line message, and the temporary folders of an
unfinished save are removed at the next open."""
import errno
import glob
import json
import logging
import os

import numpy as np
import pytest

from clj.train import Runner
from clj.train.checkpoint import (DIGESTS_ITEM, TMP_MARK, CheckpointDigestError, CheckpointError,
                                  Checkpointer, CheckpointWriteError)
from conftest import small_config


def _cfg(**over):
    return small_config("er", **over)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return Runner(_cfg(), str(tmp_path_factory.mktemp("full") / "run")).run()


def _stopped_run(wd: str) -> list[int]:
    """A run stopped after task 2 (checkpoints after tasks 1 and 2); returns the steps."""
    assert Runner(_cfg(stop_after_task=2), wd).run() == {"stopped_after_task": 2}
    steps = sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())
    assert len(steps) == 2, steps
    return steps


def _resume(wd: str, capsys) -> tuple[list[str], dict]:
    """Resumes the run in ``wd``; returns (its printed lines, its results)."""
    capsys.readouterr()
    resumed = Runner(_cfg(), wd).run()
    return capsys.readouterr().out.splitlines(), resumed


def _same_as_uninterrupted(out: list[str], resumed: dict, full: dict, wd: str, why: str, bad_step: int) -> bool:
    """Whether the resumed run reported ``bad_step`` unreadable for ``why`` in one line, resumed after
    task 1, set the checkpoint aside and ended with the uninterrupted run's matrices and steps."""
    lines = [ln for ln in out if "is unreadable" in ln]
    return (len(lines) == 1 and f"checkpoints/{bad_step} is unreadable" in lines[0] and why in lines[0]
            and any("resumed from" in ln and "after task 1" in ln for ln in out)
            and all(np.array_equal(resumed["accuracy_matrix"][k], full["accuracy_matrix"][k])
                    for k in ("class_il", "task_il"))
            and resumed["steps"] == full["steps"]
            and os.path.isdir(os.path.join(wd, "checkpoints_unreadable", str(bad_step))))


def test_garbled_array_bytes_fall_back_to_the_previous_checkpoint(tmp_path, uninterrupted, capsys):
    wd = str(tmp_path / "run")
    steps = _stopped_run(wd)
    data = [f for f in glob.glob(os.path.join(wd, "checkpoints", str(steps[-1]), "state", "**", "d", "*"),
                                 recursive=True) if os.path.isfile(f)]
    big = max(data, key=os.path.getsize)  # the arrays' bytes (stored raw: orbax reads them back without error)
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) // 2)
        f.write(b"\xff" * 64)  # NaN float32s
    out, resumed = _resume(wd, capsys)
    assert _same_as_uninterrupted(out, resumed, uninterrupted, wd, "does not match its digests: array", steps[-1]), out


def test_edited_metadata_value_falls_back_to_the_previous_checkpoint(tmp_path, uninterrupted, capsys):
    wd = str(tmp_path / "run")
    steps = _stopped_run(wd)
    path = os.path.join(wd, "checkpoints", str(steps[-1]), "meta", "metadata")
    meta = json.load(open(path))
    meta["acc"]["class_il"][-1][0][0] = 0.999  # a plausible value: it would go into results.json as is
    json.dump(meta, open(path, "w"))
    out, resumed = _resume(wd, capsys)
    assert _same_as_uninterrupted(out, resumed, uninterrupted, wd, "the metadata differs from its digest", steps[-1]), out


# ------------------------------------------------------------ the Checkpointer alone (a small state)
def _state(v: float) -> dict:
    import jax.numpy as jnp

    return {"w": jnp.full((3, 4), v, jnp.float32), "seeds": jnp.arange(2 * 5, dtype=jnp.int32).reshape(2, 5) + int(v),
            "opt": None}


def _saved(d: str, steps=(1, 2), keep: int = 3, asynchronous: bool = False) -> Checkpointer:
    ck = Checkpointer(d, max_to_keep=keep, asynchronous=asynchronous)
    for s in steps:
        ck.save(s, _state(s), {"step": s})
    ck.wait()
    return ck


def test_lost_digests_fall_back_and_old_checkpoints_restore_unverified(tmp_path):
    import shutil

    import orbax.checkpoint as ocp
    from flax import serialization

    from clj.train.checkpoint import _none_to_empty

    d = str(tmp_path / "ck")
    _saved(d).close()
    shutil.rmtree(os.path.join(d, "2", DIGESTS_ITEM))
    logged = []
    with Checkpointer(d) as ck:
        with pytest.raises(CheckpointDigestError, match="digests are missing"):
            ck.restore(_state(0), 2)
        step, state, meta = ck.restore_latest(_state(0), log=logged.append)
    assert step == 1 and meta == {"step": 1} and len(logged) == 1 and "2 is unreadable" in logged[0]
    np.testing.assert_array_equal(state["w"], _state(1)["w"])

    # a checkpoint written before digests existed (two items only): restored, one line says unverified
    old = str(tmp_path / "old")
    mgr = ocp.CheckpointManager(old, options=ocp.CheckpointManagerOptions(create=True,
                                                                          enable_async_checkpointing=False))
    sd = _none_to_empty(serialization.to_state_dict(_state(7)))  # as the Checkpointer saved it before
    mgr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(sd), meta=ocp.args.JsonSave({"step": 7})))
    mgr.wait_until_finished()
    mgr.close()
    logged = []
    with Checkpointer(old) as ck:
        step, state, meta = ck.restore_latest(_state(0), log=logged.append)
    assert step == 7 and meta == {"step": 7} and len(logged) == 1 and "restored unverified" in logged[0]
    np.testing.assert_array_equal(state["seeds"], _state(7)["seeds"])


@pytest.mark.parametrize("code, advice", [(errno.ENOSPC, "free space under"), (errno.EROFS, "read-only"),
                                          (errno.EACCES, "write access")])
def test_write_fault_is_one_exception_with_one_line(tmp_path, monkeypatch, code, advice):
    d = str(tmp_path / "ck")
    ck = _saved(d, steps=(1,))

    def full_disk(step, *a, **k):  # the partial write orbax leaves, then the fault
        os.makedirs(os.path.join(d, f"{step}{TMP_MARK}", "state"))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ck.manager, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as e:
        ck.save(2, _state(2), {"step": 2})
    msg = str(e.value)
    assert isinstance(e.value, OSError) and isinstance(e.value, CheckpointError) and e.value.errno == code
    assert "\n" not in msg and msg.startswith(f"cannot write checkpoint 2 under {d}: ") and advice in msg, msg
    assert "--workdir" in msg and e.value.filename == d
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback
    assert not [n for n in os.listdir(d) if TMP_MARK in n]  # the failed save's space is freed
    monkeypatch.undo()
    assert ck.steps() == [1]
    ck.save(2, _state(2), {"step": 2})  # space freed: saving works again
    ck.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_fault_in_orbax_worker_thread_is_raised_once_without_log_spray(tmp_path, monkeypatch, capfd, caplog,
                                                                      asynchronous):
    """The write fails inside orbax's own worker thread (as a full disk does): one
    CheckpointWriteError, and orbax's error logs with their tracebacks held back.
    Asynchronous: the fault is raised when the save is waited for (here by
    ``wait``; the next save or ``close`` would raise it the same)."""
    from orbax.checkpoint._src.serialization import serialization as ocp_ser

    if not hasattr(ocp_ser, "async_serialize_from_host"):
        pytest.skip("this orbax version writes arrays elsewhere")

    async def enospc(*a, **k):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: Failed to write 377 bytes to file 9: "
                         "No space left on device [os_error_code='28']")

    d = str(tmp_path / "ck")
    ck = _saved(d, steps=(1,), asynchronous=asynchronous)
    monkeypatch.setattr(ocp_ser, "async_serialize_from_host", enospc)
    caplog.set_level(logging.INFO)
    capfd.readouterr()
    with pytest.raises(CheckpointWriteError, match="No space left on device") as e:
        ck.save(2, _state(2), {"step": 2})
        ck.wait()
    assert str(e.value).startswith(f"cannot write checkpoint 2 under {d}: "), str(e.value)
    ck.close()
    assert ck.steps() == [1]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "RESOURCE_EXHAUSTED" not in err, err[-2000:]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "orbax" in r.pathname]
    assert not [n for n in os.listdir(d) if TMP_MARK in n]


def test_leftover_temporary_folder_is_removed_at_the_next_open(tmp_path, monkeypatch):
    from orbax.checkpoint._src.serialization import serialization as ocp_ser

    d = str(tmp_path / "ck")
    ck = _saved(d, steps=(1,))

    async def crash(*a, **k):  # not a write fault: the save stops as a killed process would
        raise RuntimeError("stopped mid-write")

    monkeypatch.setattr(ocp_ser, "async_serialize_from_host", crash)
    with pytest.raises(RuntimeError, match="stopped mid-write"):
        ck.save(2, _state(2), {"step": 2})
    ck.close()
    monkeypatch.undo()
    left = [n for n in os.listdir(d) if TMP_MARK in n]
    assert left and all(n.startswith("2.") for n in left), os.listdir(d)
    os.makedirs(os.path.join(d, f"5{TMP_MARK}-1700000000", "state"))  # the timestamped form of other versions
    with Checkpointer(d) as ck2:
        assert sorted(ck2.removed_leftovers) == sorted(left + [f"5{TMP_MARK}-1700000000"])
        assert not [n for n in os.listdir(d) if TMP_MARK in n] and ck2.steps() == [1]
        ck2.save(2, _state(2), {"step": 2})
        assert ck2.restore(_state(0))[1] == {"step": 2}


def test_asynchronous_save_returns_before_the_write_and_reads_wait_for_it(tmp_path, monkeypatch):
    """An asynchronous save hands the write to orbax's thread: while it is held
    back the step is not on disk; ``steps()`` waits for it, and the checkpoint
    restores exactly (the saved metadata may be changed right after ``save``)."""
    import threading

    from orbax.checkpoint._src.serialization import serialization as ocp_ser

    if not hasattr(ocp_ser, "async_serialize_from_host"):
        pytest.skip("this orbax version writes arrays elsewhere")
    real, gate = ocp_ser.async_serialize_from_host, threading.Event()

    async def held(*a, **k):  # the write waits until the test opens the gate
        import asyncio

        while not gate.is_set():
            await asyncio.sleep(0.01)
        return await real(*a, **k)

    d = str(tmp_path / "ck")
    ck = _saved(d, steps=(1,), asynchronous=True)
    monkeypatch.setattr(ocp_ser, "async_serialize_from_host", held)
    meta = {"step": 2, "rows": [[0.5]]}
    ck.save(2, _state(2), meta)
    assert ck._pending == 2 and not os.path.isdir(os.path.join(d, "2"))  # returned before the write
    meta["rows"].append([0.7])  # the loop goes on changing its progress record
    gate.set()
    assert ck.steps() == [1, 2] and ck._pending is None
    restored, meta = ck.restore(_state(0))  # digests verified: what was saved, not what it became
    assert meta == {"step": 2, "rows": [[0.5]]}
    np.testing.assert_array_equal(restored["seeds"], _state(2)["seeds"])
    ck.close()
