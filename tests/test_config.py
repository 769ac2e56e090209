"""Every config error is refused before any work, with a message naming the
bad value and what is valid."""
import os
import subprocess
import sys

import pytest

from clj.config import ConfigError, validate, validate_with_data
from clj.data import load_dataset
from clj.scenarios import make_scenario
from conftest import ROOT, small_config


@pytest.mark.parametrize("field,value,pattern", [
    ("method", "sgdx", r"method='sgdx' is unknown; valid methods: .*derpp"),
    ("dataset", "imagenet9", r"dataset='imagenet9' is unknown; valid datasets: .*digits"),
    ("optim.lr", -0.1, r"optim.lr=-0.1 is invalid"),
    ("scenario.increment", 0, r"increment=0 is invalid"),
    ("scenario.num_tasks", 7, r"num_tasks=7 is impossible.*give 5 tasks"),
    ("scenario.init_cls", 12, r"init_cls=12 is invalid"),
    ("train.batch_size", 0, r"batch_size=0 is invalid"),
    ("num_seeds", 0, r"num_seeds=0 is invalid"),
    ("scenario.kind", "foo_il", r"scenario.kind='foo_il' is unknown"),
    ("scenario.increment", 3, r"scenario.increment=3 does not divide the 7 classes .*uneven_last_task=True"),
    ("checkpoint.keep", 0, r"checkpoint.keep=0 is invalid"),
    ("checkpoint.every_minutes", -1.0, r"checkpoint.every_minutes=-1.0 is invalid"),
    ("loop.eval_tasks", "unseen", r"loop.eval_tasks='unseen' is invalid; valid values: all, seen"),
    ("replay.minibatch_size", 0, r"replay.minibatch_size=0 is invalid"),
])
def test_bad_values_refused(field, value, pattern):
    c = small_config("er", **{field: value})
    with pytest.raises(ConfigError, match=pattern):
        validate(c)


def test_every_dataset_name_of_the_data_table_validates():
    """One table of names: the config accepts every name clj.data.load_dataset
    knows (tiny_imagenet was once refused), and --help lists the same."""
    from clj.config import DATASETS as listed
    from clj.data import DATASETS

    assert tuple(listed) == DATASETS
    for name in DATASETS:
        validate(small_config("er", dataset=name))


def test_buffer_larger_than_data_refused():
    c = small_config("er", **{"replay.buffer_size": 5000})
    validate(c)
    sc = make_scenario(load_dataset("digits"), "class_il", increment=2)
    with pytest.raises(ConfigError, match=r"buffer_size=5000 is larger than the 1347 training examples"):
        validate_with_data(c, sc)


def _launch(*args):
    return subprocess.run([sys.executable, "launch.py", "--config=configs/er_digits.py", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_launch_reports_unknown_field_and_bad_value(tmp_path):
    r = _launch("--config.replay.buffersize=3", f"--workdir={tmp_path}")
    assert r.returncode != 0 and "buffersize" in (r.stderr + r.stdout)
    r = _launch("--config.method=nope", f"--workdir={tmp_path}")
    assert r.returncode == 2 and "method='nope' is unknown" in r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))  # refused before any work
