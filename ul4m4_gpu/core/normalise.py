"""Modality-specific normalisation (docs/method.md, "Normalisation").

Each modality is standardised per dimension with statistics taken over the rows that observe
it only. Missing slots become 0 in the normalised space (the modality's training mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module, to_numpy
from .validation import check_packed, describe_rows

MIN_SCALE = 1e-8


@dataclass
class Moments:
    """What normalisation needs from a set of rows, and what adds up across row blocks.

    dims : M ints; n_rows : rows seen; n_empty : rows observing no modality; counts : (M,)
    int64 rows observing each modality; mean, m2 : (D,) float64 NumPy, per-dimension mean
    and M2 = Σ (x − mean)² over the observing rows (0 for a modality no row observes).
    ``a + b`` is Chan et al.'s parallel combination (stable, unlike raw sums of squares).
    """

    dims: tuple
    n_rows: int
    n_empty: int
    counts: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values, mask, dims) -> "Moments":
        """The moments of one block: values (n, D) float (NumPy or CuPy), mask (n, M) bool."""
        xp = array_module(values, mask)
        counts = np.zeros(len(dims), dtype=np.int64)
        mean = xp.zeros(sum(dims), dtype=xp.float64)
        m2 = xp.zeros(sum(dims), dtype=xp.float64)
        start = 0
        for m, d in enumerate(dims):
            rows = mask[:, m]
            counts[m] = int(rows.sum())
            if counts[m]:
                block = values[rows, start:start + d].astype(xp.float64)
                mean[start:start + d] = block.mean(axis=0)
                deviation = block - mean[start:start + d]
                m2[start:start + d] = (deviation * deviation).sum(axis=0)
            start += d
        return cls(tuple(dims), int(values.shape[0]), int((~mask.any(axis=1)).sum()), counts,
                   to_numpy(mean), to_numpy(m2))

    @classmethod
    def empty(cls, dims) -> "Moments":
        """The moments of no rows."""
        return cls(tuple(dims), 0, 0, np.zeros(len(dims), dtype=np.int64),
                   np.zeros(sum(dims)), np.zeros(sum(dims)))

    @classmethod
    def side_by_side(cls, parts, n_rows: int, n_empty: int) -> "Moments":
        """The moments of the modalities of ``parts`` (each over some of the modalities of
        the same ``n_rows`` rows, ``n_empty`` of which observe no modality) side by side."""
        return cls(tuple(d for p in parts for d in p.dims), int(n_rows), int(n_empty),
                   np.concatenate([p.counts for p in parts]),
                   np.concatenate([p.mean for p in parts]), np.concatenate([p.m2 for p in parts]))

    def __add__(self, other: "Moments") -> "Moments":
        na = np.repeat(self.counts, self.dims).astype(np.float64)
        nb = np.repeat(other.counts, other.dims).astype(np.float64)
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            mean = np.where(n > 0, self.mean + delta * (nb / n), 0.0)
            m2 = np.where(n > 0, self.m2 + other.m2 + delta * delta * (na * nb / n), 0.0)
        return Moments(self.dims, self.n_rows + other.n_rows, self.n_empty + other.n_empty,
                       self.counts + other.counts, mean, m2)

    def unobserved(self) -> np.ndarray:
        """Indices of the modalities no row observes."""
        return np.flatnonzero(self.counts == 0)

    def scale(self, ddof: int = 0) -> np.ndarray:
        """(D,) float64 NumPy per-dimension standard deviation (:func:`scale_from_moments`)."""
        return scale_from_moments(self.counts, self.m2, self.dims, ddof)


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
    moments = Moments.of(values, mask, dims)
    unobserved = moments.unobserved()
    if unobserved.size:
        raise ValueError(
            f"modality {unobserved[0]} is observed in no training row; cannot compute its "
            "normalisation statistics (drop it or provide rows that observe it)"
        )
    xp = array_module(values)
    return xp.asarray(moments.mean), xp.asarray(moments.scale(ddof))


def scale_from_moments(counts, m2, dims, ddof: int = 0):
    """Per-dimension standard deviation sqrt(M2 / (count − ddof)); ≤ 1e-8 becomes 1, and a
    modality with no more than ``ddof`` rows gets 1.

    counts : (M,) observing rows per modality (host ints); m2 : (D,) float64 Σ (x − mean)²
    over them (NumPy or CuPy). Returns a (D,) float64 array on m2's device.
    """
    xp = array_module(m2)
    scale = xp.ones(sum(dims), dtype=xp.float64)
    start = 0
    for m, d in enumerate(dims):
        if int(counts[m]) > ddof:
            std = xp.sqrt(m2[start:start + d] / (int(counts[m]) - ddof))
            scale[start:start + d] = xp.where(std <= MIN_SCALE, 1.0, std)
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

    Where ``dtype`` would overflow on the way (float32 values near its maximum, whose
    x − μ exceeds it), those slots are computed in float64 and cast, the others keep
    ``dtype``'s arithmetic (so a slot's z never depends on the other rows given with it);
    a z that float64 finds beyond ``dtype``'s range raises ``ValueError`` naming the
    modality and the rows. Observed values must be finite (the ``from_*`` builders check).
    """
    dims = check_packed(values, mask, dims, "values")
    xp = array_module(values, mask)
    dtype = np.dtype(values.dtype if dtype is None else dtype)
    observed = expand_mask(mask, dims)
    zero = xp.zeros((), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        z = (values.astype(dtype, copy=False) - mean.astype(dtype)) / scale.astype(dtype)
        z = xp.where(observed, z, zero)
        if dtype == np.float64 or bool(xp.isfinite(z).all()):  # one host sync
            return z
        wide = (values.astype(xp.float64) - mean) / scale
    out_of_range = observed & ~(xp.abs(wide) <= np.finfo(dtype).max)
    bounds = np.cumsum([0, *dims])
    for m in range(len(dims)):
        rows = out_of_range[:, bounds[m]:bounds[m + 1]].any(axis=1)
        if bool(rows.any()):
            raise ValueError(f"values, modality {m}: {describe_rows(rows)} lie too far from "
                             f"the training mean to normalise in {dtype.name}: (x − mean) / "
                             f"scale exceeds {float(np.finfo(dtype).max):.3g}")
    return xp.where(xp.isfinite(z), z, wide.astype(dtype))


def denormalise(z, mean, scale, dtype=None):
    """x = σ z + μ for a packed (N, D) array, computed in ``z.dtype``; returns a new array
    of ``dtype`` (default ``z.dtype``). Cast to a narrower float, x is clipped to its finite
    range: for centres x lies within the range of the training values, which only the
    round-off of z can carry past the edge of float32 (to inf, without the clip)."""
    x = z * scale.astype(z.dtype) + mean.astype(z.dtype)
    if dtype is None or np.dtype(dtype) == z.dtype:
        return x
    xp, limit = array_module(x), np.finfo(dtype).max
    return xp.minimum(xp.maximum(x, -limit), limit).astype(dtype)


def expand_mask(mask, dims):
    """(N, M) bool mask -> (N, D) bool, each modality's flag repeated over its columns."""
    return array_module(mask).repeat(mask, list(dims), axis=1)
