"""Per-centre sums for Lloyd's update, without contended atomics: rows are split in chunks,
each chunk accumulates its own (K, P) partial sums (one writer per element), and the
partials are then added up.

``values`` (N, P) float, ``labels`` (N,) int64 in [−1, K) (−1 rows are skipped);
``rows_per_chunk`` int; ``partials`` (ceil(N / rows_per_chunk), K, P), float64 for exact-ish
sums of float32 rows, zero-initialised, filled in place; the caller sums axis 0.
"""

from __future__ import annotations

import numba
from numba import cuda  # lazy: a kernel compiles at its first launch, never on import

from . import launching

#: Fewest rows accumulated by one chunk (one CPU task, or one CUDA block).
MIN_ROWS_PER_CHUNK = 4096


def rows_per_chunk(n_rows: int, max_chunks: int) -> int:
    """Chunk length: at least 4096 rows, and no more than ``max_chunks`` chunks."""
    return max(MIN_ROWS_PER_CHUNK, -(-n_rows // max_chunks))


@numba.njit(parallel=True, cache=True)
def chunk_sums_cpu(values, labels, rows_per_chunk, partials):
    """CPU twin: one chunk of rows per parallel iteration."""
    n, p = values.shape
    for chunk in numba.prange(partials.shape[0]):
        stop = min(n, (chunk + 1) * rows_per_chunk)
        for i in range(chunk * rows_per_chunk, stop):
            label = labels[i]
            if label >= 0:
                for col in range(p):
                    partials[chunk, label, col] += values[i, col]


THREADS_PER_BLOCK = 128


@cuda.jit
def chunk_sums_cuda(values, labels, rows_per_chunk, partials):
    """CUDA twin. Grid: (n_chunks, ceil(P / 128)) blocks of 128 threads; thread (chunk, col)
    walks the chunk's rows and owns ``partials[chunk, :, col]``."""
    chunk = cuda.blockIdx.x
    col = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    n, p = values.shape
    if col >= p:
        return
    stop = min(n, (chunk + 1) * rows_per_chunk)
    for i in range(chunk * rows_per_chunk, stop):
        label = labels[i]
        if label >= 0:
            partials[chunk, label, col] += values[i, col]


def launch(values, labels, rows_per_chunk, partials) -> None:
    """Run the CUDA twin over every chunk and column."""
    (col_blocks,) = launching.blocks_for(values.shape[1:], (THREADS_PER_BLOCK,))
    launching.launch(chunk_sums_cuda, (partials.shape[0], col_blocks), THREADS_PER_BLOCK,
                     values, labels, rows_per_chunk, partials)


def chunk_sums(values, labels, rows_per_chunk, partials):
    """Per-chunk, per-label float64 sums of ``values`` rows into ``partials``: the CPU twin
    for NumPy arrays, CUDA for CuPy ones."""
    if launching.on_device(values):
        launch(values, labels, rows_per_chunk, partials)
    else:
        chunk_sums_cpu(values, labels, rows_per_chunk, partials)
