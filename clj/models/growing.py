"""The growing network of MEMO and DER (Yan): a registered backbone cut into
a generalized part (shared by all tasks, or none) and a specialized part
replicated once per task, one classifier over the concatenated features and
an auxiliary classifier over the newest block.

Sources: Yan, Xie & He, "DER: Dynamically Expandable Representation for
Class Incremental Learning", CVPR 2021, Sec. 3 (a new feature extractor per
task, old ones frozen, concatenated features, one classifier, auxiliary
classifier over the new extractor with the old classes as one extra class);
Zhou et al., "A Model or 603 Exemplars: Towards Memory-Efficient
Class-Incremental Learning", ICLR 2023, Sec. 4 (MEMO: only the last residual
stage is specialized and replicated); PyCIL ``models/der.py`` /
``memo.py`` as ``docs/memo.md``, "MEMO's network and its growth", describes them.

Growth as explicit state, static shapes for the whole run:

* ``params["spec"]`` / ``batch_stats["spec"]`` stack the specialized blocks
  of all T tasks along a leading axis [T, ...], allocated at :meth:`init`;
  block t becomes live at task t, initialised as a copy of block t-1 (BN
  statistics included) by :meth:`grow`;
* the head is allocated for T*D features and all C classes; the feature of
  a block that is not live yet is zero and its head rows are zero;
* the live old blocks run one after the other (a Python loop over the static
  number of live blocks; ``growth="vmap"``, the earlier version, runs them
  under ``vmap`` over the block axis and is about as slow as all of them
  together on the CPU) in eval-mode BN; the newest one runs in train mode;
* the number of live blocks is a static per-task value, so each task
  compiles once (the live blocks are a static slice: no work on the blocks
  of future tasks) and no array is ever reallocated.

The backbone comes from :mod:`clj.models.registry`: an entry with a
``split`` can grow (``model.name="resnet32"``, ``model.num_blocks`` sets the
blocks per stage, 5 = ResNet-32, 1 = ResNet-8; ``"resnet18_imagenet"``,
PyCIL's ``memo_resnet18`` cut for MEMO, its ``resnet18`` for DER).  ``model.dtype`` is the
computation dtype of the blocks and of both heads; parameters, BN
statistics, the concatenated features and the logits stay float32.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from clj.errors import ConfigError
from clj.models import registry
from clj.models.common import compute_dtype
from clj.models.utils import count_params

KINDS = ("memo", "dynamic_er")  # "der" elsewhere in clj is Dark Experience Replay
GROWTH = ("loop", "vmap")


def split_modules(kind: str, model_cfg) -> tuple[nn.Module | None, nn.Module, int]:
    """(generalized module or None, specialized module, feature dim D) of
    the backbone ``model_cfg.name`` for ``kind``.

    MEMO shares the generalized part (ResNet-32: ``ResNet32Shallow``, stem
    + stages 1-2; ResNet-18: ``ResNet18Shallow``, stem + stages 1-3) and
    replicates the rest (``ResNet32Deep``: stage 3 + pool;
    ``ResNet18Deep``: stage 4 + pool); DER (Yan) replicates the whole
    backbone.  Both compute in ``model_cfg.dtype``
    (:func:`clj.models.compute_dtype`); the backbone's own fields
    (``num_blocks``; ``width``, ``stem``) are passed when set.

    Raises:
      ConfigError: a backbone that cannot grow, ``model.num_blocks < 1`` (or
        set for a ResNet-18), an unknown ``model.stem``, a bad
        ``model.dtype`` or a bad kind.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is unknown; valid: {', '.join(KINDS)}.")
    names = registry.model_names(growing=True)
    if model_cfg.name not in names:
        raise ConfigError(f"model.name={model_cfg.name!r} is not supported by {kind}; valid: {', '.join(names)} "
                          "(model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    fields = registry.split_fields(model_cfg.name)
    kw = {k: model_cfg[k] for k in fields if k in model_cfg}
    if "num_blocks" in fields:
        nb = int(model_cfg.get("num_blocks", 5))
        if nb < 1:
            raise ConfigError(f"model.num_blocks={nb} is invalid: it must be >= 1.")
        kw["num_blocks"] = nb
    elif "num_blocks" in model_cfg:
        raise ConfigError(f"model.num_blocks={model_cfg['num_blocks']!r} does not apply to model.name="
                          f"{model_cfg.name!r} (ResNet-18: two blocks per stage); remove it.")
    try:
        return registry.get_split(model_cfg.name, shared=kind == "memo", dtype=compute_dtype(model_cfg), **kw)
    except ValueError as e:  # e.g. an unknown model.stem
        raise ConfigError(str(e)) from None


def split_param_counts(kind: str, model_cfg, image_shape) -> dict:
    """Parameter counts (FC excluded, BN statistics excluded) from shapes:
    ``{"shallow": generalized, "deep": one specialized block, "total": one
    whole backbone}`` of MEMO's cut, for the scenario's image shape (the
    same for both kinds: DER's block is the whole backbone)."""
    del kind
    shallow_m, deep_m, _ = split_modules("memo", model_cfg)
    key = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    sv = jax.eval_shape(shallow_m.init, key, x)
    b = jax.eval_shape(lambda v, x: shallow_m.apply(v, x), sv, x)
    dv = jax.eval_shape(deep_m.init, key, b)
    s, d = count_params(sv["params"]), count_params(dv["params"])
    return {"shallow": s, "deep": d, "total": s + d}


def _uniform(key, shape, fan_in):
    b = math.sqrt(3.0 / fan_in)  # Kaiming-uniform, linear gain (PyCIL SimpleLinear)
    return jax.random.uniform(key, shape, jnp.float32, -b, b)


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def _dense(x: jax.Array, head: dict, dtype) -> jax.Array:
    """``x @ kernel + bias`` computed in ``dtype`` (as ``nn.Dense(dtype=)``),
    returned as float32."""
    y = x.astype(dtype) @ head["kernel"].astype(dtype) + head["bias"].astype(dtype)
    return y.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class GrowingNet:
    """The network's static description (hashable; the arrays live in the
    ``params`` / ``batch_stats`` trees its methods take and return).

    Params ``{"gen", "spec" [T, ...], "head": {"kernel" [T*D, C], "bias"
    [C]}, "aux": {"kernel" [D, A], "bias" [A]}}``; batch_stats ``{"gen",
    "spec" [T, ...]}`` (no ``gen`` for DER).  ``live`` (blocks in use, >= 1)
    and ``gen_train`` (whether the generalized part trains now) are the
    caller's static per-task values.

    Attributes:
      gen, spec: the generalized (None for DER) and specialized modules.
      D: features per block; T: blocks allocated (tasks of the scenario).
      num_classes: C; aux_width: A, outputs of the aux head (largest task + 1).
      growth: ``"loop"`` or ``"vmap"`` (module doc).
      dtype: computation dtype of the two heads (``jnp.float32`` or
        ``jnp.bfloat16``; the blocks carry their own, the same).
    """

    gen: nn.Module | None = None
    spec: nn.Module | None = None
    D: int = 64
    T: int = 1
    num_classes: int = 10
    aux_width: int = 2
    growth: str = "loop"
    dtype: type = jnp.float32

    def init(self, k_gen: jax.Array, k_spec: jax.Array, image_shape) -> tuple[dict, dict]:
        """(params, batch_stats): block 0 initialised from ``k_spec`` and
        copied into all T slots, the generalized part from ``k_gen``, zero
        heads (:meth:`grow` fills them)."""
        T, D, C = self.T, self.D, self.num_classes
        x = jnp.zeros((1, *image_shape), jnp.float32)
        params, stats = {}, {}
        b = x
        if self.gen is not None:
            gv = self.gen.init(k_gen, x, train=False)
            params["gen"], stats["gen"] = gv["params"], gv.get("batch_stats", {})
            b = self.gen.apply(gv, x, train=False)
        sv = self.spec.init(k_spec, b, train=False)
        tile = lambda a: jnp.broadcast_to(a[None], (T, *a.shape))  # noqa: E731
        params["spec"] = jax.tree_util.tree_map(tile, sv["params"])
        stats["spec"] = jax.tree_util.tree_map(tile, sv["batch_stats"])
        params["head"] = {"kernel": jnp.zeros((T * D, C), jnp.float32), "bias": jnp.zeros((C,), jnp.float32)}
        params["aux"] = {"kernel": jnp.zeros((D, self.aux_width), jnp.float32),
                         "bias": jnp.zeros((self.aux_width,), jnp.float32)}
        return params, stats

    def grow(self, params: dict, stats: dict, key: jax.Array, t: int, known: int) -> tuple[dict, dict]:
        """The network of task ``t`` (static int) with ``known`` old classes:
        block t a copy of block t-1 (t >= 1), a new head (fresh
        Kaiming-uniform weights of fan-in D (t+1); the old classes x old
        features block and the old classes' bias kept; rows of blocks not
        live yet zero) and a fresh aux head (PyCIL's ``update_fc``).
        ``key`` draws both heads."""
        D = self.D
        p, bs = dict(params), dict(stats)
        if t >= 1:  # the new block starts as a copy of the previous one
            p["spec"] = jax.tree_util.tree_map(lambda a: a.at[t].set(a[t - 1]), p["spec"])
            bs["spec"] = jax.tree_util.tree_map(lambda a: a.at[t].set(a[t - 1]), bs["spec"])
        k_head, k_aux = jax.random.split(key)
        K = p["head"]["kernel"]
        fresh = _uniform(k_head, K.shape, D * (t + 1))
        rows = jnp.arange(K.shape[0])[:, None]
        cols = jnp.arange(K.shape[1])[None, :]
        kern = jnp.where((rows < D * t) & (cols < known), K, fresh)
        kern = jnp.where(rows < D * (t + 1), kern, 0.0)
        bias = jnp.where(jnp.arange(K.shape[1]) < known, p["head"]["bias"], 0.0)
        p["head"] = {"kernel": kern, "bias": bias}
        A = p["aux"]["kernel"]
        p["aux"] = {"kernel": _uniform(k_aux, A.shape, D), "bias": jnp.zeros((A.shape[1],), jnp.float32)}
        return p, bs

    def features(self, params, stats, x, *, live: int, gen_train: bool, train: bool, new_block=None):
        """(concatenated features float32 [B, T*D] (zeros for blocks not live
        yet), new batch_stats, newest block's features [B, D]).

        Training (``train=True``): the old blocks in eval-mode BN, the newest
        in train mode (its statistics updated), the generalized part in train
        mode when ``gen_train``.  ``new_block``: the newest block's parameters
        when they are differentiated apart from the stack (:meth:`trainable`).
        """
        n = live
        new_stats = dict(stats)
        b = x
        if self.gen is not None:
            gv = {"params": params["gen"], "batch_stats": stats["gen"]}
            if train and gen_train:
                b, upd = self.gen.apply(gv, x, train=True, mutable=["batch_stats"])
                new_stats["gen"] = upd["batch_stats"]
            else:
                b = self.gen.apply(gv, x, train=False)

        def run_eval(pp, ss):
            return self.spec.apply({"params": pp, "batch_stats": ss}, b, train=False).astype(jnp.float32)

        sp, ss = params["spec"], stats["spec"]
        n_eval = n - 1 if train else n
        if self.growth == "loop":  # one block after the other (static count): no vmap over the stack
            old = [run_eval(_take(sp, i), _take(ss, i)) for i in range(n_eval)]
        else:
            old = []
            if n_eval > 0:
                allf = jax.vmap(run_eval)(_take(sp, slice(0, n_eval)), _take(ss, slice(0, n_eval)))  # [n, B, D]
                old = [allf[i] for i in range(n_eval)]
        if train:
            pn = new_block if new_block is not None else _take(sp, n - 1)
            f_new, upd = self.spec.apply({"params": pn, "batch_stats": _take(ss, n - 1)}, b, train=True,
                                         mutable=["batch_stats"])
            f_new = f_new.astype(jnp.float32)
            new_stats["spec"] = jax.tree_util.tree_map(lambda a, u: a.at[n - 1].set(u), ss, upd["batch_stats"])
            parts = old + [f_new]
        else:
            parts = old
            f_new = old[n - 1]
        feats = jnp.concatenate(parts, 1) if len(parts) > 1 else parts[0]
        pad = self.T * self.D - feats.shape[1]
        if pad:
            feats = jnp.concatenate([feats, jnp.zeros((feats.shape[0], pad), feats.dtype)], 1)
        return feats, new_stats, f_new

    def logits(self, params, feats: jax.Array) -> jax.Array:
        """Head logits float32 [B, C] of features [B, T*D], computed in ``dtype``."""
        return _dense(feats, params["head"], self.dtype)

    def aux_logits(self, params, f_new: jax.Array) -> jax.Array:
        """Aux-head logits float32 [B, A] of the newest block's features [B, D],
        computed in ``dtype``."""
        return _dense(f_new, params["aux"], self.dtype)

    def update_mask(self, params, *, live: int, gen_train: bool, classes: int, aux_classes: int) -> dict:
        """The update mask (bool, leaves broadcastable to params) of
        :func:`clj.methods.common.apply_gradients`: True where parameters may
        move: the generalized part when it trains, the newest block only,
        head rows of live blocks x the first ``classes`` columns, the first
        ``aux_classes`` aux columns (old blocks stay bit-identical)."""
        m = {}
        if "gen" in params:
            m["gen"] = jax.tree_util.tree_map(lambda a: jnp.full((), gen_train), params["gen"])
        m["spec"] = jax.tree_util.tree_map(
            lambda a: (jnp.arange(a.shape[0]) == live - 1).reshape((-1,) + (1,) * (a.ndim - 1)), params["spec"])
        K = params["head"]["kernel"]
        col = jnp.arange(K.shape[1]) < classes
        m["head"] = {"kernel": (jnp.arange(K.shape[0]) < live * self.D)[:, None] & col[None, :], "bias": col}
        acol = jnp.arange(params["aux"]["kernel"].shape[1]) < aux_classes
        m["aux"] = {"kernel": acol[None, :], "bias": acol}
        return m

    @staticmethod
    def trainable(params, *, live: int, gen_train: bool) -> dict:
        """The parameters a step differentiates (``growth="loop"``): ``new``
        (the newest block), ``head``, ``aux`` and ``gen`` while it trains."""
        tp = {"new": _take(params["spec"], live - 1), "head": params["head"], "aux": params["aux"]}
        if gen_train:
            tp["gen"] = params["gen"]
        return tp

    @staticmethod
    def merge_trainable(params, tp) -> tuple[dict, jax.Array]:
        """(``params`` with the trainable subtree ``tp`` of :meth:`trainable`
        put back, except the newest block; the newest block)."""
        p = {**params, "head": tp["head"], "aux": tp["aux"]}
        if "gen" in tp:
            p["gen"] = tp["gen"]
        return p, tp["new"]

    @staticmethod
    def full_grads(params, g_tp, *, live: int) -> dict:
        """Gradients of the trainable subtree placed in a zero tree shaped like
        ``params`` (the frozen blocks get zeros; the update mask stops them)."""
        g = {k: jax.tree_util.tree_map(jnp.zeros_like, v) for k, v in params.items()}
        g["head"], g["aux"] = g_tp["head"], g_tp["aux"]
        if "gen" in g_tp:
            g["gen"] = g_tp["gen"]
        g["spec"] = jax.tree_util.tree_map(lambda z, gn: z.at[live - 1].set(gn), g["spec"], g_tp["new"])
        return g

    @staticmethod
    def param_count(params, *, live: int) -> int:
        """Parameters of the live network, FC and aux heads excluded: the
        generalized part plus the live specialized blocks."""
        return count_params(params.get("gen", {})) + live * count_params(_take(params["spec"], 0))


def build(kind: str, model_cfg, num_tasks: int, num_classes: int, aux_width: int,
          growth: str = "loop") -> GrowingNet:
    """The :class:`GrowingNet` of ``kind`` (``"memo"`` or ``"dynamic_er"``)
    over the backbone ``model_cfg`` for T = ``num_tasks`` tasks, computing
    in ``model_cfg.dtype``.

    Raises:
      ConfigError: a backbone that cannot grow, a bad kind, growth or dtype.
    """
    if growth not in GROWTH:
        raise ConfigError(f"cil.growth={growth!r} is unknown; valid: {', '.join(GROWTH)}.")
    gen, spec, D = split_modules(kind, model_cfg)
    return GrowingNet(gen=gen, spec=spec, D=D, T=int(num_tasks), num_classes=int(num_classes),
                      aux_width=int(aux_width), growth=growth, dtype=compute_dtype(model_cfg))
