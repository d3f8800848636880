"""Modality-specific normalisation (DESIGN.md §1 steps 1 and 6).

Each modality is standardised per dimension with statistics taken over the rows that observe
it only. Missing slots become 0 in the normalised space (the modality's training mean).
"""

from __future__ import annotations

import numpy as np

from .backend import array_module
from .validation import check_packed

MIN_SCALE = 1e-8


def fit_modality_stats(values, mask, dims, ddof: int = 0):
    """Per-dimension mean and standard deviation of each modality over its observing rows.

    Parameters
    ----------
    values : (N, D) float array (NumPy or CuPy); unobserved slots are ignored.
    mask : (N, M) bool, True where observed.
    dims : M ints summing to D.
    ddof : delta degrees of freedom of the standard deviation (0: population std).

    Returns
    -------
    mean, scale : (D,) float64 arrays on the input's device. A scale ≤ 1e-8 becomes 1, and so
    does the scale of a modality observed by no more than ``ddof`` rows.

    Raises ``ValueError`` naming the modality when no row observes it.
    """
    dims = check_packed(values, mask, dims, "values")
    xp = array_module(values, mask)
    mean = xp.zeros(sum(dims), dtype=xp.float64)
    scale = xp.ones(sum(dims), dtype=xp.float64)
    start = 0
    for m, d in enumerate(dims):
        rows = mask[:, m]
        count = int(rows.sum())
        if count == 0:
            raise ValueError(
                f"modality {m} is observed in no training row; cannot compute its "
                "normalisation statistics (drop it or provide rows that observe it)"
            )
        block = values[rows, start:start + d].astype(xp.float64)
        mean[start:start + d] = block.mean(axis=0)
        if count > ddof:
            std = block.std(axis=0, ddof=ddof)
            scale[start:start + d] = xp.where(std <= MIN_SCALE, 1.0, std)
        start += d
    return mean, scale


def scale_from_moments(counts, m2, dims, ddof: int = 0):
    """Per-dimension standard deviation from combined moments, with the rules of
    :func:`fit_modality_stats` (≤ 1e-8 → 1; 1 when a modality has ≤ ``ddof`` rows).

    counts : (M,) observing rows per modality; m2 : (D,) float64 Σ (x − mean)² over them.
    Returns a (D,) float64 NumPy array.
    """
    scale = np.ones(sum(dims), dtype=np.float64)
    start = 0
    for m, d in enumerate(dims):
        if int(counts[m]) > ddof:
            std = np.sqrt(m2[start:start + d] / (int(counts[m]) - ddof))
            scale[start:start + d] = np.where(std <= MIN_SCALE, 1.0, std)
        start += d
    return scale


def normalise(values, mask, mean, scale, dims, dtype=None):
    """z = (x − μ) / σ on observed slots and 0 on missing slots.

    Parameters
    ----------
    values : (N, D) float array; mask : (N, M) bool; mean, scale : (D,) from
        :func:`fit_modality_stats`; dims : M ints.
    dtype : output float dtype (default: that of ``values``).

    Returns
    -------
    (N, D) array of ``dtype`` on the input's device; ``values`` is not modified.
    """
    dims = check_packed(values, mask, dims, "values")
    xp = array_module(values, mask)
    dtype = values.dtype if dtype is None else dtype
    z = (values.astype(dtype, copy=False) - mean.astype(dtype)) / scale.astype(dtype)
    return xp.where(expand_mask(mask, dims), z, xp.zeros((), dtype=dtype))


def denormalise(z, mean, scale):
    """x = σ z + μ for a packed (N, D) array; returns a new array of ``z.dtype``."""
    return (z * scale.astype(z.dtype) + mean.astype(z.dtype)).astype(z.dtype, copy=False)


def expand_mask(mask, dims):
    """(N, M) bool mask -> (N, D) bool, each modality's flag repeated over its columns."""
    return array_module(mask).repeat(mask, list(dims), axis=1)
