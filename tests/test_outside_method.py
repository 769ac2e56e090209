"""A method defined outside clj, in a package of the user's own, runs through
the registry's one door: named by its module path (or registered under a
short name by its config file), it works in ``launch.py``, ``--describe``,
the config checks and a sweep whose points run in other processes; and a
replay buffer larger than the data is refused for every registered method
that has one, the outside one included."""
import json
import os
import subprocess
import sys

import pytest

from clj.config import ConfigError, validate, validate_with_data
from clj.methods import METHODS, entry
from conftest import ROOT, small_config

METHOD = '''\
"""ER with a block of its own, ``mine`` (a method outside clj)."""
from clj.errors import ConfigError
from clj.methods import sections
from clj.methods.baselines import rehearsal
from clj.methods.baselines.section import REPLAY


def _check(v, config):
    if not 0 < float(v["weight"]) <= 1:
        raise ConfigError(f"mine.weight={v['weight']} is invalid: it must be in (0, 1].")


MINE = sections.Section("mine", dict(weight=1.0), dict(weight="weight of the replayed examples' loss"), _check)
SECTIONS = (REPLAY, MINE)
_ER = rehearsal.make_spec("er")


def init(rng, config, scenario):
    sections.block(config, MINE)  # the block, read with the same idiom as clj's methods
    return _ER.init(rng, config, scenario)


SPEC = _ER.replace(init=init)
'''

CONFIG = '''\
"""ER from the package mypkg (a method outside clj) on Split-digits."""
import ml_collections

from clj.config import base_config


def get_config(name="mypkg.mine"):
    c = base_config()
    c.method = name
    if name != "mypkg.mine":  # a short name registered by this config file
        from clj.methods import register
        from mypkg.mine import SECTIONS
        register(name, "mypkg.mine", "ER with weighted replay (outside clj)", sections=SECTIONS)
    c.mine = ml_collections.ConfigDict(dict(weight=0.5))
    c.dataset = "digits"
    c.scenario.increment = 5
    c.model.hidden = (32,)
    c.train.batch_size = 16
    c.replay.buffer_size = 50
    c.replay.minibatch_size = 16
    c.progress = False
    c.plots = False
    return c
'''


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "mine.py").write_text(METHOD)
    (root / "mine_config.py").write_text(CONFIG)
    return root


def _env(pkg):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(pkg), ROOT])}


def _run(pkg, *args, cwd=None):
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=_env(pkg), capture_output=True, text=True)


def test_launch_describe_and_checks_of_a_method_outside_clj(pkg, tmp_path):
    cfg = str(pkg / "mine_config.py")
    r = _run(pkg, "launch.py", f"--config={cfg}", "--describe")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mine.weight = 0.5" in r.stdout and "weight of the replayed examples' loss" in r.stdout
    assert "replay.buffer_size = 50" in r.stdout
    # its own block's check, before any work
    r = _run(pkg, "launch.py", f"--config={cfg}", "--config.mine.weight=2.0", f"--workdir={tmp_path / 'bad'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "mine.weight=2.0 is invalid: it must be in (0, 1]."), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()
    # the replay block it declares is checked against the data like clj's own
    r = _run(pkg, "launch.py", f"--config={cfg}", "--config.replay.buffer_size=100000", f"--workdir={tmp_path / 'b'}")
    assert r.returncode == 2 and "replay.buffer_size=100000 is larger than the" in r.stderr, r.stderr
    # and it trains end to end
    wd = tmp_path / "run"
    r = _run(pkg, "launch.py", f"--config={cfg}", f"--workdir={wd}")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(wd / "results.json"))
    assert res["method"] == "mypkg.mine" and res["metrics"]["class_il"]["final_average_accuracy"] > 0.3


@pytest.mark.parametrize("variant", ["mypkg.mine", "mine"])
def test_two_point_sweep_in_worker_processes(pkg, tmp_path, variant):
    """The processes executor starts new Python processes: a dotted name is
    imported there, a short name registered by the config file is registered
    again from the program file."""
    d = tmp_path / "sweep"
    r = _run(pkg, "-m", "clj.sweep", f"--config={pkg / 'mine_config.py'}:{variant}", "--grid", "mine.weight=0.5,1.0",
             f"--workdir={d}", "--executor=processes", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.load(open(d / "sweep.json"))
    assert [p["state"] for p in rec["programs"]] == ["done", "done"], rec["programs"]
    rows = open(d / "sweep.csv").read().splitlines()
    assert len(rows) == 3 and rows[0].startswith("point,mine.weight")


def test_dotted_names_and_register_errors(pkg, monkeypatch):
    monkeypatch.syspath_prepend(str(pkg))
    e = entry("mypkg.mine")
    assert e.doc.startswith("ER with a block of its own") and [s.name for s in e.sections] == ["replay", "mine"]
    with pytest.raises(ConfigError, match="method='nopkg.nothing': module 'nopkg.nothing' cannot be imported"):
        entry("nopkg.nothing")
    with pytest.raises(ConfigError, match="method='nosuch' is unknown"):
        entry("nosuch")
    from clj.methods import register

    with pytest.raises(ConfigError, match="built into clj"):
        register("er", "mypkg.mine", "x")
    with pytest.raises(ConfigError, match="not a module path"):
        register("x", "not a path", "x")


def test_buffer_larger_than_the_data_refused_for_every_method_with_a_buffer(pkg, monkeypatch):
    from clj.methods.baselines.section import REPLAY
    from clj.preflight import load_scenario

    monkeypatch.syspath_prepend(str(pkg))
    entry("mypkg.mine")
    with_buffer = [m for m, e in METHODS.items() if REPLAY in e.sections]
    assert {"er", "der", "derpp", "er_ace", "agem", "ser_derpp", "ser_er_ace", "ser_er", "mypkg.mine"} <= \
        set(with_buffer)
    sc = load_scenario(small_config("er"))
    for m in with_buffer:
        c = small_config("er", **{"replay.buffer_size": 100000})
        c.method = m
        with pytest.raises(ConfigError, match=r"replay.buffer_size=100000 is larger than the 1347 training"):
            validate_with_data(c, sc)
    validate(small_config("er"))


def test_no_module_of_clj_methods_imports_upward():
    """clj/methods reads only the layers below it (errors, models, data,
    replay, sparse); clj.config reads the registry, never a method module."""
    import ast

    up = ("clj.config", "clj.train", "clj.cli", "clj.sweep", "clj.preflight", "clj.workdir", "clj.tracking")
    bad = []
    for d, _, fs in os.walk(os.path.join(ROOT, "clj", "methods")):
        for f in fs:
            if f.endswith(".py"):
                tree = ast.parse(open(os.path.join(d, f)).read())
                for node in ast.walk(tree):
                    mods = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                        [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    bad += [(f, m) for m in mods if m.startswith(up)]
    assert not bad, bad
    tree = ast.parse(open(os.path.join(ROOT, "clj", "config.py")).read())
    mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in mods if m.startswith("clj.methods.") and m != "clj.methods.sections"], mods
