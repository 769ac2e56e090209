"""Pretrains SER's saliency network on ground-truth maps and saves a checkpoint.

    python -m clj.methods.ser.pretrain --dataset=clutter_fashion_mnist \
        --canvas=48 --num_train=10000 --width=8 --steps=3000 --out=runs/sal_fmnist.npz

The paper's saliency branch starts from a network pretrained for saliency
(the official ``--sal_ckpt``; ``docs/ser.md``, "Without the saliency data or the
checkpoint") and is then
trained online on the stream.  This command trains
:class:`clj.models.saliency.SaliencyNet` (the same encoder/decoder that
``ser_*`` builds for ``model.name=resnet18`` of the same ``width``) on a pool
*disjoint* from the continual stream: by default the Fashion-MNIST composites
of :mod:`clj.data.clutter`, whose targets are the exact object masks blurred
(``ClutterParams.sal_sigma``), for an MNIST-composite stream.  Loss: SER's
KLD (:func:`clj.methods.ser.targets.kld_loss`), Adam, batch-stat BN and channel
dropout in train mode; the whole run is one jitted ``lax.scan`` per
``--log_every`` steps.  The checkpoint is written with
:func:`clj.methods.ser.saliency.save_saliency_checkpoint` and loaded by a SER run with
``--config.ser.sal_init=ckpt:<file>``.

Printed and written beside the checkpoint (``<out>.json``): the loss curve, and
the held-out KLD and correlation coefficient (CC, a saliency metric of the
official code: ``docs/ser.md``, "Evaluation") on the pool's test split and,
with ``--eval_dataset``, on another composite dataset's test split (e.g. the
MNIST stream's), of the pretrained net and of the untrained one.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clj.methods.ser import targets as tg
from clj.methods.ser.saliency import kld_step, save_saliency_checkpoint
from clj.models.saliency import SaliencyNet


def _normalize(x_u8: jax.Array, mean: float, std: float) -> jax.Array:
    return (x_u8.astype(jnp.float32) / 255.0 - mean) / std


def saliency_metrics(model: SaliencyNet, variables, x_u8: np.ndarray, target: np.ndarray, mean: float,
                     std: float, batch: int = 250) -> dict:
    """Eval-mode KLD and CC of the net's maps against unit-sum ``target``.

    Args:
      x_u8: uint8 [N, H, W, 1] images; target: float32 [N, H, W] unit-sum maps.

    Returns:
      ``{"kld": float, "cc": float}`` (means over the N images; CC is the
      Pearson correlation of each predicted map with its target).
    """
    @jax.jit
    def f(v, x, t):
        pred, _ = model.apply(v, _normalize(x, mean, std), train=False)
        p = tg.normalize_map(pred[..., 0])
        kld = tg.kld_loss(p, t) * x.shape[0]
        pc = p - p.mean(axis=(1, 2), keepdims=True)
        tc = t - t.mean(axis=(1, 2), keepdims=True)
        cc = jnp.sum(pc * tc, axis=(1, 2)) / jnp.sqrt(jnp.sum(pc ** 2, axis=(1, 2)) * jnp.sum(tc ** 2, axis=(1, 2)))
        return kld, jnp.sum(cc)

    kl = cc = 0.0
    n = (len(x_u8) // batch) * batch or len(x_u8)
    for s in range(0, n, batch):
        a, b = f(variables, jnp.asarray(x_u8[s:s + batch]), jnp.asarray(target[s:s + batch]))
        kl, cc = kl + float(a), cc + float(b)
    return {"kld": kl / n, "cc": cc / n}


def pretrain(x_u8: np.ndarray, target: np.ndarray, *, width: int, steps: int, batch: int, lr: float, seed: int,
             mean: float, std: float, log_every: int = 250):
    """Trains a fresh :class:`SaliencyNet` on (images, target maps).

    Args:
      x_u8: uint8 [N, H, W, 1] (H, W multiples of 8); target: float32 [N, H, W]
        unit-sum maps; width: ResNet-18 width of the encoder; steps: Adam
        steps (cosine-decayed ``lr``); batch: images per step, drawn uniformly
        with replacement; seed: PRNG seed; mean, std: input normalisation.

    Returns:
      ``(model, variables {"params", "batch_stats"}, losses list[float]
      (mean KLD per ``log_every`` steps), init_variables)``.

    Raises:
      ValueError: H or W not a multiple of 8, or steps/batch < 1.
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"steps={steps} and batch={batch} must be >= 1.")
    N, H, W, _ = x_u8.shape
    if H % 8 or W % 8:
        raise ValueError(f"images are {H}x{W}: the saliency decoder needs multiples of 8.")
    model = SaliencyNet(width=width, n_gaussians=0)
    rng = jax.random.PRNGKey(seed)
    k_init, k_run = jax.random.split(rng)
    v0 = model.init({"params": k_init, "dropout": k_init}, jnp.zeros((1, H, W, 1), jnp.float32), train=False)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    X, T = jnp.asarray(x_u8), jnp.asarray(target)

    def step(carry, k, X, T):
        k_i, k_d = jax.random.split(k)
        idx = jax.random.randint(k_i, (batch,), 0, N)
        p, bs, opt, loss, _ = kld_step(model, tx, *carry, _normalize(X[idx], mean, std), T[idx], k_d)
        return (p, bs, opt), loss

    # the data are arguments, not closed-over constants (which XLA would fold into the program)
    run = jax.jit(lambda c, ks, X, T: jax.lax.scan(lambda c, k: step(c, k, X, T), c, ks))
    carry = (v0["params"], v0["batch_stats"], tx.init(v0["params"]))
    keys = jax.random.split(k_run, steps)
    losses = []
    for s in range(0, steps, log_every):
        carry, ls = run(carry, keys[s:s + log_every], X, T)
        losses.append(float(jnp.mean(ls)))
        print(f"step {min(steps, s + log_every)}/{steps}: kld {losses[-1]:.4f}", flush=True)
    return model, {"params": carry[0], "batch_stats": carry[1]}, losses, v0


def main(argv=None) -> dict:
    from clj.data.clutter import CLUTTER_DATASETS, load_clutter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="clutter_fashion_mnist", choices=sorted(CLUTTER_DATASETS))
    ap.add_argument("--eval_dataset", default="clutter_mnist", help="'' = none")
    ap.add_argument("--canvas", type=int, default=48)
    ap.add_argument("--num_train", type=int, default=10000)
    ap.add_argument("--num_test", type=int, default=1000)
    ap.add_argument("--data_seed", type=int, default=0, help="seed of the composites (the stream uses its own)")
    ap.add_argument("--eval_data_seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=8, help="ResNet-18 width: the SER config's model.width")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log_every", type=int, default=250)
    ap.add_argument("--data_dir", default="")
    ap.add_argument("--out", required=True, help="checkpoint path (.npz)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    kw = dict(canvas=a.canvas, num_test=a.num_test)
    pool = load_clutter(a.dataset, a.data_dir or None, seed=a.data_seed, num_train=a.num_train, **kw)
    ds = pool.dataset
    mean, std = float(ds.mean[0]), float(ds.std[0])
    model, variables, losses, v0 = pretrain(ds.x_train, pool.saliency("train"), width=a.width, steps=a.steps,
                                            batch=a.batch, lr=a.lr, seed=a.seed, mean=mean, std=std,
                                            log_every=a.log_every)
    train_s = time.perf_counter() - t0
    report = {"args": vars(a), "losses": losses, "wall_s": None, "train_wall_s": train_s, "eval": {}}
    evals = [(a.dataset, pool, a.data_seed)]
    if a.eval_dataset:
        evals.append((a.eval_dataset, None, a.eval_data_seed))
    for name, data, dseed in evals:
        if data is None:  # the stream's composites: only their test split is looked at
            data = load_clutter(name, a.data_dir or None, seed=dseed, num_train=1, **kw)
        t = data.saliency("test")
        report["eval"][name] = {
            "pretrained": saliency_metrics(model, variables, data.dataset.x_test, t, mean, std),
            "untrained": saliency_metrics(model, v0, data.dataset.x_test, t, mean, std)}
        print(f"{name} test: {report['eval'][name]}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_saliency_checkpoint(a.out, variables["params"], variables["batch_stats"])
    report["wall_s"] = time.perf_counter() - t0
    with open(a.out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {a.out} ({report['wall_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
