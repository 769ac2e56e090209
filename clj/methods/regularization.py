"""Quadratic-penalty baselines: EWC, SI and MAS, usable with any scenario.

All three add ``lambda * sum_i Omega_i (theta_i - theta*_i)^2`` to the task
loss and differ in the importance Omega computed at each task end:

* **EWC** (Kirkpatrick et al., PNAS 2017, Eq. 3): the diagonal Fisher
  information, the mean over ``n_fisher`` training examples of the squared
  per-example gradient of log p(y_hat | x), y_hat the model's prediction
  (the GT-RIPL Continual-Learning-Benchmark default the NISPA authors ran).
* **SI** (Zenke et al., ICML 2017, Eq. 5): the path integral
  ``omega += -g * delta_theta`` of the unregularised loss gradient along the
  trajectory, divided by ``(theta_end - theta_start)^2 + xi`` at the task end
  (negative values clipped to 0).
* **MAS** (Aljundi et al., ECCV 2018, Eq. 4): the mean absolute gradient of
  the squared L2 norm of the (task-masked) output.

Importances accumulate over tasks (summed) around a single anchor, the
parameters at the end of the previous task (the "online" variant of the
GT-RIPL benchmark).  With ``reg.multi_head`` (default for task-IL scenarios)
the training loss only sees the current task's logits (multi-head training,
as in the NISPA paper's baselines).  Config block ``config.reg``:
``lam`` (lambda), ``n_fisher`` (EWC), ``xi`` (SI damping), ``multi_head``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from clj.config import ConfigError
from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.common import ModelState, TaskInfo

KINDS = ("ewc", "si", "mas")
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Static hyperparameters: ``kind`` in KINDS, ``lam``, ``n_fisher``,
    ``xi``, ``multi_head``, the evaluation transform, the chunk size of the
    task-end passes."""

    kind: str
    lam: float
    n_fisher: int = 1000
    xi: float = 0.1
    multi_head: bool = True
    augment: Augment = Augment()
    chunk: int = 64


@struct.dataclass
class State:
    """The network plus the penalty's arrays.

    Attributes:
      net: params, optimizer state, counters.
      anchor: theta* (params at the end of the previous task).
      omega: accumulated importance (params-shaped, float32).
      w: SI's running path integral of this task (zeros for EWC/MAS).
      start: SI's params at the start of this task.
      class_mask: bool [C], the current task's classes.
      key: PRNG key for EWC's example draw.
    """

    net: ModelState
    anchor: object
    omega: object
    w: object
    start: object
    class_mask: jax.Array
    key: jax.Array
    hp: Hparams = struct.field(pytree_node=False)


def _zeros(t):
    return jax.tree_util.tree_map(jnp.zeros_like, t)


def init(rng: jax.Array, config, scenario, kind: str) -> State:
    """A fresh State for ``kind`` (network from ``config.model``, optimizer
    from ``config.optim``).

    Raises:
      ConfigError: unknown kind, negative ``reg.lam``, ``reg.n_fisher < 1`` or
        ``reg.xi <= 0``.
    """
    if kind not in KINDS:
        raise ConfigError(f"regularization kind={kind!r} is unknown; valid: {', '.join(KINDS)}.")
    sections.get_section("reg", config)  # every check of config.reg (JAX-free, run by clj.config too)
    r = config.get("reg", None)
    get = (lambda k, d: r.get(k, d)) if r is not None else (lambda k, d: d)
    lam = float(get("lam", 1.0))
    nf = int(get("n_fisher", 1000))
    xi = float(get("xi", 0.1))
    hp = Hparams(kind=kind, lam=lam, n_fisher=nf, xi=xi,
                 multi_head=bool(get("multi_head", scenario.kind == "task_il")),
                 augment=common.augment_from_config(config.augment, scenario), chunk=int(get("chunk", 64)))
    k_net, k_state = jax.random.split(rng)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim),
                                  scenario.image_shape)
    z = _zeros(net.params)
    return State(net=net, anchor=net.params, omega=z, w=z, start=net.params,
                 class_mask=jnp.ones((scenario.num_classes,), bool), key=k_state, hp=hp)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer, sets the task's class mask, starts SI's path."""
    cm = jnp.zeros((task.num_classes,), bool).at[jnp.asarray(task.classes)].set(True)
    return state.replace(net=common.begin_task_model(state.net, task), class_mask=cm,
                         w=_zeros(state.net.params), start=state.net.params)


def _head(state: State, logits):
    return jnp.where(state.class_mask[None, :], logits, _NEG) if state.hp.multi_head else logits


def penalty(state: State, params) -> jax.Array:
    """``lam * sum Omega (theta - theta*)^2`` (float32 [])."""
    terms = jax.tree_util.tree_map(lambda o, p, a: jnp.sum(o * (p - a) ** 2), state.omega, params, state.anchor)
    return state.hp.lam * sum(jax.tree_util.tree_leaves(terms))


def train_step(state: State, batch: dict, rng: jax.Array):
    """CE on the (task-masked) logits + the penalty; SI accumulates its path
    integral with the unregularised gradient.  Returns (State, {loss, acc})."""
    del rng
    net = state.net

    def task_loss(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        return common.cross_entropy(_head(state, logits), batch["y"]), (bs, logits)

    (loss, (bs, logits)), g_task = jax.value_and_grad(task_loss, has_aux=True)(net.params)
    g_pen = jax.grad(lambda p: penalty(state, p))(net.params)
    grads = jax.tree_util.tree_map(jnp.add, g_task, g_pen)
    new_net = common.apply_gradients(net, grads, bs)
    w = state.w
    if state.hp.kind == "si":
        w = jax.tree_util.tree_map(lambda wi, g, a, b: wi - g * (a - b), w, g_task, new_net.params, net.params)
    metrics = {"loss": loss + penalty(state, net.params),
               "acc": common.accuracy(_head(state, logits), batch["y"])}
    return state.replace(net=new_net, w=w), metrics


def _chunks(x, n: int, chunk: int):
    n = (n // chunk) * chunk if n >= chunk else n
    return x[:n].reshape(-1, min(chunk, n), *x.shape[1:])


def end_task(state: State, task_data) -> State:
    """Adds this task's importance to Omega and moves the anchor to the
    current parameters (module doc)."""
    hp, net = state.hp, state.net
    params = net.params
    x_all = task_data["x"]
    n = x_all.shape[0]
    key, k_perm = jax.random.split(state.key)
    if hp.kind == "si":
        # Negative path integrals (rare) are clipped to 0 importance.
        omega_t = jax.tree_util.tree_map(lambda wi, a, b: jnp.maximum(wi, 0.0) / ((a - b) ** 2 + hp.xi),
                                         state.w, params, state.start)
    else:
        m = min(hp.n_fisher, n)
        idx = jax.random.permutation(k_perm, n)[:m]
        xs = _chunks(x_all[idx], m, hp.chunk)

        def logits_of(p, x):
            out, _ = common.forward(net, p, net.batch_stats, x, train=False)
            return _head(state, out)

        if hp.kind == "ewc":
            def per_example(x1):
                def lp(p):
                    lo = logits_of(p, x1[None])
                    yhat = jnp.argmax(lo, -1)
                    return -common.cross_entropy(lo, jax.lax.stop_gradient(yhat))
                g = jax.grad(lp)(params)
                return jax.tree_util.tree_map(lambda a: a ** 2, g)

            def body(acc, xc):
                xc = hp.augment(xc, None, train=False)
                g2 = jax.vmap(per_example)(xc)
                return jax.tree_util.tree_map(lambda a, b: a + b.sum(0), acc, g2), None
        else:  # mas
            def body(acc, xc):
                xc = hp.augment(xc, None, train=False)

                def sq(p):
                    lo = logits_of(p, xc)
                    lo = jnp.where(state.class_mask[None, :], lo, 0.0) if hp.multi_head else lo
                    return jnp.mean(jnp.sum(lo ** 2, -1))
                g = jax.grad(sq)(params)
                return jax.tree_util.tree_map(lambda a, b: a + jnp.abs(b) * xc.shape[0], acc, g), None

        tot, _ = jax.lax.scan(body, _zeros(params), xs)
        cnt = xs.shape[0] * xs.shape[1]
        omega_t = jax.tree_util.tree_map(lambda a: a / cnt, tot)
    omega = jax.tree_util.tree_map(jnp.add, state.omega, omega_t)
    return state.replace(omega=omega, anchor=params, w=_zeros(params), start=params, key=key)


def predict(state: State, x: jax.Array, task_id=None) -> jax.Array:
    """Logits float32 [B, C] (all classes; the loop masks for task-IL)."""
    del task_id
    out, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return out


def memory_bytes(state: State) -> dict:
    """Bytes of the model and of the penalty's stored arrays (anchor, Omega,
    and SI's path integral and start point)."""
    pb = common.param_bytes(state.net.params)
    extra = {"ewc": 2, "mas": 2, "si": 4}[state.hp.kind]
    return {"model": pb, "regularizer": extra * pb}


def make_spec(kind: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``ewc``, ``si`` or ``mas``."""
    import functools

    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=functools.partial(init, kind=kind), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True), memory_bytes=memory_bytes)
