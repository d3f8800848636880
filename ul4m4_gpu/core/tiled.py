"""Row-tiled matrix products: every product of rows with centres (docs/method.md, "The
partial distance") goes through :func:`row_tiled_matmul`, so that a row's result is bitwise
the same whatever rows come with it.

A BLAS (OpenBLAS, MKL, cuBLAS) picks its kernels, blocking, split of the sum and threads by
the shape of the product, and the round-off of a row's dot products changes with them: the
same row scored alone, in a batch of 7 or in a batch of 10^5 can differ in the last bits,
enough to change a soft fill's weights. Here every GEMM has one shape, (T, P) @ (P, K):
the rows are cut in tiles of T rows and the last tile is padded with zero rows. On the CPU
each tile is one BLAS call on one thread (tiles run in parallel on Numba's threads), so
the BLAS thread count does not enter either. What a row gets
then depends on the row, the right-hand side and T only: not on ``batch_size``, the
streamed ``batch_rows``, Dask's partitions, or which other rows need completing.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from ..kernels import tiles as tile_kernels
from .backend import array_module

#: Rows per tile on the CPU, chosen with ``benchmarks/bench_tiles.py`` (2 shared AVX-512
#: cores, OpenBLAS 0.3.30; fastest of repeats, against one whole-batch NumPy matmul): with
#: 256-row tiles large products (10^4 to 10^5 rows, P = 512 to 4096, K = 32 to 256) take
#: 0.83 to 1.09 times as long; 64-row tiles lose 5 to 25 % to the per-tile overhead;
#: 512 and 1024 gain at most 5 % there but double and quadruple the cost of a small batch,
#: which pays for a whole tile (one row: 0.29 ms at P = 649, K = 64, against 0.003 ms).
CPU_ROW_TILE = 256
#: Rows per tile on a GPU: a cuBLAS call costs a few µs, about a (8192, 649) @ (649, 64)
#: product, so smaller tiles would be bound by launches. An estimate, not measured yet
#: (``python benchmarks/bench_tiles.py --device cuda`` measures it).
GPU_ROW_TILE = 8192


def row_tiled_matmul(a, b):
    """``a @ b`` on tiles of T rows (:data:`CPU_ROW_TILE` for NumPy arrays,
    :data:`GPU_ROW_TILE` for CuPy ones), the last padded with zero rows.

    a : (N, P) float array (NumPy or CuPy); b : (P, K) array on the same device, cast to
    ``a``'s dtype. Returns (N, K) of ``a``'s dtype whose row i depends only on ``a[i]``,
    ``b`` and the device: bitwise the same for any N and any rows beside it. A call with
    N < T costs one T-row tile.
    """
    xp = array_module(a, b)
    b = xp.ascontiguousarray(b.astype(a.dtype, copy=False))
    if xp is np:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        with single_threaded_blas():
            tile_kernels.row_tiled_matmul_cpu(np.ascontiguousarray(a), b, CPU_ROW_TILE, out)
        return out
    return _device_row_tiled_matmul(xp, a, b, GPU_ROW_TILE)


def _device_row_tiled_matmul(xp, a, b, tile_rows):
    """The GPU side: each tile is copied into one (T, P) buffer (so that every GEMM also
    sees the same alignment and strides) and multiplied by one cuBLAS call."""
    n = a.shape[0]
    out = xp.empty((n, b.shape[1]), dtype=a.dtype)
    tile = xp.zeros((tile_rows, a.shape[1]), dtype=a.dtype)
    for start in range(0, n, tile_rows):
        rows = min(tile_rows, n - start)
        tile[:rows] = a[start:start + rows]
        tile[rows:] = 0
        out[start:start + rows] = (tile @ b)[:rows]
    return out


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS library of the process limited to one thread while any caller is inside;
    nested and concurrent callers (threads) share the one limit, lifted when the last
    leaves, so that no caller's tiles ever run on a multi-threaded BLAS."""
    global _blas_users, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
