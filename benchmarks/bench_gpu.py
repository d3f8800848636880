"""GPU benchmark (needs CuPy and a CUDA device), measured side by side in one run.

Fit + transform at N = 1,000,000 rows, three modalities of 768/1024/768 dims, K = 256, 50 % of
slots missing. Prints the partial k-means time per Lloyd iteration (and its assignment and
centre-statistics parts), the completion throughput (rows/s), the fraction of the same-run
CuPy GEMM throughput that one iteration reaches (time of a plain (N, D) @ (D, K) float32
matmul / time of one iteration), and, where importable, cuML's and FAISS's k-means time per
iteration on the same complete data.

Run:  python benchmarks/bench_gpu.py [--n 1000000] [--k 256] [--iters 5] [--dims 768,1024,768]
                                    [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time



def timed(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds, synchronising the device around each call."""
    import cupy

    fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        cupy.cuda.Device().synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_iteration(rows, centers, centers_mask, iters: int) -> tuple[float, int]:
    """(seconds per Lloyd iteration, updates it is measured over) from two timed
    ``lloyd_loop`` runs, of 1 and of ``iters`` updates at ``tol=0``.

    A run of n updates makes n + 1 assignment passes (one before the first update) and may
    stop before ``iters`` when no label changes, so the time per iteration (an assignment
    pass and an update) is the difference of the two runs over the difference of their
    update counts. When both stopped after the same count: the longer run's time over its
    n + 1 passes (a slight underestimate: one update fewer than passes)."""
    from ul4m4_gpu.core.fit import lloyd_loop
    from ul4m4_gpu.core.sources import ArrayRows

    measured = []
    for max_iter in (1, iters):
        result = []
        seconds = timed(lambda: result.append(
            lloyd_loop(ArrayRows.of_packed(rows), centers, centers_mask, max_iter=max_iter, tol=0.0)), repeats=1)
        measured.append((seconds, result[-1].n_iter))
    (t_one, n_one), (t_all, n_all) = measured
    if n_all > n_one:
        return (t_all - t_one) / (n_all - n_one), n_all - n_one
    return t_all / (n_all + 1), n_all


def make_data(n: int, dims, missing: float, seed: int = 0):
    """Clustered float32 rows on the GPU with each slot missing w.p. ``missing`` (every row
    keeps at least one modality)."""
    import cupy

    rng = cupy.random.default_rng(seed)
    centres = rng.standard_normal((64, sum(dims)), dtype=cupy.float32) * 3
    x = centres[rng.integers(0, 64, n)] + rng.standard_normal((n, sum(dims)), dtype=cupy.float32)
    mask = rng.random((n, len(dims))) >= missing
    mask[~mask.any(axis=1), 0] = True
    return x, mask


def other_kmeans(x, k: int, iters: int, init) -> dict:
    """Per-iteration time of cuML and FAISS k-means on complete data, where importable."""
    out = {}
    try:
        from cuml.cluster import KMeans

        fitted = []
        t = timed(lambda: fitted.append(KMeans(n_clusters=k, init=init, n_init=1,
                                               max_iter=iters, tol=0.0).fit(x)), repeats=1)
        out["cuml_s_per_iter"] = t / max(int(fitted[-1].n_iter_), 1)
    except ImportError:
        pass
    try:
        import faiss

        host = x.get()  # FAISS takes host data; its time includes its own copy to the GPU
        km = faiss.Kmeans(host.shape[1], k, niter=iters, gpu=True, seed=0)
        start = time.perf_counter()
        km.train(host)
        out["faiss_s_per_iter"] = (time.perf_counter() - start) / iters
    except (ImportError, AttributeError, RuntimeError):  # RuntimeError: a CPU-only build
        pass
    return out


def main(argv=None) -> None:
    import cupy

    from ul4m4_gpu import MultiModalArray, UL4M4Imputer
    from ul4m4_gpu.core.kmeans import (
        PackedRows,
        assign,
        cluster_statistics,
        seed_plusplus,
    )
    from ul4m4_gpu.core.normalise import fit_modality_stats, normalise

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--missing", type=float, default=0.5)
    parser.add_argument("--dims", default="768,1024,768", help="modality widths, comma-separated")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    dims = tuple(int(d) for d in args.dims.split(","))
    n, k, d = args.n, args.k, sum(dims)
    figures = {"n": n, "k": k, "dims": dims, "missing": args.missing,
               "gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()}

    def record(**values):
        """Add figures, print them and rewrite the JSON, so that a run cut short keeps
        what it measured."""
        figures.update(values)
        print("  measured: " + ", ".join(f"{key}={value:.4g}" for key, value in values.items()),
              flush=True)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({key: (list(v) if isinstance(v, tuple) else v)
                           for key, v in figures.items()}, handle, indent=2)

    x, mask = make_data(n, dims, args.missing)
    data = MultiModalArray(x, mask, dims)
    mean, scale = fit_modality_stats(x, mask, dims)
    z = normalise(x, mask, mean, scale, dims)
    rows = PackedRows.build(z, mask, dims, clean=True)

    start = time.perf_counter()
    centers, centers_mask, _ = seed_plusplus(rows, k, 0)
    cupy.cuda.Device().synchronize()
    record(kmeanspp_s=time.perf_counter() - start)
    t_iter, updates = seconds_per_iteration(rows, centers, centers_mask, args.iters)
    t_gemm = timed(lambda: z @ centers.T, repeats=5)
    record(s_per_iter=t_iter, iter_updates=updates, gemm_s=t_gemm, gemm_fraction=t_gemm / t_iter,
           gemm_tflops=2 * n * d * k / t_gemm / 1e12)
    labels, _ = assign(rows, centers, centers_mask)  # where an iteration's time goes
    record(assign_s=timed(lambda: assign(rows, centers, centers_mask), repeats=3),
           update_s=timed(lambda: cluster_statistics(rows, labels, k), repeats=3))

    imp = UL4M4Imputer(n_clusters=k, max_iter=args.iters, tol=0.0, random_state=0,
                       device="cuda", init=(centers, centers_mask))
    start = time.perf_counter()
    imp.fit(data)
    cupy.cuda.Device().synchronize()
    record(fit_s=time.perf_counter() - start)
    t_transform = timed(lambda: imp.transform(data), repeats=3)
    record(transform_s=t_transform, completion_rows_per_s=n / t_transform)

    full = cupy.ones_like(mask)
    complete_rows = PackedRows.build(x, full, dims, clean=True)
    record(ours_complete_s_per_iter=seconds_per_iteration(
        complete_rows, x[:k].copy(), full[:k].copy(), args.iters)[0])
    record(**other_kmeans(x, k, args.iters, x[:k].copy()))

    print(f"GPU {figures['gpu']}: N={n:,} dims {dims} K={k}, {args.missing:.0%} slots missing")
    print(f"  k-means++ seeding            {figures['kmeanspp_s']:8.3f} s")
    print(f"  partial Lloyd iteration      {t_iter * 1e3:8.1f} ms")
    print(f"  same-shape CuPy GEMM         {t_gemm * 1e3:8.1f} ms ({figures['gemm_tflops']:.1f} TFLOP/s)")
    print(f"  fraction of GEMM throughput  {figures['gemm_fraction']:8.2f}   (target >= 0.5)")
    print(f"    of which assignment (GEMM + assign kernel) {figures['assign_s'] * 1e3:8.1f} ms, "
          f"centre statistics (update kernel) {figures['update_s'] * 1e3:8.1f} ms")
    print(f"  transform (completion)       {figures['completion_rows_per_s']:12,.0f} rows/s (target >= 10M)")
    print(f"  complete-data Lloyd, ours    {figures['ours_complete_s_per_iter'] * 1e3:8.1f} ms/iter")
    for name in ("cuml", "faiss"):
        if f"{name}_s_per_iter" in figures:
            print(f"  complete-data, {name:5s}        {figures[f'{name}_s_per_iter'] * 1e3:8.1f} ms/iter")


if __name__ == "__main__":
    main()
