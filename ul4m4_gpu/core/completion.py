"""Completion of missing modalities from the centres (docs/method.md, "Completion").

Every rule scores each candidate j (the row's observed part plus centre j's values on the
missing modalities Q) and fills each missing modality m from the best-scoring candidates
whose centre carries m:

* ``"paper"``: the paper's Algorithm 2, score_j = min_l d(candidate_j, c_l) over every
  centre l. A centre sharing no observed modality with the row compares only the
  candidate's filled-in part with itself, so such a candidate scores 0 (the blind spot).
* ``"overlap"``: the same minimum over the centres l that share an observed modality with
  the row (+inf when none does).
* ``"nearest"``: score_j = the row's partial distance to c_j on its observed modalities
  (the natural k-means imputation; no K×K term).

With ``n_candidates`` r = 1 slot m is copied from the single best candidate (the paper's
greedy loop, whose candidates never change, is exactly that); with r > 1 it is the
softmax-weighted mean of the r best, w_j ∝ exp(−(s_j − s_min)/τ) (``temperature`` τ).
``completion="paper", n_candidates=1`` is the paper's rule exactly.

The paper/overlap scores come without any per-row loop from

    score_j = min_l sqrt( (A_il + B^Q_jl) / (|O_i∩C_l| + |Q∩C_j∩C_l|) )

with A the row-to-centre sums of :func:`masked_sq_sums` and B^Q = Σ_{m∈Q} P_m, P_m the
(K, K) per-modality centre-to-centre squared distances over d_m (zero unless both carry m).
Everything but A depends on the row's missing pattern only, so per distinct pattern of a
batch the (U, K, K) tables of :func:`pattern_tables` are built once, and the ``complete``
kernels do the minimum, the choice and the fill without any (n, K, K) array.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .backend import array_module, to_numpy
from .distances import (
    checked_centers,
    column_layout,
    distances_from_sums,
    masked_sq_sums,
    squared_norms,
)
from ..kernels import complete as complete_kernels
from .kmeans import PackedRows, default_batch_size
from .validation import check_int, checked_random_state

#: The rules that fill from the fitted centres (the ``complete`` kernels).
CENTRE_COMPLETIONS = ("paper", "overlap", "nearest")
#: Every ``completion``: the centre rules, the ridge and KNN completions
#: (:mod:`ul4m4_gpu.core.ridge`, :mod:`ul4m4_gpu.core.knn`) and ``"auto"``, their blend
#: (:mod:`ul4m4_gpu.core.rules`).
COMPLETIONS = CENTRE_COMPLETIONS + ("ridge", "knn", "auto")
#: Defaults of ``UL4M4Imputer`` and :func:`greedy_complete`, chosen by the quality harness
#: with a rule written down before the run (BENCHMARKS.md, "Choice of the default
#: completion"): the nearest-centre score, a soft fill over the 5 best candidates.
DEFAULT_COMPLETION, DEFAULT_N_CANDIDATES = "nearest", 5
#: Defaults of the KNN completion: donors averaged per slot, clusters searched, donors kept.
DEFAULT_N_NEIGHBORS, DEFAULT_N_PROBE, DEFAULT_MAX_DONORS = 10, 8, 20_000
#: The rules ``completion="auto"`` blends (:mod:`ul4m4_gpu.core.rules`), in the column
#: order of its weights.
BLEND_RULE_NAMES = ("nearest", "ridge", "knn", "mean")
#: :func:`greedy_complete`'s temperature, and ``"auto"``'s when no row can be held out.
DEFAULT_TEMPERATURE = 0.1
#: The temperatures ``"auto"`` tries (distances are in per-dimension standard deviations).
TEMPERATURE_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
#: Training rows ``"auto"`` holds a modality out of.
TEMPERATURE_SAMPLE_ROWS = 2000
#: Share of a hard pick's fills from centres sharing no observed modality with the row
#: above which ``transform`` warns.
BLIND_FILL_WARNING = 0.10
#: Largest (pattern, candidate, centre) table built for one batch; a batch with more
#: distinct missing patterns than fit is split in halves.
PATTERN_TRIPLES_PER_BATCH = 1 << 24


class CompletionWarning(UserWarning):
    """Where a completion's fills came from deserves a look (see ``CompletionReport``)."""


def check_completion(completion, n_candidates, temperature, n_neighbors=DEFAULT_N_NEIGHBORS,
                     n_probe=DEFAULT_N_PROBE, max_donors=DEFAULT_MAX_DONORS,
                     allow_auto: bool = True):
    """Validate the completion parameters; raises ``ValueError`` naming the argument.
    ``temperature`` is a finite float > 0, or ``"auto"`` where ``allow_auto``;
    ``n_candidates``, ``n_neighbors``, ``n_probe`` and ``max_donors`` are ints >= 1."""
    if not (isinstance(completion, str) and completion in COMPLETIONS):
        raise ValueError(f"completion must be one of {COMPLETIONS}, got {completion!r}")
    for name, value in (("n_candidates", n_candidates), ("n_neighbors", n_neighbors),
                        ("n_probe", n_probe), ("max_donors", max_donors)):
        check_int(name, value)
    if allow_auto and isinstance(temperature, str) and temperature == "auto":
        return
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not np.isfinite(temperature) or not temperature > 0):
        expected = "a finite float > 0" + (" or 'auto'" if allow_auto else "")
        raise ValueError(f"temperature must be {expected}, got {temperature!r}")


@dataclass(frozen=True)
class CompletionRule:
    """How missing slots are filled: ``completion`` in :data:`COMPLETIONS`,
    ``n_candidates`` r ≥ 1, ``temperature`` τ > 0 (a number; used only when r > 1) of the
    centre rules (and of ``"auto"``'s nearest-centre part); ``n_neighbors`` k ≥ 1 and
    ``n_probe`` ≥ 1 of the KNN completion (and of ``"auto"``'s)."""

    completion: str = DEFAULT_COMPLETION
    n_candidates: int = DEFAULT_N_CANDIDATES
    temperature: float = DEFAULT_TEMPERATURE
    n_neighbors: int = DEFAULT_N_NEIGHBORS
    n_probe: int = DEFAULT_N_PROBE

    def __post_init__(self):
        check_completion(self.completion, self.n_candidates, self.temperature,
                         self.n_neighbors, self.n_probe, allow_auto=False)

    @property
    def from_centres(self) -> bool:
        """Whether the rule fills from the centres only (:data:`CENTRE_COMPLETIONS`)."""
        return self.completion in CENTRE_COMPLETIONS

    def capped(self, n_centers: int) -> "CompletionRule":
        """This rule with ``n_candidates`` and ``n_probe`` at most ``n_centers`` (K): there
        are no more candidates than centres, and the (n, M, r) arrays are sized by r, so
        ``n_candidates=10**12`` allocates no more than r = K would (the fill is the same);
        probing K clusters is probing them all."""
        if self.n_candidates <= n_centers and self.n_probe <= n_centers:
            return self
        return dataclasses.replace(self, n_candidates=min(self.n_candidates, n_centers),
                                   n_probe=min(self.n_probe, n_centers))


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


def pattern_tables(pairs: CenterPairs, patterns, completion: str):
    """The per-pattern tables of the ``complete`` scoring kernel.

    patterns : (U, M) 0/1 of the centres' dtype, 1 = missing. Returns ``inv``, ``base``
    (U, K, K) indexed [pattern, centre l, candidate j] and ``blind`` (U, K) (see
    :mod:`ul4m4_gpu.kernels.complete`), and ``overlap`` (U, K) bool: centre l shares an
    observed modality with the pattern. B^Q and its counts are symmetric in (j, l), so the
    (U, K·K) sums serve either index order. B^Q = Σ_{m∈Q} P_m is added up in ascending m by
    the ``pattern_sums`` kernel, not by a GEMM over the batch's U patterns, so a pattern's
    tables are bitwise the same whatever other patterns share its batch; the counts are
    small integers, exact in any order.
    """
    xp = array_module(patterns)
    k = pairs.n_centers
    carried = pairs.centers_mask.astype(patterns.dtype)
    shared_observed = (1 - patterns) @ carried.T                    # |O∩C_l|, (U, K)
    sums = xp.empty((patterns.shape[0], k * k), dtype=pairs.pair_sums.dtype)
    complete_kernels.pattern_sums(patterns, pairs.pair_sums, sums)
    sums = sums.reshape(-1, k, k)                                   # B^Q_lj
    counts = (patterns @ pairs.pair_shared).reshape(-1, k, k)       # |Q∩C_j∩C_l|
    overlap = shared_observed > 0
    by_l = overlap[:, :, None]
    inf = xp.full((), xp.inf, dtype=patterns.dtype)
    inv = xp.where(by_l, 1 / xp.maximum(shared_observed[:, :, None] + counts, 1), 0)
    inv = inv.astype(patterns.dtype, copy=False)
    base = xp.where(by_l, sums * inv, inf)
    if completion == "paper":
        blind = xp.where(~by_l & (counts > 0), sums / xp.maximum(counts, 1), inf)
        blind = blind.min(axis=1)
    else:
        blind = xp.full((patterns.shape[0], k), xp.inf, dtype=patterns.dtype)
    return inv, base, blind, overlap


def candidate_scores(rows: PackedRows, index, pairs: CenterPairs, completion: str,
                     tables, which):
    """(n, K) scores of the rows selected by ``index`` (an index array) under
    ``completion``; +inf where a candidate has nothing to be compared on. ``tables`` come
    from :func:`pattern_tables` and ``which`` (n,) from :func:`_missing_patterns`."""
    xp = rows.xp
    sums, shared = masked_sq_sums(
        rows.z[index], rows.mask[index], pairs.centers, pairs.centers_mask, rows.dims,
        center_norms=pairs.center_norms, row_norms=rows.row_norms[index],
    )
    if completion == "nearest":
        return distances_from_sums(sums, shared)
    inv, base, blind, _ = tables
    scores = xp.empty_like(sums)
    complete_kernels.candidate_scores(sums, which, inv, base, blind, scores)
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


def choose_candidates(scores, missing, centers_mask, n_candidates: int):
    """The candidates each missing slot is filled from.

    scores : (n, K); missing : (n, M) bool; centers_mask : (K, M) bool.
    Returns chosen (n, M, r) int64 and their scores (n, M, r) of the scores' dtype: the r
    lowest-scoring centres carrying m, best first (ties: lowest index); +inf scores are
    dropped unless no centre with a finite score carries m; −1 / +inf pad the rest, and
    fill observed slots and modalities no centre carries.
    """
    xp = array_module(scores)
    shape = (*missing.shape, n_candidates)
    chosen = xp.empty(shape, dtype=xp.int64)
    chosen_scores = xp.empty(shape, dtype=scores.dtype)
    complete_kernels.choose_candidates(scores, missing, centers_mask, chosen, chosen_scores)
    return chosen, chosen_scores


#: Beyond this many temperatures behind the best score a candidate's weight exp(−gap/τ)
#: is below float64's smallest subnormal (exp(−745.2)), so exactly 0: the gap is clipped
#: there before dividing, which keeps gap/τ finite for every τ > 0.
WEIGHT_CUTOFF = 746.0


def candidate_weights(chosen, chosen_scores, temperature: float):
    """(n, M, r) weights of the chosen candidates (of the scores' dtype), summing to 1 over
    each slot that has one: exp(−(s − s_best)/τ), equal weights when every chosen score is
    +inf, 0 on padding.

    Computed in float64 as exp(−min(gap, WEIGHT_CUTOFF·τ)/τ), so no τ > 0 overflows,
    however small (1e-300, a subnormal): a τ below every nonzero gap of the scores gives
    the τ → 0 limit, equal weights on the candidates tied with the best (the hard pick
    when none ties), never 0/0; the best always weighs exp(0) = 1 before normalising."""
    xp = array_module(chosen_scores)
    valid = chosen >= 0
    best = chosen_scores[:, :, :1]
    finite = xp.isfinite(best)
    gap = xp.where(valid & finite, chosen_scores - xp.where(finite, best, 0), 0)
    temperature = float(temperature)
    scaled = xp.minimum(gap.astype(xp.float64), WEIGHT_CUTOFF * temperature) / temperature
    weights = xp.where(valid, xp.exp(-scaled), 0)
    total = weights.sum(axis=2, keepdims=True)
    return (weights / xp.where(total > 0, total, 1)).astype(chosen_scores.dtype)


@dataclass
class CompletionReport:
    """Where the fills of one completion came from, per modality ((M,) NumPy arrays).

    filled : int64, missing slots filled; mean_filled : int64, of those filled with the
    training mean (no centre carries the modality, or the row observes nothing);
    blind_weight : float64, the fills' weight drawn from centres sharing no observed modality
    with the row (a hard pick counts 1 per such fill); zero_score : int64, fills whose best
    candidate scores exactly 0; rows_without_modality : int, rows observing no modality;
    weights : for ``completion="auto"``, the (M, 4) float64 weight each rule of
    :data:`BLEND_RULE_NAMES` carried per modality, else None.
    Reports of disjoint row sets add up (``+``).
    """

    names: tuple
    filled: np.ndarray
    mean_filled: np.ndarray
    blind_weight: np.ndarray
    zero_score: np.ndarray
    rows_without_modality: int
    weights: np.ndarray | None = None

    def __add__(self, other: "CompletionReport") -> "CompletionReport":
        return CompletionReport(self.names, self.filled + other.filled,
                                self.mean_filled + other.mean_filled,
                                self.blind_weight + other.blind_weight,
                                self.zero_score + other.zero_score,
                                self.rows_without_modality + other.rows_without_modality,
                                self.weights)

    @property
    def _from_centres(self) -> np.ndarray:
        return np.maximum(self.filled - self.mean_filled, 1)

    @property
    def blind_share(self) -> np.ndarray:
        """(M,) share of the centre fills' weight from centres sharing nothing observed."""
        return self.blind_weight / self._from_centres

    @property
    def zero_score_share(self) -> np.ndarray:
        """(M,) share of the centre fills whose best candidate scores exactly 0."""
        return self.zero_score / self._from_centres

    @property
    def overall_blind_share(self) -> float:
        """Share of all centre fills' weight drawn from centres sharing nothing observed."""
        return float(self.blind_weight.sum() / max(int((self.filled - self.mean_filled).sum()), 1))

    def as_dict(self) -> dict:
        """``{modality: {"filled", "mean_filled", "blind_share", "zero_score_share"}}`` plus
        ``"rows_without_modality"``: plain Python numbers."""
        per_modality = {
            name: {"filled": int(self.filled[m]), "mean_filled": int(self.mean_filled[m]),
                   "blind_share": float(self.blind_share[m]),
                   "zero_score_share": float(self.zero_score_share[m])}
            for m, name in enumerate(self.names)}
        if self.weights is not None:
            for m, name in enumerate(self.names):
                per_modality[name]["weights"] = dict(zip(BLEND_RULE_NAMES,
                                                         map(float, self.weights[m])))
        return {**per_modality, "rows_without_modality": self.rows_without_modality}

    def summary(self) -> str:
        """One line per modality, for the CLI."""
        lines = [f"  {name}: {self.filled[m]:,} filled ({self.mean_filled[m]:,} with the mean); "
                 f"{self.blind_share[m]:.1%} from centres sharing no observed modality with "
                 f"the row, {self.zero_score_share[m]:.1%} at score 0"
                 for m, name in enumerate(self.names)]
        if self.weights is not None:
            lines += [f"  {name}: auto weights " + ", ".join(
                f"{rule} {w:.3f}" for rule, w in zip(BLEND_RULE_NAMES, self.weights[m]))
                for m, name in enumerate(self.names)]
        if self.rows_without_modality:
            lines.append(f"  {self.rows_without_modality:,} rows observe no modality: "
                         "filled with the training mean")
        return "\n".join(lines)


@dataclass
class _Tally:
    """Device-side running sums of a :class:`CompletionReport` (one host transfer at the
    end): rows filled, mean_filled, blind weight, zero score; the empty rows in [4, 0]."""

    xp: object
    n_modalities: int
    sums: object = None

    def __post_init__(self):
        self.sums = self.xp.zeros((5, self.n_modalities), dtype=self.xp.float64)

    def add(self, missing, chosen, weights, chosen_scores, overlap_of_chosen, empty):
        xp = self.xp
        has_source = chosen[:, :, 0] >= 0
        blind = (weights * ~overlap_of_chosen).sum(axis=2)
        self.sums[0] += missing.sum(axis=0)
        self.sums[1] += (missing & ~has_source).sum(axis=0)
        self.sums[2] += xp.where(has_source, blind, 0).sum(axis=0)
        self.sums[3] += (has_source & (chosen_scores[:, :, 0] == 0)).sum(axis=0)
        self.sums[4, 0] += empty.sum()

    def report(self, names) -> CompletionReport:
        sums = to_numpy(self.sums)
        return CompletionReport(tuple(names), sums[0].astype(np.int64), sums[1].astype(np.int64),
                                sums[2], sums[3].astype(np.int64), int(sums[4, 0]))


def complete_rows(rows: PackedRows, pairs: CenterPairs, rule: CompletionRule, out,
                  source_values, default, batch_size: int | None = None, progress=None,
                  names=None):
    """Fill every missing slot of ``out`` in place by ``rule``, scoring the incomplete rows
    in batches of ``batch_size`` (default: about 2^24 / K rows, bounding the (n, K) arrays);
    ``rule.n_candidates`` is capped at K first (:meth:`CompletionRule.capped`).

    rows : the normalised rows; out : (N, D) array written on missing slots only;
    source_values : (K, D) centre values in ``out``'s space; default : (D,) the value of a
    slot no candidate can fill (the training mean). A row observing no modality is filled
    with ``default`` entirely. ``progress`` (a tqdm bar, optional) is advanced by the rows
    done; ``names`` (M strings) label the report.

    Returns the (N, M) int64 best source of every slot (−1 for observed and mean-filled
    slots) and the :class:`CompletionReport`.
    """
    check_int("batch_size", batch_size, allow_none=True)
    rule = rule.capped(pairs.n_centers)
    xp = rows.xp
    n_modalities = len(rows.dims)
    sources = xp.full(rows.mask.shape, -1, dtype=xp.int64)
    incomplete = xp.flatnonzero(~rows.mask.all(axis=1))
    batch_size = batch_size or default_batch_size(int(incomplete.size), pairs.n_centers)
    layout = column_layout(rows.dims, xp)
    tally = _Tally(xp, n_modalities)
    for start in range(0, incomplete.size, batch_size):
        index = incomplete[start:start + batch_size]
        _complete_batch(rows, index, pairs, rule, out, source_values, default, layout,
                        sources, tally)
        if progress is not None:
            progress.update(int(index.size))
    names = names or tuple(f"m{m}" for m in range(n_modalities))
    return sources, tally.report(names)


def _complete_batch(rows, index, pairs, rule, out, source_values, default, layout, sources,
                    tally):
    """One batch of :func:`complete_rows`; halves the batch while its distinct missing
    patterns would need (U, K, K) tables larger than PATTERN_TRIPLES_PER_BATCH."""
    xp = rows.xp
    missing = ~rows.mask[index]
    patterns, which = _missing_patterns(missing, rows.z.dtype)
    if patterns.shape[0] * pairs.n_centers ** 2 > PATTERN_TRIPLES_PER_BATCH and index.size > 1:
        half = index.size // 2
        for part in (index[:half], index[half:]):
            _complete_batch(rows, part, pairs, rule, out, source_values, default, layout,
                            sources, tally)
        return
    tables = pattern_tables(pairs, patterns, rule.completion)
    scores = candidate_scores(rows, index, pairs, rule.completion, tables, which)
    chosen, chosen_scores = choose_candidates(scores, missing, pairs.centers_mask,
                                              rule.n_candidates)
    empty = missing.all(axis=1)
    chosen[empty] = -1
    weights = candidate_weights(chosen, chosen_scores, rule.temperature)
    weighted_fill(out, index, missing, chosen, weights, source_values, default, layout)
    sources[index] = chosen[:, :, 0]
    overlap = tables[3][which[:, None, None], xp.maximum(chosen, 0)]
    tally.add(missing, chosen, weights, chosen_scores, overlap, empty)


def choose_temperature(rows: PackedRows, pairs: CenterPairs, completion: str,
                       n_candidates: int, random_state=None,
                       grid=TEMPERATURE_GRID, sample_rows: int = TEMPERATURE_SAMPLE_ROWS):
    """The temperature of ``grid`` whose soft fill best reconstructs held-out modalities.

    Up to ``sample_rows`` training rows observing at least two modalities are drawn
    (seeded by ``random_state``); each hides one of its observed modalities, drawn
    uniformly; every τ completes the sample (:func:`complete_rows`), and the τ whose
    fill of the hidden slots has the lowest mean squared error per dimension (normalised
    space) wins (ties: the smaller τ). Returns a float; :data:`DEFAULT_TEMPERATURE` with a ``UserWarning`` when no
    training row observes two modalities.
    """
    rows_held, held = held_out_sample(to_numpy(rows.mask), checked_random_state(random_state),
                                      sample_rows)
    if rows_held.size == 0:
        warnings.warn("temperature='auto': no training row observes two modalities, so none "
                      f"can be held out; using temperature={DEFAULT_TEMPERATURE}",
                      UserWarning, stacklevel=3)
        return DEFAULT_TEMPERATURE
    sample, truth, hidden_columns = hide_held_out(rows, rows_held, held)
    xp = rows.xp
    default = xp.zeros(rows.z.shape[1], dtype=rows.z.dtype)
    errors = []
    for temperature in grid:
        filled = truth.copy()
        complete_rows(sample, pairs, CompletionRule(completion, n_candidates, temperature),
                      filled, pairs.centers, default)
        diff = xp.where(hidden_columns, filled - truth, 0)
        errors.append(float((diff * diff).sum() / hidden_columns.sum()))
    return float(grid[int(np.argmin(errors))])


def held_out_sample(observed, rng, sample_rows: int = TEMPERATURE_SAMPLE_ROWS):
    """The rows a held-out check hides a modality of (``temperature="auto"``, the ridge
    penalty's cross-validation, ``completion="auto"``'s weights): up to ``sample_rows``
    rows of the (N, M) bool NumPy ``observed`` that observe ≥ 2 modalities, drawn without
    replacement by the ``RandomState`` ``rng`` (sorted), and for each one of its observed
    modalities, drawn uniformly. Returns (rows (s,) int64, held (s,) int64) NumPy; empty
    when no row observes two modalities."""
    eligible = np.flatnonzero(observed.sum(axis=1) >= 2)
    if eligible.size == 0:
        return eligible.astype(np.int64), eligible.astype(np.int64)
    rows = np.sort(rng.choice(eligible, size=min(sample_rows, eligible.size), replace=False))
    held = np.array([rng.choice(np.flatnonzero(observed[i])) for i in rows], dtype=np.int64)
    return rows.astype(np.int64), held


def hide_held_out(rows: PackedRows, index, held):
    """The rows ``index`` (s,) with modality ``held`` (s,) (NumPy int64, from
    :func:`held_out_sample`) hidden: (their :class:`PackedRows` with the modality masked,
    their normalised values (s, D) with it, (s, D) bool: the hidden columns)."""
    xp = rows.xp
    at = xp.asarray(index)
    mask = rows.mask[at].copy()
    mask[xp.arange(index.size), xp.asarray(held)] = False
    truth = rows.z[at]
    hidden_columns = (~mask & rows.mask[at])[:, column_layout(rows.dims, xp)[0]]
    return PackedRows.build(truth, mask, rows.dims), truth, hidden_columns


def weighted_fill(out, rows, missing, chosen, weights, values, default, layout):
    """Write Σ_t weights · values[chosen] into the missing slots of the rows ``rows`` (n,)
    of ``out`` in place (``default`` where a slot has no candidate), with the
    ``weighted_fill`` kernel (CPU twin or CUDA). missing : (n, M) bool; chosen, weights :
    (n, M, r); values : (K, D); default : (D,); layout : :func:`column_layout`."""
    limit = np.finfo(values.dtype).max.astype(values.dtype)
    complete_kernels.weighted_fill(out, rows, missing, chosen, weights.astype(values.dtype),
                                   values, default.astype(values.dtype), *layout, limit)


def greedy_complete(z, mask, centers, centers_mask, dims, batch_size: int | None = None,
                    return_sources: bool = False, *, completion: str = DEFAULT_COMPLETION,
                    n_candidates: int = DEFAULT_N_CANDIDATES,
                    temperature: float = DEFAULT_TEMPERATURE):
    """Fill every missing modality of normalised rows from the centres.

    Parameters
    ----------
    z : (N, D) float32/float64 array (NumPy or CuPy), normalised, finite where observed
        (else ValueError naming the modality and rows); missing slots are ignored.
    mask : (N, M) bool, True where observed.
    centers : (K, D) float array; values on modalities a centre lacks are ignored.
    centers_mask : (K, M) bool.
    dims : M ints summing to D.
    batch_size : rows scored at once (default: about 2^24 / K); bounds the (n, K) arrays.
    return_sources : also return the (N, M) int64 best-scoring centre of each slot.
    completion, n_candidates, temperature : the completion rule, as in
        :class:`~ul4m4_gpu.UL4M4Imputer` (``temperature`` a number here);
        ``completion="paper", n_candidates=1`` is the paper's Algorithm 2 exactly.

    Returns
    -------
    z_completed : (N, D) of z's dtype, observed values bit-for-bit those of ``z``; a modality
        that no centre carries, and every modality of a row observing none, is filled with 0
        (the training mean).
    imputed : (N, M) bool, exactly ``~mask``.
    sources : (N, M) int64, only with ``return_sources`` (−1 for observed slots and for
        slots filled with 0).
    """
    rule = CompletionRule(completion, n_candidates, temperature)
    rows = PackedRows.build(z, mask, dims)
    centers, centers_mask = checked_centers(centers, centers_mask, rows.dims, z.dtype, like=z)
    xp = rows.xp
    pairs = CenterPairs.build(centers, centers_mask, rows.dims)
    completed = z.copy()
    sources, _ = complete_rows(rows, pairs, rule, completed, centers,
                               xp.zeros(z.shape[1], dtype=z.dtype), batch_size)
    missing = ~mask
    return (completed, missing, sources) if return_sources else (completed, missing)
