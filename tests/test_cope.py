"""CoPE (clj.methods.baselines.cope): the PPP loss against a loop over classes
written from the paper's terms, the prototype update (toward the class mean,
unseen classes untouched), the class-balanced buffer and draw, the
nearest-prototype prediction, the config checks, and Split-digits runs (3
seeds; 4 simulated devices = 1 device)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.data import load_dataset
from clj.methods import get_spec
from clj.methods.baselines import cope
from clj.scenarios import make_scenario
from conftest import run_with_devices

_ppp = jax.jit(cope.ppp_loss)
_step = jax.jit(cope.train_step)


# ------------------------------------------------------------------ the loss
def _ppp_loops(f, y, P, seen, T):
    """The PPP loss with explicit loops over classes and examples (float64)."""
    f, P = np.asarray(f, np.float64), np.asarray(P, np.float64)
    seen_cls = [c for c in range(P.shape[0]) if seen[c]]
    total = 0.0
    for c in sorted(set(y.tolist())):
        ic = [i for i in range(len(y)) if y[i] == c]
        ik = [k for k in range(len(y)) if y[k] != c]
        others = [m for m in seen_cls if m != c]
        for i in ic:  # attractor: average over the prototype and the other examples of c
            den = sum(np.exp(P[m] @ f[i] / T) for m in others)
            probs = [np.exp(P[c] @ f[i] / T) / (np.exp(P[c] @ f[i] / T) + den)]
            probs += [np.exp(f[j] @ f[i] / T) / (np.exp(f[j] @ f[i] / T) + den) for j in ic if j != i]
            total -= np.log(np.mean(probs))
        for k in ik:  # repellor: P(c | k) through each proxy i and through p_c
            den = sum(np.exp(P[m] @ f[k] / T) for m in others)
            p_proto = np.exp(P[c] @ f[k] / T) / (np.exp(P[c] @ f[k] / T) + den)
            for i in ic:
                p_i = np.exp(f[i] @ f[k] / T) / (np.exp(f[i] @ f[k] / T) + den)
                total -= np.log(1 - (p_i + p_proto) / 2)
    return total / len(y)


def _unit(key, shape):
    v = jax.random.normal(key, shape)
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def test_ppp_loss_matches_the_loop_form():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    f = _unit(k1, (9, 6))
    P = _unit(k2, (5, 6))
    y = np.array([0, 0, 0, 1, 1, 3, 0, 1, 3])
    seen = np.array([True, True, False, True, True])     # class 4 seen with no example in the batch
    valid = np.array([True] * 7 + [False] * 2)            # two padding rows
    for T in (1.0, 0.1):
        got = float(_ppp(f, jnp.asarray(y), jnp.asarray(valid), P, jnp.asarray(seen), jnp.float32(T)))
        want = _ppp_loops(np.asarray(f)[valid], y[valid], P, seen, T)
        assert got == pytest.approx(want, rel=1e-5), (T, got, want)
    # extreme similarity scale: finite (the loop form overflows in float32 here)
    g = jax.jit(jax.grad(cope.ppp_loss))(f, jnp.asarray(y), jnp.asarray(valid), P, jnp.asarray(seen),
                                         jnp.float32(0.005))
    assert bool(jnp.all(jnp.isfinite(g)))


def test_ppp_gradient_stops_at_the_proxies_of_the_attractor():
    """Only the attractor's anchor carries gradient (the official code detaches the
    proxies there): one class, so no repellor, and moving a proxy j changes row j's
    own term only through j as an anchor."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    f = _unit(k1, (3, 4))
    P = _unit(k2, (2, 4))
    y, v, seen = jnp.zeros(3, jnp.int32), jnp.ones(3, bool), jnp.array([True, True])

    def per_anchor(f, i):  # the loss with every term but anchor i's removed (its proxies constants)
        fi = f[i]
        fc = jax.lax.stop_gradient(f)
        T = 0.3
        den = jnp.exp(P[1] @ fi / T)
        pr = [jnp.exp(P[0] @ fi / T) / (jnp.exp(P[0] @ fi / T) + den)]
        pr += [jnp.exp(fc[j] @ fi / T) / (jnp.exp(fc[j] @ fi / T) + den) for j in range(3) if j != i]
        return -jnp.log(jnp.mean(jnp.stack(pr))) / 3

    want = jax.jit(lambda f: sum(jax.grad(per_anchor)(f, i) for i in range(3)))(f)
    got = jax.jit(jax.grad(cope.ppp_loss))(f, y, v, P, seen, jnp.float32(0.3))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ the prototypes
def _setup(buffer_size=40, batch=10, **online):
    ds = load_dataset("synthetic", seed=0, image_shape=(4, 4, 1), num_classes=6, train_per_class=30,
                      test_per_class=4)
    sc = make_scenario(ds, "class_il", increment=2)
    c = load_config("cope_digits")
    c.scenario.kind = "class_il"
    c.model.hidden = (16,)
    c.replay.buffer_size = buffer_size
    c.replay.minibatch_size = batch
    c.train.batch_size = batch
    c.online.cope_dim = 8
    c.optim.lr = 0.1
    for k, v in online.items():
        c.online[k] = v
    return sc, c, cope.init(jax.random.PRNGKey(0), c, sc)


def _batch(st, sc, idx):
    x = jnp.asarray(sc.x_train[idx])
    return {"x": st.static.augment(x, None, train=False), "x_raw": x, "y": jnp.asarray(sc.y_train[idx], jnp.int32),
            "task_id": jnp.full(len(idx), -1, jnp.int32)}


def _embed_by_hand(params, x):
    h = x.reshape(x.shape[0], -1) @ params["backbone"]["fc0"]["kernel"] + params["backbone"]["fc0"]["bias"]
    out = np.asarray(jnp.maximum(h, 0) @ params["head"]["kernel"] + params["head"]["bias"], np.float64)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_prototypes_move_toward_their_class_mean():
    sc, c, st = _setup(cope_momentum=0.9)
    step = _step
    idx = np.concatenate([sc.tasks[0].train_idx[:6], sc.tasks[0].train_idx[-4:]])
    b = _batch(st, sc, idx)
    y = np.asarray(b["y"])
    assert len(set(y.tolist())) == 2
    new, m = step(st, b, jax.random.PRNGKey(3))    # empty buffer: the batch alone
    f = _embed_by_hand(st.net.params, np.asarray(b["x"]))
    P0, P1 = np.asarray(st.prototypes), np.asarray(new.prototypes)
    for cl in set(y.tolist()):
        mean = f[y == cl].mean(0)
        np.testing.assert_allclose(P1[cl], 0.9 * P0[cl] + 0.1 * mean, rtol=1e-5, atol=1e-6)
        assert np.linalg.norm(P1[cl] - mean) < np.linalg.norm(P0[cl] - mean)
    unseen = [k for k in range(6) if k not in set(y.tolist())]
    np.testing.assert_array_equal(P1[unseen], P0[unseen])          # bit-identical
    assert np.asarray(new.seen).tolist() == [k in set(y.tolist()) for k in range(6)]
    assert float(m["loss"]) > 0                                    # two classes seen: the network trained
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in
               zip(jax.tree_util.tree_leaves(st.net.params), jax.tree_util.tree_leaves(new.net.params)))

    # next task: new classes and replayed ones move, the classes in neither stay put
    b2 = _batch(new, sc, sc.tasks[1].train_idx[:10])
    new2, m2 = step(new, b2, jax.random.PRNGKey(4))
    assert float(m2["replayed"]) == 10
    P2 = np.asarray(new2.prototypes)
    moved = {k for k in range(6) if not np.array_equal(P2[k], P1[k])}
    assert moved == set(np.asarray(b2["y"]).tolist()) | set(y.tolist())
    rest = sorted(set(range(6)) - moved)
    assert len(rest) == 2
    np.testing.assert_array_equal(P2[rest], P1[rest])


def test_renormalize_switch_keeps_moved_prototypes_on_the_sphere():
    sc, c, st = _setup(cope_momentum=0.9, cope_renormalize=True)
    idx = np.concatenate([sc.tasks[0].train_idx[:6], sc.tasks[0].train_idx[-4:]])
    b = _batch(st, sc, idx)
    new, _ = jax.jit(cope.train_step)(st, b, jax.random.PRNGKey(3))
    f = _embed_by_hand(st.net.params, np.asarray(b["x"]))
    y = np.asarray(b["y"])
    P0 = np.asarray(st.prototypes)
    for cl in set(y.tolist()):
        want = 0.9 * P0[cl] + 0.1 * f[y == cl].mean(0)
        np.testing.assert_allclose(np.asarray(new.prototypes)[cl], want / np.linalg.norm(want), rtol=1e-5, atol=1e-6)


def test_one_class_seen_does_not_train():
    sc, c, st = _setup(cope_momentum=0.9)      # the statics of the test above: its compiled step
    tr = sc.tasks[0].train_idx
    b = _batch(st, sc, tr[sc.y_train[tr] == sc.y_train[tr[0]]][:10])    # one class only
    new, m = _step(st, b, jax.random.PRNGKey(3))
    assert float(m["loss"]) == 0.0
    for a, b_ in zip(jax.tree_util.tree_leaves(st.net.params), jax.tree_util.tree_leaves(new.net.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b_))


# ---------------------------------------------------------------- the buffer
def test_buffer_stays_class_balanced():
    C, M, B, S = 6, 30, 5, 35
    buf = cope.ClassBuffer(x=jnp.zeros((S, 1, 1, 3), jnp.uint8), y=jnp.full((S,), -1, jnp.int32),
                           key=jnp.zeros((S,), jnp.int32), counter=jnp.zeros((), jnp.int32),
                           seen_count=jnp.zeros((C,), jnp.int32), share=jnp.asarray(M // C, jnp.int32))
    add = jax.jit(cope.buffer_add, static_argnums=(5,))
    rng = np.random.default_rng(0)
    seen = np.zeros(C, bool)
    uid = 0
    # classes arrive two at a time, interleaved, with uneven numbers of examples
    for phase, classes in enumerate([(0, 1), (2, 3), (4, 5)]):
        for t in range(12 + 6 * phase):
            y = rng.choice(classes, B, p=[0.8, 0.2]).astype(np.int32)
            x = np.zeros((B, 1, 1, 3), np.uint8)
            x[:, 0, 0, 0] = y                                   # the label, and a unique id
            x[:, 0, 0, 1], x[:, 0, 0, 2] = np.divmod(np.arange(uid, uid + B), 256)
            uid += B
            seen[y] = True
            buf = add(buf, jax.random.PRNGKey(100 * phase + t), jnp.asarray(x), jnp.asarray(y), jnp.asarray(seen), M)
            share = M // seen.sum()
            counts = np.asarray(buf.counts(C))
            np.testing.assert_array_equal(counts, np.minimum(np.asarray(buf.seen_count), share))
            assert counts.sum() <= M and int(buf.share) == share
            by, bx = np.asarray(buf.y), np.asarray(buf.x)
            held = by >= 0
            np.testing.assert_array_equal(bx[held, 0, 0, 0], by[held])          # images kept their labels
            ids = 256 * bx[held, 0, 0, 1].astype(int) + bx[held, 0, 0, 2]
            assert len(set(ids.tolist())) == len(ids)                          # no example stored twice
    assert (np.asarray(buf.counts(C)) == M // C).all()          # every class at its share, the rare ones too


def test_class_balanced_draw():
    C = 4
    y = np.array([0] * 20 + [1] * 20 + [2] + [-1] * 3, np.int32)
    S = len(y)
    buf = cope.ClassBuffer(x=jnp.zeros((S, 1, 1, 1), jnp.uint8), y=jnp.asarray(y), key=jnp.arange(S),
                           counter=jnp.asarray(S), seen_count=jnp.asarray([20, 20, 1, 0]), share=jnp.asarray(20))
    draw = jax.jit(cope.sample_balanced, static_argnums=(2, 3))
    per_class = np.zeros(C)
    for s in range(200):
        idx, valid = draw(buf, jax.random.PRNGKey(s), 10, C)
        idx, valid = np.asarray(idx), np.asarray(valid)
        assert valid.all() and len(set(idx.tolist())) == 10 and (y[idx] >= 0).all()
        got = np.bincount(y[idx], minlength=C)
        assert got[2] <= 1 and got[3] == 0
        per_class += got
    # class 2 (one example) is picked first in about 1 - (2/3)^10 of the draws; the other two share the rest
    assert 0.9 * 200 < per_class[2] <= 200 and abs(per_class[0] - per_class[1]) < 0.1 * per_class[0]
    small = cope.ClassBuffer(x=buf.x, y=jnp.asarray(np.where(np.arange(S) < 3, 0, -1).astype(np.int32)), key=buf.key,
                             counter=buf.counter, seen_count=buf.seen_count, share=buf.share)
    idx, valid = draw(small, jax.random.PRNGKey(0), 10, C)
    assert np.asarray(valid).sum() == 3 and set(np.asarray(idx)[:3].tolist()) == {0, 1, 2}


def test_predict_is_the_nearest_seen_prototype():
    sc, c, st = _setup()
    P = np.asarray(_unit(jax.random.PRNGKey(7), (6, 8)))
    st = st.replace(prototypes=jnp.asarray(P), seen=jnp.asarray([True, True, True, False, True, False]))
    x = st.static.augment(jnp.asarray(sc.x_test[:20]), None, train=False)
    out = np.asarray(jax.jit(cope.predict)(st, x))
    f = _embed_by_hand(st.net.params, np.asarray(x))
    d = f @ P.T
    d[:, [3, 5]] = -np.inf
    np.testing.assert_array_equal(out.argmax(1), d.argmax(1))
    assert (out[:, [3, 5]] == cope.UNSEEN_SCORE).all()


def test_bad_config_is_refused_before_any_work():
    c = load_config("cope_digits")
    c.online.cope_temperature = 0.0
    with pytest.raises(ConfigError, match="online.cope_temperature=0.0"):
        validate(c)
    c = load_config("cope_digits")
    c.online.cope_momentum = 1.5
    with pytest.raises(ConfigError, match="online.cope_momentum=1.5"):
        validate(c)
    with pytest.raises(ValueError, match="replay.buffer_size=4"):
        _setup(buffer_size=4)
    assert get_spec("cope") is cope.SPEC


# ----------------------------------------------------------------- the runs
def _digits(**over):
    c = load_config("cope_digits")
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
from test_cope import _digits
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
    on 4 simulated devices and on 1: the same accuracies, and CoPE ends far
    above fine-tuning (21% on this stream) and above 85% (measured 93.09 ±
    1.37%)."""
    (a4, a1), acc, ndev = json.loads(run_with_devices(_SHARDED).strip().splitlines()[-1])
    assert ndev == 4
    np.testing.assert_allclose(a4, a1, atol=0.02)
    assert acc["mean"] >= 0.85 and acc["n"] == 3, acc
