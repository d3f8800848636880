"""A literal, loop-by-loop float64 reference of UL4M4 (docs/method.md).

Deliberately slow and obvious: plain Python loops over rows, centres and modalities, one
modality block at a time. No GEMM expansion, no masking tricks, no "sort once" shortcut.
Values at unobserved slots are never read (they are sliced out only after the mask has
said the modality is observed), so garbage there (NaN, 1e300) cannot leak into a result.

Everything here is independent of ``ul4m4_gpu``: it imports only NumPy and scikit-learn's
``check_random_state`` (the RNG protocol the library promises to follow).

Conventions (same as the library): ``z`` is packed (N, D) with modality m in columns
``offsets[m]:offsets[m + 1]``, ``D = sum(dims)``; ``mask`` (N, M) bool, True = observed;
centres (K, D) with ``centers_mask`` (K, M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

INF_REPLACEMENT = 1e9  # k-means++: +inf distances are replaced by this before squaring
SCALE_FLOOR = 1e-8  # normalisation: a std <= this becomes 1


# --------------------------------------------------------------------------- helpers


def offsets_of(dims):
    """Column offsets: modality m lives in columns offsets[m]:offsets[m + 1]."""
    out = [0]
    for d in dims:
        out.append(out[-1] + int(d))
    return out


def squared_norm(vec):
    """||vec||^2 of one modality block (a 1-D float64 array)."""
    return float(np.dot(vec, vec))


# --------------------------------------------------------------------------- distance


def partial_distance(a, a_mask, b, b_mask, dims):
    """d(a, b) = sqrt( (1/|S|) * sum_{m in S} ||a^m - b^m||^2 / d_m ), S = O_a & O_b.

    +inf when S is empty. ``a``/``b`` are packed (D,) rows, ``a_mask``/``b_mask`` (M,) bool.
    """
    off = offsets_of(dims)
    total = 0.0
    n_shared = 0
    for m in range(len(dims)):
        if a_mask[m] and b_mask[m]:
            diff = np.asarray(a[off[m]:off[m + 1]], dtype=np.float64) - np.asarray(
                b[off[m]:off[m + 1]], dtype=np.float64
            )
            total += squared_norm(diff) / dims[m]
            n_shared += 1
    if n_shared == 0:
        return math.inf
    return math.sqrt(total / n_shared)


def partial_distances(z, mask, centers, centers_mask, dims):
    """(N, K) matrix of partial distances between every row and every centre."""
    n, k = z.shape[0], centers.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        for j in range(k):
            out[i, j] = partial_distance(z[i], mask[i], centers[j], centers_mask[j], dims)
    return out


# --------------------------------------------------------------------------- k-means++


def kmeans_plusplus(z, mask, dims, n_clusters, random_state):
    """k-means++ seeding on the partial distance, with the library's exact RNG protocol.

    Returns (centers (K, D), centers_mask (K, M), seed_indices (K,) int64).
    """
    n = z.shape[0]
    n_mod = len(dims)
    rng = check_random_state(random_state)
    candidates = [i for i in range(n) if any(bool(mask[i, m]) for m in range(n_mod))]
    if n_clusters > len(candidates):
        raise ValueError(
            f"n_clusters={n_clusters} > number of rows with an observed modality "
            f"({len(candidates)})"
        )

    seeds = [candidates[rng.randint(len(candidates))]]
    while len(seeds) < n_clusters:
        weights = []
        for i in range(n):
            if not any(bool(mask[i, m]) for m in range(n_mod)):
                weights.append(0.0)
                continue
            nearest = math.inf
            for s in seeds:
                d = partial_distance(z[i], mask[i], z[s], mask[s], dims)
                if d < nearest:
                    nearest = d
            if math.isinf(nearest):
                nearest = INF_REPLACEMENT
            weights.append(nearest * nearest)
        # sequential cumulative sum; the total is its last entry
        cumsum = []
        running = 0.0
        for w in weights:
            running += w
            cumsum.append(running)
        total = running
        if total == 0.0:
            nxt = candidates[rng.randint(len(candidates))]
        else:
            u = rng.random_sample() * total
            nxt = n - 1  # clipped to N - 1
            for i in range(n):
                if cumsum[i] > u:
                    nxt = i
                    break
        seeds.append(nxt)

    centers = np.zeros((n_clusters, z.shape[1]), dtype=np.float64)
    centers_mask = np.zeros((n_clusters, n_mod), dtype=bool)
    off = offsets_of(dims)
    for k, s in enumerate(seeds):
        for m in range(n_mod):
            if mask[s, m]:
                centers_mask[k, m] = True
                centers[k, off[m]:off[m + 1]] = z[s, off[m]:off[m + 1]]
    return centers, centers_mask, np.asarray(seeds, dtype=np.int64)


# --------------------------------------------------------------------------- Lloyd


@dataclass
class KMeansResult:
    centers: np.ndarray
    centers_mask: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


def assign(z, mask, centers, centers_mask, dims):
    """Nearest centre per row (ties: lowest index) and its distance; -1 / +inf when none."""
    n, k = z.shape[0], centers.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    mind = np.full(n, math.inf, dtype=np.float64)
    for i in range(n):
        for j in range(k):
            d = partial_distance(z[i], mask[i], centers[j], centers_mask[j], dims)
            if d < mind[i]:  # strict: a later centre at the same distance never wins
                mind[i] = d
                labels[i] = j
    return labels, mind


def update(z, mask, dims, labels, centers, centers_mask):
    """Per centre and modality: mean over the members observing it (else the centre drops it).

    A centre with no members keeps its previous values and mask.
    """
    n, k = z.shape[0], centers.shape[0]
    off = offsets_of(dims)
    new_centers = np.array(centers, dtype=np.float64, copy=True)
    new_mask = np.array(centers_mask, dtype=bool, copy=True)
    for j in range(k):
        members = [i for i in range(n) if labels[i] == j]
        if not members:
            continue
        for m in range(len(dims)):
            acc = np.zeros(dims[m], dtype=np.float64)
            count = 0
            for i in members:
                if mask[i, m]:
                    for t in range(dims[m]):
                        acc[t] += z[i, off[m] + t]
                    count += 1
            if count > 0:
                new_centers[j, off[m]:off[m + 1]] = acc / count
                new_mask[j, m] = True
            else:
                new_centers[j, off[m]:off[m + 1]] = 0.0
                new_mask[j, m] = False
    return new_centers, new_mask


def lloyd(z, mask, dims, centers, centers_mask, max_iter=100, tol=1e-6, trace=None):
    """Brute-force Lloyd iterations, the protocol of docs/method.md, "Clustering".

    ``trace``: optional list; every assignment step appends (centers, centers_mask) to it,
    so a test can tell how close to a tie each assignment was.
    """
    centers = np.array(centers, dtype=np.float64, copy=True)
    centers_mask = np.array(centers_mask, dtype=bool, copy=True)
    labels, mind = assign(z, mask, centers, centers_mask, dims)
    if trace is not None:
        trace.append((centers, centers_mask))
    n_iter = 0
    while n_iter < max_iter:
        new_centers, new_mask = update(z, mask, dims, labels, centers, centers_mask)
        n_iter += 1
        max_shift = 0.0
        for j in range(centers.shape[0]):
            if all(bool(centers_mask[j, m]) == bool(new_mask[j, m]) for m in range(len(dims))):
                shift = partial_distance(
                    centers[j], centers_mask[j], new_centers[j], new_mask[j], dims
                )
            else:
                shift = math.inf
            if shift > max_shift:
                max_shift = shift
        new_labels, mind = assign(z, mask, new_centers, new_mask, dims)
        if trace is not None:
            trace.append((new_centers, new_mask))
        changed = any(int(new_labels[i]) != int(labels[i]) for i in range(z.shape[0]))
        centers, centers_mask, labels = new_centers, new_mask, new_labels
        if not changed or max_shift < tol:
            break
    inertia = 0.0
    for i in range(z.shape[0]):
        if labels[i] >= 0:
            inertia += mind[i] * mind[i]
    return KMeansResult(centers, centers_mask, labels, inertia, n_iter)


# --------------------------------------------------------------------------- completion


def candidates_of(z_row, row_mask, centers, centers_mask, dims):
    """One candidate per centre j: the row's observed blocks plus centre j's blocks on the
    modalities the row misses. Returns lists of (D,) float64 values and (M,) bool masks."""
    off = offsets_of(dims)
    cand_values, cand_masks = [], []
    for j in range(centers.shape[0]):
        values = np.zeros(len(z_row), dtype=np.float64)
        cmask = np.zeros(len(dims), dtype=bool)
        for m in range(len(dims)):
            if row_mask[m]:
                values[off[m]:off[m + 1]] = z_row[off[m]:off[m + 1]]
                cmask[m] = True
            elif centers_mask[j, m]:
                values[off[m]:off[m + 1]] = centers[j, off[m]:off[m + 1]]
                cmask[m] = True
        cand_values.append(values)
        cand_masks.append(cmask)
    return cand_values, cand_masks


def candidate_scores(z_row, row_mask, centers, centers_mask, dims, completion):
    """Score of every candidate of one row (a list of K floats).

    paper: min over every centre l of d(candidate_j, c_l); overlap: the same minimum over
    the centres l sharing an observed modality with the row (+inf when none does);
    nearest: d(row, c_j) on the row's observed modalities."""
    k = centers.shape[0]
    if completion == "nearest":
        return [partial_distance(z_row, row_mask, centers[j], centers_mask[j], dims)
                for j in range(k)]
    cand_values, cand_masks = candidates_of(z_row, row_mask, centers, centers_mask, dims)
    scores = []
    for j in range(k):
        best = math.inf
        for l in range(k):
            if completion == "overlap" and not any(
                    row_mask[m] and centers_mask[l, m] for m in range(len(dims))):
                continue
            d = partial_distance(cand_values[j], cand_masks[j], centers[l], centers_mask[l], dims)
            if d < best:
                best = d
        scores.append(best)
    return scores


def greedy_complete(z, mask, centers, centers_mask, dims, return_sources=False):
    """The paper's Algorithm 2, literally: build candidates, pick the best, copy, retire.

    Returns (z_completed, imputed) or (z_completed, imputed, sources). ``sources[i, m]`` is
    the centre each imputed slot came from, -1 where observed or where no centre carries m
    (those slots are filled with 0, the normalised training mean). A row observing no
    modality is filled with 0 entirely (the library's documented rule: such a row has
    nothing to compare a candidate with).
    """
    n, n_mod = mask.shape
    k = centers.shape[0]
    off = offsets_of(dims)
    out = np.array(z, dtype=np.float64, copy=True)
    imputed = np.zeros((n, n_mod), dtype=bool)
    sources = np.full((n, n_mod), -1, dtype=np.int64)

    for i in range(n):
        missing = [m for m in range(n_mod) if not mask[i, m]]
        if not missing:
            continue
        for m in missing:
            imputed[i, m] = True
        if len(missing) == n_mod:
            out[i] = 0.0
            continue

        scores = candidate_scores(z[i], mask[i], centers, centers_mask, dims, "paper")
        still_missing = set(missing)
        active = list(range(k))
        while still_missing and active:
            pick = active[0]
            for j in active[1:]:
                if scores[j] < scores[pick]:  # strict: ties keep the lowest j
                    pick = j
            for m in sorted(still_missing):
                if centers_mask[pick, m]:
                    out[i, off[m]:off[m + 1]] = centers[pick, off[m]:off[m + 1]]
                    sources[i, m] = pick
                    still_missing.discard(m)
            active.remove(pick)

        for m in still_missing:  # no centre carries m: the normalised mean
            out[i, off[m]:off[m + 1]] = 0.0

    if return_sources:
        return out, imputed, sources
    return out, imputed


def complete(z, mask, centers, centers_mask, dims, completion, n_candidates, temperature):
    """Any completion rule, slot by slot: for every missing modality m of a row, sort the
    centres carrying m by (score, index), keep the first ``n_candidates``, drop +inf scores
    behind a finite best, and fill with Σ w_j c_j^m / Σ w_j, w_j = exp(−(s_j − s_best)/τ)
    (all w_j = 1 when the best score is +inf). Rows observing no modality and modalities no
    centre carries get 0. Returns (z_completed, sources) with sources the best candidate."""
    n, n_mod = mask.shape
    off = offsets_of(dims)
    out = np.array(z, dtype=np.float64, copy=True)
    sources = np.full((n, n_mod), -1, dtype=np.int64)
    for i in range(n):
        missing = [m for m in range(n_mod) if not mask[i, m]]
        if not missing:
            continue
        if len(missing) == n_mod:
            out[i] = 0.0
            continue
        scores = candidate_scores(z[i], mask[i], centers, centers_mask, dims, completion)
        for m in missing:
            carriers = sorted((scores[j], j) for j in range(centers.shape[0])
                              if centers_mask[j, m])[:n_candidates]
            if carriers and math.isfinite(carriers[0][0]):
                carriers = [(s, j) for s, j in carriers if math.isfinite(s)]
            if not carriers:
                out[i, off[m]:off[m + 1]] = 0.0
                continue
            best = carriers[0][0]
            weights = [1.0 if math.isinf(best) else math.exp(-(s - best) / temperature)
                       for s, _ in carriers]
            block = np.zeros(dims[m])
            for w, (_, j) in zip(weights, carriers):
                block += w * np.asarray(centers[j, off[m]:off[m + 1]], dtype=np.float64)
            out[i, off[m]:off[m + 1]] = block / sum(weights)
            sources[i, m] = carriers[0][1]
    return out, sources


# --------------------------------------------------------------------------- normalisation


def fit_modality_stats(values, mask, dims, ddof=0):
    """Per modality and dimension: mean and std over the rows observing that modality.

    std <= 1e-8 -> 1; also 1 when the number of observing rows is <= ddof. A modality that
    no row observes raises ValueError naming its index.
    """
    n = values.shape[0]
    off = offsets_of(dims)
    mean = np.zeros(off[-1], dtype=np.float64)
    scale = np.ones(off[-1], dtype=np.float64)
    for m in range(len(dims)):
        rows = [i for i in range(n) if mask[i, m]]
        if not rows:
            raise ValueError(f"modality {m} is observed by no row")
        count = len(rows)
        for c in range(off[m], off[m + 1]):
            s = 0.0
            for i in rows:
                s += float(values[i, c])
            mu = s / count
            mean[c] = mu
            if count <= ddof:
                scale[c] = 1.0
                continue
            ss = 0.0
            for i in rows:
                dev = float(values[i, c]) - mu
                ss += dev * dev
            sd = math.sqrt(ss / (count - ddof))
            scale[c] = 1.0 if sd <= SCALE_FLOOR else sd
    return mean, scale


def normalise(values, mask, mean, scale, dims):
    """(x - mu) / sigma on observed slots, 0 on missing ones."""
    n = values.shape[0]
    off = offsets_of(dims)
    z = np.zeros((n, off[-1]), dtype=np.float64)
    for i in range(n):
        for m in range(len(dims)):
            if mask[i, m]:
                for c in range(off[m], off[m + 1]):
                    z[i, c] = (float(values[i, c]) - mean[c]) / scale[c]
    return z


# --------------------------------------------------------------------------- ridge completion
# (ul4m4_gpu/core/ridge.py, docs/method.md "Ridge completion")


def ridge_cross_moments(z, mask, dims):
    """S = Σ_i z_i z_iᵀ (D, D) and the pair counts n_ab (M, M), float64, by a literal loop
    over rows and modality pairs; only blocks of modalities the row observes are read."""
    off = offsets_of(dims)
    n_modalities = len(dims)
    products = np.zeros((off[-1], off[-1]))
    counts = np.zeros((n_modalities, n_modalities))
    for i in range(z.shape[0]):
        for a in range(n_modalities):
            for b in range(n_modalities):
                if mask[i, a] and mask[i, b]:
                    za = np.asarray(z[i, off[a]:off[a + 1]], dtype=np.float64)
                    zb = np.asarray(z[i, off[b]:off[b + 1]], dtype=np.float64)
                    products[off[a]:off[a + 1], off[b]:off[b + 1]] += np.outer(za, zb)
                    counts[a, b] += 1
    return products, counts


def ridge_second_moments(products, counts, dims):
    """C with block (a, b) = S_ab / n_ab, 0 where n_ab = 0, block by block."""
    off = offsets_of(dims)
    c = np.zeros_like(products)
    for a in range(len(dims)):
        for b in range(len(dims)):
            if counts[a, b] > 0:
                c[off[a]:off[a + 1], off[b]:off[b + 1]] = (
                    products[off[a]:off[a + 1], off[b]:off[b + 1]] / counts[a, b])
    return c


def psd_projection(c):
    """Σ_k max(w_k, 0) v_k v_kᵀ over the eigenpairs of the symmetric ``c``, one at a time."""
    values, vectors = np.linalg.eigh(c)
    out = np.zeros_like(c)
    for k in range(values.size):
        if values[k] > 0:
            out += values[k] * np.outer(vectors[:, k], vectors[:, k])
    return out


def ridge_predict(c, z, mask, dims, alpha):
    """Per row: ẑ_Q = C_QO x with (C_OO + λ I) x = z_O solved directly, λ = α · mean diag
    C_OO (α where that mean is 0); 0 on observed slots and on every slot of a row that
    observes nothing."""
    off = offsets_of(dims)
    out = np.zeros((z.shape[0], off[-1]))
    for i in range(z.shape[0]):
        observed, missing = [], []
        for m in range(len(dims)):
            (observed if mask[i, m] else missing).extend(range(off[m], off[m + 1]))
        if not observed or not missing:
            continue
        gram = c[np.ix_(observed, observed)].copy()
        mean_diagonal = sum(gram[k, k] for k in range(len(observed))) / len(observed)
        penalty = alpha * (mean_diagonal if mean_diagonal > 0 else 1.0)
        for k in range(len(observed)):
            gram[k, k] += penalty
        x = np.linalg.solve(gram, np.array([float(z[i, p]) for p in observed]))
        for q in missing:
            out[i, q] = np.dot(c[q, observed], x)
    return out

# --------------------------------------------------------------------------- KNN completion
# (docs/method.md, "KNN completion"; the library's ul4m4_gpu/core/knn.py)


def nearest_centers(z_row, row_mask, centers, centers_mask, dims, n_probe):
    """The ``n_probe`` centres nearest to one row by the partial distance, sorted by
    (distance, index): +inf distances rank after every finite one, ties by lowest index."""
    ranked = sorted((partial_distance(z_row, row_mask, centers[j], centers_mask[j], dims), j)
                    for j in range(centers.shape[0]))
    return [j for _, j in ranked[:n_probe]]


def knn_complete(z, mask, donors_z, donors_mask, dims, n_neighbors, allowed=None):
    """Brute-force partial-distance KNN, slot by slot.

    For every missing modality m of row i: the donors j (in ``allowed[i]``, a collection of
    donor indices; every donor when ``allowed`` is None) that observe m and share an observed
    modality with the row, sorted by (d(row, donor), j), the first ``n_neighbors`` kept; the
    slot is their plain mean, or 0 (the normalised training mean) when there is none.

    Returns (z_completed float64, margins (N, M) float64): per filled slot, the distance
    gap between the last donor kept and the first one left out (+inf when none is left
    out, nan for observed or mean-filled slots), so that a test can skip near-ties.
    """
    n, n_mod = mask.shape
    off = offsets_of(dims)
    out = np.array(z, dtype=np.float64, copy=True)
    margins = np.full((n, n_mod), np.nan)
    for i in range(n):
        pool = range(donors_z.shape[0]) if allowed is None else sorted(allowed[i])
        distances = {j: partial_distance(z[i], mask[i], donors_z[j], donors_mask[j], dims)
                     for j in pool}
        for m in range(n_mod):
            if mask[i, m]:
                continue
            ranked = sorted((distances[j], j) for j in pool
                            if donors_mask[j, m] and math.isfinite(distances[j]))
            kept = ranked[:n_neighbors]
            if not kept:
                out[i, off[m]:off[m + 1]] = 0.0
                continue
            block = np.zeros(dims[m])
            for _, j in kept:
                block += np.asarray(donors_z[j, off[m]:off[m + 1]], dtype=np.float64)
            out[i, off[m]:off[m + 1]] = block / len(kept)
            left_out = ranked[n_neighbors:]
            margins[i, m] = left_out[0][0] - kept[-1][0] if left_out else math.inf
    return out, margins
