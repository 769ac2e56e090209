"""The device benchmark: compile time and steady-state speed of the main jobs'
training chunks on whatever device is present, plus the whole-run wall time
of the main job, on synthetic data of the real datasets' shapes.

    python benchmarks/bench_device.py [--out=benchmarks/device.json] [--calls=20] [--quick]

Rows (each with 1 and 8 seeds vmapped in one program):

* ``serena``: SERENA's online step, ``configs/serena_cifar100.py`` (the paper's
  ResNet-18, width 64, batch 10), CIFAR-100 shapes;
* ``derpp``: DER++ on ResNet-18 (width 64), batch 32 + 32 replayed, CIFAR-10 shapes;
* ``memo``: MEMO's first task, ``configs/memo_cifar100_b0inc10.py`` (ResNet-32),
  CIFAR-100 shapes;

then ``serena_cifar100_run``: ``python launch.py --config=configs/serena_cifar100.py``
end to end (one seed) on a synthetic CIFAR-100 (50,000 / 10,000 images of
32x32x3, 100 classes) — the whole pipeline, compiles included.

``--quick`` shrinks everything (width 8, fewer images, 2 calls) to check the
script itself on a CPU in minutes.  Numbers are printed as a markdown table
and written as JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def _synthetic(c, classes: int, train_per_class: int, test_per_class: int):
    c.dataset = "synthetic"
    c.data_dir = ""
    c.synthetic.image_shape = (32, 32, 3)
    c.synthetic.num_classes = classes
    c.synthetic.train_per_class = train_per_class
    c.synthetic.test_per_class = test_per_class
    c.progress = False
    c.plots = False
    c.loop.compilation_cache = False  # compile time is part of what is measured
    return c


def configs(quick: bool) -> dict:
    """name -> config of each chunk row (1 seed; the caller sets num_seeds)."""
    from clj.config import base_config, load_config

    width = 8 if quick else 64
    per_class = 10 if quick else 50
    out = {}
    c = _synthetic(load_config("serena_cifar100"), 100, per_class, 2)
    c.model.width = width
    out["serena"] = c
    c = _synthetic(base_config(), 10, per_class * 10, 2)
    c.method = "derpp"
    c.model = dict(name="resnet18", width=width)
    c.optim.lr = 0.03
    c.augment.crop_pad, c.augment.flip = 4, True
    c.train.batch_size = 32
    c.train.epochs = 100
    c.replay.buffer_size, c.replay.minibatch_size = 500, 32
    out["derpp"] = c
    c = _synthetic(load_config("memo_cifar100_b0inc10"), 100, per_class, 2)
    out["memo"] = c
    return out


def chunk_row(name: str, config, seeds: int, calls: int) -> dict:
    import jax

    from chunk_timer import time_chunk
    from clj.train import Runner

    config.num_seeds = seeds
    r = Runner(config, tempfile.mkdtemp())
    state = r.init_state()
    plan = r.plans[0]
    state = r._begin_task(state, r._task_info(0, plan.steps, plan.steps_per_epoch))
    t = time_chunk(r, state, calls)
    return {"row": name, "model": str(config.model.name), "batch": r.B, **t,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def whole_run(quick: bool) -> dict:
    import jax

    from clj.config import load_config
    from clj.train import Runner

    c = _synthetic(load_config("serena_cifar100"), 100, 20 if quick else 500, 4 if quick else 100)
    if quick:
        c.model.width = 8
    t0 = time.perf_counter()
    res = Runner(c, tempfile.mkdtemp()).run()
    return {"row": "serena_cifar100_run", "wall_s": round(time.perf_counter() - t0, 1),
            "steps": sum(res["steps"]["per_task"]), "tasks": len(res["steps"]["per_task"]),
            "train_s": round(sum(res["wall_time_s"]["per_task"]), 1),
            "final_class_il": res["metrics"]["class_il"]["final_average_accuracy"],
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "device.json"))
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--seeds", default="1,8")
    ap.add_argument("--rows", default="serena,derpp,memo")
    ap.add_argument("--no_run", action="store_true", help="skip the whole-run row")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    calls = 2 if a.quick else a.calls
    rows = []
    print("| row | model | batch | seeds | K | compile s | steps/s | images/s (all seeds) |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for name in a.rows.split(","):
        for s in (int(v) for v in a.seeds.split(",")):
            cfg = configs(a.quick)[name]
            row = chunk_row(name, cfg, s, calls)
            rows.append(row)
            print(f"| {name} | {row['model']} | {row['batch']} | {s} | {row['K']} | {row['compile_s']} | "
                  f"{row['steps_per_s']} | {row['images_per_s']} |", flush=True)
            _write(a.out, rows)
    if not a.no_run:
        row = whole_run(a.quick)
        rows.append(row)
        print(f"serena_cifar100 whole run: {row['wall_s']} s ({row['tasks']} tasks, {row['steps']} steps, "
              f"train {row['train_s']} s), class-IL {100 * row['final_class_il']:.2f}% on synthetic data",
              flush=True)
        _write(a.out, rows)


def _write(path: str, rows: list) -> None:
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
