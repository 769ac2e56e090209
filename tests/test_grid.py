"""Hyperparameters as a vmapped axis: a grid run as one program equals its
points run one by one."""
import json

import numpy as np
import pytest

from clj.config import ConfigError
from clj.train import Runner
from conftest import apply_overrides, small_config

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


def test_tensorboard_tracking_per_vmapped_run(tmp_path):
    """tracking.tensorboard: each vmapped run (point x seed) gets its own event
    file with the per-chunk loss and the per-task accuracies of its matrix."""
    from clj.tracking import read_scalars

    cfg = small_config("derpp", num_seeds=2, **{"tracking.tensorboard": True})
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    Runner(cfg, str(tmp_path / "g"), points=GRID[:2], point_workdirs=dirs).run()
    for d in dirs:
        for s in (0, 1):
            res = json.load(open(f"{d}/seed_{s}/results.json"))
            sc = read_scalars(f"{d}/seed_{s}")
            assert len(sc["train/loss"]) >= 5
            R = np.array(res["accuracy_matrix"]["class_il"])
            got = [v for _, v in sorted(sc["class_il/acc_task_0"])]
            np.testing.assert_allclose(got, R[:, 0], atol=1e-6)


def test_ewc_lambda_grid_equals_separate_runs(tmp_path):
    """EWC's lambda and learning rate as vmapped axes: 2 points in one program;
    the second equals its run alone and differs from the first (the
    regularisation family declares ``reg.lam`` and ``optim.lr`` sweepable)."""
    import ml_collections

    def ewc(lr=0.1, lam=1.0):
        c = small_config("ewc", **{"optim.lr": lr})
        c.reg = ml_collections.ConfigDict({"lam": lam, "n_fisher": 32})
        return c

    grid = [{"optim.lr": 0.1, "reg.lam": 1.0}, {"optim.lr": 0.05, "reg.lam": 10.0}]  # (lam 100 diverges at lr 0.05)
    dirs = [str(tmp_path / f"p{i}") for i in range(len(grid))]
    r = Runner(ewc(), str(tmp_path / "grid"), points=grid, point_workdirs=dirs)
    r.run()
    assert r._chunk_fn()._cache_size() == 1
    mats = []
    for i, p in enumerate(grid):
        if i == 0:  # (CI time: one point run alone; the other must differ from it)
            mats.append(np.asarray(json.load(open(tmp_path / "p0" / "results.json"))["accuracy_matrix"]["class_il"]))
            continue
        Runner(ewc(p["optim.lr"], p["reg.lam"]), str(tmp_path / f"alone{i}")).run()
        a = json.load(open(tmp_path / f"p{i}" / "results.json"))
        b = json.load(open(tmp_path / f"alone{i}" / "results.json"))
        assert a["hparams"] == p
        for k in ("class_il", "task_il"):
            np.testing.assert_allclose(a["accuracy_matrix"][k], b["accuracy_matrix"][k], atol=1e-6)
        mats.append(np.asarray(a["accuracy_matrix"]["class_il"]))
    assert not np.allclose(mats[0], mats[1])  # lambda changes the run: the axis is really swept


def _method_config(method, **over):
    """A small digits config of ``method`` (2 class-IL tasks of 5 classes);
    the class-IL exemplar family gets a 20-exemplar memory."""
    from clj.methods.sections import section_config

    c = small_config(method, **{"scenario.increment": 5, "train.batch_size": 32})
    c.cil = section_config("cil", memory_size=20, update_lr=0.1, update_milestones=(), feature_batch_size=256)
    return apply_overrides(c, over)


# CI time: two methods, one per way a swept rate reaches the optimizer.  LwF: the
# State's optim.lr in the step and in its head warm-up.  iCaRL: the phase rate
# (optim.lr in task 0, cil.update_lr after; icarl_phases.phase_lr, shared by WA,
# Replay, AKR, MEMO and DER (Yan)) and the KD weight from the State.  ER-ACE and
# A-GEM pass optim.lr as DER++ does (test above).
@pytest.mark.parametrize("method,axes", [
    ("lwf", {"optim.lr": (0.1, 0.03)}),
    ("icarl", {"optim.lr": (0.1, 0.03), "cil.update_lr": (0.1, 0.02)}),
])
def test_lr_grid_equals_separate_run_per_method(tmp_path, method, axes):
    """A 2-point learning-rate grid in one program: the second point equals
    its run alone, and differs from the first (the swept rate reaches the
    optimizer in every task)."""
    grid = [{k: v[i] for k, v in axes.items()} for i in range(2)]
    dirs = [str(tmp_path / f"p{i}") for i in range(2)]
    Runner(_method_config(method), str(tmp_path / "grid"), points=grid, point_workdirs=dirs).run()
    # the point alone, beside a second seed: the grid's program shapes (2 vmapped
    # runs), so its training chunks and evaluation come from the compilation cache
    Runner(_method_config(method, num_seeds=2, **grid[1]), str(tmp_path / "alone")).run()
    a = [json.load(open(f"{d}/results.json")) for d in dirs]
    b = json.load(open(tmp_path / "alone" / "seed_0" / "results.json"))
    assert a[1]["hparams"] == grid[1]
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(a[1]["accuracy_matrix"][k], b["accuracy_matrix"][k], atol=1e-6)
    assert not np.allclose(a[0]["accuracy_matrix"]["class_il"], a[1]["accuracy_matrix"]["class_il"])
