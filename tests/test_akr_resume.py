"""AKR (a method whose ``begin_task`` sets static task info) stopped by SIGTERM in
the middle of a phase must resume and go on training: the resumed steps have a
non-zero loss and herding fills the memory at the phase's end.

The loop restores a mid-task checkpoint into ``init_state()``'s structure; a
method that declares ``static_task_info`` keeps some of the task's statics (AKR:
its phase, ``static.phase``: task 0 or later, the exemplar rows of a step) in
static fields, which a checkpoint does not hold, so the loop rebuilds them with
``begin_task`` and keeps the checkpoint's arrays (the task's counts, ``State.tc``).  Without that the resumed steps trained with
loss 0 and ``end_task`` failed in herding (quota 0).
"""
import json
import os
import signal


from clj.train import Runner
from test_akr import tiny_config


def _cfg():
    c = tiny_config("attentive")
    c.train.epochs = 2  # 4 steps per phase
    c.loop.steps_per_call = 1
    c.progress = False
    c.plots = False
    return c


def test_akr_sigterm_mid_phase_resumes_and_trains(tmp_path):
    wd = str(tmp_path / "term")
    r = Runner(_cfg(), wd)
    fn, n = r._chunk_fn(), [0]

    def wrapped(*a):  # SIGTERM right after the 6th call: step 2 of phase 1's 4
        out = fn(*a)
        n[0] += 1
        if n[0] == 6:
            r._signal = signal.SIGTERM
        return out

    r._chunk = wrapped
    out = r.run()
    assert out["interrupted"] == "SIGTERM", out
    logged = sum(1 for _ in open(os.path.join(wd, "metrics.jsonl")))
    resumed = Runner(_cfg(), wd).run()  # the uninterrupted run is test_resume's contract (derpp)
    after = [json.loads(ln) for ln in open(os.path.join(wd, "metrics.jsonl"))][logged:]
    losses = [m["loss"] for m in after if m.get("event") == "chunk" and m["task"] == 1]
    assert len(losses) == 2 and all(v > 0 for v in losses), losses  # the resumed phase-1 steps train
    assert resumed["extra"]["exemplars"] == 4  # floor(6 / 4) per class x 4 classes: herding ran
