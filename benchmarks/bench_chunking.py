"""Is the loop's default chunking right?  Times the jitted ER step of one
model under several (steps_per_call, unroll) settings on the present device
and prints a markdown table (ms per step, compile time apart).

    python benchmarks/bench_chunking.py --model=small_cnn [--grid=1:1,16:1,16:16] [--calls=4]

``K:U`` = K steps per host call, scan unrolled by U (U = K: fully unrolled).
The default of ``clj.train.auto_chunking`` for this backend and model is
marked with *.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from bench_replay_step import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--method", default="er")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--grid", default="1:1,4:1,4:4,16:1,16:16")
    ap.add_argument("--calls", type=int, default=4)
    a = ap.parse_args()
    from clj.models import is_conv
    from clj.train import auto_chunking

    default = auto_chunking(jax.default_backend(), is_conv(a.model))
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), model {a.model}, "
          f"method {a.method}, batch {a.batch} + replay {a.batch}")
    print("| steps/call | unroll | compile s | ms/step | images/s |\n|---|---|---|---|---|")
    for cell in a.grid.split(","):
        k, u = (int(v) for v in cell.split(":"))
        r = bench(a.method, a.model, a.batch, k, u, a.calls)
        mark = " *" if (k, u) == default else ""
        print(f"| {k}{mark} | {u} | {r['compile_s']} | {r['ms_per_step']} | {r['images_per_s']} |", flush=True)


if __name__ == "__main__":
    main()
