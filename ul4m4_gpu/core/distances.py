"""The partial-modality distance (docs/method.md, "The partial distance"), vectorised over
rows and centres.

``d(a, b) = sqrt( (1/|S|) · Σ_{m∈S} ||a^m − b^m||² / d_m )`` with S the modalities both
observe, and +inf when S is empty. For a block of rows against all centres the squared sums
come from one GEMM expansion: with z and the centres zero on their missing slots,

    A_il = Σ_m [m∈O_i∩C_l] (||z_i^m||² + ||c_l^m||² − 2 z_i^m·c_l^m) / d_m
         = (R Cᵀ)_il + (O Nᵀ)_il − 2 (z (c W)ᵀ)_il              (clamped at 0)

where R (N, M) and N (K, M) hold the rows' and centres' per-modality squared norms over d_m,
O and C are the masks, and W is the diagonal scaling each column by 1/d_m. Shared counts are ``O @ Cᵀ``.
The two rounded products, ``[R O] [C N]ᵀ`` and ``z (c W)ᵀ``, are row-tiled
(:func:`~ul4m4_gpu.core.tiled.row_tiled_matmul`), so a row's sums are bitwise the same in
any batch; the counts are small integers, exact in any order.
"""

from __future__ import annotations

import numpy as np

from .backend import array_module, to_device, to_numpy
from .normalise import expand_mask
from .tiled import row_tiled_matmul
from .validation import check_finite_packed, check_packed


def column_scale(dims, xp, dtype):
    """(D,) array holding 1/d_m on every column of modality m."""
    return xp.asarray(np.repeat([1.0 / d for d in dims], dims), dtype=dtype)


def column_layout(dims, xp):
    """(column_modality (D,) int64, offsets (M + 1,) int64) of packed modalities."""
    return (xp.asarray(np.repeat(np.arange(len(dims)), dims)),
            xp.asarray(np.concatenate([[0], np.cumsum(dims)]).astype(np.int64)))


def squared_norms(z, dims):
    """(n, M) per-modality squared norms over d_m of a packed (n, D) array (zeros where
    missing give 0)."""
    xp = array_module(z)
    out = xp.empty((z.shape[0], len(dims)), dtype=z.dtype)
    start = 0
    for m, d in enumerate(dims):
        block = z[:, start:start + d]
        out[:, m] = xp.einsum("ij,ij->i", block, block) / d
        start += d
    return out


def masked_sq_sums(z, mask, centers, centers_mask, dims, center_norms=None,
                   row_norms=None):
    """Per-pair sums of per-modality squared distances and shared-modality counts.

    Parameters
    ----------
    z : (n, D) float array, **zero on missing slots**.
    mask : (n, M) bool.
    centers : (K, D) float array of z's dtype, **zero on modalities a centre lacks**.
    centers_mask : (K, M) bool.
    dims : M ints summing to D.
    center_norms, row_norms : optional precomputed ``squared_norms`` of the centres (K, M)
        and of the rows (n, M).

    Returns
    -------
    sums : (n, K) of z's dtype, Σ_{m∈O_i∩C_l} ||z_i^m − c_l^m||² / d_m, ≥ 0; a sum within
        round-off of 0 (≤ :func:`roundoff_rtol` × its norm terms) is exactly 0, so that a
        row and an identical centre are at distance 0.
    shared : (n, K) of z's dtype, |O_i ∩ C_l| (exact small integers).
    """
    dtype = z.dtype
    row_mask = mask.astype(dtype)
    center_mask = centers_mask.astype(dtype)
    if center_norms is None:
        center_norms = squared_norms(centers, dims)
    if row_norms is None:
        row_norms = squared_norms(z, dims)
    xp = array_module(z)
    norm_terms = row_tiled_matmul(xp.concatenate([row_norms, row_mask], axis=1),
                                  xp.concatenate([center_mask, center_norms], axis=1).T)
    sums = norm_terms - 2.0 * row_tiled_matmul(z, (centers * column_scale(dims, xp, dtype)).T)
    sums = xp.where(sums <= roundoff_rtol(dtype) * norm_terms, 0.0, sums).astype(dtype, copy=False)
    return sums, row_mask @ center_mask.T


def roundoff_rtol(dtype):
    """Relative round-off of the GEMM expansion in ``dtype``, as a scalar of ``dtype`` (so
    that a kernel given it computes in ``dtype``): 64 ulps of 1. A squared distance below
    this fraction of its norm terms is indistinguishable from 0, and two distances closer
    than this (relative to their norm terms) are treated as a tie."""
    return np.dtype(dtype).type(64 * np.finfo(dtype).eps)


def distances_from_sums(sums, shared):
    """sqrt(sums / shared), +inf where ``shared`` is 0; arrays of equal shape and dtype."""
    xp = array_module(sums, shared)
    inf = xp.full((), xp.inf, dtype=sums.dtype)
    return xp.where(shared > 0, xp.sqrt(sums / xp.maximum(shared, 1)), inf)


def zero_missing(z, mask, dims):
    """A copy of packed ``z`` with every unobserved slot set to 0 (garbage there ignored)."""
    xp = array_module(z, mask)
    return xp.where(expand_mask(mask, dims), z, xp.zeros((), dtype=z.dtype))


def checked_centers(centers, centers_mask, dims, dtype, *, like=None, device=None,
                    n_clusters=None, argument="centers"):
    """The one validator of centres, fitted or given (``init``, the low-level functions).

    centers : (K, D) real values; centers_mask : (K, M) bool; dims : M ints; dtype : the
    float dtype of the result. ``device`` moves both arrays there first; otherwise ``like``
    (the rows) must live on the same device. ``n_clusters`` marks an explicit ``init``: K
    must equal it and every centre must carry a modality.

    Returns (centers (K, D) of ``dtype``, zero on the modalities a centre lacks, and the
    mask). Raises naming ``argument`` for a wrong shape or dtype, for no centre at all, for
    NaN/inf where a centre carries a modality, and when NumPy and CuPy arrays are mixed.
    """
    if device is not None:
        centers, centers_mask = to_device(centers, device), to_device(centers_mask, device)
    xp = array_module(centers, centers_mask, *([] if like is None else [like]))
    if n_clusters is not None and tuple(centers.shape) != (n_clusters, sum(dims)):
        raise ValueError(f"{argument} have shape {tuple(centers.shape)}, expected "
                         f"(n_clusters, D) = {(n_clusters, sum(dims))}")
    if getattr(centers, "ndim", 0) == 2 and centers.dtype.kind in "biuf":
        centers = centers.astype(dtype, copy=False)
    check_packed(centers, centers_mask, dims, argument, f"{argument}_mask")
    if centers.shape[0] == 0:
        raise ValueError(f"{argument} must hold at least one centre, got shape "
                         f"{tuple(centers.shape)}")
    if n_clusters is not None:
        empty = ~centers_mask.any(axis=1)
        if bool(empty.any()):
            raise ValueError(f"{argument.replace('centers', 'centres')} "
                             f"{to_numpy(xp.flatnonzero(empty)).tolist()} carry no modality")
    check_finite_packed(centers, centers_mask, dims, argument)
    return zero_missing(centers, centers_mask, dims), centers_mask


def partial_distances(z, mask, centers, centers_mask, dims):
    """Partial-modality distances between every row and every centre.

    Parameters
    ----------
    z : (N, D) float32/float64 array (NumPy or CuPy), normalised, finite where observed
        (else ValueError naming the modality and rows); values on missing slots are ignored.
    mask : (N, M) bool, True where the row observes the modality.
    centers : (K, D) float array; values on modalities a centre lacks are ignored.
    centers_mask : (K, M) bool.
    dims : M ints, the width of each modality, summing to D.

    Returns
    -------
    (N, K) array of z's dtype: ``d(z_i, c_l)``, +inf where the two share no modality.
    """
    dims = check_packed(z, mask, dims)
    check_finite_packed(z, mask, dims)
    centers, centers_mask = checked_centers(centers, centers_mask, dims, z.dtype, like=z)
    sums, shared = masked_sq_sums(zero_missing(z, mask, dims), mask, centers, centers_mask, dims)
    return distances_from_sums(sums, shared)
