"""Two processes on 127.0.0.1 (2 simulated CPU devices each) run one program:
the same accuracy matrices as one process with 4 devices, one writer, resume.

4 seeds: each device trains its own seed in both layouts, so the two runs do
the same arithmetic (a batch sharded across processes would sum its
gradients in another order, and after five tasks one test prediction in 182
can flip)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from clj import simulated_device_threads
from conftest import ROOT, run_with_devices, xla_flags_with_devices

DRIVER = """
import json, os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from clj.train import distributed
distributed.initialize("127.0.0.1:{port}", 2, int(sys.argv[1]))
import jax
from conftest import small_config
from clj.train import Runner
assert jax.device_count() == 4 and jax.local_device_count() == 2
over = json.loads(sys.argv[2])
runner = Runner(small_config('derpp', num_seeds=4, **over), {wd!r})
out = runner.run()
block = getattr(runner, "stream_block", None)
if block is not None:
    print("BLOCK", jax.process_index(), json.dumps([[b.start, b.stop] for b in block]))
if jax.process_index() == 0:
    print("RESULT", json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(wd: str, blocks: dict | None = None, **over) -> dict:
    code = DRIVER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), port=_free_port(), wd=wd)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags_with_devices(2),
           "PJRT_NPROC": os.environ.get("PJRT_NPROC", str(simulated_device_threads(2)))}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), json.dumps(over)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate() for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    if blocks is not None:  # process -> the block of each chunk [S, K, B] it read from disk
        for o, _ in outs:
            for ln in o.splitlines():
                if ln.startswith("BLOCK "):
                    _, pi, b = ln.split(" ", 2)
                    blocks[int(pi)] = json.loads(b)
    lines = [ln for ln in outs[0][0].splitlines() if ln.startswith("RESULT ")]
    assert not any(ln.startswith("RESULT ") for ln in outs[1][0].splitlines())
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """One process with 4 devices, device placement: the reference."""
    wd = str(tmp_path_factory.mktemp("one") / "one")
    code = f"""
import json
from conftest import small_config
from clj.train import Runner
print(json.dumps(Runner(small_config('derpp', num_seeds=4), {wd!r}).run()))
"""
    return json.loads(run_with_devices(code).strip().splitlines()[-1])


def test_two_processes_stream_read_own_seeds(tmp_path, one_process):
    """Stream placement over two processes: each reads only its own seeds' rows of
    every chunk from disk, and the run equals one process's device-placement run."""
    from test_placement import _write_digits

    data_dir = str(tmp_path / "data")
    _write_digits(data_dir)
    blocks = {}
    two = _two_processes(str(tmp_path / "st"), blocks=blocks, **{"dataset": "clj:digits_rec", "data_dir": data_dir,
                                                                 "data.placement": "stream"})
    # 4 seeds over 2 x 2 devices (seed mesh): process p holds seeds 2p, 2p + 1 and whole batches
    assert blocks[0][0] == [0, 2] and blocks[1][0] == [2, 4], blocks
    assert blocks[0][2] == blocks[1][2] == [0, 16], blocks
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(two["accuracy_matrix"][k]["mean"], one_process["accuracy_matrix"][k]["mean"],
                                   atol=1e-6)


def test_two_processes_equal_one_process_and_write_once(tmp_path, one_process):
    wd = str(tmp_path / "mh")
    two = _two_processes(wd)
    one = one_process
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(two["accuracy_matrix"][k]["mean"], one["accuracy_matrix"][k]["mean"], atol=1e-6)
    events = [json.loads(ln) for ln in open(os.path.join(wd, "metrics.jsonl"))]
    ends = [e["task"] for e in events if e.get("event") == "task_end"]
    assert ends == [0, 1, 2, 3, 4], ends  # one line per event: a single writer

    # a killed (stopped) two-process run resumes to the same results
    wd2 = str(tmp_path / "mh_stop")
    stopped = _two_processes(wd2, stop_after_task=1)
    assert stopped == {"stopped_after_task": 1}
    resumed = _two_processes(wd2)
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(resumed["accuracy_matrix"][k]["mean"], two["accuracy_matrix"][k]["mean"],
                                   atol=1e-6)
    # the command line with resume=False into a workdir that holds another config's run: it
    # starts over (process 0 owns the workdir and clears it, the other waits); only process 0 reports
    wd3 = wd2
    for extra in (["--config.resume=False"],):
        port = _free_port()
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags_with_devices(2),
               "PJRT_NPROC": os.environ.get("PJRT_NPROC", str(simulated_device_threads(2)))}
        cmd = [sys.executable, "launch.py", "--config=configs/finetune_digits.py", "--config.train.epochs=1",
               "--config.progress=False", "--config.plots=False", f"--workdir={wd3}",
               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"] + extra
        procs = [subprocess.Popen(cmd + [f"--process_id={i}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
        assert "final avg acc" in outs[0][0] and "final avg acc" not in outs[1][0]
        res = json.load(open(os.path.join(wd3, "results.json")))
        assert len(res["accuracy_matrix"]["class_il"]) == 5
