"""tracking.wandb=True: a Weights & Biases run per seed and grid point, beside
TensorBoard; the optional extra (pip install 'clj-jax[wandb]')."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, small_config

from clj.config import ConfigError, validate

INSTALL = "pip install 'clj-jax[wandb]'"


def _hide_wandb(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))


def test_wandb_without_the_package_is_one_line_naming_the_install(monkeypatch):
    _hide_wandb(monkeypatch)
    with pytest.raises(ConfigError) as e:
        validate(small_config("finetune", **{"tracking.wandb": True}))
    assert str(e.value) == (f"tracking.wandb=True needs the wandb package, which is not installed: {INSTALL} "
                            "(or set tracking.wandb=False).")
    validate(small_config("finetune", **{"tracking.wandb": True, "tracking.wandb_mode": "disabled"}))  # no writer


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_launch_refuses_wandb_without_the_package_before_the_workdir(tmp_path):
    wd = tmp_path / "run"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/derpp_digits.py",
                        "--config.tracking.wandb=True", f"--workdir={wd}"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"error: tracking.wandb=True needs the wandb package, which is not installed: {INSTALL} "
        "(or set tracking.wandb=False).")
    assert not wd.exists()


@pytest.mark.parametrize("field,value,msg", [
    ("tracking.wandb_mode", "cloud", "tracking.wandb_mode='cloud' is unknown; valid: offline, online, disabled."),
    ("tracking.wandb", "yes", "tracking.wandb='yes' is invalid; valid: True, False."),
    ("tracking.wandb_project", "", "tracking.wandb_project='' is invalid: it must be a non-empty name."),
])
def test_bad_wandb_fields_are_one_line(field, value, msg):
    c = small_config("finetune")
    section, name = field.split(".")
    with c.unlocked():
        del c[section][name]
        c[section][name] = value
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert str(e.value) == msg


def test_offline_run_logs_loss_and_task_accuracies_per_seed(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason=f"the W&B writer needs the optional extra: {INSTALL}")
    from clj.tracking import read_scalars, read_wandb_history
    from clj.train.loop import Runner

    wd = str(tmp_path / "run")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, wd)  # nothing of W&B's outside the workdir
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = small_config("finetune", num_seeds=2, **{"tracking.wandb": True, "tracking.tensorboard": True,
                                                    "loop.compilation_cache": False})
    Runner(cfg, wd).run()
    for s in (0, 1):
        d = os.path.join(wd, f"seed_{s}")
        (rows,) = read_wandb_history(d)  # one offline W&B run per seed, under its folder
        res = json.load(open(os.path.join(d, "results.json")))
        R = np.array(res["accuracy_matrix"]["class_il"])
        T = R.shape[0]
        acc = {r["task"]: r for r in rows if "class_il/average_accuracy" in r}
        assert sorted(acc) == list(range(T))
        for i in range(T):  # the row of the matrix after each task
            np.testing.assert_allclose([acc[i][f"class_il/acc_task_{j}"] for j in range(i + 1)], R[i, :i + 1],
                                       atol=1e-6)
            np.testing.assert_allclose(acc[i]["class_il/average_accuracy"], R[i, :i + 1].mean(), atol=1e-6)
        # the same loss curve as TensorBoard's, against the global step
        loss = [(r["train/step"], r["train/loss"]) for r in rows if "train/loss" in r]
        tb = read_scalars(d)["train/loss"]
        assert [x for x, _ in loss] == [x for x, _ in tb]
        np.testing.assert_allclose([v for _, v in loss], [v for _, v in tb], rtol=1e-6)
