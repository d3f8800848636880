"""Iterative greedy completion from the centres (the paper's Algorithm 2, DESIGN.md §1 step 5).

For a row with missing set Q, candidate j is the row's observed part plus centre j's values
on Q ∩ C_j, and score_j = min_l d(candidate_j, c_l). The greedy loop takes candidates by
increasing score (ties: lowest j) and copies what is still missing. Candidates never change,
so the loop equals: for each missing m, copy c_{j*}^m with j* the best-scoring candidate
whose centre carries m. Scores come without any per-row loop from

    score_j = min_l sqrt( (A_il + B^Q_jl) / (|O_i∩C_l| + |Q∩C_j∩C_l|) )

with A the row-to-centre sums of :func:`masked_sq_sums` and B^Q = Σ_{m∈Q} P_m, P_m the
(K, K) per-modality centre-to-centre squared distances over d_m (zero unless both carry m).
B^Q is computed once per distinct missing pattern of a batch (a (U, K, K) table) and the
``complete`` kernel does the min-reduction per row without storing any (n, K, K) array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module, to_numpy
from .distances import checked_centers, masked_sq_sums, squared_norms
from .kernels import complete as complete_kernels
from .kmeans import PackedRows, default_batch_size
from .validation import check_int

#: Largest (pattern, candidate, centre) table built for one batch; a batch with more
#: distinct missing patterns than fit is split in halves.
PATTERN_TRIPLES_PER_BATCH = 1 << 24


@dataclass
class CenterPairs:
    """What completion needs from the centres, computed once per set of centres.

    centers : (K, D) zero where absent; centers_mask : (K, M) bool; center_norms : (K, M);
    pair_sums : (M, K·K) P_m[j, l] = ||c_j^m − c_l^m||² / d_m flattened (0 unless both
        carry m; exactly 0 on the diagonal);
    pair_shared : (M, K·K) 1 where centres j and l both carry m, else 0.
    """

    centers: object
    centers_mask: object
    center_norms: object
    pair_sums: object
    pair_shared: object

    @classmethod
    def build(cls, centers, centers_mask, dims) -> "CenterPairs":
        """centers (K, D) zero where absent, centers_mask (K, M) bool, dims M ints.

        P_m comes from direct differences (not a GEMM expansion), so identical centres have
        bit-identical rows and their candidates tie exactly, whatever the batch."""
        xp = array_module(centers, centers_mask)
        n_centers, n_modalities = centers_mask.shape
        carried = centers_mask.astype(centers.dtype)
        both = carried.T[:, :, None] * carried.T[:, None, :]
        pair_sums = xp.empty((n_modalities, n_centers, n_centers), dtype=centers.dtype)
        start = 0
        for m, d in enumerate(dims):
            pair_sums[m] = _pairwise_sq_distances(centers[:, start:start + d]) / d
            start += d
        pair_sums *= both
        return cls(centers, centers_mask, squared_norms(centers, dims),
                   pair_sums.reshape(n_modalities, -1), both.reshape(n_modalities, -1))

    @property
    def n_centers(self) -> int:
        return int(self.centers.shape[0])


def _pairwise_sq_distances(block):
    """(K, K) Σ_c (x_j,c − x_l,c)² of a (K, d) array, by direct differences in chunks of
    rows (at most about 2^24 elements at once)."""
    xp = array_module(block)
    n, d = block.shape
    out = xp.empty((n, n), dtype=block.dtype)
    step = max(1, (1 << 24) // max(n * d, 1))
    for start in range(0, n, step):
        diff = block[start:start + step, None, :] - block[None, :, :]
        out[start:start + step] = (diff * diff).sum(axis=2)
    return out


def candidate_scores(rows: PackedRows, index, pairs: CenterPairs, patterns, which):
    """(n, K) greedy scores of the rows selected by ``index`` (an index array); +inf where
    a candidate shares nothing with any centre. ``patterns`` (U, M) 0/1 and ``which`` (n,)
    come from :func:`_missing_patterns` of those rows. The (n, K, K) min-reduction runs in
    the ``complete`` kernel (CPU twin or CUDA), never materialised."""
    xp = rows.xp
    sums, shared = masked_sq_sums(
        rows.z[index], rows.mask[index], pairs.centers, pairs.centers_mask, rows.dims,
        center_norms=pairs.center_norms, row_norms=rows.row_norms[index],
    )
    k = pairs.n_centers
    pattern_sums = (patterns @ pairs.pair_sums).reshape(-1, k, k)
    pattern_shared = (patterns @ pairs.pair_shared).reshape(-1, k, k)
    scores = xp.empty_like(sums)
    args = (sums, shared, which, pattern_sums, pattern_shared, scores)
    if xp is np:
        complete_kernels.candidate_scores_cpu(*args)
    else:
        complete_kernels.launch_2d(complete_kernels.candidate_scores_cuda, scores.shape, *args)
    return scores


#: Most modalities whose missing pattern fits one int64 key (bit m = modality m).
MAX_KEYED_MODALITIES = 63


def _missing_patterns(missing, dtype):
    """Distinct rows of an (n, M) bool array, as (U, M) ``dtype`` 0/1, and the (n,) index of
    each row's pattern among them.

    Up to :data:`MAX_KEYED_MODALITIES` modalities, each row becomes one int64 key and the
    keys go through the 1-D ``unique`` (a sort on the device; CuPy's ``unique(axis=0)`` is a
    Python-level quicksort with host syncs per comparison, hopeless on 10^5 rows with few
    distinct patterns). Beyond that, NumPy's row-wise ``unique`` runs on the host."""
    xp = array_module(missing)
    n_modalities = missing.shape[1]
    if n_modalities > MAX_KEYED_MODALITIES:
        patterns, which = np.unique(to_numpy(missing), axis=0, return_inverse=True)
        return xp.asarray(patterns.astype(dtype)), xp.asarray(which.ravel())
    bits = xp.arange(n_modalities, dtype=xp.int64)
    keys = (missing.astype(xp.int64) << bits).sum(axis=1)
    unique_keys, which = xp.unique(keys, return_inverse=True)
    patterns = (unique_keys[:, None] >> bits) & 1
    return patterns.astype(dtype), which.ravel()


def pick_sources(scores, missing, centers_mask):
    """Centre each missing slot is copied from.

    scores : (n, K); missing : (n, M) bool; centers_mask : (K, M) bool.
    Returns (n, M) int64: for a missing slot, the lowest-scoring centre that carries the
    modality (ties: lowest index; +inf scores rank last but still count); −1 for observed
    slots and for modalities no centre carries.
    """
    xp = array_module(scores)
    sources = xp.empty(missing.shape, dtype=xp.int64)
    if xp is np:
        complete_kernels.pick_sources_cpu(scores, missing, centers_mask, sources)
    else:
        complete_kernels.launch_2d(complete_kernels.pick_sources_cuda, sources.shape,
                                   scores, missing, centers_mask, sources)
    return sources


def completion_sources(rows: PackedRows, pairs: CenterPairs, batch_size: int | None = None,
                       progress=None):
    """(N, M) int64 source centre of every slot (see :func:`pick_sources`), scoring the
    incomplete rows in batches of ``batch_size`` (default: about 2^24 / K rows, bounding the
    (n, K) arrays); ``progress`` (a tqdm bar, optional) is advanced by the rows done."""
    check_int("batch_size", batch_size, allow_none=True)
    xp = rows.xp
    sources = xp.full(rows.mask.shape, -1, dtype=xp.int64)
    incomplete = xp.flatnonzero(~rows.mask.all(axis=1))
    batch_size = batch_size or default_batch_size(int(incomplete.size), pairs.n_centers)
    for start in range(0, incomplete.size, batch_size):
        index = incomplete[start:start + batch_size]
        sources[index] = _batch_sources(rows, index, pairs)
        if progress is not None:
            progress.update(int(index.size))
    return sources


def _batch_sources(rows: PackedRows, index, pairs: CenterPairs):
    """(n, M) sources of the rows ``index``; halves the batch while its distinct missing
    patterns would need a (U, K, K) table larger than PATTERN_TRIPLES_PER_BATCH."""
    missing = ~rows.mask[index]
    patterns, which = _missing_patterns(missing, rows.z.dtype)
    if patterns.shape[0] * pairs.n_centers ** 2 > PATTERN_TRIPLES_PER_BATCH and index.size > 1:
        half = index.size // 2
        return rows.xp.concatenate([_batch_sources(rows, index[:half], pairs),
                                    _batch_sources(rows, index[half:], pairs)])
    scores = candidate_scores(rows, index, pairs, patterns, which)
    return pick_sources(scores, missing, pairs.centers_mask)


def fill_from_sources(out, sources, missing, source_values, default, dims):
    """Write ``source_values[sources[i, m]]`` into every missing slot of ``out`` in place,
    and ``default`` where ``sources`` is −1 on a missing slot.

    out : (N, D) array; sources : (N, M) int64; missing : (N, M) bool;
    source_values : (K, D); default : (D,); dims : M ints. Observed slots are not touched.
    """
    start = 0
    for m, d in enumerate(dims):
        columns = slice(start, start + d)
        rows = missing[:, m]
        picked = sources[rows, m]
        block = source_values[:, columns][picked]
        block[picked < 0] = default[columns]
        out[rows, columns] = block
        start += d
    return out


def greedy_complete(z, mask, centers, centers_mask, dims, batch_size: int | None = None,
                    return_sources: bool = False):
    """Fill every missing modality of normalised rows by greedy completion from the centres.

    Parameters
    ----------
    z : (N, D) float32/float64 array (NumPy or CuPy), normalised, finite where observed
        (else ValueError naming the modality and rows); missing slots are ignored.
    mask : (N, M) bool, True where observed.
    centers : (K, D) float array; values on modalities a centre lacks are ignored.
    centers_mask : (K, M) bool.
    dims : M ints summing to D.
    batch_size : rows scored at once (default: about 2^24 / K); bounds the (n, K) arrays.
    return_sources : also return the (N, M) int64 centre each slot was copied from.

    Returns
    -------
    z_completed : (N, D) of z's dtype, observed values bit-for-bit those of ``z``; a modality
        that no centre carries is filled with 0 (the training mean).
    imputed : (N, M) bool, exactly ``~mask``.
    sources : (N, M) int64, only with ``return_sources`` (−1 for observed slots and for
        modalities no centre carries).
    """
    rows = PackedRows.build(z, mask, dims)
    centers = checked_centers(centers, centers_mask, z, mask, rows.dims)
    xp = rows.xp
    pairs = CenterPairs.build(centers, centers_mask, rows.dims)
    sources = completion_sources(rows, pairs, batch_size)
    missing = ~mask
    completed = fill_from_sources(z.copy(), sources, missing, centers,
                                  xp.zeros(z.shape[1], dtype=z.dtype), rows.dims)
    return (completed, missing, sources) if return_sources else (completed, missing)
