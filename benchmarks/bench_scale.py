"""Scaling benchmark: partial k-means time per Lloyd iteration against N on one machine
(expect linear growth), a streamed fit of the same rows from Parquet, and a Dask fit on 1
vs 2 local workers.

Data: clustered float32 rows, three modalities (dims 24/24/16, D = 64), 30 % of slots
missing, K = 16; explicit initial centres so that every run does the same work.

Run:  python benchmarks/bench_scale.py [--sizes 10000 100000 1000000 2000000] [--dask-n 400000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ul4m4_gpu  # noqa: F401  (sets the OpenMP wait policy before scikit-learn loads)
from ul4m4_gpu.core.fit import lloyd_loop
from ul4m4_gpu.core.kmeans import PackedRows
from ul4m4_gpu.core.sources import ArrayRows
from ul4m4_gpu.core.normalise import fit_modality_stats, normalise

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


def per_iteration_single(n: int, iters: int, repeats: int) -> float:
    x, mask = make_data(n)
    mean, scale = fit_modality_stats(x, mask, DIMS)
    rows = PackedRows.build(normalise(x, mask, mean, scale, DIMS), mask, DIMS, clean=True)
    centers, centers_mask = initial_centers(rows.z, mask)
    lloyd_loop(ArrayRows.of_packed(rows), centers, centers_mask, max_iter=1, tol=0.0)  # warm-up (kernel load)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lloyd_loop(ArrayRows.of_packed(rows), centers, centers_mask, max_iter=iters, tol=0.0)
        times.append((time.perf_counter() - start) / iters)
    return statistics.median(times)


def per_iteration_streamed(n: int, iters: int, batch_rows: int) -> float:
    """Median time between consecutive Lloyd iterations of a streamed fit (seconds) of the
    rows of :func:`make_data` written to a Parquet file (row groups of ``CHUNK`` rows)."""
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ul4m4_gpu import MultiModalArray, UL4M4Imputer
    from ul4m4_gpu.scale.streaming import fit_parquet

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

    from ul4m4_gpu.scale.dask_imputer import DaskUL4M4Imputer

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[10_000, 100_000, 500_000, 1_000_000, 2_000_000])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dask-n", type=int, default=400_000,
                        help="rows of the streamed and the Dask fits")
    args = parser.parse_args()

    print(f"(a) one machine: partial Lloyd, dims {DIMS}, K={K}, 30% slots missing, "
          f"median of {args.repeats}")
    base = None
    for n in args.sizes:
        t = per_iteration_single(n, args.iters, args.repeats)
        base = base or (t / n)
        print(f"    N={n:>10,}  {t * 1e3:9.2f} ms/iter   {t / n * 1e9:7.1f} ns/row   "
              f"(per-row cost vs smallest N: {t / n / base:4.2f}x)")
    in_process = per_iteration_single(args.dask_n, args.iters, args.repeats)
    streamed = per_iteration_streamed(args.dask_n, args.iters + 1, CHUNK)
    print(f"(b) streamed from Parquet, N={args.dask_n:,}, batches of {CHUNK:,} rows")
    print(f"    in memory  {in_process * 1e3:9.1f} ms/iter")
    print(f"    streamed   {streamed * 1e3:9.1f} ms/iter   ratio to in memory "
          f"{streamed / in_process:4.2f}x")
    print(f"(c) Dask LocalCluster, N={args.dask_n:,}, chunks of {CHUNK:,} rows, "
          "threads_per_worker=1")
    one = per_iteration_dask(args.dask_n, 1, args.iters + 1)
    two = per_iteration_dask(args.dask_n, 2, args.iters + 1)
    print(f"    1 worker   {one * 1e3:9.1f} ms/iter")
    print(f"    2 workers  {two * 1e3:9.1f} ms/iter   speed-up {one / two:4.2f}x "
          "(2 cores: the client and the scheduler share them)")


if __name__ == "__main__":
    main()
