"""Row tile size of ``ul4m4_gpu.core.tiled`` (how CPU_ROW_TILE and GPU_ROW_TILE are
chosen): time of ``row_tiled_matmul`` for several tile sizes against one whole-batch
matmul of the same product, on large products (the per-tile overhead) and on small batches
(the padding: a batch of fewer rows than a tile costs a whole tile).

Each figure is the minimum over repeats and rounds (rounds alternate the tile sizes, so a
busy machine slows them alike); printed as the whole-batch time and each tile size's ratio
to it.

Run:  python benchmarks/bench_tiles.py [--device cpu|cuda] [--tiles 64,128,256,512,1024]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ul4m4_gpu.core import tiled

#: (rows, P, K) of the products timed: Lloyd passes and completion batches at mfeat's
#: D = 649, a wide D, the norm terms' narrow P = 2M, and small batches.
SHAPES = [(100_000, 512, 64), (10_000, 649, 64), (10_000, 649, 256), (10_000, 4096, 32),
          (10_000, 12, 64), (100, 649, 64), (1, 649, 64)]


def fastest(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tiles", default=None,
                        help="comma-separated tile sizes (default: 64..1024 on the CPU, "
                             "1024..65536 on a GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda":
        import cupy as xp

        sync = xp.cuda.Device().synchronize
        attribute, default_tiles = "GPU_ROW_TILE", "1024,4096,8192,16384,65536"
    else:
        xp, sync, attribute, default_tiles = np, (lambda: None), "CPU_ROW_TILE", "64,128,256,512,1024"
    tiles = [int(t) for t in (args.tiles or default_tiles).split(",")]
    rng = np.random.default_rng(0)
    for n, p, k in SHAPES:
        a = xp.asarray(rng.normal(size=(n, p)).astype(np.float32))
        b = xp.asarray(rng.normal(size=(k, p)).astype(np.float32)).T
        repeats = max(5, min(400, int(2e9 // (n * p * k + 1e6))))
        whole, per_tile = [], {t: [] for t in tiles}
        for _ in range(args.rounds):
            whole.append(fastest(lambda: a @ b, repeats, sync))
            for t in tiles:
                setattr(tiled, attribute, t)
                per_tile[t].append(fastest(lambda: tiled.row_tiled_matmul(a, b), repeats, sync))
        base = min(whole)
        ratios = "; ".join(f"T={t} {min(per_tile[t]) / base:.2f}x" for t in tiles)
        print(f"({n}, {p}) @ ({p}, {k}): whole {base * 1e3:.3f} ms; {ratios}", flush=True)


if __name__ == "__main__":
    main()
