"""Train-step throughput of the jitted ER and DER++ steps.

ResNet-18 (CIFAR variant) by default, stream batch 32 + replay batch 32,
CIFAR-shaped synthetic uint8 data (32x32x3, 10 classes), a full buffer, the
step exactly as the loop runs it (gather by index, on-device augmentation,
``lax.scan`` over ``--steps_per_call`` steps).  Prints compile time
separately from steady-state steps/s and images/s (stream images; DER++ also
forwards 2 x 32 replayed ones) on whatever device is present.

    python benchmarks/bench_replay_step.py [--model=resnet18] [--methods=er,derpp]
        [--steps_per_call=1] [--unroll=1] [--calls=5]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def build(method, model, batch, steps_per_call, unroll):
    from clj.config import base_config
    from clj.train import Runner

    c = base_config()
    c.method = method
    c.dataset = "synthetic"
    c.synthetic.image_shape = (32, 32, 3)
    c.synthetic.num_classes = 10
    c.synthetic.train_per_class = 200
    c.synthetic.test_per_class = 10
    c.model.name = model
    if model != "mlp":
        del c.model["hidden"]
    c.optim.lr = 0.03
    c.augment.crop_pad = 4
    c.augment.flip = True
    c.train.batch_size = batch
    c.replay.buffer_size = 500
    c.replay.minibatch_size = batch
    c.train.epochs = 100  # long tasks: the chunk length is exactly steps_per_call
    c.loop.steps_per_call = steps_per_call
    c.loop.unroll = unroll
    c.progress = False
    r = Runner(c, "/tmp/clj_bench_unused")
    state = r.init_state()
    # Fill the buffer so every step replays (as in steady state).
    buf = state.buffer
    M = buf.y.shape[-1]
    state = state.replace(buffer=buf.replace(
        x=jnp.asarray(r.scenario.x_train[None, :M]), y=jnp.asarray(r.scenario.y_train[None, :M]),
        num_seen=jnp.full_like(buf.num_seen, 10 * M)))
    return r, state


def bench(method, model, batch, K, unroll, calls):
    from chunk_timer import time_chunk

    r, state = build(method, model, batch, K, unroll)
    state = r._begin_task(state, r._task_info(0, r.plans[0].steps, r.plans[0].steps_per_epoch))
    t = time_chunk(r, state, calls)
    return {"method": method, "model": model, "batch": batch, "replay_batch": batch, "steps_per_call": t["K"],
            "unroll": t["unroll"], "compile_s": t["compile_s"], "steps_per_s": t["steps_per_s"],
            "images_per_s": t["images_per_s"], "ms_per_step": round(1000 / t["steps_per_s"], 2),
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--methods", default="er,derpp")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps_per_call", type=int, default=1)
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    rows = [bench(m, a.model, a.batch, a.steps_per_call, a.unroll, a.calls) for m in a.methods.split(",")]
    for row in rows:
        print(json.dumps(row))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
