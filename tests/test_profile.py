"""loop.profile=True: a JAX profiler trace of a few chunks under <workdir>/profile/."""
import gzip
import json
import os

import numpy as np
import pytest

from conftest import small_config

from clj.config import ConfigError, validate


def _cfg(**over):
    # Split-digits, first task ~290 examples / batch 16 -> 18 steps: 5 chunks of 4 steps
    return small_config("finetune", **{"loop.steps_per_call": 4, "loop.compilation_cache": False, **over})


def test_profile_writes_a_readable_trace_of_the_chosen_chunks_and_changes_nothing(tmp_path, capsys):
    import jax

    from clj.train.loop import Runner
    from clj.train.profile import trace_files

    wd = str(tmp_path / "run")
    out = Runner(_cfg(**{"loop.profile": True}), wd).run()
    files = trace_files(os.path.join(wd, "profile"))
    assert len(files) == 1 and os.path.getsize(files[0]) > 0, files
    assert files[0].startswith(os.path.join(wd, "profile", "plugins", "profile") + os.sep)
    assert "profile of chunks 2-3 of task 1 written under" in capsys.readouterr().out
    # read back with JAX's own XSpace reader: the two traced chunks are steps named clj_chunk
    data = jax.profiler.ProfileData.from_file(files[0])
    steps = [ev for plane in data.planes for line in plane.lines for ev in line.events if ev.name == "clj_chunk"]
    assert len(steps) == 2
    (perfetto,) = trace_files(os.path.join(wd, "profile"), "perfetto_trace.json.gz")
    with gzip.open(perfetto, "rt") as f:
        assert json.load(f)  # a JSON trace Perfetto opens
    # the trace is no result: the same numbers as the run without it, and the same identity
    plain = Runner(_cfg(), str(tmp_path / "plain")).run()
    np.testing.assert_array_equal(out["accuracy_matrix"]["class_il"], plain["accuracy_matrix"]["class_il"])
    from clj.workdir import fingerprint

    assert fingerprint(_cfg(**{"loop.profile": True, "loop.profile_chunks": 3})) == fingerprint(_cfg())


def test_profile_off_writes_no_trace(tmp_path):
    from clj.train.loop import Runner

    wd = str(tmp_path / "run")
    Runner(_cfg(stop_after_task=0), wd).run()
    assert not os.path.exists(os.path.join(wd, "profile"))


@pytest.mark.parametrize("field,value,msg", [
    ("loop.profile", "yes", "loop.profile='yes' is invalid; valid: True, False."),
    ("loop.profile", 1, "loop.profile=1 is invalid; valid: True, False."),
    ("loop.profile_chunks", 0, "loop.profile_chunks=0 is invalid: it must be an integer >= 1."),
])
def test_bad_profile_fields_are_one_line(field, value, msg):
    c = _cfg()
    section, name = field.split(".")
    with c.unlocked():
        del c[section][name]
        c[section][name] = value  # a config file may hold anything
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert str(e.value) == msg
