"""Runs a user can trust: refusals before any work (and before JAX is
imported), one config and one process per workdir, checkpoints that survive a
damaged file, a CLI that explains itself, configs found after installation."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from clj.config import base_config, configs_dir, load_config, resolve_config_path
from clj.workdir import (IDENTITY_FILE, WorkdirBusy, WorkdirError, default_workdir, fingerprint, prepare,
                         result_fields)
from conftest import ROOT

# Runs launch.py as ``python launch.py ARGS`` would, then reports whether JAX
# was imported by the time it exited.
_WRAPPER = """
import runpy, sys
sys.argv = ["launch.py"] + sys.argv[1:]
code = 0
try:
    runpy.run_path("launch.py", run_name="__main__")
except SystemExit as e:
    code = e.code
print("JAX-IMPORTED" if "jax" in sys.modules else "JAX-NOT-IMPORTED")
sys.exit(code)
"""


def _launch(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", _WRAPPER, *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def _assert_refused(r, pattern):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], r.stderr
    assert "JAX-NOT-IMPORTED" in r.stdout


@pytest.mark.parametrize("args,pattern", [
    (["--config=configs/no_such_config.py"], "config file 'configs/no_such_config.py' does not exist"),
    (["--config=configs/nispa_digits.py", "--config.nispa.density=2"], "nispa.density=2.0 is invalid"),
    (["--config=configs/ewc_digits.py", "--config.reg.lam=-1"], "reg.lam=-1.0 is invalid"),
    (["--config=configs/er_digits.py", "--config.replay.buffersize=3"],
     "config.replay.buffersize is not a field; did you mean replay.buffer_size?"),
    (["--config=configs/er_digits.py", "--config.scenario.increment=3"],
     "scenario.increment=3 does not divide the 7 classes of digits left after the first task of 3"),
    (["--config=configs/er_digits.py", "--config.method=nope"], "method='nope' is unknown"),
    (["--config=er_digits", "--bogus=1"], "unknown flag --bogus"),
    (["--config=configs/er_digits.py", "--config.replay.buffer_size=5000"],  # needs the data: loaded first
     "replay.buffer_size=5000 is larger than the 1347 training examples of digits"),
])
def test_bad_config_refused_before_jax_and_before_writing(tmp_path, args, pattern):
    wd = tmp_path / "run"
    r = _launch(*args, f"--workdir={wd}")
    _assert_refused(r, pattern)
    assert not wd.exists()


def test_workdir_that_is_a_file_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    _assert_refused(_launch("--config=configs/er_digits.py", f"--workdir={f}"), "is a file")
    _assert_refused(_launch("--config=configs/er_digits.py", f"--workdir={f}/sub"), f"inside {f}, which is a file")
    assert f.read_text() == "x"


def test_uneven_last_task_only_when_asked():
    from clj.config import ConfigError, validate

    c = load_config("er_digits")
    c.scenario.increment = 3
    with pytest.raises(ConfigError, match="uneven_last_task=True"):
        validate(c)
    c.scenario.uneven_last_task = True
    validate(c)
    c.scenario.increment, c.scenario.init_cls, c.scenario.uneven_last_task = 2, 4, False
    validate(c)  # 4 + 2 + 2 + 2: divides


def test_help_lists_methods_datasets_and_configs():
    r = _launch("--help")
    assert r.returncode == 0 and "JAX-NOT-IMPORTED" in r.stdout
    for word in ("methods (--config.method):", "nispa", "ser_derpp", "datasets (--config.dataset):",
                 "fashion_mnist", "config files", "derpp_digits", "--describe"):
        assert word in r.stdout, word


def test_describe_prints_fields_with_meanings(tmp_path):
    r = _launch("--config=configs/nispa_digits.py", "--config.nispa.density=0.5", "--describe",
                f"--workdir={tmp_path / 'w'}")
    assert r.returncode == 0, r.stderr
    assert "JAX-NOT-IMPORTED" in r.stdout
    lines = r.stdout.splitlines()
    assert any(ln.startswith("nispa.density = 0.5") and "fraction of connections" in ln for ln in lines)
    assert any(ln.startswith("optim.lr = 0.01") and "# learning rate" in ln for ln in lines)
    assert not (tmp_path / "w").exists()


# ------------------------------------------------------------ workdir identity
def test_resume_with_a_changed_config_refused(tmp_path):
    c = load_config("er_digits")
    wd = str(tmp_path / "w")
    prepare(wd, c).release()
    c2 = load_config("er_digits")
    c2.progress, c2.plots, c2.stop_after_task = False, False, 2  # not result fields: same run
    prepare(wd, c2).release()
    c2.optim.lr, c2.train.epochs = 0.5, 1
    with pytest.raises(WorkdirError, match=r"optim.lr: 0.1 -> 0.5; train.epochs: 5 -> 1\); use a new --workdir, "
                                           r"or --config.resume=False"):
        prepare(wd, c2)
    c2.resume = False  # start over: the workdir now belongs to the new config
    prepare(wd, c2).release()
    with open(os.path.join(wd, IDENTITY_FILE)) as f:
        assert json.load(f)["fingerprint"] == fingerprint(c2)
    # the same refusal from the command line, before JAX
    r = _launch("--config=configs/er_digits.py", f"--workdir={wd}")
    _assert_refused(r, "holds a run of a different config (optim.lr: 0.5 -> 0.1; train.epochs: 1 -> 5)")


def test_workdir_written_before_identity_files_is_judged_by_its_config_json(tmp_path):
    c = load_config("er_digits")
    wd = tmp_path / "old"
    (wd / "checkpoints").mkdir(parents=True)
    (wd / "config.json").write_text(c.to_json_best_effort())
    c.optim.lr = 0.5
    with pytest.raises(WorkdirError, match=r"optim.lr: 0.1 -> 0.5"):
        prepare(str(wd), c)


def test_default_workdir_differs_per_override():
    a, b = load_config("er_digits"), load_config("er_digits")
    b.optim.lr = 0.5
    assert default_workdir(a) != default_workdir(b)
    b.optim.lr, b.progress = 0.1, False
    assert default_workdir(a) == default_workdir(b)
    assert default_workdir(a).startswith(os.path.join("runs", "er_digits_seed0_"))
    assert not any(k.startswith(("progress", "plots", "workdir", "resume", "loop.cache"))
                   for k in result_fields(a))


def test_a_field_added_later_keeps_old_workdirs_at_its_default(tmp_path):
    """loop.eval_tasks came after runs existed: at "all" (the old behaviour) a
    workdir whose config lacks it resumes under the same default name."""
    c = load_config("er_digits")
    old = load_config("er_digits")
    del old.loop["eval_tasks"]
    assert default_workdir(c) == default_workdir(old)
    wd = tmp_path / "old"
    prepare(str(wd), old).release()
    prepare(str(wd), c).release()
    c.loop.eval_tasks = "seen"
    assert default_workdir(c) != default_workdir(old)
    with pytest.raises(WorkdirError, match=r"loop.eval_tasks: '<absent>' -> 'seen'"):
        prepare(str(wd), c)


# ------------------------------------------------------------ one run at a time
def test_second_launch_into_a_busy_workdir_refused(tmp_path):
    wd = str(tmp_path / "w")
    with prepare(wd, load_config("er_digits")):
        r = _launch("--config=configs/er_digits.py", f"--workdir={wd}")
        _assert_refused(r, f"is in use by another run (pid {os.getpid()})")
        with pytest.raises(WorkdirBusy):
            prepare(wd, load_config("er_digits"))
    prepare(wd, load_config("er_digits")).release()  # released


def test_lock_released_when_the_holder_is_killed(tmp_path):
    wd = str(tmp_path / "w")
    os.makedirs(wd)
    code = f"import time; from clj.workdir import lock; lock({wd!r}); print('locked', flush=True); time.sleep(600)"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=f"pid {p.pid}"):
            prepare(wd, load_config("er_digits"))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    prepare(wd, load_config("er_digits")).release()


# ------------------------------------------------------------ checkpoints
def _state(v):
    return {"w": np.full((64,), v, np.float32), "b": np.arange(3, dtype=np.int32) + int(v), "opt": None}


def _damage(step_dir):
    # truncate every array data file of the checkpoint (an interrupted copy, a full disk)
    n = 0
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for f in files:
            if os.sep + "d" in root or f.endswith(".ocdbt"):
                with open(os.path.join(root, f), "r+b") as fh:
                    fh.truncate(max(0, os.path.getsize(os.path.join(root, f)) // 3))
                n += 1
    assert n > 0


def test_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    from clj.train.checkpoint import Checkpointer

    d = str(tmp_path / "checkpoints")
    ck = Checkpointer(d, max_to_keep=3)
    for step in (10, 20, 30):  # any increasing steps (mid-task checkpoints use global step counts)
        ck.save(step, _state(step), {"step": step, "rows": [[step, 0.5]]})
    assert ck.steps() == [10, 20, 30]
    with pytest.raises(ValueError, match="must be > the newest saved step 30"):
        ck.save(30, _state(0), {})
    _damage(os.path.join(d, "30"))
    logged = []
    ck.close()
    with Checkpointer(d, max_to_keep=3) as ck1:
        step, state, meta = ck1.restore_latest(_state(0), log=logged.append)
    assert step == 20 and meta == {"step": 20, "rows": [[20, 0.5]]}
    np.testing.assert_array_equal(state["w"], _state(20)["w"])
    np.testing.assert_array_equal(state["b"], _state(20)["b"])
    assert state["opt"] is None
    assert len(logged) == 1 and "30 is unreadable" in logged[0] and "\n" not in logged[0]
    ck2 = Checkpointer(d, max_to_keep=3)
    assert ck2.steps() == [10, 20]
    ck2.save(30, _state(31), {"step": 30})  # the damaged step number can be written again
    assert ck2.steps() == [10, 20, 30]
    ck2.close()


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    from clj.train.checkpoint import CheckpointError, Checkpointer

    d = str(tmp_path / "checkpoints")
    ck = Checkpointer(d, max_to_keep=2)
    assert ck.restore_latest(_state(0)) is None  # nothing saved: a fresh run
    for step in (1, 2, 3):
        ck.save(step, _state(step), {})
    assert ck.steps() == [2, 3]  # keeps the last max_to_keep
    ck.close()
    for s in (2, 3):
        _damage(os.path.join(d, str(s)))
    logged = []
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .* \(steps 2, 3 moved to .*_unreadable\); "
                                              r"start over with --config.resume=False or use a new --workdir"):
        with Checkpointer(d) as ck3:
            ck3.restore_latest(_state(0), log=logged.append)
    assert len(logged) == 2


# ------------------------------------------------------------ packaging
def test_shipped_configs_resolve_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_config_path("derpp_digits")
    assert path == os.path.join(configs_dir(), "derpp_digits.py")
    assert resolve_config_path("configs/derpp_digits.py") == path  # no configs/ here: the shipped one
    assert load_config("derpp_digits").method == "derpp"
    with pytest.raises(FileNotFoundError, match="does not exist; the shipped configs are"):
        resolve_config_path("nope")


def test_installed_layout_finds_configs_inside_the_package(tmp_path):
    """After ``pip install .`` the configs are ``clj/configs`` (setup.py maps
    configs/ there) and no source tree is next to the package."""
    import shutil

    pkg = tmp_path / "site" / "clj"
    # the wheel's layout: clj/configs holds the files of configs/ (not the checkout's pointer package)
    shutil.copytree(os.path.join(ROOT, "clj"), pkg, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copytree(os.path.join(ROOT, "configs"), pkg / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import sys; before = list(sys.path); import clj.config as c, clj.cli as cli; print(c.configs_dir()); "
            "print(c.load_config('derpp_digits').method); "
            "print(c.load_config('akr_digits').method); "
            "import clj.configs.replay_common as rc; print(rc.__file__); print(sys.path == before)")
    r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(pkg / "configs"), "derpp", "akr", str(pkg / "configs" / "replay_common.py"),
                                "True"]


def test_shipped_configs_import_their_helpers_as_clj_configs():
    """A shipped config imports its helpers as ``clj.configs.<module>`` (the
    package both in a checkout and installed), never as ``configs.<module>``,
    and loading one puts nothing on ``sys.path``."""
    import re

    import clj.configs

    assert os.path.realpath(list(clj.configs.__path__)[0]) == os.path.realpath(os.path.join(ROOT, "configs"))
    for f in sorted(os.listdir(configs_dir())):
        if f.endswith(".py"):
            text = open(os.path.join(configs_dir(), f), encoding="utf-8").read()
            assert not re.search(r"^\s*(from|import)\s+configs\b", text, re.M), f
    before = list(sys.path)
    assert load_config("akr_clutter", "none").method == "akr"
    assert sys.path == before


def test_python_m_clj_help():
    r = subprocess.run([sys.executable, "-m", "clj", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "config files" in r.stdout


def test_base_config_unchanged_by_describe():
    from clj.config import describe

    c = base_config()
    before = c.to_json_best_effort()
    text = describe(c)
    assert c.to_json_best_effort() == before and "optim.lr = 0.1" in text


def _loop_restores_through_the_fallback() -> bool:
    import inspect

    from clj.train import loop

    return "restore_latest" in inspect.getsource(loop)


@pytest.mark.skipif(not _loop_restores_through_the_fallback(),
                    reason="the loop does not restore through Checkpointer.restore_latest yet")
def test_run_with_a_damaged_latest_checkpoint_ends_as_an_uninterrupted_run(tmp_path):
    from clj.train import run

    def cfg(**over):
        c = base_config()
        c.method, c.dataset = "finetune", "synthetic"
        c.synthetic.update(dict(image_shape=(8, 8, 1), num_classes=6, train_per_class=8, test_per_class=4))
        c.model.hidden = (16,)
        c.train.batch_size = 8
        c.progress = c.plots = False
        for k, v in over.items():
            setattr(c, k, v)
        return c

    full = run(cfg(), str(tmp_path / "full"))
    wd = str(tmp_path / "cut")
    assert run(cfg(stop_after_task=1), wd) == {"stopped_after_task": 1}
    steps = sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())
    assert len(steps) == 2
    _damage(os.path.join(wd, "checkpoints", str(steps[-1])))  # task 1's checkpoint; task 0's is intact
    resumed = run(cfg(), wd)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]


def test_runner_itself_holds_the_workdir(tmp_path):
    """``Runner.run`` (what experiments/ and sweeps call) takes the workdir like the
    command line: busy and foreign workdirs are refused before any work, and a
    workdir this process already holds is used as is."""
    from clj.train import Runner

    from conftest import small_config

    wd = str(tmp_path / "w")
    c = small_config(stop_after_task=0)
    with prepare(wd, c):  # held by this process (the command line's case): the run goes ahead
        assert Runner(c, wd).run() == {"stopped_after_task": 0}
    c2 = small_config(stop_after_task=0)
    c2.optim.lr = 0.5
    with pytest.raises(WorkdirError, match=r"optim.lr: 0.1 -> 0.5"):
        Runner(c2, wd).run()
    os.makedirs(tmp_path / "busy")
    code = (f"from clj.workdir import lock; lock({str(tmp_path / 'busy')!r}); print('locked', flush=True); "
            "import sys; sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusy, match=f"pid {p.pid}"):
            Runner(c, str(tmp_path / "busy")).run()
        assert not os.path.exists(tmp_path / "busy" / "config.json")  # refused before writing anything
    finally:
        p.stdin.close()
        p.wait()
    assert Runner(c, str(tmp_path / "busy")).run() == {"stopped_after_task": 0}  # released: runs
