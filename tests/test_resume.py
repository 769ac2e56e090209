"""Mid-task checkpoints: a run stopped by SIGTERM or killed with SIGKILL in the
middle of a task resumes to exactly the results of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from clj.train import Runner
from conftest import ROOT, small_config


def _cfg(every_minutes=0.0, asynchronous=True):
    c = small_config("derpp", **{"loop.steps_per_call": 5})
    c.checkpoint = ml_collections.ConfigDict({"every_minutes": every_minutes, "asynchronous": asynchronous})
    return c


def _interrupt_at(r: Runner, call: int, action):
    """Wraps r's chunk so that ``action()`` runs right after its ``call``-th call."""
    fn = r._chunk_fn()
    n = [0]

    def wrapped(*a):
        out = fn(*a)
        n[0] += 1
        if n[0] == call:
            action()
        return out

    r._chunk = wrapped


@pytest.mark.parametrize("asynchronous", [True, False], ids=["async", "sync"])
def test_sigterm_mid_task_saves_and_resumes_bit_identical(tmp_path, asynchronous):
    full = Runner(_cfg(), str(tmp_path / "full")).run()
    wd = str(tmp_path / "term")
    r = Runner(_cfg(asynchronous=asynchronous), wd)
    assert r.plans[1].steps > 2 * r.K  # call 7 lands inside task 1 (5 chunks per task)
    _interrupt_at(r, 7, lambda: setattr(r, "_signal", signal.SIGTERM))
    out = r.run()
    assert out["interrupted"] == "SIGTERM" and out["checkpoint_step"] > 0, out
    meta = [json.loads(ln) for ln in open(os.path.join(wd, "metrics.jsonl"))]
    assert any(m.get("event") == "checkpoint" and m["task"] == 1 for m in meta)
    resumed = Runner(_cfg(asynchronous=asynchronous), wd).run()
    for k in ("class_il", "task_il"):
        np.testing.assert_array_equal(resumed["accuracy_matrix"][k], full["accuracy_matrix"][k])
    assert resumed["steps"] == full["steps"]


@pytest.mark.parametrize("asynchronous", [True, False], ids=["async", "sync"])
def test_kill_9_mid_task_resumes_bit_identical(tmp_path, asynchronous):
    """A child writes a mid-task checkpoint after every chunk and SIGKILLs
    itself in task 2 (asynchronous: while orbax's thread may still be writing
    the last one); the rerun resumes mid-task and ends as the uninterrupted run."""
    wd = str(tmp_path / "killed")
    code = f"""
import os, signal, sys
sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]
from test_resume import _cfg, _interrupt_at
from clj.train import Runner
r = Runner(_cfg(every_minutes=1e-9, asynchronous={asynchronous!r}), {wd!r})
_interrupt_at(r, 13, lambda: os.kill(os.getpid(), signal.SIGKILL))
r.run()
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert not os.path.exists(os.path.join(wd, "results.json"))
    full = Runner(_cfg(), str(tmp_path / "full")).run()
    resumed = Runner(_cfg(every_minutes=1e-9, asynchronous=asynchronous), wd).run()
    for k in ("class_il", "task_il"):
        np.testing.assert_array_equal(resumed["accuracy_matrix"][k], full["accuracy_matrix"][k])
    assert resumed["steps"] == full["steps"]
