"""Completion kernels (docs/method.md, "Completion"): candidate scoring, the choice of the
best candidates per missing slot, and the weighted fill.

Scoring. For row i (missing pattern q = which[i]) and candidate j,

    score[i, j] = sqrt( min( blind[q, j],  min_l  sums[i, l] · inv[q, j, l] + base[q, j, l] ) )

``sums`` (n, K) are the row-to-centre partial sums; ``inv`` and ``base`` (U, K, K) are
per-pattern tables: for a centre l sharing an observed modality with the pattern,
inv = 1 / (|O∩C_l| + |Q∩C_j∩C_l|) and base = B^Q_jl · inv; for any other l, inv = 0 and
base = +inf, so that l drops out of the inner minimum. ``blind`` (U, K) is the minimum over
those other centres, which only the paper's rule counts (+inf for the overlap rule). The
inner loop is one fused multiply-add and a minimum over contiguous l: no division, no
branch, no (n, K, K) array.

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

#: No float here is NaN (inputs are finite, inf only as a table entry): ``nnan`` lets LLVM
#: vectorise the minimum reductions. Infinities are kept (no ``ninf``).
FASTMATH = {"nnan", "nsz", "contract"}


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def candidate_scores_cpu(sums, which, inv, base, blind, out):
    """CPU twin: fills ``out`` (n, K) of ``sums.dtype``; one row per parallel iteration."""
    n, k = sums.shape
    for i in numba.prange(n):
        q = which[i]
        row = sums[i]
        for j in range(k):
            inv_j = inv[q, j]
            base_j = base[q, j]
            best = blind[q, j]
            for l in range(k):
                best = min(best, row[l] * inv_j[l] + base_j[l])
            out[i, j] = math.sqrt(best)


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
        best = min(best, sums[i, l] * inv[q, j, l] + base[q, j, l])
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
                for j in range(scores.shape[1]):
                    s = scores[i, j]
                    # strict: an equal score keeps the lower index already held
                    if centers_mask[j, m] and (n_kept < r or s < chosen_scores[i, m, r - 1]):
                        t = min(n_kept, r - 1)
                        while t > 0 and s < chosen_scores[i, m, t - 1]:
                            chosen[i, m, t] = chosen[i, m, t - 1]
                            chosen_scores[i, m, t] = chosen_scores[i, m, t - 1]
                            t -= 1
                        chosen[i, m, t] = j
                        chosen_scores[i, m, t] = s
                        n_kept = min(n_kept + 1, r)
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
        for j in range(scores.shape[1]):
            s = scores[i, j]
            # strict: an equal score keeps the lower index already held
            if centers_mask[j, m] and (n_kept < r or s < chosen_scores[i, m, r - 1]):
                t = min(n_kept, r - 1)
                while t > 0 and s < chosen_scores[i, m, t - 1]:
                    chosen[i, m, t] = chosen[i, m, t - 1]
                    chosen_scores[i, m, t] = chosen_scores[i, m, t - 1]
                    t -= 1
                chosen[i, m, t] = j
                chosen_scores[i, m, t] = s
                n_kept = min(n_kept + 1, r)
        if chosen_scores[i, m, 0] < INF:  # +inf entries dropped behind a finite best
            for t in range(1, n_kept):
                if chosen_scores[i, m, t] == INF:
                    chosen[i, m, t] = -1


@numba.njit(parallel=True, cache=True)
def weighted_fill_cpu(out, rows, missing, chosen, weights, values, default, column_modality):
    """CPU twin: for every row t of the batch and column c of a missing modality m,
    ``out[rows[t], c] = Σ_s weights[t, m, s] · values[chosen[t, m, s], c]`` (entries with
    chosen −1 skipped), or ``default[c]`` when slot (t, m) has no candidate. Observed
    columns are not touched."""
    n, n_columns = rows.shape[0], out.shape[1]
    r = chosen.shape[2]
    for t in numba.prange(n):
        for c in range(n_columns):
            m = column_modality[c]
            if not missing[t, m]:
                continue
            if chosen[t, m, 0] < 0:
                out[rows[t], c] = default[c]
                continue
            total = ZERO * values[0, c]
            for s in range(r):
                source = chosen[t, m, s]
                if source >= 0:
                    total += weights[t, m, s] * values[source, c]
            out[rows[t], c] = total


@cuda.jit
def weighted_fill_cuda(out, rows, missing, chosen, weights, values, default, column_modality):
    """CUDA twin of :func:`weighted_fill_cpu`: one thread per (batch row, column)."""
    t, c = cuda.grid(2)
    if t >= rows.shape[0] or c >= out.shape[1]:
        return
    m = column_modality[c]
    if not missing[t, m]:
        return
    if chosen[t, m, 0] < 0:
        out[rows[t], c] = default[c]
        return
    total = ZERO * values[0, c]
    for s in range(chosen.shape[2]):
        source = chosen[t, m, s]
        if source >= 0:
            total += weights[t, m, s] * values[source, c]
    out[rows[t], c] = total


THREADS_2D = (16, 16)


def launch_2d(kernel, shape, *args):
    """Launch a 2-D ``cuda.jit`` kernel covering ``shape`` with 16×16 blocks."""
    launching.launch(kernel, launching.blocks_for(shape, THREADS_2D), THREADS_2D, *args)
