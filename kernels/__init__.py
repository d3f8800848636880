"""Numba kernels of ul4m4-gpu, installed as ``ul4m4_gpu.kernels``.

One module per job; each holds a CPU twin (``numba.njit(parallel=True)``) and a CUDA kernel
(``numba.cuda.jit``) computing the same thing. A CUDA kernel compiles at its first launch,
so a CPU machine never needs a CUDA toolkit; under ``NUMBA_ENABLE_CUDASIM=1`` it runs in
Numba's simulator.
"""
