"""Core benchmark: measured side by side in one run, printed as medians and ratios.

(a) Partial k-means, time per Lloyd iteration on complete data, against scikit-learn
    ``KMeans(algorithm="lloyd")`` per iteration: same N, D (split in 3 modalities), K, float32,
    same initial centres, both with the machine's threads.
(b) Completion throughput (rows/s) of every completion rule against the literal
    loop-by-loop reference of tests/reference.py, on the same rows and centres: N rows of
    mfeat's six modality widths, ~50 % of slots missing, K centres (10 % of them partial).

Run:  python benchmarks/bench_core.py [--n 100000] [--d 512] [--k 64] [--repeats 3]
      [--completion-n 20000] [--loop-rows 20]
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
from ul4m4_gpu.core.fit import lloyd_loop  # noqa: E402
from ul4m4_gpu.core.kmeans import PackedRows  # noqa: E402
from ul4m4_gpu.core.sources import ArrayRows  # noqa: E402


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
        result = lloyd_loop(ArrayRows.of_packed(rows), init, centers_mask, max_iter=iters, tol=0.0)
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


#: The rules timed by (b): (label, completion, n_candidates, temperature).
COMPLETION_RULES = (("paper, hard", "paper", 1, 0.1), ("overlap, hard", "overlap", 1, 0.1),
                    ("overlap, soft r=5", "overlap", 5, 0.1),
                    ("nearest, soft r=5", "nearest", 5, 0.1))
MFEAT_DIMS = [76, 216, 64, 240, 47, 6]


def bench_completion(n: int, k: int, loop_rows: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    dims = MFEAT_DIMS
    z = rng.normal(size=(n, sum(dims)))
    mask = rng.random((n, len(dims))) < 0.5
    mask[~mask.any(axis=1), 0] = True
    centers = rng.normal(size=(k, sum(dims)))
    centers_mask = rng.random((k, len(dims))) < 0.9
    centers_mask[~centers_mask.any(axis=1), 0] = True
    subset = slice(0, loop_rows)
    print(f"(b) completion, N={n:,}, K={k}, dims {dims}, {1 - mask.mean():.0%} slots missing, "
          f"float32, median of {repeats}; literal loop (float64) timed on {loop_rows} rows")
    zt, ct = z.astype(np.float32), centers.astype(np.float32)
    for label, completion, r, temperature in COMPLETION_RULES:
        start = time.perf_counter()
        ref_done, _ = reference.complete(z[subset], mask[subset], centers, centers_mask, dims,
                                         completion, r, temperature)
        t_loop = (time.perf_counter() - start) / loop_rows * n

        def ours():
            return greedy_complete(zt, mask, ct, centers_mask, dims, completion=completion,
                                   n_candidates=r, temperature=temperature)

        ours()  # warm up (kernel compile/cache)
        t_ours = median_time(ours, repeats)
        agree = np.allclose(ours()[0][subset], ref_done, atol=1e-4)
        print(f"    {label:18s} {n / t_ours:11,.0f} rows/s   literal loop {n / t_loop:7,.0f} "
              f"rows/s   speed-up {t_loop / t_ours:9,.0f}x   agrees with the loop: {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--completion-n", type=int, default=20_000)
    parser.add_argument("--loop-rows", type=int, default=20)
    parser.add_argument("--only", choices=("kmeans", "completion"), default=None,
                        help="run one part only")
    args = parser.parse_args()
    blas = [(i["internal_api"], i["num_threads"], i.get("architecture")) for i in threadpool_info()]
    print(f"threadpools: {blas}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    if args.only != "completion":
        bench_kmeans(args.n, args.d, args.k, args.iters, args.repeats)
    if args.only != "kmeans":
        bench_completion(args.completion_n, args.k, args.loop_rows, args.repeats)


if __name__ == "__main__":
    main()
