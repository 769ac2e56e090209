"""Tests for clj.metrics (accuracy metrics, results.json, plots)."""

import json
import math
import os

import numpy as np
import pytest

from clj.metrics import (
    METRIC_NAMES,
    MetricsLogger,
    accuracy_curve,
    average_incremental_accuracy,
    build_results,
    bwt,
    final_average_accuracy,
    forgetting,
    fwt,
    read_jsonl,
    summarize,
    summarize_seeds,
    task_accuracies,
    write_json_atomic,
)
from clj.metrics.plots import plot_accuracy_curves, plot_accuracy_matrix, plot_results

RTOL = 1e-12

# R[i, j] = accuracy on task j after training task i.
R3 = np.array(
    [
        [0.90, 0.10, 0.20],
        [0.95, 0.80, 0.30],
        [0.70, 0.50, 0.60],
    ]
)
B3 = np.array([0.10, 0.20, 0.25])  # random-init accuracy per task
SIZES3 = np.array([100, 300, 200])  # test examples per task


# ---------------------------------------------------------------------------
# hand-computed 3x3 example
# ---------------------------------------------------------------------------


def test_final_average_accuracy_by_hand():
    # last row: (0.70 + 0.50 + 0.60) / 3 = 1.80 / 3 = 0.60
    np.testing.assert_allclose(final_average_accuracy(R3), 0.60, rtol=RTOL)


def test_accuracy_curve_by_hand():
    # i=0: 0.90 / 1                   = 0.90
    # i=1: (0.95 + 0.80) / 2 = 1.75/2 = 0.875
    # i=2: (0.70 + 0.50 + 0.60) / 3   = 0.60
    np.testing.assert_allclose(accuracy_curve(R3), [0.90, 0.875, 0.60], rtol=RTOL)


def test_average_incremental_accuracy_by_hand():
    # (0.90 + 0.875 + 0.60) / 3 = 2.375 / 3 = 0.791666...
    np.testing.assert_allclose(average_incremental_accuracy(R3), 2.375 / 3, rtol=RTOL)


def test_forgetting_by_hand():
    # j=0: max(R[0,0], R[1,0]) - R[2,0] = max(0.90, 0.95) - 0.70 = 0.25
    # j=1: max(R[1,1])         - R[2,1] = 0.80 - 0.50             = 0.30
    # mean: (0.25 + 0.30) / 2 = 0.275
    np.testing.assert_allclose(forgetting(R3), 0.275, rtol=RTOL)


def test_forgetting_ignores_rows_before_task_was_trained():
    # R[0, 1] = 0.99 is measured before task 1 is trained; the max runs over
    # i in [j, T-2] = [1, 1] only, so forgetting of task 1 is 0.80 - 0.50 = 0.30.
    R = R3.copy()
    R[0, 1] = 0.99
    np.testing.assert_allclose(forgetting(R), 0.275, rtol=RTOL)


def test_bwt_by_hand():
    # j=0: R[2,0] - R[0,0] = 0.70 - 0.90 = -0.20
    # j=1: R[2,1] - R[1,1] = 0.50 - 0.80 = -0.30
    # mean: -0.50 / 2 = -0.25
    np.testing.assert_allclose(bwt(R3), -0.25, rtol=RTOL)


def test_fwt_by_hand():
    # j=1: R[0,1] - b[1] = 0.10 - 0.20 = -0.10
    # j=2: R[1,2] - b[2] = 0.30 - 0.25 =  0.05
    # mean: -0.05 / 2 = -0.025
    np.testing.assert_allclose(fwt(R3, B3), -0.025, rtol=RTOL)
    assert fwt(R3, None) is None


def test_summarize_by_hand():
    s = summarize(R3, random_init_acc=B3)
    assert list(s) == list(METRIC_NAMES) == [
        "final_average_accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "bwt",
        "fwt",
    ]
    assert all(type(v) is float for v in s.values())
    np.testing.assert_allclose(
        [s[k] for k in METRIC_NAMES], [0.60, 2.375 / 3, 0.275, -0.25, -0.025], rtol=RTOL
    )
    assert summarize(R3)["fwt"] is None


def test_unmeasured_upper_triangle():
    """NaN above the diagonal (loop.eval_tasks="seen") changes no metric but
    FWT, which is None; NaN on or below the diagonal is refused."""
    R = R3.copy()
    R[np.triu_indices(3, 1)] = np.nan
    s, full = summarize(R, random_init_acc=B3, task_sizes=SIZES3), summarize(R3, random_init_acc=B3,
                                                                          task_sizes=SIZES3)
    assert s["fwt"] is None
    for k in METRIC_NAMES[:4]:
        assert s[k] == full[k], k
    R[1, 0] = np.nan
    with pytest.raises(ValueError, match="finite accuracies"):
        summarize(R)


def test_task_sizes_weighting():
    # weights n = [100, 300, 200]
    # A_0 = 0.90
    # A_1 = (100*0.95 + 300*0.80) / 400 = (95 + 240) / 400 = 335/400 = 0.8375
    # A_2 = (100*0.70 + 300*0.50 + 200*0.60) / 600 = (70 + 150 + 120) / 600 = 340/600
    # AIA = (0.90 + 335/400 + 340/600) / 3
    curve = accuracy_curve(R3, task_sizes=SIZES3)
    np.testing.assert_allclose(curve, [0.90, 335 / 400, 340 / 600], rtol=RTOL)
    np.testing.assert_allclose(
        average_incremental_accuracy(R3, task_sizes=SIZES3),
        (0.90 + 335 / 400 + 340 / 600) / 3,
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        final_average_accuracy(R3, task_sizes=SIZES3), 340 / 600, rtol=RTOL
    )
    s = summarize(R3, task_sizes=SIZES3)
    np.testing.assert_allclose(s["average_incremental_accuracy"], (0.90 + 335 / 400 + 340 / 600) / 3, rtol=RTOL)
    np.testing.assert_allclose(s["final_average_accuracy"], 340 / 600, rtol=RTOL)
    # forgetting / bwt are unaffected by task sizes
    assert s["forgetting"] == forgetting(R3) and s["bwt"] == bwt(R3)
    # equal sizes == unweighted
    np.testing.assert_allclose(
        average_incremental_accuracy(R3, task_sizes=[7, 7, 7]),
        average_incremental_accuracy(R3),
        rtol=RTOL,
    )
    with pytest.raises(ValueError, match="task_sizes"):
        average_incremental_accuracy(R3, task_sizes=[1, 2])
    with pytest.raises(ValueError, match="task_sizes"):
        average_incremental_accuracy(R3, task_sizes=[1, 0, 2])


# ---------------------------------------------------------------------------
# edge cases and validation
# ---------------------------------------------------------------------------


def test_single_task():
    R = np.array([[0.83]])
    s = summarize(R, random_init_acc=[0.5])
    assert s == {
        "final_average_accuracy": 0.83,
        "average_incremental_accuracy": 0.83,
        "forgetting": 0.0,
        "bwt": 0.0,
        "fwt": 0.0,
    }
    np.testing.assert_allclose(accuracy_curve(R), [0.83])
    assert summarize(R)["fwt"] is None


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.zeros((2, 3)), r"shape \(2, 3\)"),
        (np.zeros(3), r"shape \(3,\)"),
        (np.zeros((0, 0)), r"shape \(0, 0\)"),
        (np.zeros((2, 2, 2)), r"shape \(2, 2, 2\)"),
        (np.array([[0.5, 1.2], [0.3, 0.4]]), r"1\.2"),
        (np.array([[50.0, 20.0], [30.0, 40.0]]), r"percent"),
        (np.array([[0.5, -0.1], [0.3, 0.4]]), r"-0\.1"),
        (np.array([[0.5, 0.2], [np.nan, 0.4]]), r"nan"),
        ([[0.5, 0.2], [0.3]], r"numeric"),
    ],
)
def test_invalid_matrix_raises(bad, pattern):
    for fn in (final_average_accuracy, average_incremental_accuracy, forgetting, bwt,
               accuracy_curve, summarize):
        with pytest.raises(ValueError, match=pattern):
            fn(bad)


def test_invalid_random_init_raises():
    with pytest.raises(ValueError, match="random_init_acc"):
        fwt(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="random_init_acc"):
        fwt(R3, [0.1, 0.2, 3.0])


def test_task_accuracies():
    pred = np.array([0, 1, 2, 3, 3, 5, 9])
    labels = np.array([0, 1, 2, 2, 4, 5, 8])
    tasks = np.array([0, 0, 1, 1, 2, 2, 2])
    acc = task_accuracies(pred, labels, tasks, num_tasks=4)
    # task 0: 2/2; task 1: 1/2; task 2: 1/3; task 3: no examples -> nan
    np.testing.assert_allclose(acc[:3], [1.0, 0.5, 1 / 3], rtol=RTOL)
    assert math.isnan(acc[3])
    assert acc.shape == (4,)
    with pytest.raises(ValueError, match="task_of_example"):
        task_accuracies(pred, labels, tasks, num_tasks=2)
    with pytest.raises(ValueError, match="same length"):
        task_accuracies(pred[:-1], labels, tasks, num_tasks=4)


# ---------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "results.json"
    obj = {
        "a": np.float32(0.5),
        "b": np.arange(3),
        "c": np.int64(7),
        "d": [np.bool_(True), (1, 2)],
        "e": np.array([[0.25, np.nan]]),
    }
    out = write_json_atomic(path, obj)
    assert out == str(path)
    with open(path) as f:
        loaded = json.load(f)
    assert loaded == {"a": 0.5, "b": [0, 1, 2], "c": 7, "d": [True, [1, 2]], "e": [[0.25, None]]}
    # overwrite, and no temporary files left behind
    write_json_atomic(path, {"x": 1})
    with open(path) as f:
        assert json.load(f) == {"x": 1}
    assert sorted(os.listdir(path.parent)) == ["results.json"]


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    with open(path) as f:
        assert json.load(f) == {"ok": True}
    assert os.listdir(tmp_path) == ["r.json"]


def _results(seed=0, R=R3, wall=(1.0, 2.0, 3.5)):
    return build_results(
        method="derpp",
        dataset="digits",
        seed=seed,
        scenario={"kind": "class_il", "num_tasks": 3, "classes_per_task": [2, 2, 2]},
        accuracy_matrices={"class_il": np.asarray(R), "task_il": np.ones((3, 3))},
        random_init_accuracy={"class_il": B3, "task_il": np.full(3, 0.5)},
        memory_bytes={"buffer": 1000, "masks": 24, "model": np.int64(4000)},
        wall_time_per_task=list(wall),
        steps_per_task=[np.int32(10), 10, 10],
        extra={"alpha": np.float64(0.1)},
    )


def test_build_results_roundtrip(tmp_path):
    res = _results()
    assert list(res) == [
        "method", "dataset", "seed", "scenario", "accuracy_matrix",
        "random_init_accuracy", "metrics", "memory_bytes", "wall_time_s", "steps", "extra",
    ]
    assert res["memory_bytes"] == {"buffer": 1000, "masks": 24, "model": 4000, "total": 5024}
    assert res["wall_time_s"] == {"per_task": [1.0, 2.0, 3.5], "total": 6.5}
    assert res["steps"] == {"per_task": [10, 10, 10]}
    assert res["extra"] == {"alpha": 0.1}
    assert res["accuracy_matrix"]["class_il"] == R3.tolist()
    assert res["metrics"]["class_il"] == summarize(R3, random_init_acc=B3)
    np.testing.assert_allclose(
        [res["metrics"]["task_il"][k] for k in METRIC_NAMES], [1.0, 1.0, 0.0, 0.0, 0.5]
    )
    path = tmp_path / "results.json"
    write_json_atomic(path, res)
    with open(path) as f:
        assert json.load(f) == res


def test_build_results_partial_and_defaults():
    # run in progress: 2 of 3 tasks done -> metrics on the [2, 2] prefix
    partial = R3[:2]
    res = build_results(
        method="er", dataset="digits", seed=1,
        scenario={"kind": "class_il", "num_tasks": 3},
        accuracy_matrices={"class_il": partial},
        random_init_accuracy=None,
        memory_bytes={"buffer": 10, "total": 99},
        wall_time_per_task=[1.0, 1.0],
        steps_per_task=[5, 5],
    )
    assert res["accuracy_matrix"]["class_il"] == partial.tolist()
    assert res["metrics"]["class_il"] == summarize(R3[:2, :2])
    # by hand on [[0.90, 0.10], [0.95, 0.80]] (T = 2):
    #   final = (0.95 + 0.80) / 2 = 0.875
    #   forgetting: j=0, max over i in [0, 0] = R[0,0] = 0.90; 0.90 - 0.95 = -0.05
    #   bwt: R[1,0] - R[0,0] = 0.95 - 0.90 = 0.05
    m = res["metrics"]["class_il"]
    np.testing.assert_allclose(m["final_average_accuracy"], 0.875, rtol=RTOL)
    np.testing.assert_allclose(m["forgetting"], -0.05, rtol=1e-9)
    np.testing.assert_allclose(m["bwt"], 0.05, rtol=1e-9)
    assert res["metrics"]["class_il"]["fwt"] is None
    assert res["random_init_accuracy"] is None
    assert res["memory_bytes"] == {"buffer": 10, "total": 99}
    assert res["extra"] == {}
    json.dumps(res, allow_nan=False)

    with pytest.raises(ValueError, match="num_tasks"):
        build_results(method="er", dataset="d", seed=0, scenario={"num_tasks": 4},
                      accuracy_matrices={"class_il": R3}, random_init_accuracy=None,
                      memory_bytes={}, wall_time_per_task=[], steps_per_task=[])
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        build_results(method="er", dataset="d", seed=0, scenario={},
                      accuracy_matrices={"class_il": np.zeros((4, 3))}, random_init_accuracy=None,
                      memory_bytes={}, wall_time_per_task=[], steps_per_task=[])


def test_summarize_seeds():
    Rs = [R3.copy(), R3.copy(), R3.copy()]
    # final-row values chosen so that final_average_accuracy = 0.6, 0.7, 0.8
    Rs[1][2] = [0.80, 0.60, 0.70]  # mean 0.7
    Rs[2][2] = [0.90, 0.70, 0.80]  # mean 0.8
    runs = [_results(seed=s, R=R, wall=(1.0, 1.0, w)) for s, (R, w) in enumerate(zip(Rs, (1.0, 2.0, 6.0)))]
    summ = summarize_seeds(runs)
    assert summ["seeds"] == [0, 1, 2]
    assert summ["method"] == "derpp" and summ["dataset"] == "digits"
    faa = summ["metrics"]["class_il"]["final_average_accuracy"]
    # mean (0.6 + 0.7 + 0.8) / 3 = 0.7; sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    np.testing.assert_allclose(faa["mean"], 0.7, rtol=RTOL)
    np.testing.assert_allclose(faa["std"], 0.1, rtol=1e-9)
    assert faa["n"] == 3
    # 95 % t interval: h = t_{0.975, 2} * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414
    h = 4.302653 * 0.1 / math.sqrt(3)
    np.testing.assert_allclose(faa["ci95"], [0.7 - h, 0.7 + h], atol=1e-6)
    # totals 3, 4, 8: mean 5, sample std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    np.testing.assert_allclose(summ["wall_time_s"]["total"]["mean"], 5.0, rtol=RTOL)
    np.testing.assert_allclose(summ["wall_time_s"]["total"]["std"], math.sqrt(7.0), rtol=RTOL)
    np.testing.assert_allclose(
        summ["accuracy_matrix"]["class_il"]["mean"], np.mean(Rs, axis=0), rtol=RTOL
    )
    json.dumps(summ, allow_nan=False)

    # single seed: std 0.0; None metric stays None
    one = summarize_seeds([build_results(
        method="er", dataset="d", seed=3, scenario={}, accuracy_matrices={"class_il": R3},
        random_init_accuracy=None, memory_bytes={}, wall_time_per_task=[1.0],
        steps_per_task=[1])])
    assert one["metrics"]["class_il"]["fwt"] is None
    b = one["metrics"]["class_il"]["bwt"]
    assert b["std"] == 0.0 and b["n"] == 1 and b["ci95"] is None
    np.testing.assert_allclose(b["mean"], -0.25, rtol=RTOL)

    with pytest.raises(ValueError):
        summarize_seeds([])
    other = dict(runs[0], method="ewc")
    with pytest.raises(ValueError, match="method"):
        summarize_seeds([runs[0], other])


def test_metrics_logger(tmp_path):
    path = tmp_path / "logs" / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log({"task": 0, "loss": np.float32(0.5)})
        log.log(task=1, acc=np.array([0.25, 0.75]))
        # flushed: readable before close
        assert len(read_jsonl(path)) == 2
    assert log.closed
    with MetricsLogger(path) as log:  # appends
        log({"task": 2})
    assert read_jsonl(path) == [
        {"task": 0, "loss": 0.5},
        {"task": 1, "acc": [0.25, 0.75]},
        {"task": 2},
    ]


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG_MAGIC and os.path.getsize(path) > 1000


def test_plots(tmp_path):
    p1 = plot_accuracy_matrix(R3, tmp_path / "m.png", title="test")
    p2 = plot_accuracy_curves(R3, tmp_path / "c.png")
    assert _is_png(p1) and _is_png(p2)
    # partial matrix with unmeasured entries
    partial = [[0.9, None, None], [0.8, 0.7, None]]
    assert _is_png(plot_accuracy_matrix(partial, tmp_path / "pm.png"))
    assert _is_png(plot_accuracy_curves(partial, tmp_path / "pc.png"))
    with pytest.raises(ValueError):
        plot_accuracy_matrix(R3 * 100, tmp_path / "bad.png")


def test_plot_results(tmp_path):
    res = json.loads(json.dumps(_results()))
    paths = plot_results(res, tmp_path / "plots")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == [
        "accuracy_curves_class_il.png",
        "accuracy_curves_task_il.png",
        "accuracy_matrix_class_il.png",
        "accuracy_matrix_task_il.png",
    ]
    assert all(_is_png(p) for p in paths)


def test_memory_curve_measures_by_hand():
    from clj.metrics import memory_curve_measures

    mb = [7.6, 12.4, 16.0]
    avg = [0.60, 0.66, 0.70]
    last = [0.45, 0.50, 0.56]
    m = memory_curve_measures(mb, avg, last)
    # trapezoids: 4.8 * (0.60 + 0.66) / 2 + 3.6 * (0.66 + 0.70) / 2
    assert m["auc_a"] == pytest.approx(4.8 * 0.63 + 3.6 * 0.68, rel=1e-12)
    assert m["auc_l"] == pytest.approx(4.8 * 0.475 + 3.6 * 0.53, rel=1e-12)
    assert m["apm_s"] == pytest.approx(60.0 / 7.6, rel=1e-12)
    assert m["apm_e"] == pytest.approx(70.0 / 16.0, rel=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        memory_curve_measures([7.6, 7.6], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="not percent"):
        memory_curve_measures([1.0, 2.0], [60.0, 70.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least 2 points"):
        memory_curve_measures([1.0], [0.5], [0.5])


def test_mean_ci_hand_computed():
    from clj.metrics import mean_ci

    # [1, 2, 3]: mean 2, sample std 1, half-width t_{0.975, 2} / sqrt(3) = 4.302653 * 0.57735 = 2.484138
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0)
    assert lo == pytest.approx(2.0 - 2.484138, abs=1e-6) and hi == pytest.approx(2.0 + 2.484138, abs=1e-6)
    # 90 %: t_{0.95, 2} = 2.919986 -> half-width 1.685854
    m, lo, hi = mean_ci([1.0, 2.0, 3.0], level=0.90)
    assert hi - m == pytest.approx(2.919986 / math.sqrt(3), abs=1e-6)
    # [0.6, 0.7, 0.8, 0.9]: std 0.129099, t_{0.975, 3} = 3.182446 -> half-width 0.205426
    m, lo, hi = mean_ci(np.array([0.6, 0.7, 0.8, 0.9]))
    assert m == pytest.approx(0.75) and hi - m == pytest.approx(0.205426, abs=1e-6) and m - lo == pytest.approx(hi - m)
    m1, lo1, hi1 = mean_ci([0.5])
    assert m1 == 0.5 and math.isnan(lo1) and math.isnan(hi1)
    assert all(math.isnan(v) for v in mean_ci([]))
    with pytest.raises(ValueError, match=r"level=1\.5 is invalid; valid: a confidence level in \(0, 1\)"):
        mean_ci([1.0, 2.0], level=1.5)
