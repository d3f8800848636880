"""Float constants for the kernels, typed float32 so that float32 data keeps float32
arithmetic.

Numba types a Python float literal (``0.0``, ``math.inf``) as float64, and float32 combined
with float64 gives float64: one literal in a loop turns a float32 kernel's arithmetic into
float64, which most GPUs run at 1/32 to 1/64 of the float32 rate. A float32 constant
combined with float32 stays float32, and with float64 gives float64, so the float64 kernels
are unchanged. Counts are kept as floats (``count += ONE``) for the same reason: float32
divided by an integer is float64. ``tests/test_kernel_ptx.py`` compiles every kernel and
checks its PTX for float64 instructions.
"""

import numpy as np

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
TWO = np.float32(2.0)
INF = np.float32(np.inf)
