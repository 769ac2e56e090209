"""Forward time of a convolutional network for S seeds: one seed, the S seeds
under ``jax.vmap`` (how the loop runs seeds: each seed's weights batched, so
every convolution becomes a grouped convolution), and the S seeds one after
another under ``jax.lax.map``.

    python benchmarks/bench_vmapped_conv.py [--model=resnet32] [--num_blocks=1] [--seeds=2] \
        [--batch=64] [--image=32] [--repeats=5]

On XLA:CPU the grouped convolution is the slow case (``benchmarks/README.md``,
"Vmapped seeds of a convolutional network on the CPU"); on a GPU the vmapped
seeds share each kernel launch.  Prints seconds per call (after one warm-up
call) for each of the three; timings are never asserted in tests.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from clj.models import get_model  # noqa: E402


def seconds_per_call(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet32")
    ap.add_argument("--num_blocks", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    kw = {"num_blocks": a.num_blocks} if a.model == "resnet32" else {}
    model = get_model(a.model, 10, **kw)
    x = jnp.ones((a.batch, a.image, a.image, 3), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), a.seeds)
    stacked = jax.vmap(lambda k: model.init(k, x[:1], train=False))(keys)
    one = jax.tree_util.tree_map(lambda v: v[0], stacked)

    def apply(v, xb):
        return model.apply(v, xb, train=False)

    rows = [("one seed", jax.jit(apply), (one, x)),
            (f"{a.seeds} seeds, vmap", jax.jit(jax.vmap(apply, in_axes=(0, None))), (stacked, x)),
            (f"{a.seeds} seeds, lax.map", jax.jit(lambda v, xb: jax.lax.map(lambda w: apply(w, xb), v)),
             (stacked, x))]
    print(f"{jax.default_backend()}: {a.model} (num_blocks {a.num_blocks}), batch {a.batch} x {a.image}x{a.image}x3, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for name, fn, args in rows:
        print(f"  {name:22s} {seconds_per_call(fn, args, a.repeats):.4f} s/call")


if __name__ == "__main__":
    main()
