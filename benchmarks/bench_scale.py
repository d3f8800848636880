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


import ul4m4_gpu  # noqa: F401  (sets the OpenMP wait policy before scikit-learn loads)
from ul4m4_gpu.core.fit import lloyd_loop
from ul4m4_gpu.core.kmeans import PackedRows
from ul4m4_gpu.core.sources import ArrayRows
from ul4m4_gpu.core.normalise import fit_modality_stats, normalise
from bench_front_ends import (CHUNK, DIMS, K, initial_centers, make_data,  # noqa: E402
                              per_iteration_dask, per_iteration_streamed)

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
