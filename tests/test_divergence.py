"""A diverged run never reports numbers: the loop reads the chunk metrics it
already fetches, marks each run whose loss (or parameters) stopped being
finite, stops when every run diverged, writes results that say so, and the
command line exits non-zero; a sweep's table marks the point."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from clj.train import Runner
from clj.train.loop import _Progress, params_finite, summarize_diverged
from conftest import ROOT, small_config


def _cfg(**over):
    return small_config("derpp", **{"scenario.increment": 5, "model.hidden": (32,), **over})


def test_every_seed_diverged_stops_and_results_hold_no_numbers(tmp_path):
    wd = str(tmp_path / "run")
    out = Runner(_cfg(num_seeds=2, **{"optim.lr": 1e6}), wd).run()
    assert out["status"] == "diverged" and out["seeds"] == [] and "metrics" not in out
    assert [d["seed"] for d in out["diverged"]] == [0, 1]
    for s in (0, 1):
        res = json.load(open(os.path.join(wd, f"seed_{s}", "results.json")))
        assert res["status"] == "diverged" and res["diverged"]["task"] == 0 and res["diverged"]["cause"] == "loss"
        assert "metrics" not in res and "accuracy_matrix" not in res
    # training stopped in task 0: the second task never began
    ends = [json.loads(ln) for ln in open(os.path.join(wd, "metrics.jsonl"))]
    assert not any(e.get("event") == "task_end" for e in ends)


def test_grid_point_that_diverges_is_marked_and_the_other_finishes(tmp_path):
    from clj.sweep import run_sweep
    from clj.sweep.report import read_csv

    d = str(tmp_path / "sweep")
    run_sweep(_cfg(), {"optim.lr": [0.05, 1e6]}, d)
    rows = {r["optim.lr"]: r for r in read_csv(os.path.join(d, "sweep.csv"))}
    ok, bad = rows["0.05"], rows["1000000.0"]
    assert ok["seeds"] == "1" and ok["diverged_seeds"] == "0" and float(ok["class_il.final_average_accuracy"]) > 0.5
    assert bad["seeds"] == "0" and bad["diverged_seeds"] == "1" and bad["class_il.final_average_accuracy"] == ""
    md = open(os.path.join(d, "sweep.md")).read()
    assert "0 (+1 diverged)" in md and "| diverged |" in md
    # the finished point's results are the same as a run of that point alone
    rec = json.load(open(os.path.join(d, "sweep.json")))
    good = [p for p in rec["points"] if p["overrides"]["optim.lr"] == 0.05][0]
    res = json.load(open(os.path.join(d, good["dir"], "results.json")))
    alone = Runner(_cfg(**{"optim.lr": 0.05}), str(tmp_path / "alone")).run()
    np.testing.assert_allclose(res["accuracy_matrix"]["class_il"], alone["accuracy_matrix"]["class_il"], atol=1e-6)


def test_launch_exits_nonzero_with_one_line_per_diverged_seed(tmp_path):
    wd = str(tmp_path / "cli")
    r = subprocess.run([sys.executable, "launch.py", "--config=configs/derpp_digits.py", f"--workdir={wd}",
                        "--config.optim.lr=1e6", "--config.progress=False", "--config.plots=False",
                        "--config.train.epochs=1"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 3, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "diverged" in ln]
    assert len(lines) == 2 and "seed 0" in lines[0] and "task 1/" in lines[0], r.stderr
    assert json.load(open(os.path.join(wd, "results.json")))["status"] == "diverged"


def test_params_finite_reads_only_parameters():
    state = {"params": {"w": jnp.ones(3), "b": jnp.zeros(2)}, "buffer": {"logits": jnp.full(2, -jnp.inf)},
             "step": jnp.int32(3)}
    assert bool(params_finite(state))
    state["params"]["b"] = jnp.array([0.0, jnp.nan])
    assert not bool(params_finite(state))
    assert bool(params_finite({"net": {"params": {"w": jnp.ones(2)}}, "x": jnp.nan}))
    assert not bool(params_finite({"net": {"params": {"w": jnp.array([jnp.inf])}}}))


def test_divergence_marks_survive_a_checkpoint_and_summary_keeps_the_others():
    p = _Progress(completed_tasks=1, diverged={1: {"seed": 4, "task": 0, "step": 7, "cause": "loss"}})
    q = _Progress.from_json(json.loads(json.dumps(p.to_json())))
    assert q.diverged == p.diverged
    ok = {"method": "m", "dataset": "d", "seed": 3, "status": "completed",
          "metrics": {"class_il": {"final_average_accuracy": 0.5}}, "accuracy_matrix": {"class_il": [[0.5]]}}
    bad = {"method": "m", "dataset": "d", "seed": 4, "status": "diverged", "diverged": p.diverged[1]}
    s = summarize_diverged([ok, bad])
    assert s["status"] == "diverged" and s["seeds"] == [3] and s["diverged"] == [p.diverged[1]]
    assert s["metrics"]["class_il"]["final_average_accuracy"]["mean"] == 0.5
