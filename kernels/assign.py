"""Nearest partial centre of every row, fused: masked normalised distance + argmin.

Inputs for a batch of n rows against K centres (M modalities):
``cross`` (n, K) = Σ_m z_i^m·c_l^m / d_m (one GEMM, z and the centres zero where absent);
``row_norms`` (n, M) and ``center_norms`` (K, M) = ||·^m||² / d_m; ``mask`` (n, M) and
``centers_mask`` (K, M) bool. For each pair the kernel forms

    norms = Σ_{m∈O_i∩C_l} (row_norms[i, m] + center_norms[l, m])
    sum   = norms − 2 cross[i, l],  set to 0 when ≤ rtol · norms (round-off of the expansion)
    d²    = sum / |O_i ∩ C_l|                                  (+inf when nothing shared)

and keeps the smallest, where a later centre must beat the best by more than the round-off
of both (rtol · norms / count): ties within round-off go to the lowest l, so duplicate
centres resolve the same way whatever the batch. Outputs: ``labels`` (n,) int64, −1 when
every distance is +inf, and ``nearest`` (n,) = the distance itself (one sqrt per row).
The (n, K) distance matrix is never stored.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import

from . import launching
from .tiles import tile_product
from .typed_constants import INF, ONE, TWO, ZERO


@numba.njit(inline="always")
def _value_and_slack(norms, cross, count, rtol):
    """(d², round-off slack) from the pair's norm terms, cross term and shared count."""
    total = norms - TWO * cross
    value = total / count if total > rtol * norms else ZERO
    return value, rtol * norms / count


@numba.njit
def _center_totals(center_norms, centers_mask):
    """(K,) sum of each centre's per-modality norms and (K,) whether it carries every
    modality: the shortcut for pairs where both sides are complete."""
    k, n_mod = centers_mask.shape
    center_total = np.zeros(k, dtype=center_norms.dtype)
    center_full = np.ones(k, dtype=np.bool_)
    for l in range(k):
        for m in range(n_mod):
            if centers_mask[l, m]:
                center_total[l] += center_norms[l, m]
            else:
                center_full[l] = False
    return center_total, center_full


@numba.njit(inline="always")
def _nearest_of_row(i, cross_row, row_norms, mask, center_norms, centers_mask, center_total,
                    center_full, rtol):
    """(label, d²) of row i from its (K,) cross terms; (−1, +inf) when nothing is shared."""
    n_mod = mask.shape[1]
    row_total = ZERO
    row_count = ZERO
    for m in range(n_mod):
        if mask[i, m]:
            row_total += row_norms[i, m]
            row_count += ONE
    row_full = row_count == n_mod
    best = INF
    best_slack = ZERO
    best_l = -1
    for l in range(cross_row.shape[0]):
        if row_full and center_full[l]:
            value, slack = _value_and_slack(row_total + center_total[l], cross_row[l],
                                            row_count, rtol)
        else:
            row_part = ZERO
            center_part = ZERO
            count = ZERO
            for m in range(n_mod):
                if mask[i, m] and centers_mask[l, m]:
                    row_part += row_norms[i, m]
                    center_part += center_norms[l, m]
                    count += ONE
            if count == ZERO:
                continue
            value, slack = _value_and_slack(row_part + center_part, cross_row[l], count, rtol)
        if value < best - max(slack, best_slack):
            best = value
            best_slack = slack
            best_l = l
    return best_l, best


@numba.njit(parallel=True, cache=True)
def nearest_centers_cpu(cross, row_norms, mask, center_norms, centers_mask, rtol, labels,
                        nearest):
    """CPU twin: one row per parallel iteration. Pairs where both sides carry every
    modality take a shortcut (precomputed totals) with the same arithmetic."""
    center_total, center_full = _center_totals(center_norms, centers_mask)
    for i in numba.prange(cross.shape[0]):
        label, best = _nearest_of_row(i, cross[i], row_norms, mask, center_norms,
                                      centers_mask, center_total, center_full, rtol)
        labels[i] = label
        nearest[i] = math.sqrt(best)


@numba.njit(parallel=True, cache=True)
def assign_and_accumulate_cpu(z, scaled_centers_t, row_norms, mask, center_norms,
                              centers_mask, rtol, rows_per_chunk, labels, nearest, sums,
                              counts):
    """CPU fused pass (sklearn-style): per tile of ``rows_per_chunk`` rows, the cross terms
    (one BLAS call of :func:`~.tiles.tile_product`, ``scaled_centers_t`` (D, K): the
    products of :func:`~.tiles.row_tiled_matmul_cpu` with that tile), the nearest centre
    of each row as in :func:`nearest_centers_cpu`, and the row's values and observed flags
    added to its centre's statistics while the tile is in cache. ``sums`` (P, K, D) and
    ``counts`` (P, K, M) float64 zero-initialised, one slice per thread (P = Numba's thread
    count); the caller adds them up. Call with BLAS limited to one thread."""
    center_total, center_full = _center_totals(center_norms, centers_mask)
    n, width = z.shape
    n_chunks = (n + rows_per_chunk - 1) // rows_per_chunk
    for chunk in numba.prange(n_chunks):
        thread = numba.get_thread_id()
        start = chunk * rows_per_chunk
        stop = min(n, start + rows_per_chunk)
        cross = tile_product(z, scaled_centers_t, start, rows_per_chunk)
        for r in range(stop - start):
            i = start + r
            label, best = _nearest_of_row(i, cross[r], row_norms, mask, center_norms,
                                          centers_mask, center_total, center_full, rtol)
            labels[i] = label
            nearest[i] = math.sqrt(best)
            if label >= 0:
                for col in range(width):
                    sums[thread, label, col] += z[i, col]
                for m in range(mask.shape[1]):
                    if mask[i, m]:
                        counts[thread, label, m] += 1.0


@cuda.jit
def nearest_centers_cuda(cross, row_norms, mask, center_norms, centers_mask, rtol, labels,
                         nearest):
    """CUDA twin: one thread per row, same arithmetic and tie rule as the CPU twin."""
    i = cuda.grid(1)
    n, k = cross.shape
    if i >= n:
        return
    best = INF
    best_slack = ZERO
    best_l = -1
    for l in range(k):
        row_part = ZERO
        center_part = ZERO
        count = ZERO
        for m in range(mask.shape[1]):
            if mask[i, m] and centers_mask[l, m]:
                row_part += row_norms[i, m]
                center_part += center_norms[l, m]
                count += ONE
        if count > ZERO:
            norms = row_part + center_part
            total = norms - TWO * cross[i, l]
            value = total / count if total > rtol * norms else ZERO
            slack = rtol * norms / count
            if value < best - max(slack, best_slack):
                best = value
                best_slack = slack
                best_l = l
    labels[i] = best_l
    nearest[i] = math.sqrt(best)


THREADS_1D = 256


def launch(cross, *args):
    """Run the CUDA twin over every row of ``cross`` (256-thread blocks)."""
    launching.launch(nearest_centers_cuda, launching.blocks_for(cross.shape[:1], (THREADS_1D,)),
                     THREADS_1D, cross, *args)


def nearest_centers(cross, row_norms, mask, center_norms, centers_mask, rtol, labels, nearest):
    """Nearest centre of every row of one batch from its (n, K) GEMM cross terms, into
    ``labels`` (n,) int64 and ``nearest`` (n,): the CPU twin for NumPy arrays, the CUDA
    kernel for CuPy ones."""
    args = (cross, row_norms, mask, center_norms, centers_mask, rtol, labels, nearest)
    if launching.on_device(cross):
        launch(*args)
    else:
        nearest_centers_cpu(*args)
