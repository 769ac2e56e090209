"""MIR (clj.methods.baselines.mir): the retrieval against an independent
computation of every candidate's loss increase, the stored-logit scores, the
step as SGD on stream + replay gradients, the task switch, the config checks,
and Split-digits runs (3 seeds; 4 simulated devices = 1 device)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.data import load_dataset
from clj.methods import get_spec
from clj.methods.baselines import mir
from clj.replay.buffer import reservoir_add
from clj.scenarios import make_scenario
from conftest import run_with_devices

M = 12  # buffer slots, all filled, all candidates
_retrieve = jax.jit(mir.retrieve)
_step = jax.jit(mir.train_step)


def _setup(m=4, **online):
    ds = load_dataset("synthetic", seed=0, image_shape=(4, 4, 1), num_classes=4, train_per_class=10,
                      test_per_class=2)
    sc = make_scenario(ds, "class_il", increment=2)
    c = load_config("mir_digits")
    c.scenario.kind = "class_il"
    c.model.hidden = (8,)
    c.replay.buffer_size = M
    c.replay.minibatch_size = m
    c.online.mir_subsample = M
    c.online.mir_compare_to_old_logits = False
    for k, v in online.items():
        c.online[k] = v
    st = mir.init(jax.random.PRNGKey(0), c, sc)
    # the buffer: the first 12 training examples of task 0, in slots 0..11
    idx = sc.tasks[0].train_idx[:M]
    buf = reservoir_add(st.buffer, jax.random.PRNGKey(1), jnp.asarray(sc.x_train[idx]),
                        jnp.asarray(sc.y_train[idx], jnp.int32), task_id=jnp.zeros(M, jnp.int32))
    st = st.replace(buffer=buf)
    bidx = sc.tasks[1].train_idx[:5]
    aug = st.static.augment
    batch = {"x": aug(jnp.asarray(sc.x_train[bidx]), None, train=False), "x_raw": jnp.asarray(sc.x_train[bidx]),
             "y": jnp.asarray(sc.y_train[bidx], jnp.int32), "task_id": jnp.ones(5, jnp.int32)}
    return sc, c, st, batch


def _mlp(params, x):
    """The network written out independently of clj's model code."""
    h = x.reshape(x.shape[0], -1) @ params["backbone"]["fc0"]["kernel"] + params["backbone"]["fc0"]["bias"]
    return jnp.maximum(h, 0) @ params["head"]["kernel"] + params["head"]["bias"]


def _ce_np(logits, y):
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))


def _ce(params, x, y, w=None):
    z = _mlp(params, x)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]
    return ce.mean() if w is None else jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1)


def _by_hand(st, batch, old_logits=None):
    """Every buffer slot's loss increase under the virtual SGD step, computed here."""
    p = st.net.params
    g = jax.grad(_ce)(p, batch["x"], batch["y"])
    lr = float(st.swept["optim.lr"])
    virtual = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - lr * np.asarray(b, np.float64), p, g)
    x = st.static.augment(st.buffer.x, None, train=False)
    y = np.asarray(st.buffer.y)
    pre = _ce_np(_mlp(jax.tree.map(lambda a: np.asarray(a, np.float64), p), np.asarray(x, np.float64)), y)
    post = _ce_np(_mlp(virtual, np.asarray(x, np.float64)), y)
    if old_logits is not None:
        pre = np.minimum(pre, _ce_np(old_logits, y))
    return post - pre, g


def test_retrieval_picks_the_largest_loss_increase():
    _, _, st, batch = _setup(m=4)
    r = _retrieve(st, batch, jax.random.PRNGKey(5))
    inc, _ = _by_hand(st, batch)
    assert bool(jnp.all(r["cand_valid"])) and sorted(np.asarray(r["cand"]).tolist()) == list(range(M))
    # the scores are the increases, slot by slot
    np.testing.assert_allclose(np.asarray(r["scores"]), inc[np.asarray(r["cand"])], rtol=1e-4, atol=1e-6)
    want = set(np.argsort(-inc)[:4].tolist())
    assert np.sort(inc)[-4] - np.sort(inc)[-5] > 1e-5    # the top 4 are well separated
    assert set(np.asarray(r["slots"]).tolist()) == want and bool(jnp.all(r["valid"]))
    assert want != set(range(4))                      # not merely the first slots


def test_stored_logit_scores():
    _, _, st, batch = _setup(m=3, mir_compare_to_old_logits=True)
    old = np.zeros((M, 4), np.float32)
    y = np.asarray(st.buffer.y)
    old[np.arange(0, M, 2), y[::2]] = 8.0          # even slots: a stored loss far below the current one
    st = st.replace(old_logits=jnp.asarray(old))
    r = _retrieve(st, batch, jax.random.PRNGKey(5))
    inc, _ = _by_hand(st, batch, old_logits=old)
    cand = np.asarray(r["cand"])
    np.testing.assert_allclose(np.asarray(r["scores"]), inc[cand], rtol=1e-4, atol=1e-5)
    assert set(np.asarray(r["slots"]).tolist()) == set(np.argsort(-inc)[:3].tolist())
    # the odd slots (zero logits: loss log 4, above the current one) are not "improved"; the even ones neither
    imp = np.asarray(r["improved"])
    pre = _ce_np(np.asarray(r["pre"]), y[cand])
    np.testing.assert_array_equal(imp, pre < _ce_np(old[cand], y[cand]))
    # after the step, the improved slots store their pre-update logits, the others keep theirs
    new, _ = _step(st, batch, jax.random.PRNGKey(5))
    got = np.asarray(new.old_logits)
    for j, s in enumerate(cand):
        np.testing.assert_allclose(got[s], np.asarray(r["pre"])[j] if imp[j] else old[s], rtol=1e-6)


def test_step_is_sgd_on_stream_plus_replay_gradients():
    _, _, st, batch = _setup(m=4)
    key = jax.random.PRNGKey(5)
    r = _retrieve(st, batch, key)
    new, m = _step(st, batch, key)
    p = st.net.params
    g = jax.grad(_ce)(p, batch["x"], batch["y"])
    x = st.static.augment(st.buffer.x[r["slots"]], None, train=False)
    g_r = jax.grad(_ce)(p, x, st.buffer.y[r["slots"]])
    lr = float(st.swept["optim.lr"])
    for a, b, u, v in zip(*(jax.tree_util.tree_leaves(t) for t in (p, new.net.params, g, g_r))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a) - lr * (np.asarray(u) + np.asarray(v)),
                                   rtol=1e-5, atol=1e-6)
    assert float(m["interference"]) > 0 and int(new.buffer.num_seen) == M + 5


def test_exclude_current_task_and_empty_buffer_replay_nothing():
    _, _, st, batch = _setup(m=4, mir_exclude_current_task=True)
    r = _retrieve(st, dict(batch, task_id=jnp.zeros(5, jnp.int32)), jax.random.PRNGKey(5))
    assert not bool(jnp.any(r["valid"]))              # task 0: every stored example is of the current task
    r = _retrieve(st, batch, jax.random.PRNGKey(5))
    assert bool(jnp.all(r["valid"]))                  # task 1: all of them are earlier
    sc, c, _, batch = _setup(m=4)
    empty = mir.init(jax.random.PRNGKey(0), c, sc)
    new, m = _step(empty, batch, jax.random.PRNGKey(5))
    assert float(m["loss_replay"]) == 0.0 and float(m["interference"]) == 0.0


def test_bad_config_is_refused_before_any_work():
    c = load_config("mir_digits")
    c.online.mir_subsample = 0
    with pytest.raises(ConfigError, match="online.mir_subsample=0"):
        validate(c)
    c = load_config("mir_digits")
    c.online.mir_exclude_current_task = True        # the data-incremental stream hides task ids
    with pytest.raises(ConfigError, match="mir_exclude_current_task"):
        validate(c)
    assert get_spec("mir") is mir.SPEC


def _digits(**over):
    c = load_config("mir_digits")
    c.scenario.class_order_seed = 0    # a fixed class order, so seeds can share one program
    c.progress = False
    c.plots = False
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for q in path:
            node = node[q]
        node[last] = v
    return c


_SHARDED = r"""
import json, os, tempfile, jax
from clj.train.loop import Runner
from test_mir import _digits
assert jax.device_count() == 4
c = _digits(num_seeds=3)
w4, w1 = tempfile.mkdtemp(), tempfile.mkdtemp()
Runner(c, w4).run()
r1 = Runner(c, w1, devices=jax.devices()[:1]).run()
seeds = [[json.load(open(os.path.join(w, f"seed_{k}", "results.json"))) for k in range(3)] for w in (w4, w1)]
print(json.dumps([[[s["accuracy_matrix"]["class_il"] for s in ss] for ss in seeds],
                  r1["metrics"]["class_il"]["final_average_accuracy"], seeds[0][0]["extra"]["devices"]]))
"""


def test_split_digits_three_seeds_four_devices_match_one_device():
    """The shipped config (online, batch 10, one pass), 3 seeds in one program,
    on 4 simulated devices and on 1: the same accuracies, and MIR ends well
    above fine-tuning (21% on this stream) and above 85% (measured 95.75 ±
    1.17%; reservoir ER at lr 0.05: 90.80 ± 2.16%)."""
    (a4, a1), acc, ndev = json.loads(run_with_devices(_SHARDED).strip().splitlines()[-1])
    assert ndev == 4
    np.testing.assert_allclose(a4, a1, atol=0.02)
    assert acc["mean"] >= 0.85 and acc["n"] == 3, acc
