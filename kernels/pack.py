"""Preparing normalised rows for the distance GEMMs in one pass (docs/method.md, "The
partial distance"): per (row, modality) the squared norm over d_m of the observed block,
whether that block is finite, and (``write``) a copy of the rows with every missing block
set to 0.

``z`` (N, D) float, ``mask`` (N, M) bool, ``offsets`` (M + 1,) int64 column offsets,
``inverse_dims`` (M,) 1/d_m of z's dtype; outputs ``out`` (N, D) of z's dtype (written only
when ``write``), ``norms`` (N, M) of z's dtype (0 where missing), ``finite`` (N, M) bool
(True where missing).
"""

from __future__ import annotations

import math

import numba
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import

from . import launching
from .typed_constants import ZERO


@numba.njit(parallel=True, cache=True)
def pack_rows_cpu(z, mask, offsets, inverse_dims, write, out, norms, finite):
    """CPU twin: one row per parallel iteration."""
    n, n_modalities = mask.shape
    for i in numba.prange(n):
        for m in range(n_modalities):
            lo, hi = offsets[m], offsets[m + 1]
            total = ZERO * inverse_dims[m]
            ok = True
            if mask[i, m]:
                for c in range(lo, hi):
                    value = z[i, c]
                    total += value * value
                    ok = ok and math.isfinite(value)
                    if write:
                        out[i, c] = value
            elif write:
                for c in range(lo, hi):
                    out[i, c] = ZERO
            norms[i, m] = total * inverse_dims[m]
            finite[i, m] = ok


@cuda.jit
def pack_rows_cuda(z, mask, offsets, inverse_dims, write, out, norms, finite):
    """CUDA twin of :func:`pack_rows_cpu`: one thread per (row, modality)."""
    i, m = cuda.grid(2)
    if i >= mask.shape[0] or m >= mask.shape[1]:
        return
    lo, hi = offsets[m], offsets[m + 1]
    total = ZERO * inverse_dims[m]
    ok = True
    if mask[i, m]:
        for c in range(lo, hi):
            value = z[i, c]
            total += value * value
            ok = ok and math.isfinite(value)
            if write:
                out[i, c] = value
    elif write:
        for c in range(lo, hi):
            out[i, c] = ZERO
    norms[i, m] = total * inverse_dims[m]
    finite[i, m] = ok


THREADS_2D = (32, 8)


def launch(*args):
    """Launch :func:`pack_rows_cuda` over the (N, M) slots of ``args[1]`` (the mask)."""
    shape = args[1].shape
    launching.launch(pack_rows_cuda, launching.blocks_for(shape, THREADS_2D), THREADS_2D, *args)


def pack_rows(z, mask, offsets, inverse_dims, write, out, norms, finite):
    """Zero missing slots (into ``out`` when ``write``), per-modality norms and finiteness
    of every (row, modality) slot: the CPU twin for NumPy arrays, CUDA for CuPy ones."""
    args = (z, mask, offsets, inverse_dims, write, out, norms, finite)
    if launching.on_device(z):
        launch(*args)
    else:
        pack_rows_cpu(*args)
