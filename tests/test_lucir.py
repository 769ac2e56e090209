"""LUCIR (clj.methods.cil.lucir): the cosine head, the less-forget and margin
ranking losses and the imprinting against hand computations, the update mask
of a step, the adaptive weight, the config checks, a 3-seed Split-digits run
and the same run on 4 simulated devices."""
import glob
import json
import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.methods import get_spec
from clj.methods.cil import lucir
from clj.methods.common import TaskInfo
from conftest import run_with_devices


def test_cosine_head_by_hand():
    f = jnp.asarray([[3.0, 4.0], [0.0, -2.0]])
    head = {"weight": jnp.asarray([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), "sigma": jnp.float32(2.0)}
    want = np.asarray([[0.6, 0.8, 7.0 / (5.0 * math.sqrt(2.0))], [0.0, -1.0, -1.0 / math.sqrt(2.0)]])
    np.testing.assert_allclose(np.asarray(lucir.cosine_scores(f, head["weight"])), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(lucir.cosine_logits(f, head)), 2.0 * want, rtol=1e-6, atol=1e-7)


def test_margin_ranking_loss_by_hand():
    cos = jnp.asarray([[0.9, 0.1, 0.5, 0.7, -0.2],   # old class 0: hard negatives 0.7, 0.5
                       [0.2, 0.3, 0.6, 0.1, 0.4],    # old class 1: 0.6, 0.4 (0.6, 0.1 over [2, 4))
                       [0.1, 0.2, 0.9, 0.3, 0.0]])   # new class 2: not an anchor
    y = jnp.asarray([0, 1, 2])
    # max(0, m - (gt - hard)), m = 0.5: row 0: 0.3, 0.1; row 1: 0.8, 0.6 (upper = C = 5)
    got = lucir.margin_ranking_loss(cos, y, known=2, upper=5, k=2, margin=0.5)
    assert float(got) == pytest.approx((0.3 + 0.1 + 0.8 + 0.6) / 4, abs=1e-6)
    # negatives only among the seen classes [2, 4): row 1 -> 0.8, 0.3
    got = lucir.margin_ranking_loss(cos, y, known=2, upper=4, k=2, margin=0.5)
    assert float(got) == pytest.approx((0.3 + 0.1 + 0.8 + 0.3) / 4, abs=1e-6)
    # K = 1, the second old row masked out by the weights: row 0 only, 0.3
    got = lucir.margin_ranking_loss(cos, y, 2, 5, 1, 0.5, weights=jnp.asarray([True, False, True]))
    assert float(got) == pytest.approx(0.3, abs=1e-6)
    # no old-class example: 0
    assert float(lucir.margin_ranking_loss(cos, jnp.asarray([2, 3, 4]), 2, 5, 2, 0.5)) == 0.0


def test_less_forget_loss_and_imprinting_by_hand():
    f = jnp.asarray([[1.0, 0.0], [0.0, 3.0]])
    g = jnp.asarray([[1.0, 1.0], [0.0, 1.0]])
    assert float(lucir.less_forget_loss(f, g)) == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert float(lucir.less_forget_loss(f, g, jnp.asarray([False, True]))) == pytest.approx(0.0, abs=1e-6)
    # old rows 0, 1 of norms 2 and 4 (mean 3); class 2 from rows (3, 4) and (1, 0): mean of the
    # unit vectors (0.8, 0.4), normalised, times 3; class 3 has no example and keeps its row
    w = jnp.asarray([[2.0, 0.0], [0.0, 4.0], [9.0, 9.0], [5.0, 5.0]])
    feats = jnp.asarray([[3.0, 4.0], [1.0, 0.0], [7.0, 7.0]])
    out = np.asarray(lucir.imprint_rows(w, feats, jnp.asarray([2, 2, 0]), jnp.asarray([True, True, True]), 2, 4))
    v = np.asarray([0.8, 0.4]) / np.linalg.norm([0.8, 0.4]) * 3.0
    np.testing.assert_allclose(out[2], v, rtol=1e-6)
    np.testing.assert_array_equal(out[[0, 1, 3]], np.asarray(w)[[0, 1, 3]])


def test_adaptive_weight():
    s = lucir.Static(lamda_base=5.0, adaptive="mammoth")
    assert [lucir.lamda_of_task(s, t, 2 * t, 2 * t + 2) for t in range(4)] == [0.0, 0.0, 5.0, 5.0 * math.sqrt(2)]
    s = lucir.Static(lamda_base=5.0, adaptive="classes")
    assert lucir.lamda_of_task(s, 1, 50, 60) == pytest.approx(5.0 * math.sqrt(5.0))


THREE_TASKS = {"scenario.init_cls": 4, "scenario.increment": 3}


def _cfg(**over):
    c = load_config("lucir_digits")
    c.progress = False
    c.plots = False
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def test_step_moves_only_the_new_rows_and_sigma():
    from clj.train.loop import load_scenario

    c = _cfg()
    sc = load_scenario(c)
    s = lucir.init(jax.random.PRNGKey(0), c, sc)
    t = sc.tasks[1]
    s = lucir.begin_task(s, TaskInfo(task_id=1, classes=tuple(t.classes), num_steps=4, steps_per_epoch=2,
                                     num_classes=10))
    idx = np.asarray(t.train_idx)[:32]
    x_raw = jnp.asarray(sc.x_train[idx])
    batch = {"x": s.static.augment(x_raw, None, train=False), "x_raw": x_raw,
             "y": jnp.asarray(sc.y_train[idx], jnp.int32), "task_id": jnp.full((32,), -1, jnp.int32)}
    s2, m = jax.jit(lucir.train_step)(s, batch, jax.random.PRNGKey(1))
    assert all(np.isfinite(float(v)) for v in m.values())
    w0, w1 = np.asarray(s.net.params["cosine"]["weight"]), np.asarray(s2.net.params["cosine"]["weight"])
    np.testing.assert_array_equal(w1[:2], w0[:2])      # old classes
    np.testing.assert_array_equal(w1[4:], w0[4:])      # unseen classes
    assert not np.allclose(w1[2:4], w0[2:4])           # imprinted, then trained
    assert float(s2.net.params["cosine"]["sigma"]) != 1.0
    for a, b in zip(jax.tree.leaves(s.net.params["head"]), jax.tree.leaves(s2.net.params["head"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the unused linear head


def test_bad_config_is_refused_before_any_work():
    for field, value, msg in (("k_mr", 0, "lucir.k_mr=0"), ("adaptive", "sqrt", "lucir.adaptive='sqrt'"),
                              ("unseen", "none", "lucir.unseen='none'"), ("finetune_lr", 0.0, "lucir.finetune_lr=0.0")):
        c = _cfg(**{f"lucir.{field}": value})
        with pytest.raises(ConfigError, match=msg):
            validate(c)
    assert get_spec("lucir") is lucir.SPEC


def test_split_digits_three_seeds(tmp_path):
    """The shipped digits config in 3 tasks (4 + 3 + 3 classes), 2 epochs per
    task, 3 seeds in one program: every seed's final class-IL accuracy well
    above what a forgetting model gets (about 30 %)."""
    from clj.train import Runner

    c = _cfg(**{"train.epochs": 2, "lucir.finetune_epochs": 1, "num_seeds": 3, **THREE_TASKS})
    res = Runner(c, str(tmp_path)).run()
    m = res["metrics"]["class_il"]["final_average_accuracy"]
    finals = sorted(json.load(open(p))["metrics"]["class_il"]["final_average_accuracy"]
                    for p in glob.glob(str(tmp_path / "**" / "results.json"), recursive=True))
    assert m["n"] == 3 and len(finals) == 3, (m, finals)
    assert min(finals) >= 0.75, finals


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from clj.config import load_config
    from clj.train.loop import Runner
    out = {{}}
    for n_dev in (4, 1):
        c = load_config("lucir_digits")
        c.train.epochs = 1
        c.lucir.finetune_epochs = 1
        c.scenario.init_cls, c.scenario.increment = 4, 3
        c.progress = False
        c.plots = False
        r = Runner(c, os.path.join({tmp!r}, str(n_dev)), devices=jax.devices()[:n_dev])
        res = r.run()
        out[n_dev] = {{"acc": res["accuracy_matrix"]["class_il"], "dev": res["extra"]["devices"],
                       "sigma": res["extra"]["sigma"]}}
    print("RESULT" + json.dumps(out))
""")


def test_four_devices_equal_one(tmp_path):
    stdout = run_with_devices(SHARDED.format(tmp=str(tmp_path)))
    out = json.loads([l for l in stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    four, one = out["4"], out["1"]
    assert four["dev"] == 4 and one["dev"] == 1
    np.testing.assert_allclose(four["acc"], one["acc"], atol=1e-6)
    np.testing.assert_allclose(four["sigma"], one["sigma"], rtol=1e-4)
