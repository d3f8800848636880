"""Row-tiled matrix products on the CPU: ``a @ b`` computed on tiles of a fixed number of
rows, the last tile padded with zero rows, so that every BLAS call has the same shape
whatever the number of rows.

A BLAS picks its kernels, blocking and threading by the shape of the product, and the
round-off of a row's result changes with them: the same row multiplied alone, in a batch
of 7 or in a batch of 10^5 can differ in the last bits. With one shape (T, P) @ (P, K) per
tile, each GEMM run with BLAS on one thread (the caller limits it), a row's result depends
only on the row, ``b`` and T, never on its neighbours or on how many rows came with it.

``a`` (N, P) C-contiguous float, ``b`` (P, K) C-contiguous of ``a``'s dtype, ``tile_rows``
T; ``out`` (N, K) of ``a``'s dtype. The device side (CuPy's GEMM on the same tiles) is
``ul4m4_gpu.core.tiled``.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def tile_product(a, b, start, tile_rows):
    """(T, K) = rows ``start`` .. ``start + T`` of ``a`` (zero rows past its end) @ ``b``:
    the one GEMM shape of every tile."""
    stop = start + tile_rows
    if stop <= a.shape[0]:
        return np.dot(a[start:stop], b)
    tile = np.zeros((tile_rows, a.shape[1]), dtype=a.dtype)
    tile[:a.shape[0] - start] = a[start:]
    return np.dot(tile, b)


@numba.njit(parallel=True, cache=True)
def row_tiled_matmul_cpu(a, b, tile_rows, out):
    """``out`` = ``a`` @ ``b``, one tile of ``tile_rows`` rows per parallel iteration."""
    n = a.shape[0]
    for tile in numba.prange((n + tile_rows - 1) // tile_rows):
        start = tile * tile_rows
        stop = min(n, start + tile_rows)
        out[start:stop] = tile_product(a, b, start, tile_rows)[:stop - start]
