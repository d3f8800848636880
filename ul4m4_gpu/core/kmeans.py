"""Partial k-means: k-means++ seeding and Lloyd iterations on the partial-modality distance
(docs/method.md, "Clustering"). Centres may be partial: centre k carries the modality set C_k.

The loop is written once against a tiny row-set interface (:class:`PackedRows`) and the array
module of its inputs, so NumPy and CuPy share it (cf. FAISS ``contrib/clustering.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numba

from .backend import array_module, to_numpy
from ..kernels import assign as assign_kernels
from ..kernels import pack as pack_kernels
from ..kernels import update as update_kernels
from .distances import (
    column_layout,
    column_scale,
    distances_from_sums,
    masked_sq_sums,
    roundoff_rtol,
    squared_norms,
)
from .normalise import expand_mask
from .tiled import CPU_ROW_TILE, row_tiled_matmul, single_threaded_blas
from .validation import (
    check_int,
    check_packed,
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
        pack_kernels.pack_rows(z, mask, offsets, inverse_dims, not clean, out, norms, finite)
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
class ClusterStats:
    """What one assignment pass tells Lloyd's update and stop rules; the statistics of
    disjoint row sets add up (``a + b``).

    sums : (K, D) float64 per-centre sums of the members' normalised rows; counts : (K, M)
    float64 members observing each modality; members : (K,) int64; changed : labels that
    differ from the previous pass of the same source; inertia : Σ squared distances of the
    assigned rows. On one device; ``changed`` and ``inertia`` are 0-d arrays there (or
    Python numbers), so that a pass on the GPU needs no host round trip.
    """

    sums: object
    counts: object
    members: object
    changed: object
    inertia: object

    def __add__(self, other: "ClusterStats") -> "ClusterStats":
        return ClusterStats(self.sums + other.sums, self.counts + other.counts,
                            self.members + other.members, self.changed + other.changed,
                            self.inertia + other.inertia)

    def to_host(self) -> "ClusterStats":
        """The same statistics as NumPy arrays and Python numbers."""
        return ClusterStats(np.asarray(to_numpy(self.sums), dtype=np.float64),
                            np.asarray(to_numpy(self.counts), dtype=np.float64),
                            np.asarray(to_numpy(self.members), dtype=np.int64),
                            int(self.changed), float(self.inertia))


def default_batch_size(n_rows: int, n_centers: int) -> int:
    """Rows per assignment batch so that a batch holds about 2^24 (row, centre) pairs."""
    return max(1, min(n_rows, PAIRS_PER_BATCH // max(n_centers, 1)))


def assign(rows: PackedRows, centers, centers_mask, batch_size: int | None = None):
    """Nearest centre of every row (ties within round-off: lowest index).

    Returns labels (N,) int64, −1 where every distance is +inf, and the distances (N,) of
    z's dtype (+inf for label −1). Per batch of ``batch_size`` rows one row-tiled GEMM
    (:func:`~ul4m4_gpu.core.tiled.row_tiled_matmul`) gives the cross terms and the
    ``assign`` kernel (CPU twin or CUDA) does the rest, fused; the labels do not depend on
    ``batch_size``.
    """
    xp = rows.xp
    batch_size = batch_size or default_batch_size(len(rows), centers.shape[0])
    center_norms = squared_norms(centers, rows.dims)
    scaled_centers = centers * column_scale(rows.dims, xp, rows.z.dtype)
    labels = xp.empty(len(rows), dtype=xp.int64)
    nearest = xp.empty(len(rows), dtype=rows.z.dtype)
    for batch in rows.batches(batch_size):
        cross = row_tiled_matmul(rows.z[batch], scaled_centers.T)
        assign_kernels.nearest_centers(cross, rows.row_norms[batch], rows.mask[batch],
                                       center_norms, centers_mask, roundoff_rtol(rows.z.dtype),
                                       labels[batch], nearest[batch])
    return labels, nearest


def assign_with_statistics(rows: PackedRows, centers, centers_mask,
                           batch_size: int | None = None):
    """:func:`assign` plus the :func:`cluster_statistics` of the labels it returns.

    On the CPU (C-contiguous float rows) one fused pass does both, tile by tile (the tiles
    and BLAS calls of :func:`~ul4m4_gpu.core.tiled.row_tiled_matmul`, so the labels are
    :func:`assign`'s), with BLAS on one thread per tile (as scikit-learn's Lloyd does);
    elsewhere the two steps run one after the other. ``batch_size`` bounds :func:`assign`'s
    batches; the fused pass holds one (T, K) tile per thread and ignores it. Returns
    labels, nearest distances and (sums, counts, members).
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
    with single_threaded_blas():
        assign_kernels.assign_and_accumulate_cpu(
            rows.z, scaled_t, rows.row_norms, rows.mask, squared_norms(centers, rows.dims),
            centers_mask, roundoff_rtol(rows.z.dtype), CPU_ROW_TILE, labels, nearest, sums,
            counts)
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
    update_kernels.chunk_sums(values, labels, chunk, partials)
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


def assign_rows(rows: PackedRows, centers, centers_mask, previous=None,
                batch_size: int | None = None):
    """One assignment pass over rows held in memory: (labels (N,) int64, ClusterStats), on
    the rows' device, through :func:`assign_with_statistics` (the fused CPU pass).
    ``previous`` (N,) labels of the pass before, or None (every label counts as changed)."""
    labels, nearest, (sums, counts, members) = assign_with_statistics(
        rows, centers.astype(rows.z.dtype, copy=False), centers_mask, batch_size)
    xp = rows.xp
    changed = len(rows) if previous is None else (labels != previous).sum()
    assigned = xp.where(labels >= 0, nearest.astype(xp.float64), 0.0)
    return labels, ClusterStats(sums, counts, members, changed, (assigned * assigned).sum())


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
