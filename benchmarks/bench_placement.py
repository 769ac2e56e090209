"""The stream placement against the device placement on the same run:
steps per second of training (compile excluded: the first task's time is
left out) and the whole run's wall time.

    python benchmarks/bench_placement.py [--train_per_class=1000] [--model=mlp] [--epochs=2]

The dataset is synthetic, CIFAR-shaped (32x32x3, 10 classes), written once in
clj's record format to a temporary data_dir; both runs read the same records
(``device`` loads them all onto the device, ``stream`` reads each chunk from
disk ahead of use).  Prints one markdown row per placement.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train_per_class", type=int, default=1000)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    import jax

    from clj.config import base_config
    from clj.data import load_dataset
    from clj.data.records import DatasetWriter, prepared_dir
    from clj.train import Runner

    data_dir = tempfile.mkdtemp()
    ds = load_dataset("synthetic", seed=0, image_shape=(32, 32, 3), num_classes=10,
                      train_per_class=a.train_per_class, test_per_class=100)
    w = DatasetWriter(prepared_dir(data_dir, "synth_c10"), "synth_c10", image_shape=(32, 32, 3), num_classes=10)
    w.write("train", ds.x_train, ds.y_train)
    w.write("test", ds.x_test, ds.y_test)
    w.close()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); {ds.x_train.shape[0]} train images")
    print("| placement | steps/s (tasks 2-5) | wall s (whole run) |\n|---|---|---|")
    for placement in ("device", "stream"):
        c = base_config()
        c.method, c.dataset, c.data_dir = "er", "clj:synth_c10", data_dir
        c.model.name = a.model
        if a.model != "mlp":
            del c.model["hidden"]
        c.train.epochs, c.train.batch_size = a.epochs, a.batch
        c.replay.buffer_size, c.replay.minibatch_size = 500, a.batch
        c.data.placement = placement
        c.progress = c.plots = False
        c.loop.compilation_cache = False
        t0 = time.perf_counter()
        res = Runner(c, tempfile.mkdtemp()).run()
        wall = time.perf_counter() - t0
        steps, secs = res["steps"]["per_task"][1:], res["wall_time_s"]["per_task"][1:]
        print(f"| {placement} | {sum(steps) / sum(secs):.1f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
