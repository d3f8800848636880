"""Completion kernels (docs/method.md, "Completion"): candidate scoring, the choice of the
best candidates per missing slot, and the weighted fill.

Scoring. For row i (missing pattern q = which[i]) and candidate j,

    score[i, j] = sqrt( min( blind[q, j],  min_l  sums[i, l] · inv[q, l, j] + base[q, l, j] ) )

``sums`` (n, K) are the row-to-centre partial sums; ``inv`` and ``base`` (U, K, K), indexed
[pattern, centre l, candidate j], are per-pattern tables: for a centre l sharing an observed
modality with the pattern, inv = 1 / (|O∩C_l| + |Q∩C_j∩C_l|) and base = B^Q_jl · inv; for
any other l, inv = 0 and base = +inf, so that l drops out of the minimum. ``blind`` (U, K)
is the minimum over those other centres, which only the paper's rule counts (+inf for the
overlap rule). Per (i, l) the update of every candidate's minimum is a multiply-add and a
minimum over contiguous j: no division, no branch, no (n, K, K) array.

Tables. ``pattern_sums`` gives B^Q = Σ_{m∈Q} P_m for every pattern: ``patterns`` (U, M)
0/1, ``pair_sums`` (M, K·K); each sum is added in ascending m, so a pattern's B^Q is
bitwise the same whatever other patterns share its batch (a GEMM over the U patterns would
be blocked by U).

Choice. For every missing slot (i, m): the ``r`` lowest-scoring candidates among the
centres carrying m (ties: lowest index), +inf scores dropped unless no finite one carries m.

Fill. Every missing slot of a row is Σ_t w[i, m, t] · values[src[i, m, t]] over its chosen
candidates, or ``default`` when it has none.
"""

from __future__ import annotations

import math

import numba
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import

from . import launching
from .typed_constants import INF, ZERO


@numba.njit(parallel=True, cache=True)
def pattern_sums_cpu(patterns, pair_sums, out):
    """CPU twin: ``out`` (U, K·K) of ``pair_sums.dtype``; one pattern per parallel
    iteration, its P_m added to its row in ascending m (contiguous, vectorised)."""
    n_patterns, n_modalities = patterns.shape
    for u in numba.prange(n_patterns):
        total = out[u]
        total[:] = ZERO
        for m in range(n_modalities):
            if patterns[u, m] != 0:
                total += pair_sums[m]


@cuda.jit
def pattern_sums_cuda(patterns, pair_sums, out):
    """CUDA twin of :func:`pattern_sums_cpu`: one thread per (column, pattern)."""
    c, u = cuda.grid(2)
    if c >= pair_sums.shape[1] or u >= patterns.shape[0]:
        return
    total = ZERO * pair_sums[0, c]
    for m in range(patterns.shape[1]):
        if patterns[u, m] != 0:
            total += pair_sums[m, c]
    out[u, c] = total


@numba.njit(parallel=True, cache=True)
def candidate_scores_cpu(sums, which, inv, base, blind, out):
    """CPU twin: fills ``out`` (n, K) of ``sums.dtype``; one row per parallel iteration,
    the running minima of all candidates j updated together for each centre l (a
    contiguous, vectorised inner loop)."""
    n, k = sums.shape
    for i in numba.prange(n):
        q = which[i]
        best = out[i]
        best[:] = blind[q]
        for l in range(k):
            a = sums[i, l]
            inv_l = inv[q, l]
            base_l = base[q, l]
            for j in range(k):
                best[j] = min(best[j], a * inv_l[j] + base_l[j])
        for j in range(k):
            best[j] = math.sqrt(best[j])


@cuda.jit
def candidate_scores_cuda(sums, which, inv, base, blind, out):
    """CUDA twin of :func:`candidate_scores_cpu`: one thread per (row, candidate)."""
    i, j = cuda.grid(2)
    n, k = sums.shape
    if i >= n or j >= k:
        return
    q = which[i]
    best = blind[q, j]
    for l in range(k):
        best = min(best, sums[i, l] * inv[q, l, j] + base[q, l, j])
    out[i, j] = math.sqrt(best)


@numba.njit(parallel=True, cache=True)
def choose_candidates_cpu(scores, missing, centers_mask, chosen, chosen_scores):
    """CPU twin: ``chosen`` (n, M, r) int64 and ``chosen_scores`` (n, M, r) of the scores'
    dtype, for every slot (−1 / +inf on observed slots and where no centre carries m): the
    ``r`` best by (score, index), kept sorted by insertion."""
    n, n_modalities = missing.shape
    for i in numba.prange(n):
        for m in range(n_modalities):
            r = chosen.shape[2]
            for t in range(r):
                chosen[i, m, t] = -1
                chosen_scores[i, m, t] = INF
            if missing[i, m]:
                n_kept = 0
                worst = INF  # the score to beat once r are kept
                for j in range(scores.shape[1]):
                    s = scores[i, j]
                    # strict: an equal score keeps the lower index already held
                    if centers_mask[j, m] and (n_kept < r or s < worst):
                        t = min(n_kept, r - 1)
                        while t > 0 and s < chosen_scores[i, m, t - 1]:
                            chosen[i, m, t] = chosen[i, m, t - 1]
                            chosen_scores[i, m, t] = chosen_scores[i, m, t - 1]
                            t -= 1
                        chosen[i, m, t] = j
                        chosen_scores[i, m, t] = s
                        n_kept = min(n_kept + 1, r)
                        worst = chosen_scores[i, m, r - 1]
                if chosen_scores[i, m, 0] < INF:  # +inf entries dropped behind a finite best
                    for t in range(1, n_kept):
                        if chosen_scores[i, m, t] == INF:
                            chosen[i, m, t] = -1


@cuda.jit
def choose_candidates_cuda(scores, missing, centers_mask, chosen, chosen_scores):
    """CUDA twin of :func:`choose_candidates_cpu`: one thread per (row, modality)."""
    i, m = cuda.grid(2)
    if i >= missing.shape[0] or m >= missing.shape[1]:
        return
    r = chosen.shape[2]
    for t in range(r):
        chosen[i, m, t] = -1
        chosen_scores[i, m, t] = INF
    if missing[i, m]:
        n_kept = 0
        worst = INF  # the score to beat once r are kept
        for j in range(scores.shape[1]):
            s = scores[i, j]
            # strict: an equal score keeps the lower index already held
            if centers_mask[j, m] and (n_kept < r or s < worst):
                t = min(n_kept, r - 1)
                while t > 0 and s < chosen_scores[i, m, t - 1]:
                    chosen[i, m, t] = chosen[i, m, t - 1]
                    chosen_scores[i, m, t] = chosen_scores[i, m, t - 1]
                    t -= 1
                chosen[i, m, t] = j
                chosen_scores[i, m, t] = s
                n_kept = min(n_kept + 1, r)
                worst = chosen_scores[i, m, r - 1]
        if chosen_scores[i, m, 0] < INF:  # +inf entries dropped behind a finite best
            for t in range(1, n_kept):
                if chosen_scores[i, m, t] == INF:
                    chosen[i, m, t] = -1


@numba.njit(parallel=True, cache=True)
def weighted_fill_cpu(out, rows, missing, chosen, weights, values, default, column_modality,
                      offsets, limit):
    """CPU twin: for every row t of the batch and column c of a missing modality m,
    ``out[rows[t], c] = Σ_s weights[t, m, s] · values[chosen[t, m, s], c]`` (entries with
    chosen −1 skipped), or ``default[c]`` when slot (t, m) has no candidate. Observed
    columns are not touched. A weighted mean lies between its values, so a sum that round-off
    carries past ±``limit`` (the dtype's largest finite value) is clipped to it. One row per
    parallel iteration, the columns of a modality (``offsets[m]:offsets[m + 1]``)
    contiguous in the inner loops."""
    n, n_modalities = missing.shape
    r = chosen.shape[2]
    for t in numba.prange(n):
        i = rows[t]
        for m in range(n_modalities):
            if not missing[t, m]:
                continue
            lo, hi = offsets[m], offsets[m + 1]
            first = chosen[t, m, 0]
            if first < 0:
                for c in range(lo, hi):
                    out[i, c] = default[c]
                continue
            w = weights[t, m, 0]
            for c in range(lo, hi):
                out[i, c] = w * values[first, c]
            for s in range(1, r):
                source = chosen[t, m, s]
                if source >= 0:
                    w = weights[t, m, s]
                    for c in range(lo, hi):
                        out[i, c] += w * values[source, c]
            if r > 1:
                for c in range(lo, hi):
                    out[i, c] = min(max(out[i, c], -limit), limit)


@cuda.jit
def weighted_fill_cuda(out, rows, missing, chosen, weights, values, default, column_modality,
                       offsets, limit):
    """CUDA twin of :func:`weighted_fill_cpu`: one thread per (batch row, column)."""
    t, c = cuda.grid(2)
    if t >= rows.shape[0] or c >= out.shape[1]:
        return
    m = column_modality[c]
    if not missing[t, m]:
        return
    first = chosen[t, m, 0]
    if first < 0:
        out[rows[t], c] = default[c]
        return
    total = weights[t, m, 0] * values[first, c]
    for s in range(1, chosen.shape[2]):
        source = chosen[t, m, s]
        if source >= 0:
            total += weights[t, m, s] * values[source, c]
    out[rows[t], c] = min(max(total, -limit), limit)


THREADS_2D = (16, 16)


def launch_2d(kernel, shape, *args):
    """Launch a 2-D ``cuda.jit`` kernel covering ``shape`` with 16×16 blocks."""
    launching.launch(kernel, launching.blocks_for(shape, THREADS_2D), THREADS_2D, *args)


def pattern_sums(patterns, pair_sums, out):
    """B^Q of every pattern into ``out`` (U, K·K): the CPU twin for NumPy arrays, CUDA for
    CuPy ones."""
    if launching.on_device(out):
        launch_2d(pattern_sums_cuda, out.shape[::-1], patterns, pair_sums, out)
    else:
        pattern_sums_cpu(patterns, pair_sums, out)


def candidate_scores(sums, which, inv, base, blind, out):
    """(n, K) paper/overlap scores into ``out`` from the row-to-centre sums and the pattern
    tables: the CPU twin for NumPy arrays, CUDA for CuPy ones."""
    args = (sums, which, inv, base, blind, out)
    if launching.on_device(sums):
        launch_2d(candidate_scores_cuda, out.shape, *args)
    else:
        candidate_scores_cpu(*args)


def choose_candidates(scores, missing, centers_mask, chosen, chosen_scores):
    """The r best candidates of every missing slot into ``chosen`` / ``chosen_scores``
    (n, M, r): the CPU twin for NumPy arrays, CUDA for CuPy ones."""
    args = (scores, missing, centers_mask, chosen, chosen_scores)
    if launching.on_device(scores):
        launch_2d(choose_candidates_cuda, missing.shape, *args)
    else:
        choose_candidates_cpu(*args)


def weighted_fill(out, rows, missing, chosen, weights, values, default, column_modality,
                  offsets, limit):
    """The weighted fill of the missing slots of ``out``'s rows ``rows``: the CPU twin for
    NumPy arrays, CUDA for CuPy ones."""
    args = (out, rows, missing, chosen, weights, values, default, column_modality, offsets,
            limit)
    if launching.on_device(out):
        launch_2d(weighted_fill_cuda, (rows.shape[0], out.shape[1]), *args)
    else:
        weighted_fill_cpu(*args)
