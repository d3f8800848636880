"""Nearest-neighbour completion from training donors through an inverted file over the
fitted clusters (docs/method.md, "KNN completion").

Each missing modality m of a row is the uniform mean of the normalised values of its
``n_neighbors`` nearest donors observing m, by the partial distance on the modalities the
row and the donor both observe (+inf when they share none; such a donor is never a
neighbour). Donors are searched only in the row's ``n_probe`` nearest clusters (its
nearest centres by the partial distance, ties: lowest index) plus the donors no centre
can place (label −1, probed by every row); ``n_probe = n_clusters`` is exact brute-force
KNN. A slot no probed donor observing m shares a modality with gets ``default`` (the
training mean, 0 in normalised space) and is counted.

Batch independence. A BLAS picks kernels and blocking by a product's shape, so a row's
distances could change in the last bits with the rows beside it. Here every distance GEMM
has one shape, :data:`ROW_TILE` rows (zero rows padding the last tile) against
:data:`DONOR_TILE` donors starting at fixed places of the inverted file, and a row's
candidates are fixed by its own probe set, so its fill does not depend on ``batch_size``
or on which other rows are completed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module, to_device, to_numpy
from .completion import DEFAULT_MAX_DONORS, choose_candidates, weighted_fill
from .distances import column_layout, distances_from_sums, masked_sq_sums
from .kmeans import PackedRows
from .validation import check_int, checked_random_state

# Donors kept by Donors.sample (DEFAULT_MAX_DONORS, 20,000): 20,000 · D · 4 bytes in
# float32 (52 MB at mfeat's D = 649), plus their (n_d, M) mask and norms.
#: Rows of one distance GEMM, on the CPU (NumPy) and on a GPU (CuPy).
ROW_TILE = {"cpu": 256, "gpu": 1024}
#: Donors of one distance GEMM, on the CPU (NumPy) and on a GPU (CuPy).
DONOR_TILE = {"cpu": 128, "gpu": 1024}
#: (row, donor) distances held at once by :func:`knn_fill`'s default batch.
PAIRS_PER_BATCH = 1 << 25


def _tiles(xp) -> tuple[int, int]:
    """(rows, donors) of every distance GEMM for arrays of module ``xp``."""
    key = "cpu" if xp is np else "gpu"
    return ROW_TILE[key], DONOR_TILE[key]


@dataclass
class Donors:
    """The donor rows in inverted-file order (sorted by cluster, stably).

    z : (n_d, D) normalised values, zero on missing slots; mask : (n_d, M) bool;
    norms : (n_d, M) per-modality squared norms over d_m; labels : (n_d,) int64, the
    donor's cluster (its nearest fitted centre by the partial distance), −1 when no centre
    shares a modality with it, ascending; source : (n_d,) int64, the training row each
    donor came from; offsets : (K + 2,) NumPy int64, the donors of cluster c are
    ``offsets[c + 1]:offsets[c + 2]`` and the unplaced ones (label −1)
    ``offsets[0]:offsets[1]``. All but ``offsets`` live on the rows' device.
    """

    z: object
    mask: object
    norms: object
    labels: object
    source: object
    offsets: np.ndarray
    dims: tuple

    @classmethod
    def build(cls, rows: PackedRows, labels, n_clusters: int, source=None) -> "Donors":
        """Donors from ``rows`` (all of them) with their cluster ``labels`` (N,) int in
        [−1, n_clusters); ``source`` (N,) their training rows (default 0..N−1)."""
        xp = rows.xp
        check_int("n_clusters", n_clusters)
        host_labels = np.asarray(to_numpy(labels)).astype(np.int64, copy=False).ravel()
        if host_labels.shape[0] != len(rows):
            raise ValueError(f"labels has {host_labels.shape[0]} entries for {len(rows)} rows")
        bad = (host_labels < -1) | (host_labels >= n_clusters)
        if bad.any():
            raise ValueError(f"labels must lie in [-1, {n_clusters}), got "
                             f"{host_labels[bad][:5].tolist()} at rows "
                             f"{np.flatnonzero(bad)[:5].tolist()}")
        order = np.argsort(host_labels, kind="stable")
        counts = np.bincount(host_labels + 1, minlength=n_clusters + 1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        host_source = (np.arange(len(rows)) if source is None
                       else np.asarray(to_numpy(source)).astype(np.int64, copy=False))
        index = xp.asarray(order)
        return cls(rows.z[index], rows.mask[index], rows.row_norms[index],
                   xp.asarray(host_labels[order]), xp.asarray(host_source[order]), offsets,
                   tuple(rows.dims))

    @classmethod
    def sample(cls, rows: PackedRows, labels, n_clusters: int,
               max_donors: int = DEFAULT_MAX_DONORS, random_state=None) -> "Donors":
        """The training rows observing at least one modality, or a uniform sample of
        ``max_donors`` of them without replacement (seeded by ``random_state``, kept in
        training order) when there are more. ``labels`` (N,) are the rows' clusters."""
        check_int("max_donors", max_donors)
        rng = checked_random_state(random_state)
        eligible = np.flatnonzero(to_numpy(rows.mask.any(axis=1)))
        if eligible.size > max_donors:
            eligible = np.sort(rng.choice(eligible, size=max_donors, replace=False))
        xp = rows.xp
        index = xp.asarray(eligible)
        picked = PackedRows(rows.z[index], rows.mask[index], rows.dims, rows.row_norms[index])
        host_labels = np.asarray(to_numpy(labels)).ravel()
        if host_labels.shape[0] != len(rows):
            raise ValueError(f"labels has {host_labels.shape[0]} entries for {len(rows)} rows")
        return cls.build(picked, host_labels[eligible], n_clusters, source=eligible)

    @property
    def n_clusters(self) -> int:
        return int(self.offsets.size - 2)

    def to(self, device: str) -> "Donors":
        """The same donors with their arrays on ``device`` ("cpu" or "cuda")."""
        return Donors(*(to_device(getattr(self, name), device)
                        for name in ("z", "mask", "norms", "labels", "source")),
                      self.offsets, self.dims)

    def position_of(self, training_rows):
        """(n,) int64 on the donors' device: where each of the training rows
        ``training_rows`` (NumPy ints) sits among the donors, −1 for a row that is none."""
        source = np.asarray(to_numpy(self.source))
        where = np.full(max(int(source.max(initial=-1)), int(np.max(training_rows, initial=-1)))
                        + 1, -1, dtype=np.int64)
        where[source] = np.arange(source.size)
        return array_module(self.z).asarray(where[np.asarray(training_rows, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.z.shape[0])


def nearest_clusters(rows: PackedRows, index, centers, centers_mask, n_probe: int):
    """(n, min(n_probe, K)) int64: the nearest centres of the rows ``index`` (n,) by the
    partial distance, nearest first, ties (+inf included) by lowest index; computed on
    fixed (:data:`ROW_TILE`, K) tiles, so a row's answer does not depend on ``index``."""
    xp = rows.xp
    n_centers = centers.shape[0]
    row_tile = _tiles(xp)[0]
    n = int(index.shape[0])
    distances = xp.empty((n, n_centers), dtype=rows.z.dtype)
    for start in range(0, n, row_tile):
        part = index[start:start + row_tile]
        z, mask, norms = _padded_rows(rows, part, row_tile)
        sums, shared = masked_sq_sums(z, mask, centers, centers_mask, rows.dims,
                                      row_norms=norms)
        distances[start:start + part.shape[0]] = distances_from_sums(sums, shared)[:part.shape[0]]
    # the top-r kernel drops +inf behind finite scores; every centre must stay rankable
    largest = np.finfo(distances.dtype).max
    distances = xp.where(xp.isinf(distances), distances.dtype.type(largest), distances)
    everything = xp.ones((n, 1), dtype=bool)
    chosen, _ = choose_candidates(distances, everything, xp.ones((n_centers, 1), dtype=bool),
                                  min(n_probe, n_centers))
    return chosen[:, 0, :]


def _padded_rows(rows: PackedRows, part, tile: int):
    """(tile, D) values, (tile, M) mask and (tile, M) norms of the rows ``part``, zero
    rows (observing nothing) after them."""
    xp = rows.xp
    count = int(part.shape[0])
    z = xp.zeros((tile, rows.z.shape[1]), dtype=rows.z.dtype)
    mask = xp.zeros((tile, rows.mask.shape[1]), dtype=bool)
    norms = xp.zeros((tile, rows.mask.shape[1]), dtype=rows.z.dtype)
    z[:count], mask[:count], norms[:count] = rows.z[part], rows.mask[part], rows.row_norms[part]
    return z, mask, norms


def knn_fill(rows: PackedRows, donors: Donors, centers, centers_mask, out, *,
             n_neighbors: int, n_probe: int, values=None, default=None,
             batch_size: int | None = None, progress=None, exclude=None) -> np.ndarray:
    """Fill every missing slot of ``out`` in place from the nearest donors.

    rows : the normalised rows (N of them); donors : :class:`Donors` on the same device
    and dtype; centers (K, D) zero where absent, centers_mask (K, M) bool: the fitted
    centres the donors' labels refer to; out : (N, D) array written on the missing slots
    of incomplete rows only; n_neighbors k ≥ 1; n_probe ≥ 1 clusters searched (≥ K: all,
    exact KNN). values : (n_d, D) the donors' values in ``out``'s space (default
    ``donors.z``); default : (D,) a slot's value when no probed donor observing the
    modality shares a modality with the row (default zeros: the normalised training mean).

    Incomplete rows go in batches of ``batch_size`` (default: 2^25 (row, donor) pairs,
    at least :data:`ROW_TILE` rows): their nearest centres are found; per probed cluster
    (and the unplaced donors, probed by all), the batch's rows probing it are compared
    with its donors in (ROW_TILE, DONOR_TILE) GEMMs whose donor tiles start at the
    cluster's first donor, so each row meets only its probed clusters' donors (about
    n_probe/K of brute force); distances land in one (batch, n_d) score array, +inf
    elsewhere. Memory: that array (batch · n_d · itemsize bytes) and the (batch, K)
    centre distances. A row's fill is bitwise the same in any batch. ``progress`` (tqdm,
    optional) advances by rows. ``exclude`` : (N,) int64 on the rows' device, a donor
    (position in ``donors``) that row may not use, −1 for none (a training row completed
    for a held-out check must not be its own donor).

    Returns (M,) int64 NumPy: the slots filled with ``default``, per modality.
    """
    check_int("n_neighbors", n_neighbors)
    check_int("n_probe", n_probe)
    check_int("batch_size", batch_size, allow_none=True)
    if tuple(donors.dims) != tuple(rows.dims) or donors.z.dtype != rows.z.dtype:
        raise ValueError(f"donors have dims {tuple(donors.dims)} and dtype {donors.z.dtype}, "
                         f"the rows {tuple(rows.dims)} and {rows.z.dtype}")
    if donors.n_clusters != int(centers.shape[0]):
        raise ValueError(f"donors are labelled for {donors.n_clusters} clusters, centers has "
                         f"{int(centers.shape[0])}")
    xp = rows.xp
    values = donors.z if values is None else values
    default = xp.zeros(rows.z.shape[1], dtype=values.dtype) if default is None else default
    layout = column_layout(rows.dims, xp)
    mean_filled = xp.zeros(len(rows.dims), dtype=xp.int64)
    incomplete = xp.flatnonzero(~rows.mask.all(axis=1))
    batch_size = batch_size or max(_tiles(xp)[0], PAIRS_PER_BATCH // max(len(donors), 1))
    for start in range(0, int(incomplete.size), batch_size):
        index = incomplete[start:start + batch_size]
        probes = to_numpy(nearest_clusters(rows, index, centers, centers_mask, n_probe))
        scores = _probed_distances(rows, index, probes, donors)
        if exclude is not None:
            barred = exclude[index]
            own = xp.flatnonzero(barred >= 0)
            scores[own, barred[own]] = xp.inf
        missing = ~rows.mask[index]
        chosen, chosen_scores = choose_candidates(scores, missing, donors.mask, n_neighbors)
        valid = (chosen >= 0) & xp.isfinite(chosen_scores)
        chosen = xp.where(valid, chosen, -1)
        weights = valid.astype(values.dtype)
        weights /= xp.maximum(weights.sum(axis=2, keepdims=True), 1)
        weighted_fill(out, index, missing, chosen, weights, values, default, layout)
        mean_filled += (missing & ~valid[:, :, 0]).sum(axis=0)
        if progress is not None:
            progress.update(int(index.size))
    return np.asarray(to_numpy(mean_filled), dtype=np.int64)


def _probed_distances(rows: PackedRows, index, probes: np.ndarray, donors: Donors):
    """(n, n_d) partial distances of the rows ``index`` (n,) to the donors of their
    probed clusters ``probes`` (host (n, n_probe)) and to the unplaced donors; +inf for
    every other donor. Each GEMM is (ROW_TILE rows, DONOR_TILE donors) with zero rows
    padding the row side and the donor tiles at fixed places of the inverted file."""
    xp = rows.xp
    row_tile, donor_tile = _tiles(xp)
    n = int(index.shape[0])
    scores = xp.full((n, len(donors)), xp.inf, dtype=rows.z.dtype)
    for first, stop, probing in _probed_ranges(probes, donors):
        for row_start in range(0, probing.size, row_tile):
            part = xp.asarray(probing[row_start:row_start + row_tile])
            count = int(part.shape[0])
            z, mask, norms = _padded_rows(rows, index[part], row_tile)
            for tile_start in range(first, stop, donor_tile):
                tile_z, tile_mask, tile_norms = _donor_tile(donors, tile_start, donor_tile)
                sums, shared = masked_sq_sums(z, mask, tile_z, tile_mask, rows.dims,
                                              center_norms=tile_norms, row_norms=norms)
                width = min(donor_tile, stop - tile_start)
                scores[part, tile_start:tile_start + width] = (
                    distances_from_sums(sums, shared)[:count, :width])
    return scores


def _probed_ranges(probes: np.ndarray, donors: Donors):
    """(first, stop, rows) per donor range: each cluster's donors and the rows (host
    positions) probing it, the unplaced donors with every row; when every row probes
    every cluster, all donors at once (tiles from 0, no per-cluster padding)."""
    everyone = np.arange(probes.shape[0])
    if probes.shape[1] >= donors.n_clusters:
        yield 0, len(donors), everyone
        return
    for bucket in range(-1, donors.n_clusters):
        first, stop = (int(v) for v in donors.offsets[bucket + 1:bucket + 3])
        if first < stop:
            yield first, stop, (everyone if bucket < 0
                                else np.flatnonzero((probes == bucket).any(axis=1)))


def _donor_tile(donors: Donors, start: int, tile: int):
    """Values, mask and norms of donors ``start`` .. ``start + tile`` (views), zero
    donors (observing nothing) past the last one."""
    if start + tile <= len(donors):
        end = start + tile
        return donors.z[start:end], donors.mask[start:end], donors.norms[start:end]
    xp = array_module(donors.z)
    count = len(donors) - start
    z = xp.zeros((tile, donors.z.shape[1]), dtype=donors.z.dtype)
    mask = xp.zeros((tile, donors.mask.shape[1]), dtype=bool)
    norms = xp.zeros((tile, donors.mask.shape[1]), dtype=donors.z.dtype)
    z[:count], mask[:count], norms[:count] = (donors.z[start:], donors.mask[start:],
                                              donors.norms[start:])
    return z, mask, norms
