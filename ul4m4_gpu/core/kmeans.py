"""Partial k-means: k-means++ seeding and Lloyd iterations on the partial-modality distance
(docs/method.md, "Clustering"). Centres may be partial: centre k carries the modality set C_k.

The loop is written once against a tiny row-set interface (:class:`PackedRows`) and the array
module of its inputs, so NumPy and CuPy share it (cf. FAISS ``contrib/clustering.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numba
from tqdm.auto import tqdm

from .backend import array_module, to_numpy
from ..kernels import assign as assign_kernels
from ..kernels import pack as pack_kernels
from ..kernels import update as update_kernels
from .distances import (
    checked_centers,
    column_layout,
    column_scale,
    distances_from_sums,
    masked_sq_sums,
    roundoff_rtol,
    squared_norms,
)
from .normalise import expand_mask
from .validation import (
    check_int,
    check_packed,
    check_tol,
    checked_random_state,
    refuse_non_finite,
)

#: D(x) used for the k-means++ draw when a row shares no modality with any seed so far.
UNREACHABLE_DISTANCE = 1e9
#: Target number of (row, centre) pairs held at once by an assignment pass.
PAIRS_PER_BATCH = 1 << 24


@dataclass
class PackedRows:
    """Normalised rows ready for clustering.

    z : (N, D) float array, zero on missing slots; mask : (N, M) bool; dims : M ints;
    row_norms : (N, M) per-modality squared norms over d_m.
    """

    z: object
    mask: object
    dims: tuple
    row_norms: object

    @classmethod
    def build(cls, z, mask, dims, clean: bool = False) -> "PackedRows":
        """Validate and prepare in one pass of the ``pack`` kernel: a copy of ``z`` zero on
        missing slots, the row norms, and a ``ValueError`` naming the modality and rows of
        NaN/inf in observed slots. ``clean=True`` promises ``z`` is already checked and zero
        on missing slots (no copy, no check)."""
        dims = check_packed(z, mask, dims)
        xp = array_module(z, mask)  # raises when NumPy and CuPy arrays are mixed
        offsets = column_layout(dims, xp)[1]
        inverse_dims = xp.asarray([1.0 / d for d in dims], dtype=z.dtype)
        out = z if clean else xp.empty_like(z)
        norms = xp.empty(mask.shape, dtype=z.dtype)
        finite = xp.empty(mask.shape, dtype=bool)
        args = (z, mask, offsets, inverse_dims, not clean, out, norms, finite)
        if xp is np:
            pack_kernels.pack_rows_cpu(*args)
        else:
            pack_kernels.launch(*args)
        if not clean:
            refuse_non_finite(mask & ~finite)
        return cls(out, mask, dims, norms)

    @property
    def xp(self):
        return array_module(self.z)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def batches(self, batch_size: int):
        """Yield ``slice`` objects covering the rows in order."""
        for start in range(0, len(self), batch_size):
            yield slice(start, min(start + batch_size, len(self)))


@dataclass
class KMeansResult:
    """centers (K, D) zero where absent; centers_mask (K, M) bool; labels (N,) int64 (−1 for
    rows sharing no modality with any centre); inertia: Σ squared distances of assigned rows;
    n_iter: number of centre updates."""

    centers: object
    centers_mask: object
    labels: object
    inertia: float
    n_iter: int


def default_batch_size(n_rows: int, n_centers: int) -> int:
    """Rows per assignment batch so that a batch holds about 2^24 (row, centre) pairs."""
    return max(1, min(n_rows, PAIRS_PER_BATCH // max(n_centers, 1)))


def assign(rows: PackedRows, centers, centers_mask, batch_size: int | None = None):
    """Nearest centre of every row (ties within round-off: lowest index).

    Returns labels (N,) int64, −1 where every distance is +inf, and the distances (N,) of
    z's dtype (+inf for label −1). Per batch of ``batch_size`` rows one GEMM gives the
    cross terms and the ``assign`` kernel (CPU twin or CUDA) does the rest, fused.
    """
    xp = rows.xp
    batch_size = batch_size or default_batch_size(len(rows), centers.shape[0])
    center_norms = squared_norms(centers, rows.dims)
    scaled_centers = centers * column_scale(rows.dims, xp, rows.z.dtype)
    labels = xp.empty(len(rows), dtype=xp.int64)
    nearest = xp.empty(len(rows), dtype=rows.z.dtype)
    for batch in rows.batches(batch_size):
        cross = rows.z[batch] @ scaled_centers.T
        args = (cross, rows.row_norms[batch], rows.mask[batch], center_norms, centers_mask,
                roundoff_rtol(rows.z.dtype), labels[batch], nearest[batch])
        if xp is np:
            assign_kernels.nearest_centers_cpu(*args)
        else:
            assign_kernels.launch(*args)
    return labels, nearest


#: Rows per block of the fused CPU pass (its (block, K) cross terms stay in cache).
FUSED_ROWS_PER_CHUNK = 1024


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def assign_with_statistics(rows: PackedRows, centers, centers_mask,
                           batch_size: int | None = None):
    """:func:`assign` plus the :func:`cluster_statistics` of the labels it returns.

    On the CPU (C-contiguous float rows) one fused pass does both, block by block, with BLAS
    on one thread per block (as scikit-learn's Lloyd does); elsewhere the two steps run one
    after the other. Returns labels, nearest distances and (sums, counts, members).
    """
    xp = rows.xp
    n_centers = centers.shape[0]
    if xp is not np or not rows.z.flags.c_contiguous:
        labels, nearest = assign(rows, centers, centers_mask, batch_size)
        return labels, nearest, cluster_statistics(rows, labels, n_centers)
    scaled_t = np.ascontiguousarray((centers * column_scale(rows.dims, np, rows.z.dtype)).T)
    threads = numba.get_num_threads()
    labels = np.empty(len(rows), dtype=np.int64)
    nearest = np.empty(len(rows), dtype=rows.z.dtype)
    sums = np.zeros((threads, n_centers, rows.z.shape[1]))
    counts = np.zeros((threads, n_centers, len(rows.dims)))
    chunk = min(batch_size or FUSED_ROWS_PER_CHUNK, FUSED_ROWS_PER_CHUNK)
    with _blas_controller().limit(limits=1, user_api="blas"):
        assign_kernels.assign_and_accumulate_cpu(
            rows.z, scaled_t, rows.row_norms, rows.mask, squared_norms(centers, rows.dims),
            centers_mask, roundoff_rtol(rows.z.dtype), chunk, labels, nearest, sums, counts)
    members = np.bincount(labels[labels >= 0], minlength=n_centers)
    return labels, nearest, (sums.sum(axis=0), counts.sum(axis=0), members)


def cluster_sums(labels, values, n_clusters: int):
    """(K, P) float64 sums of the rows of ``values`` (N, P) by label (−1 rows skipped),
    through the ``update`` kernel: per-chunk float64 partial sums, then one reduction."""
    xp = array_module(labels, values)
    max_chunks = 4 * numba.get_num_threads() if xp is np else 1024
    chunk = update_kernels.rows_per_chunk(values.shape[0], max_chunks)
    partials = xp.zeros((-(-values.shape[0] // chunk), n_clusters, values.shape[1]),
                        dtype=xp.float64)
    if xp is np:
        update_kernels.chunk_sums_cpu(values, labels, chunk, partials)
    else:
        update_kernels.launch(values, labels, chunk, partials)
    return partials.sum(axis=0)


def cluster_statistics(rows: PackedRows, labels, n_clusters: int):
    """What Lloyd's update needs from a set of rows: per-centre sums (K, D) and per-centre
    per-modality counts of observing members (K, M), both float64, and member counts (K,)
    int64. Statistics of disjoint row sets add up.

    Counts and member counts come from one pass of the ``update`` kernel over the mask with
    a column of ones appended, so nothing here waits for the device (no bincount, no
    boolean indexing)."""
    xp = rows.xp
    sums = cluster_sums(labels, rows.z, n_clusters)
    flags = xp.concatenate([rows.mask.astype(rows.z.dtype),
                            xp.ones((len(rows), 1), dtype=rows.z.dtype)], axis=1)
    counts = cluster_sums(labels, flags, n_clusters)
    return sums, counts[:, :-1], counts[:, -1].astype(xp.int64)


def centers_from_statistics(sums, counts, members, centers, centers_mask, dims):
    """Lloyd's update on partial data, from :func:`cluster_statistics`.

    For a centre with members, modality m becomes the mean of z^m over the members that
    observe m, and the centre carries m iff at least one member does. A centre without
    members keeps its previous values and modalities.

    Returns new (K, D) centers of ``centers.dtype`` (zero where absent) and (K, M) bool mask.
    """
    xp = array_module(sums, centers)
    has_members = (members > 0)[:, None]
    new_mask = xp.where(has_members, counts > 0, centers_mask)
    per_column = xp.repeat(counts, list(dims), axis=1)
    means = sums / xp.maximum(per_column, 1)
    new_centers = xp.where(has_members, means, centers)
    new_centers *= expand_mask(new_mask, dims)
    return new_centers.astype(centers.dtype, copy=False), new_mask


def center_shift(dims, old, old_mask, new, new_mask):
    """(K,) partial distance from each old centre to its update; +inf where the modality
    set changed."""
    xp = array_module(old, new)
    diff = new - old
    sums = (squared_norms(diff, dims) * old_mask).sum(axis=1)
    shared = old_mask.sum(axis=1).astype(sums.dtype)
    shift = distances_from_sums(sums, shared)
    return xp.where((old_mask == new_mask).all(axis=1), shift, xp.inf)


def lloyd_loop(rows: PackedRows, centers, centers_mask, max_iter: int = 100,
               tol: float = 1e-6, batch_size: int | None = None,
               on_iteration: Callable[[int, float], None] | None = None) -> KMeansResult:
    """Brute-force Lloyd iterations from the given (clean) centres until no label changes,
    every centre moved less than ``tol``, or ``max_iter`` updates.

    ``on_iteration(n_iter, inertia)`` is called after every update (progress reporting).
    """
    centers = centers.astype(rows.z.dtype, copy=True)
    labels, nearest, statistics = assign_with_statistics(rows, centers, centers_mask, batch_size)
    n_iter = 0
    while n_iter < max_iter:
        new_centers, new_mask = centers_from_statistics(*statistics, centers, centers_mask,
                                                        rows.dims)
        n_iter += 1
        shift = center_shift(rows.dims, centers, centers_mask, new_centers, new_mask)
        new_labels, nearest, statistics = assign_with_statistics(rows, new_centers, new_mask,
                                                                 batch_size)
        converged = ~(new_labels != labels).any() | (shift.max() < tol)
        centers, centers_mask, labels = new_centers, new_mask, new_labels
        if on_iteration is not None:
            on_iteration(n_iter, inertia(labels, nearest))
        if bool(converged):  # the one device-to-host transfer of an iteration
            break
    return KMeansResult(centers, centers_mask, labels, inertia(labels, nearest), n_iter)


def lloyd_over_passes(assignment_pass, centers, centers_mask, dims, max_iter: int = 100,
                      tol: float = 1e-6, desc: str = "k-means", verbose: int = 0,
                      on_iteration: Callable[[int, float], None] | None = None):
    """:func:`lloyd_loop`'s update and stop rules around an external assignment pass, for
    rows that are not in this process's memory (streamed batches, Dask partitions).

    ``assignment_pass(centers, centers_mask, n_iter)`` assigns every row to the given
    centres and returns host (sums (K, D), counts (K, M), members (K,), number of labels
    changed since the previous pass, inertia); it keeps the labels itself. Returns the final
    (centers, centers_mask, inertia, n_iter); ``verbose`` shows a progress bar.
    """
    with tqdm(total=max_iter, desc=desc, unit="iter", leave=False, disable=not verbose) as bar:
        total = assignment_pass(centers, centers_mask, 0)
        n_iter = 0
        while n_iter < max_iter:
            new_centers, new_mask = centers_from_statistics(*total[:3], centers, centers_mask,
                                                            dims)
            n_iter += 1
            shift = center_shift(dims, centers, centers_mask, new_centers, new_mask)
            total = assignment_pass(new_centers, new_mask, n_iter)
            centers, centers_mask = new_centers, new_mask
            bar.update(1)
            bar.set_postfix(inertia=f"{total[4]:.4g}")
            if on_iteration is not None:
                on_iteration(n_iter, total[4])
            if total[3] == 0 or float(shift.max()) < tol:
                break
    return centers, centers_mask, float(total[4]), n_iter


def inertia(labels, nearest) -> float:
    """Σ of squared distances of the assigned rows (label ≥ 0), as a Python float."""
    xp = array_module(labels, nearest)
    assigned = xp.where(labels >= 0, nearest.astype(xp.float64), 0.0)
    return float((assigned * assigned).sum())


def seed_plusplus(rows: PackedRows, n_clusters: int, random_state=None):
    """k-means++ seeding on the partial distance.

    The first seed is drawn uniformly from the rows observing at least one modality; each
    next seed with probability ∝ D², D the distance to the nearest seed so far (+inf counted
    as 1e9; rows with no modality never drawn). A centre is its seed row, with the row's
    observed set as its modality set.

    Returns centers (K, D), centers_mask (K, M) bool, seed row indices (K,) int64 (NumPy).
    """
    n_clusters = check_int("n_clusters", n_clusters)
    xp = rows.xp
    rng = checked_random_state(random_state)
    candidates = np.flatnonzero(to_numpy(rows.mask.any(axis=1)))
    if n_clusters > candidates.size:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of rows that observe at "
            f"least one modality ({candidates.size})"
        )
    seeds = [int(candidates[rng.randint(candidates.size)])]
    has_modality = rows.mask.any(axis=1)
    nearest_sq = xp.full(len(rows), xp.inf, dtype=xp.float64)
    for _ in range(1, n_clusters):
        seed = seeds[-1]
        sums, shared = masked_sq_sums(
            rows.z, rows.mask, rows.z[seed:seed + 1], rows.mask[seed:seed + 1],
            rows.dims, center_norms=rows.row_norms[seed:seed + 1], row_norms=rows.row_norms,
        )
        dist = distances_from_sums(sums[:, 0], shared[:, 0]).astype(xp.float64)
        dist = xp.where(xp.isinf(dist), UNREACHABLE_DISTANCE, dist)
        xp.minimum(nearest_sq, dist * dist, out=nearest_sq)
        weights = xp.where(has_modality, nearest_sq, 0.0)
        cumulative = xp.cumsum(weights)
        total = float(cumulative[-1])
        if total > 0:
            threshold = xp.asarray([rng.random_sample() * total])
            pick = int(xp.searchsorted(cumulative, threshold, side="right")[0])
            if pick >= len(rows):  # round-off put the threshold at the very end
                pick = int(xp.flatnonzero(weights > 0)[-1])
            seeds.append(pick)
        else:
            seeds.append(int(candidates[rng.randint(candidates.size)]))
    index = xp.asarray(seeds)
    return rows.z[index].copy(), rows.mask[index].copy(), np.asarray(seeds, dtype=np.int64)


def kmeans_plusplus(z, mask, dims, n_clusters: int, random_state=None):
    """k-means++ seeds for partial rows (see :func:`seed_plusplus`).

    Parameters
    ----------
    z : (N, D) float32/float64 array, normalised, finite where observed (else ValueError
    naming the modality and rows; missing slots are ignored); mask : (N, M) bool;
    dims : M ints; n_clusters : K, an int >= 1; random_state : None, an int in
    [0, 2**32 − 1] or a ``np.random.RandomState`` (else ValueError naming them).

    Returns
    -------
    centers (K, D) of z's dtype, zero where absent; centers_mask (K, M) bool;
    seed_indices (K,) int64.
    """
    return seed_plusplus(PackedRows.build(z, mask, dims), n_clusters, random_state)


def lloyd(z, mask, dims, centers, centers_mask, max_iter: int = 100, tol: float = 1e-6,
          batch_size: int | None = None) -> KMeansResult:
    """Partial k-means (Lloyd) from the given initial centres.

    Parameters
    ----------
    z : (N, D) float32/float64 array, normalised, finite where observed (else ValueError
    naming the modality and rows; missing slots are ignored); mask : (N, M) bool;
    dims : M ints; centers : (K, D) initial centres (values on absent modalities ignored);
    centers_mask : (K, M) bool, K >= 1; max_iter (an int >= 1), tol (a float >= 0) :
    stopping rules; batch_size : rows per assignment batch (default: about 2^24 / K).
    Invalid arguments raise ``ValueError`` naming them.
    """
    check_int("max_iter", max_iter)
    check_tol("tol", tol)
    check_int("batch_size", batch_size, allow_none=True)
    rows = PackedRows.build(z, mask, dims)
    centers, centers_mask = checked_centers(centers, centers_mask, rows.dims, z.dtype, like=z)
    return lloyd_loop(rows, centers, centers_mask, max_iter, tol, batch_size)
