"""Input checks shared by the container, the estimator and the low-level functions.

Each check raises early with a message that names the argument, the modality and the rows.
"""

from __future__ import annotations

import numpy as np

from .backend import array_module, to_numpy

_MAX_ROWS_LISTED = 5


def describe_rows(row_flags) -> str:
    """``"rows [3, 17, ...] (12 in all)"`` for a boolean (N,) array of offending rows."""
    rows = np.flatnonzero(to_numpy(row_flags))
    shown = ", ".join(str(r) for r in rows[:_MAX_ROWS_LISTED])
    more = ", ..." if rows.size > _MAX_ROWS_LISTED else ""
    return f"rows [{shown}{more}] ({rows.size} in all)"


def check_finite_observed(values, observed, name: str) -> None:
    """Raise ``ValueError`` when an observed row of one modality holds NaN or inf.

    values : (N, d) float array of one modality; observed : (N,) bool.
    """
    xp = array_module(values)
    bad = observed & ~xp.isfinite(values).all(axis=1)
    if bool(bad.any()):
        raise ValueError(
            f"modality {name!r}: {describe_rows(bad)} have NaN or inf in observed values"
        )


def check_dims(dims, n_columns: int, argument: str = "z") -> tuple[int, ...]:
    """Validate ``dims`` against the packed width of ``argument``; return it as a tuple."""
    dims = tuple(int(d) for d in dims)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive ints, got {dims}")
    if sum(dims) != n_columns:
        raise ValueError(
            f"{argument} has {n_columns} columns but dims {dims} sum to {sum(dims)}"
        )
    return dims


def check_packed(z, mask, dims, z_name: str = "z", mask_name: str = "mask"):
    """Validate a packed (N, D) float array and its (N, M) bool mask; return ``dims``."""
    if z.ndim != 2:
        raise ValueError(f"{z_name} must be 2-D (n, D), got shape {tuple(z.shape)}")
    if z.dtype.kind != "f":
        raise TypeError(f"{z_name} must be a float array, got dtype {z.dtype}")
    dims = check_dims(dims, z.shape[1], z_name)
    if mask.shape != (z.shape[0], len(dims)):
        raise ValueError(
            f"{mask_name} has shape {tuple(mask.shape)}, expected "
            f"{(z.shape[0], len(dims))} for {z_name} of shape {tuple(z.shape)} and "
            f"{len(dims)} modalities"
        )
    if mask.dtype != bool:
        raise TypeError(f"{mask_name} must be boolean, got dtype {mask.dtype}")
    return dims
