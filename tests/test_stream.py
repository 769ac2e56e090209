"""Tests for clj.data.stream: chunks read from disk equal X[idx], Y[idx], in order."""

from __future__ import annotations

import numpy as np
import pytest

from clj.data.records import DatasetWriter, PreparedDataset, prepared_dir
from clj.data.stream import ChunkStream, EvalStream, open_prepared, read_batches


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A 6x5x3 dataset, 211 train / 37 test, train split over 4 shards."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (211, 6, 5, 3), dtype=np.uint8)
    y = rng.integers(0, 7, 211).astype(np.int32)
    xt = rng.integers(0, 256, (37, 6, 5, 3), dtype=np.uint8)
    yt = rng.integers(0, 7, 37).astype(np.int32)
    w = DatasetWriter(prepared_dir(root, "toy"), "toy", (6, 5, 3), 7,
                      shard_bytes=60 * (4 + 90))
    for lo in range(0, 211, 50):  # several writes, shards cut across them
        w.write("train", x[lo:lo + 50], y[lo:lo + 50])
    w.write("test", xt, yt)
    path = w.close()
    return root, path, x, y, xt, yt


def test_reader_random_access_and_shards(prepared):
    root, path, x, y, xt, yt = prepared
    with open_prepared("toy", root, num_threads=3) as ds:
        assert len(ds.metadata["splits"]["train"]["shards"]) == 4
        idx = np.random.default_rng(1).integers(0, 211, (4, 9))
        xi, yi = ds.read("train", idx)
        np.testing.assert_array_equal(xi, x[idx])
        np.testing.assert_array_equal(yi, y[idx])
        with pytest.raises(IndexError, match="index 211 outside"):
            ds.read("train", np.array([0, 211]))
        with pytest.raises(ValueError, match="unknown split 'val'"):
            ds.read("val", np.array([0]))
    with pytest.raises(FileNotFoundError, match="python -m clj.data.prepare imagefolder "
                                                "--name nope"):
        open_prepared("nope", root)


@pytest.mark.parametrize("prefetch,start", [(1, 0), (2, 0), (3, 2)])
def test_chunk_stream_equals_gather_in_order(prepared, prefetch, start):
    root, path, x, y, _, _ = prepared
    s_, n, k, b = 3, 5, 4, 8
    idx = np.random.default_rng(prefetch).integers(0, 211, (s_, n, k, b))
    with ChunkStream(path, idx, prefetch=prefetch, start_chunk=start, num_threads=2) as st:
        assert len(st) == n - start
        got = list(st)
    assert len(got) == n - start
    for c, (xc, yc) in zip(range(start, n), got):
        assert xc.shape == (s_, k, b, 6, 5, 3) and xc.dtype == np.uint8
        assert yc.shape == (s_, k, b) and yc.dtype == np.int32
        np.testing.assert_array_equal(xc, x[idx[:, c]])
        np.testing.assert_array_equal(yc, y[idx[:, c]])


def test_process_split_is_disjoint_and_concatenates(prepared):
    root, path, x, y, _, _ = prepared
    idx = np.random.default_rng(2).integers(0, 211, (2, 3, 2, 8))
    with PreparedDataset(path) as ds:
        parts = []
        for p in range(4):
            with ChunkStream(ds, idx, process_index=p, process_count=4) as st:
                parts.append(list(st))
                assert st.rows == slice(2 * p, 2 * p + 2)
        for c in range(3):
            xs = [parts[p][c][0] for p in range(4)]
            assert all(a.shape == (2, 2, 2, 6, 5, 3) for a in xs)
            np.testing.assert_array_equal(np.concatenate(xs, axis=2), x[idx[:, c]])
            np.testing.assert_array_equal(
                np.concatenate([parts[p][c][1] for p in range(4)], axis=2), y[idx[:, c]])
        with pytest.raises(ValueError, match="divisible by process_count=3"):
            ChunkStream(ds, idx, process_index=0, process_count=3)
        with pytest.raises(ValueError, match="process_index=4 must be in"):
            ChunkStream(ds, idx, process_index=4, process_count=4)
        # The dataset passed in stays open after the streams close.
        assert ds.read("train", np.array([3]))[1][0] == y[3]


def test_eval_stream_and_read_batches(prepared):
    root, path, _, _, xt, yt = prepared
    idx = np.arange(36).reshape(4, 9)
    with PreparedDataset(path) as ds:
        with EvalStream(ds, idx) as st:
            got = list(st)
        assert len(got) == 4
        for b, (xb, yb) in enumerate(got):
            np.testing.assert_array_equal(xb, xt[idx[b]])
            np.testing.assert_array_equal(yb, yt[idx[b]])
        xa, ya = read_batches(ds, idx)
        assert xa.shape == (4, 9, 6, 5, 3)
        np.testing.assert_array_equal(xa, xt[idx])
        np.testing.assert_array_equal(ya, yt[idx])
        with EvalStream(ds, idx[:, :8], process_index=1, process_count=2) as st:
            np.testing.assert_array_equal(next(iter(st))[1], yt[idx[0, 4:8]])


def test_stream_errors_and_early_close(prepared):
    root, path, _, _, _, _ = prepared
    with pytest.raises(ValueError, match=r"\[S, n_chunks, K, B\]"):
        ChunkStream(path, np.zeros((2, 3, 4), np.int64))
    with pytest.raises(IndexError, match="index 500 outside"):
        ChunkStream(path, np.full((1, 1, 1, 1), 500))
    with pytest.raises(ValueError, match="prefetch must be >= 1"):
        ChunkStream(path, np.zeros((1, 1, 1, 1), np.int64), prefetch=0)
    st = ChunkStream(path, np.zeros((1, 50, 2, 2), np.int64), prefetch=1)
    it = iter(st)
    next(it)
    st.close()  # stops the reader thread though 49 chunks are left
    assert not st._thread.is_alive()
    with pytest.raises(RuntimeError, match="iterated once"):
        iter(st)
