"""Core benchmark: measured side by side in one run, printed as medians and ratios.

(a) Partial k-means, time per Lloyd iteration on complete data, against scikit-learn
    ``KMeans(algorithm="lloyd")`` per iteration: same N, D (split in 3 modalities), K, float32,
    same initial centres, both with the machine's threads.
(b) Greedy completion throughput (rows/s) against the literal loop-by-loop reference of
    tests/reference.py, on the same rows and centres.

Run:  python benchmarks/bench_core.py [--n 100000] [--d 512] [--k 64] [--repeats 3]
"""

from __future__ import annotations

import os

# Same OpenMP wait policy for every side (ul4m4_gpu sets this default on import; set it
# before scikit-learn loads its OpenMP runtime so that both run under it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference  # noqa: E402  (the literal loop implementation lives with the tests)

from ul4m4_gpu import greedy_complete  # noqa: E402
from ul4m4_gpu.kmeans import PackedRows, lloyd_loop  # noqa: E402


def split_dims(d: int, m: int = 3) -> list[int]:
    return [d // m + (1 if i < d % m else 0) for i in range(m)]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kmeans(n: int, d: int, k: int, iters: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    dims = split_dims(d)
    mask = np.ones((n, len(dims)), dtype=bool)
    init = x[rng.choice(n, k, replace=False)]
    rows = PackedRows.build(x, mask, dims, clean=True)
    centers_mask = np.ones((k, len(dims)), dtype=bool)

    def ours():
        result = lloyd_loop(rows, init, centers_mask, max_iter=iters, tol=0.0)
        assert result.n_iter == iters, result.n_iter

    def sklearn():
        km = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, tol=0.0,
                    algorithm="lloyd").fit(x)
        assert km.n_iter_ == iters, km.n_iter_

    ours()  # warm up
    t_ours = median_time(ours, repeats) / iters
    t_sk = median_time(sklearn, repeats) / iters
    print(f"(a) k-means per iteration, N={n:,} D={d} ({'/'.join(map(str, dims))}) K={k}, "
          f"float32, {iters} iterations, median of {repeats}")
    print(f"    ul4m4 partial Lloyd   {t_ours * 1e3:9.1f} ms/iter")
    print(f"    sklearn KMeans lloyd  {t_sk * 1e3:9.1f} ms/iter")
    print(f"    ratio ours / sklearn  {t_ours / t_sk:9.2f}x   (target <= 1.5)")


def bench_completion(n: int, k: int, loop_rows: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    dims = [76, 216, 64]
    z = rng.normal(size=(n, sum(dims)))
    mask = rng.random((n, len(dims))) < 0.5
    mask[~mask.any(axis=1), 0] = True
    centers = rng.normal(size=(k, sum(dims)))
    centers_mask = rng.random((k, len(dims))) < 0.9
    centers_mask[~centers_mask.any(axis=1), 0] = True

    subset = slice(0, loop_rows)
    start = time.perf_counter()
    ref_done, _ = reference.greedy_complete(z[subset], mask[subset], centers, centers_mask, dims)
    t_loop = (time.perf_counter() - start) / loop_rows * n
    print(f"(b) greedy completion, N={n:,}, K={k}, dims {dims}, ~50% slots missing, median of {repeats}")
    print(f"    literal loop (float64)      {n / t_loop:12,.0f} rows/s (timed on {loop_rows} rows)")
    for dtype in (np.float64, np.float32):
        zt, ct = z.astype(dtype), centers.astype(dtype)
        greedy_complete(zt, mask, ct, centers_mask, dims)  # warm up (kernel compile/cache)
        t_ours = median_time(lambda: greedy_complete(zt, mask, ct, centers_mask, dims), repeats)
        done, _ = greedy_complete(zt, mask, ct, centers_mask, dims)
        agree = np.allclose(done[subset], ref_done, atol=1e-5)
        print(f"    ul4m4 ({np.dtype(dtype).name})            {n / t_ours:12,.0f} rows/s, "
              f"speed-up {t_loop / t_ours:8,.0f}x (target >= 1,000x); agrees with the loop on "
              f"the timed rows: {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--completion-n", type=int, default=2000)
    parser.add_argument("--loop-rows", type=int, default=100)
    args = parser.parse_args()
    blas = [(i["internal_api"], i["num_threads"], i.get("architecture")) for i in threadpool_info()]
    print(f"threadpools: {blas}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    bench_kmeans(args.n, args.d, args.k, args.iters, args.repeats)
    bench_completion(args.completion_n, args.k, args.loop_rows, args.repeats)


if __name__ == "__main__":
    main()
