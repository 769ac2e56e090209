"""The issue-15 AKR table's arithmetic and configs (no training; no JAX needed)."""
import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiment():
    spec = importlib.util.spec_from_file_location("akr_experiment", os.path.join(ROOT, "experiments", "akr.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_t_interval_hand_computed():
    ex = _experiment()
    # d = 1, 2, 3: mean 2, sample std 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3)
    m, lo, hi = ex.t_interval([1.0, 2.0, 3.0])
    h = 4.302653 / math.sqrt(3)
    assert m == pytest.approx(2.0)
    assert lo == pytest.approx(2.0 - h, abs=1e-5) and hi == pytest.approx(2.0 + h, abs=1e-5)
    m1, lo1, hi1 = ex.t_interval([0.5])
    assert m1 == 0.5 and math.isnan(lo1) and math.isnan(hi1)


def _write_seed(wd, seed, accs, abs_a, ex_w, R=None, forgetting=None, til_last=None):
    """A per-seed results.json with class-IL accuracies after each phase (mean over seen tasks)."""
    os.makedirs(os.path.join(wd, f"seed_{seed}"), exist_ok=True)
    r = {"seed": seed, "metrics": {"class_il": {"average_incremental_accuracy": sum(accs) / len(accs),
                                                "final_average_accuracy": accs[-1], "forgetting": forgetting},
                                   "task_il": {"final_average_accuracy": til_last}},
         "accuracy_matrix": {"class_il": R},
         "extra": {"abs_a_mean": abs_a, "exemplar_weight_mean": ex_w, "last_step_corr_a_r": 0.5,
                   "eval_time_s": [1.0, 2.0]},
         "wall_time_s": {"total": 10.0 + seed}}
    json.dump(r, open(os.path.join(wd, f"seed_{seed}", "results.json"), "w"))


def test_table_pairs_rows_by_seed(tmp_path):
    ex = _experiment()
    base = str(tmp_path / "fmnist_b0inc2_m200_e2_none")
    mix = str(tmp_path / "fmnist_b0inc2_m200_e2_mixup")
    akr = str(tmp_path / "fmnist_b0inc2_m200_e2_attentive")
    for s, (b, m, a) in enumerate([(0.50, 0.52, 0.55), (0.60, 0.61, 0.60), (0.40, 0.43, 0.47)]):
        _write_seed(base, s, [0.9, b], None, None)
        _write_seed(mix, s, [0.9, m], 0.25, 0.5)
        _write_seed(akr, s, [0.9, a], 0.17, 0.41)
    table = ex.fmnist_table(str(tmp_path), 200, 2, run_missing=False)
    lines = {ln.split("|")[1].strip(): ln for ln in table.splitlines() if ln.startswith("| ")}
    # last accuracy: Mixup - Base = +2, +1, +3 points -> mean +2.00; AKR - Mixup = +3, -1, +4 -> +2.00
    assert "+2.00" in lines["Mixup − Base (no blending)"].split("|")[4]
    assert lines["AKR − Mixup"].split("|")[4].strip().startswith("+2.00")
    assert "0.170 ± 0.000" in lines["AKR"] and "0.410 ± 0.000" in lines["AKR"]
    assert "UNFINISHED" not in table
    assert lines["AKR"].split("|")[-2].strip() == "3"  # evaluation seconds (1 + 2)


def test_clutter_config_changes_only_the_data():
    from clj.config import load_config

    for variant in ("attentive,200,6", "mixup,2000,30", "none"):
        fm = load_config(os.path.join(ROOT, "configs", "akr_fmnist_b0inc2.py"), variant)
        cl = load_config(os.path.join(ROOT, "configs", "akr_clutter.py"), variant)
        assert cl.dataset == "clutter_mnist" and cl.clutter.canvas == 48
        a, b = fm.to_dict(), cl.to_dict()
        for d in (a, b):
            d.pop("dataset")
            d.pop("clutter", None)
            d["scenario"].pop("train_fraction")
        assert a == b
    with pytest.raises(ValueError, match="replay='bogus'"):
        load_config(os.path.join(ROOT, "configs", "akr_clutter.py"), "bogus")


def test_table_forgetting_task_il_and_mean_matrix(tmp_path):
    ex = _experiment()
    nan = float("nan")
    for replay in ("none", "mixup", "attentive"):
        wd = str(tmp_path / f"clutter_m200_e3_{replay}")
        # seed 0: R = [[.8, nan], [.4, .9]]; seed 1: [[.6, nan], [.2, 1.0]] -> mean [[70], [30, 95]]
        _write_seed(wd, 0, [0.8, 0.65], 0.1, 0.5, R=[[0.8, nan], [0.4, 0.9]], forgetting=0.4, til_last=0.9)
        _write_seed(wd, 1, [0.6, 0.6], 0.1, 0.5, R=[[0.6, None], [0.2, 1.0]], forgetting=0.2, til_last=0.8)
    table = ex.fmnist_table(str(tmp_path), 200, 3, run_missing=False, name="clutter")
    rows = {ln.split("|")[1].strip(): ln.split("|") for ln in table.splitlines() if ln.startswith("| ")}
    assert rows["Mixup"][5].strip() == "30.00 ± 14.14"  # forgetting 40, 20
    assert rows["Mixup"][6].strip() == "85.00 ± 7.07"  # task-IL last 90, 80
    assert rows["0"][2:5] == [" 70.0 ", " 70.0 ", " 70.0 "]
    assert rows["1"][2].strip() == "30.0 / 95.0"
