"""Nearest partial centre of every row, fused: masked normalised distance + argmin.

Inputs for a batch of n rows against K centres (M modalities):
``cross`` (n, K) = Σ_m z_i^m·c_l^m / d_m (one GEMM, z and the centres zero where absent);
``row_norms`` (n, M) and ``center_norms`` (K, M) = ||·^m||² / d_m; ``mask`` (n, M) and
``centers_mask`` (K, M) bool. For each pair the kernel forms

    sum = Σ_{m∈O_i∩C_l} (row_norms[i, m] + center_norms[l, m]) − 2 cross[i, l]   (≥ 0)
    d²  = sum / |O_i ∩ C_l|                                     (+inf when nothing shared)

and keeps the smallest (ties: lowest l). Outputs: ``labels`` (n,) int64, −1 when every
distance is +inf, and ``nearest`` (n,) = the distance itself (sqrt taken once per row).
The (n, K) distance matrix is never stored.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import


@numba.njit(parallel=True, cache=True)
def nearest_centers_cpu(cross, row_norms, mask, center_norms, centers_mask, labels, nearest):
    """CPU twin: one row per parallel iteration."""
    n, k = cross.shape
    n_mod = mask.shape[1]
    for i in numba.prange(n):
        best = np.inf
        best_l = -1
        for l in range(k):
            total = -2.0 * cross[i, l]
            count = 0
            for m in range(n_mod):
                if mask[i, m] and centers_mask[l, m]:
                    total += row_norms[i, m] + center_norms[l, m]
                    count += 1
            if count > 0:
                value = max(total, 0.0) / count
                if value < best:
                    best = value
                    best_l = l
        labels[i] = best_l
        nearest[i] = math.sqrt(best)


@cuda.jit
def nearest_centers_cuda(cross, row_norms, mask, center_norms, centers_mask, labels, nearest):
    """CUDA twin: one thread per row, same arithmetic and tie rule as the CPU twin."""
    i = cuda.grid(1)
    n, k = cross.shape
    if i >= n:
        return
    best = math.inf
    best_l = -1
    for l in range(k):
        total = -2.0 * cross[i, l]
        count = 0
        for m in range(mask.shape[1]):
            if mask[i, m] and centers_mask[l, m]:
                total += row_norms[i, m] + center_norms[l, m]
                count += 1
        if count > 0:
            value = max(total, 0.0) / count
            if value < best:
                best = value
                best_l = l
    labels[i] = best_l
    nearest[i] = math.sqrt(best)


THREADS_1D = 256


def launch(cross, *args):
    """Run the CUDA twin over every row of ``cross`` (256-thread blocks)."""
    blocks = (cross.shape[0] + THREADS_1D - 1) // THREADS_1D
    nearest_centers_cuda[blocks, THREADS_1D](cross, *args)
