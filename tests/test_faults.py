"""Right numbers or a clear stop: every check before the workdir is touched,
and every expected fault (a bad value, a file-system fault, a signal during
start-up) in one line on stderr, without a traceback."""
import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, xla_flags_with_devices


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _cli(*args, **env):
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=_env(**env), capture_output=True,
                          text=True)


def _one_line(stderr: str, pattern: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], stderr
    return lines[0]


def _refused(r, pattern, status=2):
    assert r.returncode == status, r.stderr
    return _one_line(r.stderr, pattern)


# ------------------------------------------------------------ bad values
@pytest.mark.parametrize("args,pattern", [
    (["--config.optim.name=adm"], "optim.name='adm' is unknown; valid: sgd, adam, adamw"),
    (["--config.optim.schedule=cos"], "optim.schedule='cos' is unknown; valid: constant, cosine, multistep"),
    (["--config.model.name=mlpp"], "model.name='mlpp' is unknown; valid: mlp, "),
    (["--config.model.hidden=(0,64)"], "model.hidden=(0, 64) is invalid"),
    (["--config=ser_derpp_digits", "--config.model.width=0"], "model.width=0 is invalid"),
    (["--config.seed=-1"], "seed=-1 is invalid: it must be >= 0"),
    (["--config.num_seeds=0"], "num_seeds=0 is invalid"),
    (["--config.optim.lr=nan"], "optim.lr=nan is invalid: every number of the config must be finite"),
    (["--config.optim.lr=inf"], "optim.lr=inf is invalid"),
    (["--config.optim.momentum=nan"], "optim.momentum=nan is invalid"),
    (["--config.loop.mesh=bogus"], "loop.mesh='bogus' is unknown; valid: auto, seeds, data"),
    (["--config.data.placement=disk"], "data.placement='disk' is unknown; valid: device, stream, auto"),
    (["--config.loop.profile_chunks=0"], "loop.profile_chunks=0 is invalid: it must be an integer >= 1"),
    (["--config.loop.profile=yes"], "--config.loop.profile=yes: ('Non-boolean argument to boolean flag', 'yes')"),
    (["--config.train.batch_size=100000"],
     "train.batch_size=100000 is larger than the 269 training examples of the first task of digits"),
    # the first task holds 8 classes; a later one 2: refused from the method's plan of every task
    (["--config.scenario.init_cls=8", "--config.train.batch_size=300"],
     "train.batch_size=300 is larger than the 266 training examples of task 1: every batch of that task would "
     "repeat examples; valid: 1..266"),
    (["--config=derpp_mnist", "--config.data_dir=/no/such/folder"], "data_dir='/no/such/folder' does not exist"),
    (["--config.data.placement=stream"], "data.placement='stream' reads clj's prepared records"),
])
def test_bad_value_refused_before_the_workdir(tmp_path, args, pattern):
    wd = tmp_path / "run"
    if not any(a.startswith("--config=") for a in args):
        args = ["--config=derpp_digits", *args]
    _refused(_cli(*args, f"--workdir={wd}"), pattern)
    assert not wd.exists()


def test_data_dir_that_is_a_file_refused(tmp_path):
    f = tmp_path / "data"
    f.write_text("x")
    _refused(_cli("--config=derpp_mnist", f"--config.data_dir={f}", f"--workdir={tmp_path / 'run'}"),
             "is a file, not a folder")
    assert not (tmp_path / "run").exists()


def test_mesh_the_devices_cannot_take_refused_before_the_workdir_then_the_corrected_rerun_runs(tmp_path):
    wd = tmp_path / "run"
    two = {"XLA_FLAGS": xla_flags_with_devices(2)}
    base = ["--config=derpp_digits", f"--workdir={wd}", "--config.progress=False", "--config.stop_after_task=0"]
    _refused(_cli(*base, "--config.loop.mesh=seeds", **two), "loop.mesh='seeds' needs num_seeds a multiple of the "
                                                              "2 devices")
    assert not wd.exists()
    r = _cli(*base, "--config.loop.mesh=data", **two)  # the same workdir, corrected: runs
    assert r.returncode == 0, r.stderr
    assert json.load(open(wd / "identity.json"))["fields"]["loop.mesh"] == "data"


def test_names_mirror_what_they_name():
    """clj.config keeps JAX-free copies of valid names: each equals its source."""
    from clj import config as cfg
    from clj.methods.common import OptimSpec
    from clj.methods.cil.section import SCHEDULES
    from clj.models.common import MODEL_DTYPES
    from clj.models.mlp import MLP_INITS
    from clj.models.registry import model_names
    from clj.train import loop, runtime

    assert set(cfg.MODEL_NAMES) == set(model_names())
    assert cfg.MESH_MODES == runtime.MESH_MODES and cfg.PLACEMENTS == loop.PLACEMENTS
    assert cfg.SCHEDULES == SCHEDULES and cfg.MODEL_DTYPES == MODEL_DTYPES
    assert cfg.MLP_INITS == MLP_INITS
    import jax.numpy as jnp

    one = jnp.ones((), jnp.int32)
    params = {"w": jnp.ones((2,))}
    for name in cfg.OPTIMIZERS:
        OptimSpec(name=name).make().init(params)
    for s in cfg.SCHEDULES:
        OptimSpec(schedule=s, milestones=(1,)).lr_at(one, one, one)
    with pytest.raises(ValueError, match="unknown"):
        OptimSpec(name="nope").make().init(params)
    with pytest.raises(ValueError, match="unknown"):
        OptimSpec(schedule="nope").lr_at(one, one, one)


def test_non_finite_number_anywhere_is_named():
    from clj.config import ConfigError, base_config, validate

    c = base_config()
    c.replay.alpha = float("-inf")
    with pytest.raises(ConfigError, match=r"replay.alpha=-inf is invalid"):
        validate(c)
    c = base_config()
    with c.unlocked():
        c.synthetic.image_shape = (8.0, float("nan"), 1.0)
    with pytest.raises(ConfigError, match=r"synthetic.image_shape\[1\]=nan is invalid"):
        validate(c)


# ------------------------------------------------------------ the workdir's files
@pytest.mark.parametrize("content", [b'{"fingerprint": "ab', b"{}", b"[1, 2]", b"\xff\xfe\x00"])
def test_damaged_identity_is_one_line(tmp_path, content):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "identity.json").write_bytes(content)
    _refused(_cli("--config=derpp_digits", f"--workdir={wd}"), "identity.json is damaged")
    assert (wd / "identity.json").read_bytes() == content
    if content == b"{}":  # the way out the message names: start over in it
        r = _cli("--config=derpp_digits", f"--workdir={wd}", "--config.resume=False", "--config.progress=False",
                 "--config.stop_after_task=0")
        assert r.returncode == 0, r.stderr
        assert "fields" in json.load(open(wd / "identity.json"))


@pytest.mark.parametrize("name,kind,pattern", [
    ("checkpoints", "file", "is a file where a folder should be"),
    ("identity.json", "folder", "is a folder where a file should be"),
])
def test_wrong_kind_of_entry_in_the_workdir_is_one_line(tmp_path, name, kind, pattern):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / name).mkdir() if kind == "folder" else (wd / name).write_text("x")
    line = _refused(_cli("--config=derpp_digits", f"--workdir={wd}"), pattern)
    assert str(wd / name) in line
    assert sorted(os.listdir(wd)) == [name]  # nothing written


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (writes fail with ENOSPC)")
def test_full_disk_is_one_line(tmp_path):
    # before the run: identity.json cannot be written -> status 2, no identity
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "identity.json.tmp").symlink_to("/dev/full")
    line = _refused(_cli("--config=derpp_digits", f"--workdir={wd}"), "no space left on the device (ENOSPC)")
    assert str(wd / "identity.json.tmp") in line and "rerun the same command" in line
    assert not (wd / "identity.json").exists()
    # during the run: the metrics log cannot be written -> status 1
    wd2 = tmp_path / "run2"
    wd2.mkdir()
    (wd2 / "metrics.jsonl").symlink_to("/dev/full")
    r = _cli("--config=derpp_digits", f"--workdir={wd2}", "--config.progress=False", "--config.stop_after_task=0")
    _refused(r, "no space left on the device (ENOSPC)", status=1)


@pytest.mark.parametrize("where,code", [("parent", errno.EACCES), ("workdir", errno.EROFS)])
def test_unwritable_workdir_is_one_line(tmp_path, monkeypatch, capsys, where, code):
    """A workdir under a read-only folder, or a read-only workdir: refused in
    one line before anything is written.  Root writes through permissions,
    so there the file system's refusal is simulated in this process."""
    parent = tmp_path / "ro"
    parent.mkdir()
    wd = parent / "run"
    if where == "workdir":
        wd.mkdir()
    locked = parent if where == "parent" else wd
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):
            r = _cli("--config=derpp_digits", f"--workdir={wd}")
            line = _refused(r, "permission denied on")
        else:
            from clj import cli

            def refuse(path):
                return os.path.abspath(os.fsdecode(path)).startswith(str(locked) + os.sep)

            real_makedirs, real_open = os.makedirs, os.open

            def makedirs(path, *a, **k):
                if refuse(path) or os.path.abspath(os.fsdecode(path)) == str(locked):
                    if os.path.isdir(path) and k.get("exist_ok"):
                        return None
                    raise OSError(code, os.strerror(code), os.fsdecode(path))
                return real_makedirs(path, *a, **k)

            def open_(path, flags, *a, **k):
                if refuse(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                    raise OSError(code, os.strerror(code), os.fsdecode(path))
                return real_open(path, flags, *a, **k)

            monkeypatch.setattr(os, "makedirs", makedirs)
            monkeypatch.setattr(os, "open", open_)
            status = cli.main(["--config=derpp_digits", f"--workdir={wd}"])
            assert status == 2
            line = _one_line(capsys.readouterr().err, "permission denied" if code == errno.EACCES else "read-only")
        assert "--workdir" in line and str(locked) in line
        assert not (wd / "identity.json").exists() and (where == "workdir" or not wd.exists())
    finally:
        locked.chmod(0o755)


# ------------------------------------------------------------ signals during start-up
# Runs the command line with one start-up step made to wait: it prints READY and
# reads stdin, so the test signals it at a known point (no sleeping).
_WAIT_AT = """
import signal, sys
# A terminal's Ctrl-C: SIGINT handled as Python does by default, even when this
# test runs under a shell that started it in the background with SIGINT ignored
# (clj, like nohup, leaves an ignored signal ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
import clj.cli as cli
where = sys.argv.pop(1)
if where == "data":  # loading the data, before JAX is imported
    import clj.preflight as target
    name = "check_data"
else:  # in the run: the workdir is prepared, nothing trained yet
    from clj.train.loop import Runner as target
    name = "init_state"
real = getattr(target, name)
def wait(*a, **k):
    print("READY", flush=True)
    sys.stdin.read()
    return real(*a, **k)
setattr(target, name, wait)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig,where", [(signal.SIGINT, "data"), (signal.SIGTERM, "data"),
                                       (signal.SIGTERM, "run")])
def test_signal_during_start_up_is_one_line(tmp_path, sig, where):
    wd = tmp_path / "run"
    args = ["--config=derpp_digits", f"--workdir={wd}", "--config.progress=False"]
    p = subprocess.Popen([sys.executable, "-c", _WAIT_AT, where, *args], cwd=ROOT, env=_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY", p.stderr.read() if p.poll() is not None else ""
        p.send_signal(sig)
    finally:
        out, err = p.communicate()  # closes stdin: a process that ignored the signal goes on and ends
    assert p.returncode == 128 + int(sig), err
    line = _one_line(err, f"interrupted by {signal.Signals(sig).name}")
    assert "rerun the same command" in line
    if where == "data":
        assert "during start-up; nothing was trained" in line
        assert not wd.exists()
    else:  # the workdir is this config's: the same command then runs in it
        r = _cli(*args, "--config.stop_after_task=0")
        assert r.returncode == 0, r.stderr
