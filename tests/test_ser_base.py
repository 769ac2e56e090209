"""SER wraps its base method's loss (clj.methods.ser.ser over clj.methods.baselines.rehearsal
and clj.methods.baselines.er_ace).

With ``ser.mnp_blocks`` all 0 the modulated classifier is the plain
ResNet-18 whatever the saliency features (test_ser's identity test), so a
SER step must be its base method's step on the same network, batch and
replay examples: same loss, same BatchNorm statistics, same update.  The
buffer holds one example in every slot, so SER's draws (not augmented, its
own keys) and the base's draws are the same rows.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.methods.baselines import er_ace

from clj.methods.baselines import rehearsal

from clj.methods.ser import ser
from conftest import run_with_devices
from test_ser import _config

KEY = jax.random.PRNGKey(0)


def _states(base: str):
    from clj.train.loop import load_scenario

    c = _config(f"ser_{base}", mnp_blocks=(0, 0, 0, 0, 0))
    sc = load_scenario(c)
    s = ser.init(KEY, c, sc, base)
    static = s.static
    x_raw = jnp.asarray(sc.x_train[:8])
    y = jnp.asarray(sc.y_train[:8].astype(np.int32))
    M = static.buffer_size
    buf = s.buffer
    logits = jnp.broadcast_to(jnp.linspace(-1.0, 2.0, buf.logits.shape[-1]), buf.logits.shape)
    buf = buf.replace(x=jnp.broadcast_to(x_raw[3], buf.x.shape), y=jnp.full((M,), y[5], jnp.int32),
                      logits=logits, num_seen=jnp.asarray(3 * M, jnp.int32))
    s = s.replace(buffer=buf, task=jnp.ones((), jnp.int32))
    batch = {"x": static.augment(x_raw), "x_raw": x_raw, "y": y, "task_id": jnp.ones((8,), jnp.int32)}
    if base == "er_ace":
        b = er_ace.State(net=s.cls, buffer=buf, seen=s.seen, task=s.task,
                         swept={"optim.lr": jnp.float32(c.optim.lr)},
                         static=er_ace.Static(augment=static.augment, buffer_size=M,
                                              minibatch_size=static.minibatch_size))
        return s, b, er_ace.train_step, batch
    rh = rehearsal.Static(objective=base, augment=static.augment, buffer_size=M, minibatch_size=static.minibatch_size,
                          alpha=static.alpha, beta=static.beta)
    swept = {"optim.lr": jnp.float32(c.optim.lr), "replay.alpha": jnp.float32(static.alpha),
             "replay.beta": jnp.float32(static.beta)}
    return s, rehearsal.State(net=s.cls, buffer=buf, swept=swept, static=rh), rehearsal.train_step, batch


_CHILD = """
import json
import jax, jax.numpy as jnp, numpy as np
from clj.methods.ser import ser
from test_ser_base import _states
out = {}
for base in %r:
    s, b, base_step, batch = _states(base)
    new_s, m_s = jax.jit(ser.train_step)(s, batch, jax.random.PRNGKey(3))
    new_b, m_b = jax.jit(base_step)(b, batch, jax.random.PRNGKey(4))
    pairs = zip(jax.tree_util.tree_leaves((new_s.cls.params, new_s.cls.batch_stats)),
                jax.tree_util.tree_leaves((new_b.net.params, new_b.net.batch_stats)))
    out[base] = {"loss": [float(m_s["loss"]), float(m_b["loss"])],
                 "diff": max(float(jnp.abs(u - v).max()) for u, v in pairs),
                 "moved": max(float(jnp.abs(u - v).max()) for u, v in
                              zip(jax.tree_util.tree_leaves(new_s.cls.params), jax.tree_util.tree_leaves(s.cls.params)))}
print(json.dumps(out))
"""

BASES = ("derpp", "er_ace", "er")


def test_unmodulated_ser_step_is_the_base_step():
    # Each step is its own jitted program, compiled in a child process with
    # the session's XLA flags (conftest.FAST_COMPILE_FLAGS: the two ResNet-18
    # steps of the three bases compile in about a minute there, several
    # minutes at XLA's default level or op by op).  The two programs are
    # different programs, so XLA may fuse and order the classifier's float
    # sums differently: they agree to rounding (measured: 0 with backend
    # optimisation off, 1.2e-6 at the default level, 1.8e-7 with the older
    # emitters), far below what the step moves the weights.
    # One child for the three bases: it imports and sets up once (a child per
    # base cost the suite about 20 s more).
    out = json.loads(run_with_devices(_CHILD % (BASES,), n=1).strip().splitlines()[-1])
    assert sorted(out) == sorted(BASES)
    for base, r in out.items():
        loss_s, loss_b = r["loss"]
        assert loss_s > 0, base
        assert abs(loss_s - loss_b) <= 1e-6 * abs(loss_b), (base, loss_s, loss_b)
        assert r["moved"] > 1e-4, base                # the step did train
        assert r["diff"] <= 1e-5 and r["diff"] <= 1e-3 * r["moved"], (base, r)  # params and BN statistics
