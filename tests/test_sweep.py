"""clj.sweep: grid parsing and typing, grouping into programs, the local and
(submitit-local) slurm executors, resume of a half-finished sweep, the table
rebuilt from workdirs, and the TensorBoard tracker."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, small_config

from clj.config import ConfigError, base_config
from clj.sweep import grid as G


# ----------------------------------------------------------------- pure parts
def test_parse_grid_types_values_like_the_field():
    c = base_config()
    g = G.parse_grid(["optim.lr=0.01,0.1", "replay.buffer_size=100,200", "augment.flip=true,False",
                      "optim.name=sgd,adam", "model.hidden=(64,64),(100,)", "config.seed=1,2"], c)
    assert g == {"optim.lr": [0.01, 0.1], "replay.buffer_size": [100, 200], "augment.flip": [True, False],
                 "optim.name": ["sgd", "adam"], "model.hidden": [(64, 64), (100,)], "seed": [1, 2]}
    assert all(type(v) is float for v in g["optim.lr"]) and all(type(v) is int for v in g["replay.buffer_size"])
    assert G.parse_grid(["optim.lr=1"], c)["optim.lr"] == [1.0] and type(G.parse_grid(["optim.lr=1"], c)
                                                                          ["optim.lr"][0]) is float
    assert G.split_values("(1,2),[3, 4],5") == ["(1,2)", "[3, 4]", "5"]


@pytest.mark.parametrize("arg, msg", [
    ("optim.lr", "FIELD=V1"), ("optim.lrr=0.1", "no field 'lrr'"), ("optim=0.1", "is a section"),
    ("replay.buffer_size=1.5", "not a valid int"), ("augment.flip=maybe", "not a valid bool"),
    ("optim.lr=0.1,,0.2", "empty value"), ("optim.lr=0.1,0.1", "repeats"), ("model.hidden=(1,2", "unclosed"),
])
def test_parse_grid_refuses_bad_input_in_one_line(arg, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")) as e:
        G.parse_grid([arg], base_config())
    assert "\n" not in str(e.value)


def test_expand_and_group_sweepable_vs_static():
    grid = {"replay.buffer_size": [100, 200], "optim.lr": [0.01, 0.1], "replay.alpha": [0.1, 0.3]}
    pts = G.expand_grid(grid)
    assert len(pts) == 8 and pts[0] == {"replay.buffer_size": 100, "optim.lr": 0.01, "replay.alpha": 0.1}
    assert pts[1]["replay.alpha"] == 0.3  # last field fastest
    sw = ("optim.lr", "replay.alpha", "replay.beta")
    groups = G.group_points(pts, sw)
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7]]  # one program per buffer size
    assert G.group_points(pts, sw, max_points_per_program=3) == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert G.group_points(pts, ()) == [[i] for i in range(8)]  # nothing sweepable: one program per point
    # a non-number is never vmapped, even in a sweepable field
    assert G.group_points([{"optim.lr": 0.1}, {"optim.lr": "x"}], sw) == [[0], [1]]
    with pytest.raises(ConfigError, match="max_points_per_program=-1"):
        G.group_points(pts, sw, -1)


def test_point_names_are_readable_and_follow_the_resolved_config():
    c = base_config()
    a = G.apply_overrides(c, {"optim.lr": 0.03, "replay.alpha": 0.1})
    name = G.point_dirname({"optim.lr": 0.03, "replay.alpha": 0.1}, a)
    assert name.startswith("optim.lr=0.03,replay.alpha=0.1-") and len(name.rsplit("-", 1)[1]) == 6
    # fields that do not change results do not change the name; others do
    b = G.apply_overrides(a, {"progress": False, "plots": False, "stop_after_task": 1})
    assert G.config_fingerprint(b) == G.config_fingerprint(a)
    assert G.config_fingerprint(G.apply_overrides(a, {"num_seeds": 3})) != G.config_fingerprint(a)
    assert "/" not in G.point_slug({"data_dir": "/a/b"})


# ----------------------------------------------------------------- end to end (digits, 2 tasks, 1 epoch)
def _cfg(**over):
    return small_config("finetune", **{"scenario.increment": 5, "model.hidden": (32,), **over})


def _task_ends(point_dir):
    with open(os.path.join(point_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["task"] for line in f if '"task_end"' in line]


def test_local_sweep_resumes_only_the_missing_points_and_report_rebuilds(tmp_path):
    from clj.sweep import run_sweep
    from clj.sweep.report import read_csv, write_report

    d = str(tmp_path / "sweep")
    grid = {"optim.lr": [0.05, 0.1, 0.2]}
    # 1) one point finished, by a sweep of its own (a plain one-point program in its workdir)
    out = run_sweep(_cfg(), {"optim.lr": [0.05]}, d)
    assert out["ran"] and not out["failed"]
    # 2) the 3-point grid, killed after task 0 (stop_after_task does not change the points' identity):
    #    the finished point is skipped, the two others are one vmapped program
    out = run_sweep(_cfg(stop_after_task=0), grid, d)
    assert len(out["skipped"]) == 1 and len(out["ran"]) == 1
    rec = json.load(open(os.path.join(d, "sweep.json")))
    (prog,) = rec["programs"]
    assert prog["vmapped"] and prog["points"] == [1, 2] and prog["state"] == "stopped"
    assert [p["done"] for p in rec["points"]] == [True, False, False]
    a, b, c = (os.path.join(d, p["dir"]) for p in rec["points"])
    assert [os.path.basename(x).split("-")[0] for x in (a, b, c)] == ["optim.lr=0.05", "optim.lr=0.1",
                                                                    "optim.lr=0.2"]
    assert not os.path.exists(os.path.join(b, "results.json"))
    a_mtime = os.path.getmtime(os.path.join(a, "results.json"))
    # 3) rerun: only the missing points run, resuming their program from its checkpoint after task 0
    out = run_sweep(_cfg(), grid, d)
    assert out["ran"] == [prog["id"]] and out["skipped"] == [os.path.basename(a)]
    assert os.path.getmtime(os.path.join(a, "results.json")) == a_mtime
    assert _task_ends(os.path.join(d, prog["workdir"])) == [0, 1]  # task 0 was not trained again
    rec = json.load(open(os.path.join(d, "sweep.json")))
    assert [p["state"] for p in rec["programs"]] == ["done"] and all(p["done"] for p in rec["points"])
    assert rec["grid"] == grid
    for x, lr in ((b, 0.1), (c, 0.2)):
        res = json.load(open(os.path.join(x, "results.json")))
        assert len(res["accuracy_matrix"]["class_il"]) == 2 and res["hparams"] == {"optim.lr": lr}
    # each folder holds its config's identity, whose fingerprint starts the folder's hash
    for x in (a, b, c):
        ident = json.load(open(os.path.join(x, "identity.json")))
        assert ident["fingerprint"].startswith(x.rsplit("-", 1)[1]) and ident["fields"]["optim.lr"] in (0.05, 0.1, 0.2)
    assert os.path.isfile(os.path.join(d, prog["workdir"], "identity.json"))

    # the table: one row per point, sorted by the metric, values from results.json
    rows = read_csv(os.path.join(d, "sweep.csv"))
    assert len(rows) == 3 and {r["optim.lr"] for r in rows} == {"0.05", "0.1", "0.2"}
    m = "class_il.final_average_accuracy"
    assert float(rows[0][m]) >= float(rows[1][m])
    for r in rows:
        res = json.load(open(os.path.join(d, r["point"], "results.json")))
        assert float(r[m]) == res["metrics"]["class_il"]["final_average_accuracy"] and r["seeds"] == "1"
        assert float(r[m + ".std"]) == 0.0
    assert os.path.isfile(os.path.join(d, f"sweep_{m}.png"))
    md = open(os.path.join(d, "sweep.md")).read()
    assert md.count("\n| 0.") == 3

    # rebuilt from the workdirs alone: the same table
    written = {n: open(os.path.join(d, n)).read() for n in ("sweep.csv", "sweep.md")}
    for n in ("sweep.csv", "sweep.md", "sweep.json", f"sweep_{m}.png"):
        os.remove(os.path.join(d, n))
    write_report(d)
    assert {n: open(os.path.join(d, n)).read() for n in written} == written
    # ascending order on request
    write_report(d, sort=f"{m}:asc", make_plot=False)
    assert [r["point"] for r in read_csv(os.path.join(d, "sweep.csv"))] == [r["point"] for r in rows][::-1]
    with pytest.raises(ConfigError, match="not a metric"):
        write_report(d, sort="class_il.nope")


def test_foreign_results_do_not_make_a_point_done(tmp_path):
    """A results.json that is not the point's own run's (dropped in, or a sibling's
    copied over) is neither tabled nor counted done: the point runs again."""
    import shutil

    from clj.sweep import plan, run_sweep
    from clj.sweep.core import DONE_FILE
    from clj.sweep.report import write_report

    d, grid = str(tmp_path / "sweep"), {"optim.lr": [0.05, 0.1]}
    run_sweep(_cfg(stop_after_task=0), grid, d)  # both points stopped after task 0
    a, b = (os.path.join(d, p["dir"]) for p in json.load(open(os.path.join(d, "sweep.json")))["points"])
    json.dump({"metrics": {"class_il": {"final_average_accuracy": 0.999}}, "accuracy_matrix": {"class_il": [[1.0]]}},
              open(os.path.join(b, "results.json"), "w"))
    logged = []
    assert write_report(d, make_plot=False, log=logged.append)["rows"] == 0
    assert len(logged) == 1 and f"skipped {os.path.basename(b)}: results.json is not counted" in logged[0]
    points, _ = plan(_cfg(), grid, d, skip_done=True)
    assert [p["done"] for p in points] == [False, False] and DONE_FILE in points[1]["not_counted"]
    out = run_sweep(_cfg(), grid, d)
    assert out["ran"] and not out["skipped"] and not out["failed"] and out["report"]["rows"] == 2
    res = json.load(open(os.path.join(b, "results.json")))
    assert len(res["accuracy_matrix"]["class_il"]) == 2 and res["hparams"] == {"optim.lr": 0.1}
    # the sibling's own results and done mark copied over: not this point's
    for n in ("results.json", DONE_FILE):
        shutil.copy(os.path.join(a, n), os.path.join(b, n))
    r = subprocess.run([sys.executable, "-m", "clj.sweep", f"--report={d}"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and "1 point(s)" in r.stdout, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if "skipped" in ln]
    assert os.path.basename(b) in line and "another config" in line
    assert [p["done"] for p in plan(_cfg(), grid, d, skip_done=True)[0]] == [True, False]


def test_slurm_executor_through_submitit_local_and_report_cli(tmp_path):
    """The CLI end to end: --grid and --config overrides, the slurm executor on
    submitit's local executor (a job array of one job), then --report."""
    d = str(tmp_path / "sw")
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "clj.sweep", "--config=configs/finetune_digits.py", "--grid", "optim.lr=0.05",
           "--config.train.epochs=1", "--config.scenario.increment=5", "--config.model.hidden=(32,)",
           "--config.progress=False", "--config.plots=False", "--executor=slurm", "--slurm.cluster=local",
           "--slurm.time=0:10:00", f"--workdir={d}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.load(open(os.path.join(d, "sweep.json")))
    assert rec["executor"] == "slurm" and [p["state"] for p in rec["programs"]] == ["done"]
    assert rec["programs"][0]["job_id"]
    point = os.path.join(d, rec["points"][0]["dir"])
    res = json.load(open(os.path.join(point, "results.json")))
    assert len(res["accuracy_matrix"]["class_il"]) == 2
    assert os.listdir(os.path.join(d, "slurm"))  # submitit's job folder
    csv_text = open(os.path.join(d, "sweep.csv")).read()
    os.remove(os.path.join(d, "sweep.csv"))
    r = subprocess.run([sys.executable, "-m", "clj.sweep", f"--report={d}"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert open(os.path.join(d, "sweep.csv")).read() == csv_text
    # a bad grid: exit 2, one line, nothing written
    bad = str(tmp_path / "bad")
    r = subprocess.run(cmd[:5] + ["optim.lrx=1", f"--workdir={bad}"], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no field 'lrx'" in r.stderr
    assert not os.path.exists(bad)


def _sweep_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "clj.sweep", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))


def test_sweep_takes_a_shipped_config_by_name_or_path_from_another_folder(tmp_path):
    """As python launch.py: a shipped config's name, or its path, from a folder
    outside the checkout (its helpers import as clj.configs.<module>)."""
    for config in ("derpp_digits", os.path.join(ROOT, "configs", "derpp_digits.py"), "akr_digits:none"):
        r = _sweep_cli(f"--config={config}", "--grid", "optim.lr=0.05,0.1", f"--workdir={tmp_path / 'sw'}",
                       "--dry_run", cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr[-2000:]
        assert "0 of 2 point(s) done" in r.stdout and "optim.lr=0.05-" in r.stdout
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("args,msg", [
    (["--config=nope", "--workdir={wd}"], "config file 'nope' does not exist"),
    (["--config=derpp_digits:bogus", "--workdir={wd}"], "get_config('bogus') raised TypeError"),
    (["--config=derpp_digits", "--config.optim.lrr=1", "--workdir={wd}"], "did you mean optim.lr?"),
    (["--config=derpp_digits", "--config.optim.lr=abc", "--workdir={wd}"], "--config.optim.lr=abc"),
    (["--config.optim.lr=1", "--workdir={wd}"], "give --config=<file or name> too"),
    (["--config=derpp_digits", "--bogus=1", "--workdir={wd}"], "unknown flag --bogus"),
    (["--config=derpp_digits", "--workdir={wd}", "--grid"], "Missing value for flag --grid"),
    (["--config=derpp_digits", "--grid", "optim.lr=abc", "--workdir={wd}"], "optim.lr='abc' is not a valid float"),
    (["--config=derpp_digits", "--grid", "optim.lr", "--workdir={wd}"], "write FIELD=V1,V2"),
    (["--config=derpp_digits", "--executor=nope", "--workdir={wd}"], "--executor=nope"),
    (["--config=derpp_digits", "extra", "--workdir={wd}"], "unexpected arguments: extra"),
    (["--grid", "optim.lr=1", "--workdir={wd}"], "--config=<file or name> is required"),
    (["--config=derpp_digits", "--grid", "optim.lr=1"], "--workdir=DIR is required"),
    (["--report=no_such_sweep"], "no such folder"),
])
def test_sweep_refuses_a_bad_argument_in_one_line(tmp_path, args, msg):
    wd = tmp_path / "sw"
    r = _sweep_cli(*[a.format(wd=wd) for a in args], cwd=str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0 and msg in r.stderr, r.stderr
    assert not wd.exists()


# ----------------------------------------------------------------- tracking
def test_tracker_writes_scalars_and_results_curves(tmp_path):
    from clj.tracking import Tracker, log_task_accuracies, read_scalars, write_run

    off = Tracker(str(tmp_path / "off"), enabled=False)
    off.scalar("train/loss", 1.0, 0)
    off.close()
    assert not os.path.exists(tmp_path / "off")

    t = Tracker(str(tmp_path / "run"))
    for s, v in [(10, 2.5), (20, 1.25)]:
        t.scalar("train/loss", v, s)
    log_task_accuracies(t, {"class_il": np.array([0.5, 0.25])}, 1)
    t.close()
    sc = read_scalars(str(tmp_path / "run"))
    assert sc["train/loss"] == [(10, 2.5), (20, 1.25)]
    assert sc["class_il/acc_task_0"] == [(1, 0.5)] and sc["class_il/acc_task_1"] == [(1, 0.25)]
    assert sc["class_il/average_accuracy"] == [(1, 0.375)]

    # a finished run's results.json (2 seeds) -> one event folder per seed
    for seed in (0, 1):
        os.makedirs(tmp_path / "fin" / f"seed_{seed}")
        R = [[0.5 + seed / 4, None], [0.25, 0.75]]
        json.dump({"accuracy_matrix": {"class_il": R}}, open(tmp_path / "fin" / f"seed_{seed}" / "results.json", "w"))
    dirs = write_run(str(tmp_path / "fin"))
    assert len(dirs) == 2
    sc = read_scalars(dirs[1])
    assert sc["class_il/acc_task_0"] == [(0, 0.75), (1, 0.25)] and sc["class_il/average_accuracy"][1] == (1, 0.5)
    with pytest.raises(FileNotFoundError, match="no results.json"):
        write_run(str(tmp_path / "off"))


def test_csv_appends_the_confidence_intervals_after_the_existing_columns():
    from clj.metrics import summarize_seeds
    from clj.sweep.report import _intervals_of, _metrics_of, metric_names, to_csv

    def res(seed, faa):
        return {"method": "er", "dataset": "digits", "seed": seed, "wall_time_s": {"total": 1.0},
                "metrics": {"class_il": {"final_average_accuracy": faa, "fwt": None}}}

    summ = summarize_seeds([res(0, 0.1), res(1, 0.2), res(2, 0.3)])
    rows = [{"point": "p3", "overrides": {"optim.lr": 0.1}, "seeds": 3, "diverged": 0, "wall_time_s": (1.0, 0.0),
             "metrics": _metrics_of(summ, True), "ci95": _intervals_of(summ, True)},
            {"point": "p1", "overrides": {"optim.lr": 0.2}, "seeds": 1, "diverged": 0, "wall_time_s": (1.0, 0.0),
             "metrics": _metrics_of(res(0, 0.5), False), "ci95": _intervals_of(res(0, 0.5), False)}]
    lines = to_csv(["optim.lr"], rows).splitlines()
    m, f = "class_il.final_average_accuracy", "class_il.fwt"
    # the columns before the intervals are as they were; the intervals come last
    names = metric_names(rows)
    assert m in names and f in names
    assert lines[0].split(",") == ["point", "optim.lr", "seeds", "diverged_seeds", "wall_time_s", "wall_time_s.std",
                                   *[c for n in names for c in (n, n + ".std")],
                                   *[c for n in names for c in (n + ".ci95_lo", n + ".ci95_hi")]]
    first = dict(zip(lines[0].split(","), lines[1].split(",")))
    # [0.1, 0.2, 0.3]: mean 0.2, std 0.1, half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert float(first[m]) == pytest.approx(0.2) and float(first[m + ".std"]) == pytest.approx(0.1)
    assert float(first[m + ".ci95_lo"]) == pytest.approx(0.2 - 0.248414, abs=1e-6)
    assert float(first[m + ".ci95_hi"]) == pytest.approx(0.2 + 0.248414, abs=1e-6)
    assert first[f + ".ci95_lo"] == first[f + ".ci95_hi"] == ""
    one = dict(zip(lines[0].split(","), lines[2].split(",")))  # one seed: no interval
    assert float(one[m]) == 0.5 and one[m + ".ci95_lo"] == one[m + ".ci95_hi"] == ""
