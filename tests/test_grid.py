"""Hyperparameters as a vmapped axis: a grid run as one program equals its
points run one by one."""
import json

import numpy as np
import pytest

from clj.config import ConfigError
from clj.train import Runner
from conftest import small_config

GRID = [{"optim.lr": lr, "replay.alpha": a} for lr in (0.1, 0.05) for a in (0.3, 1.0)]


def test_grid_program_equals_separate_runs(tmp_path):
    """2 learning rates x 2 DER++ alphas x 2 seeds in one program (8 vmapped
    runs, one compile of the chunk) give each point's own run's accuracy
    matrices.  (Each separate run vmaps its 2 seeds, which test_loop shows
    equal to one run per seed.)"""
    cfg = small_config("derpp", num_seeds=2)
    dirs = [str(tmp_path / f"p{i}") for i in range(len(GRID))]
    r = Runner(cfg, str(tmp_path / "grid"), points=GRID, point_workdirs=dirs)
    assert r.S == 8
    outs = r.run()
    assert r._chunk_fn()._cache_size() == 1
    assert len(outs) == 4
    for i, p in enumerate(GRID):
        alone = small_config("derpp", num_seeds=2, **p)
        Runner(alone, str(tmp_path / f"alone{i}")).run()
        for s in (0, 1):
            a = json.load(open(tmp_path / f"p{i}" / f"seed_{s}" / "results.json"))
            b = json.load(open(tmp_path / f"alone{i}" / f"seed_{s}" / "results.json"))
            assert a["hparams"] == p
            for k in ("class_il", "task_il"):
                np.testing.assert_allclose(a["accuracy_matrix"][k], b["accuracy_matrix"][k], atol=1e-6)
        cfg_i = json.load(open(tmp_path / f"p{i}" / "config.json"))
        assert cfg_i["optim"]["lr"] == p["optim.lr"] and cfg_i["replay"]["alpha"] == p["replay.alpha"]


@pytest.mark.parametrize("points,match", [
    ([{"replay.buffer_size": 10}], "cannot be a vmapped grid axis"),
    ([{"optim.lr": 0.1}, {"replay.alpha": 0.1}], "same fields"),
    ([{"optim.lr": "fast"}], "numbers"),
])
def test_grid_refuses_what_cannot_be_vmapped(tmp_path, points, match):
    with pytest.raises(ConfigError, match=match):
        Runner(small_config("derpp"), str(tmp_path / "x"), points=points)
