"""How fast does the streaming input path deliver chunks from disk?

Prepares (once, in --data_dir) a synthetic CIFAR-shaped dataset in clj's
format (uniform random uint8 images, so zstd cannot shrink them: the worst
case for bytes read), then times :class:`clj.data.stream.ChunkStream` over
random index arrays ``[S, n_chunks, K, B]`` and prints a markdown table of
chunks/s and images/s, next to an in-memory numpy gather ``X[idx]`` of the
same chunks (the cost floor of building the same arrays on the host).

    python benchmarks/bench_stream.py [--data_dir=/tmp/clj_bench_stream]
        [--num_train=50000] [--seeds=1] [--steps=50] [--batch=128]
        [--chunks=8] [--threads=1,2,4] [--prefetch=2] [--consume_ms=0]

``--consume_ms`` sleeps that long per chunk in the consumer (a stand-in for the
device running the chunk): with prefetch the reported wait per chunk should
drop towards zero once reading is faster than consuming (chunk 0 always
waits for a full read, unless the stream was made during compilation).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from clj.data.records import DatasetWriter, PreparedDataset, find_prepared, prepared_dir  # noqa: E402
from clj.data.stream import ChunkStream  # noqa: E402


def make_dataset(data_dir, num_train, num_test=10000, shape=(32, 32, 3)):
    name = f"bench_cifar_{num_train}"
    found = find_prepared(data_dir, name)
    if found is not None:
        return found, 0.0
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    w = DatasetWriter(prepared_dir(data_dir, name), name, shape, 100, overwrite=True)
    for split, n in (("train", num_train), ("test", num_test)):
        for lo in range(0, n, 10000):
            m = min(10000, n - lo)
            w.write(split, rng.integers(0, 256, (m, *shape), dtype=np.uint8),
                    rng.integers(0, 100, m))
    path = w.close()
    return path, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data_dir", default="/tmp/clj_bench_stream")
    ap.add_argument("--num_train", type=int, default=50000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--consume_ms", type=float, default=0.0)
    a = ap.parse_args()

    path, prep_s = make_dataset(a.data_dir, a.num_train)
    shape = (a.seeds, a.chunks, a.steps, a.batch)
    imgs_per_chunk = a.seeds * a.steps * a.batch
    print(f"dataset {path} ({a.num_train} train, 32x32x3 uint8"
          + (f", written in {prep_s:.1f} s" if prep_s else ", reused") + f"); "
          f"indices {list(shape)}, {imgs_per_chunk} images ({imgs_per_chunk * 3076 / 2**20:.1f} "
          f"MiB) per chunk; prefetch {a.prefetch}; consumer {a.consume_ms} ms/chunk; "
          f"{os.cpu_count()} CPUs")
    rng = np.random.default_rng(1)
    idx = rng.integers(0, a.num_train, shape)

    with PreparedDataset(path) as ds:
        x, y = ds.read_all("train")
    t = time.perf_counter()
    for c in range(a.chunks):
        x[idx[:, c]], y[idx[:, c]]
    dt = time.perf_counter() - t
    print("| reader | threads | chunks/s | images/s | wait for chunk 0 ms | wait per later chunk ms |")
    print("|---|---|---|---|---|---|")
    print(f"| numpy X[idx] in memory | - | {a.chunks / dt:.2f} | {a.chunks * imgs_per_chunk / dt:,.0f} | - | - |")
    del x, y

    for th in (int(v) for v in a.threads.split(",")):
        with PreparedDataset(path, num_threads=th) as ds:
            ChunkStream(ds, idx[:, :1], prefetch=1).close()  # warm files/imports
            t = time.perf_counter()
            waits = []
            with ChunkStream(ds, idx, prefetch=a.prefetch) as st:
                it = iter(st)
                for _ in range(a.chunks):
                    t0 = time.perf_counter()
                    next(it)
                    waits.append(time.perf_counter() - t0)
                    if a.consume_ms:
                        time.sleep(a.consume_ms / 1000)
            dt = time.perf_counter() - t
        print(f"| ChunkStream (grain ArrayRecordDataSource) | {th} | {a.chunks / dt:.2f} | "
              f"{a.chunks * imgs_per_chunk / dt:,.0f} | {1000 * waits[0]:.0f} | "
              f"{1000 * np.mean(waits[1:]) if len(waits) > 1 else float('nan'):.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
