"""How the CUDA twins are launched: grid sizes, empty grids and the stream.

CUDA rejects a grid with zero blocks, so an empty launch is skipped (there is nothing to
compute). Kernels are queued on CuPy's current stream, so that they run after the CuPy work
that produced their inputs and before the CuPy work that reads their outputs, also when the
caller made a non-default stream current (``with cupy.cuda.Stream():``).
"""

from __future__ import annotations

import sys

from numba import cuda


def blocks_for(shape, threads) -> tuple:
    """Blocks per grid dimension so that ``threads`` per block cover ``shape``."""
    return tuple(-(-size // per_block) for size, per_block in zip(shape, threads))


def current_stream():
    """CuPy's current stream as a Numba stream; 0 (the default stream) when CuPy is not
    imported or its current stream is the default one."""
    cupy = sys.modules.get("cupy")
    pointer = cupy.cuda.get_current_stream().ptr if cupy is not None else 0
    return cuda.external_stream(pointer) if pointer else 0


def on_device(array) -> bool:
    """True for a CuPy array (the CUDA twin's input), False for a NumPy one, without
    importing CuPy: how every job of this package picks its twin."""
    return type(array).__module__.startswith("cupy")


def launch(kernel, blocks, threads, *args) -> None:
    """``kernel[blocks, threads, stream](*args)`` unless the grid is empty."""
    if 0 in tuple(blocks):
        return
    kernel[tuple(blocks), threads, current_stream()](*args)
