"""Greedy-completion scoring (DESIGN.md §1 step 5): for every row i and candidate j,

    score[i, j] = sqrt( min_l (sums[i, l] + pattern_sums[q, j, l])
                              / (shared[i, l] + pattern_shared[q, j, l]) ),   q = which[i]

over the centres l whose count is positive (+inf when none is). ``sums``/``shared`` are the
row-to-centre partial sums and shared-modality counts (n, K); ``pattern_sums``/
``pattern_shared`` (U, K, K) are B^Q and its counts for the U distinct missing patterns of
the batch; ``which`` (n,) gives each row's pattern. No (n, K, K) array is ever stored.
"""

from __future__ import annotations

import math

import numba
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import

from . import launching
from .typed_constants import INF


@numba.njit(parallel=True, cache=True)
def candidate_scores_cpu(sums, shared, which, pattern_sums, pattern_shared, out):
    """CPU twin: fills ``out`` (n, K) of ``sums.dtype``; one row per parallel iteration."""
    n, k = sums.shape
    for i in numba.prange(n):
        q = which[i]
        for j in range(k):
            best = INF
            for l in range(k):
                count = shared[i, l] + pattern_shared[q, j, l]
                # branch-free: a pair sharing nothing has sum 0 and count 0, so 1/0 = +inf
                ratio = (sums[i, l] + pattern_sums[q, j, l] + (count == 0)) / count
                best = min(best, ratio)
            out[i, j] = math.sqrt(best)


@numba.njit(parallel=True, cache=True)
def pick_sources_cpu(scores, missing, centers_mask, out):
    """CPU twin: ``out[i, m]`` (int64) = the lowest-scoring candidate j (ties: lowest j,
    +inf scores last but still eligible) among the centres carrying m, for every missing
    slot; −1 on observed slots and where no centre carries m."""
    n, k = scores.shape
    for i in numba.prange(n):
        for m in range(missing.shape[1]):
            pick = -1
            if missing[i, m]:
                for j in range(k):
                    if centers_mask[j, m] and (pick < 0 or scores[i, j] < scores[i, pick]):
                        pick = j
            out[i, m] = pick


@cuda.jit
def candidate_scores_cuda(sums, shared, which, pattern_sums, pattern_shared, out):
    """CUDA twin of :func:`candidate_scores_cpu`: one thread per (row, candidate)."""
    i, j = cuda.grid(2)
    n, k = sums.shape
    if i >= n or j >= k:
        return
    q = which[i]
    best = INF
    for l in range(k):
        count = shared[i, l] + pattern_shared[q, j, l]
        ratio = (sums[i, l] + pattern_sums[q, j, l] + (count == 0)) / count
        best = min(best, ratio)
    out[i, j] = math.sqrt(best)


@cuda.jit
def pick_sources_cuda(scores, missing, centers_mask, out):
    """CUDA twin of :func:`pick_sources_cpu`: one thread per (row, modality)."""
    i, m = cuda.grid(2)
    n, k = scores.shape
    if i >= n or m >= missing.shape[1]:
        return
    pick = -1
    if missing[i, m]:
        for j in range(k):
            if centers_mask[j, m] and (pick < 0 or scores[i, j] < scores[i, pick]):
                pick = j
    out[i, m] = pick


THREADS_2D = (16, 16)


def launch_2d(kernel, shape, *args):
    """Launch a 2-D ``cuda.jit`` kernel covering ``shape`` with 16×16 blocks."""
    launching.launch(kernel, launching.blocks_for(shape, THREADS_2D), THREADS_2D, *args)
