"""The fit's front ends side by side: time per Lloyd iteration of the in-memory fit (the
public ``lloyd``), the streamed Parquet fit (``ul4m4_gpu.streaming.fit_parquet``) and a Dask
fit on one local worker (``ul4m4_gpu.distributed.DaskUL4M4Imputer``), on the same rows and
initial centres. Public API only, so that it runs on earlier versions of the package too
(the before/after figures of BENCHMARKS.md).

Run:  python benchmarks/bench_front_ends.py [N]      (default N = 400000)
"""

import statistics
import sys
import time

import numpy as np

import ul4m4_gpu
from ul4m4_gpu import lloyd

try:
    from ul4m4_gpu.core.normalise import fit_modality_stats, normalise
except ImportError:
    from ul4m4_gpu.normalise import fit_modality_stats, normalise
if __name__ != "__main__":  # imported by bench_scale.py: the workers get its functions by value
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

DIMS = (24, 24, 16)
K = 16


CHUNK = 50_000


def make_chunk(index: int, rows: int):
    """Chunk ``index`` of the data set: (rows, D) float32 values and (rows, M) bool mask,
    the same wherever it is generated (a worker or the client)."""
    centres = np.random.default_rng(0).normal(scale=3.0, size=(K, sum(DIMS))).astype(np.float32)
    rng = np.random.default_rng(1 + index)
    x = centres[rng.integers(K, size=rows)] + rng.standard_normal((rows, sum(DIMS)), dtype=np.float32)
    mask = rng.random((rows, len(DIMS))) >= 0.3
    mask[~mask.any(axis=1), 0] = True
    return x, mask


def chunk_sizes(n: int) -> list[int]:
    return [min(CHUNK, n - start) for start in range(0, n, CHUNK)]


def make_data(n: int):
    parts = [make_chunk(i, rows) for i, rows in enumerate(chunk_sizes(n))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def initial_centers(x, mask):
    return x[:K].copy(), mask[:K].copy()


def per_iteration_streamed(n: int, iters: int, batch_rows: int) -> float:
    """Median time between consecutive Lloyd iterations of a streamed fit (seconds) of the
    rows of :func:`make_data` written to a Parquet file (row groups of ``CHUNK`` rows)."""
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ul4m4_gpu import MultiModalArray, UL4M4Imputer
    from ul4m4_gpu.streaming import fit_parquet

    x, mask = make_data(n)
    data = MultiModalArray(x, mask, DIMS)
    mean, scale = fit_modality_stats(x, mask, DIMS)
    init = initial_centers(normalise(x, mask, mean, scale, DIMS), mask)
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.parquet"
        pq.write_table(pa.Table.from_pydict(
            {name: data.to_arrow().column(name) for name in data.names}), path,
            row_group_size=CHUNK)
        imputer = UL4M4Imputer(n_clusters=K, init=init, max_iter=iters, tol=0.0,
                               temperature=0.1)
        fit_parquet(path, imputer, batch_rows=batch_rows,
                    on_iteration=lambda *_: stamps.append(time.perf_counter()))
    return statistics.median(np.diff(stamps))


def per_iteration_dask(n: int, workers: int, iters: int) -> float:
    """Median time between consecutive Lloyd iterations of a Dask fit (seconds); the chunks
    are generated on the workers (nothing large travels in the graph)."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    from ul4m4_gpu.distributed import DaskUL4M4Imputer

    x, mask = make_data(CHUNK)  # the first chunk holds the initial centres
    mean, scale = fit_modality_stats(x, mask, DIMS)
    init = initial_centers(normalise(x, mask, mean, scale, DIMS), mask)
    parts = [dask.delayed(make_chunk, nout=2)(i, rows) for i, rows in enumerate(chunk_sizes(n))]
    values = da.concatenate([da.from_delayed(p[0], (rows, sum(DIMS)), np.float32)
                             for p, rows in zip(parts, chunk_sizes(n))])
    masks = da.concatenate([da.from_delayed(p[1], (rows, len(DIMS)), bool)
                            for p, rows in zip(parts, chunk_sizes(n))])
    stamps = []
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        imputer = DaskUL4M4Imputer(n_clusters=K, init=init, max_iter=iters, tol=0.0, client=client)
        imputer.fit((values, masks, DIMS), on_iteration=lambda *_: stamps.append(time.perf_counter()))
    return statistics.median(np.diff(stamps))



def per_iteration_public(n, iters, repeats=3):
    x, mask = make_data(n)
    mean, scale = fit_modality_stats(x, mask, DIMS)
    z = normalise(x, mask, mean, scale, DIMS)
    c, cm = initial_centers(z, mask)
    lloyd(z, mask, DIMS, c, cm, max_iter=1, tol=0.0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); lloyd(z, mask, DIMS, c, cm, max_iter=iters, tol=0.0)
        t1 = time.perf_counter(); lloyd(z, mask, DIMS, c, cm, max_iter=1, tol=0.0)
        t2 = time.perf_counter()
        times.append(((t1 - t) - (t2 - t1)) / (iters - 1))
    return statistics.median(times)

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    print(ul4m4_gpu.__file__)
    print(f"in memory {per_iteration_public(n, 6) * 1e3:8.1f} ms/iter")
    print(f"streamed  {per_iteration_streamed(n, 6, CHUNK) * 1e3:8.1f} ms/iter")
    print(f"dask 1 worker {per_iteration_dask(n, 1, 6) * 1e3:8.1f} ms/iter")
