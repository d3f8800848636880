"""Synthetic clustered data shared by the Dask, streaming and CLI scale-out tests."""

import numpy as np

from ul4m4_gpu.core.normalise import fit_modality_stats, normalise

DIMS = (4, 3, 5)
K = 5


def make_data(seed=0, n=600, dims=DIMS, k=K, observed=0.6, spread=4.0):
    """(N, D) float32 rows around k centres, NaN on random missing modalities, and the
    (N, M) mask; the first 5 rows observe nothing (label −1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, sum(dims)))
    x = (centres[rng.integers(k, size=n)] + rng.normal(size=(n, sum(dims)))).astype(np.float32)
    mask = rng.random((n, len(dims))) < observed
    mask[:5] = False
    x[~np.repeat(mask, dims, axis=1)] = np.nan
    return x, mask


def explicit_init(x, mask, rows=slice(10, 15), dims=DIMS):
    """Normalised (K, D) initial centres and (K, M) mask taken from a few rows, far enough
    from the optimum that several Lloyd updates follow."""
    mean, scale = fit_modality_stats(x, mask, dims)
    z = normalise(x, mask, mean, scale, dims)
    centers_mask = mask[rows].copy()
    centers_mask[~centers_mask.any(axis=1), 0] = True
    centers = np.where(np.repeat(centers_mask, dims, axis=1), z[rows], 0).astype(np.float32)
    return centers, centers_mask
