"""Ridge completion: each missing modality predicted linearly from the row's observed ones
(docs/method.md, "Ridge completion").

For a row with observed columns O and missing columns Q (normalised space, so the training
mean is 0), the prediction is

    ẑ_Q = W_{O→Q} z_O,   W_{O→Q} = C_QO (C_OO + λ_O I)⁻¹,   λ_O = α · mean(diag C_OO),

where C (D × D, float64) estimates the second moments E[z zᵀ]: block (a, b) is
S_ab / n_ab, with S = Σ_i z_i z_iᵀ over the training rows (z zero on missing slots) and n_ab
the number of rows observing both a and b (0 where n_ab = 0). Blocks estimated from different
row sets need not form a positive semi-definite matrix (on mfeat with 60 % of the slots
missing the smallest eigenvalue is −5 for a mean diagonal of 1, and unprojected solves blow
up), so C is replaced by its nearest positive semi-definite matrix in Frobenius norm (the
eigenvalues clipped at 0) before any solve. Then every C_OO + λ_O I is positive definite.

* :class:`CrossMoments` holds S and the pair counts; the moments of disjoint row sets add up
  (``a + b``), so in-memory, streamed and Dask fits get the same C up to the float64
  round-off of the summation order.
* :func:`fit_ridge` picks α from :data:`ALPHA_GRID` by k-fold cross-validation on the
  moments (fold f's model comes from the total minus fold f's moments: no pass over rows per
  fold) and returns a :class:`RidgeCompletion`.
* :meth:`RidgeCompletion.predict` solves once per distinct missing pattern (cached across
  batches) and applies W to the pattern's rows in fixed-shape tiles, so a row's prediction
  is bitwise independent of the other rows of its batch.

Memory: the D × D float64 moments take 8·D² bytes (3.4 MB at D = 649, 134 MB at D = 4096);
fitting needs a few such matrices at once (the moments of the folds, the eigendecomposition).
Beyond D = :data:`MAX_RIDGE_DIMENSION` (2 GiB per matrix) the ridge completion refuses with a
``ValueError`` naming D and the bytes.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .backend import array_module, to_device, to_numpy
from .completion import _missing_patterns, held_out_sample
from .normalise import expand_mask
from .tiled import row_tiled_matmul
from .validation import check_finite_packed, check_int, check_packed, checked_random_state

#: Widest packed row (D) the ridge completion takes: its D × D float64 moments then hold
#: 8·D² = 2 GiB.
MAX_RIDGE_DIMENSION = 16384
#: The α of λ_O = α · mean(diag C_OO) that :func:`fit_ridge` chooses from (ascending).
ALPHA_GRID = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
#: :func:`fit_ridge`'s α when no training row observes two modalities.
DEFAULT_ALPHA = 1.0
#: Folds of the cross-validation (each costs one D × D eigendecomposition and one per
#: distinct observed pattern of its held-out rows).
DEFAULT_FOLDS = 3
#: Training rows the cross-validation holds a modality out of (as ``temperature="auto"``).
CV_SAMPLE_ROWS = 2000
#: Bytes of per-pattern weights a :class:`RidgeCompletion` caches (least recently used
#: patterns are dropped beyond it).
PATTERN_CACHE_BYTES = 1 << 28


def check_ridge_dimension(n_columns: int) -> None:
    """Raise a one-line ``ValueError`` when D = ``n_columns`` exceeds
    :data:`MAX_RIDGE_DIMENSION` (the D × D float64 moments would not fit the stated bound)."""
    if n_columns > MAX_RIDGE_DIMENSION:
        raise ValueError(
            f"completion='ridge' needs a D x D float64 second-moment matrix: D = {n_columns} "
            f"would take {8 * n_columns ** 2 / 2 ** 30:.1f} GiB (limit D <= "
            f"{MAX_RIDGE_DIMENSION}, {8 * MAX_RIDGE_DIMENSION ** 2 / 2 ** 30:.0f} GiB); use "
            "completion='nearest' instead")


@dataclass
class CrossMoments:
    """Additive second-moment statistics of normalised rows.

    dims : M ints; n_rows : rows seen; products : (D, D) float64 S = Σ_i z_i z_iᵀ with z zero
    on missing slots; pair_counts : (M, M) float64 n_ab = rows observing both a and b (exact
    integers up to 2^53). Both arrays on one device (NumPy or CuPy).

    ``a + b`` (and ``a − b``, for cross-validation folds) combine the statistics of disjoint
    row sets. The counts are exact; the products are float64 sums, so the moments of one row
    set summed in another batch order (other batch sizes, streaming, Dask partitions) can
    differ by round-off, about ε · (number of batches + the GEMM's own summation depth)
    relative to Σ |z z| — 1e-13 relative on normalised data, far below anything the solves
    resolve, but not bitwise.
    """

    dims: tuple
    n_rows: int
    products: object
    pair_counts: object

    @classmethod
    def of(cls, z, mask, dims) -> "CrossMoments":
        """The moments of one batch: z (n, D) float32/float64 normalised (values on missing
        slots are ignored), mask (n, M) bool; one float64 GEMM zᵀz and one maskᵀmask.
        Raises ``ValueError`` on NaN/inf in observed slots or D > MAX_RIDGE_DIMENSION."""
        dims = check_packed(z, mask, dims)
        check_ridge_dimension(z.shape[1])
        check_finite_packed(z, mask, dims)
        xp = array_module(z, mask)
        observed = xp.where(expand_mask(mask, dims), z, 0).astype(xp.float64)
        flags = mask.astype(xp.float64)
        return cls(dims, int(z.shape[0]), observed.T @ observed, flags.T @ flags)

    @classmethod
    def empty(cls, dims, xp=np) -> "CrossMoments":
        """The moments of no rows, on the device of array module ``xp``."""
        dims = tuple(int(d) for d in dims)
        check_ridge_dimension(sum(dims))
        return cls(dims, 0, xp.zeros((sum(dims), sum(dims))),
                   xp.zeros((len(dims), len(dims))))

    def __add__(self, other: "CrossMoments") -> "CrossMoments":
        return CrossMoments(self.dims, self.n_rows + other.n_rows,
                            self.products + other.products, self.pair_counts + other.pair_counts)

    def __sub__(self, other: "CrossMoments") -> "CrossMoments":
        return CrossMoments(self.dims, self.n_rows - other.n_rows,
                            self.products - other.products, self.pair_counts - other.pair_counts)

    def to_host(self) -> "CrossMoments":
        """The same moments as NumPy arrays."""
        return CrossMoments(self.dims, self.n_rows, to_numpy(self.products),
                            to_numpy(self.pair_counts))

    @property
    def offsets(self) -> np.ndarray:
        """(M + 1,) int64 column offsets: modality m is columns offsets[m]:offsets[m + 1]."""
        return np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)

    def block(self, a: int, b: int):
        """(S_ab (d_a, d_b) float64 view, n_ab float): the block of modalities a and b."""
        off = self.offsets
        return (self.products[off[a]:off[a + 1], off[b]:off[b + 1]],
                float(self.pair_counts[a, b]))

    def second_moments(self):
        """(D, D) float64 C, block (a, b) = S_ab / n_ab, 0 where n_ab = 0; exactly
        symmetric. Not projected (see :func:`nearest_psd`)."""
        xp = array_module(self.products)
        counts = xp.repeat(xp.repeat(self.pair_counts, list(self.dims), axis=0),
                           list(self.dims), axis=1)
        c = xp.where(counts > 0, self.products / xp.maximum(counts, 1), 0.0)
        return (c + c.T) / 2


def nearest_psd(c):
    """The positive semi-definite matrix nearest to the symmetric (D, D) float64 ``c`` in
    Frobenius norm: V max(w, 0) Vᵀ from ``c``'s eigendecomposition, symmetrised. One
    O(D³) ``eigh`` on the array's device."""
    xp = array_module(c)
    values, vectors = xp.linalg.eigh(c)
    projected = (vectors * xp.maximum(values, 0)) @ vectors.T
    return (projected + projected.T) / 2


@dataclass
class RidgeCompletion:
    """A fitted ridge completion.

    second_moments : (D, D) float64 positive semi-definite C (on the device predictions run
    on); dims : M ints; alpha : the penalty factor α ≥ 0 (λ_O = α · mean diag C_OO, or α
    where that mean is 0); alpha_errors : the cross-validation's held-out mean squared error
    per dimension for each α of the grid it tried (``{}`` when α was given).

    The weights of each missing pattern are cached (keyed by its bits, at most
    :data:`PATTERN_CACHE_BYTES`), so a pattern is solved once across batches.
    """

    second_moments: object
    dims: tuple
    alpha: float
    alpha_errors: dict = field(default_factory=dict)
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _cache_bytes: int = field(default=0, repr=False, compare=False)

    @classmethod
    def from_moments(cls, moments: CrossMoments, alpha: float,
                     alpha_errors: dict | None = None) -> "RidgeCompletion":
        """The completion of the moments' second moments, projected by :func:`nearest_psd`."""
        return cls(nearest_psd(moments.second_moments()), moments.dims, float(alpha),
                   dict(alpha_errors or {}))

    def to(self, device: str) -> "RidgeCompletion":
        """The same completion with C on ``device`` ("cpu" or "cuda"), an empty cache."""
        return RidgeCompletion(to_device(self.second_moments, device), self.dims, self.alpha,
                               dict(self.alpha_errors))

    def weights(self, missing):
        """(observed columns (|O|,) int64, missing columns (|Q|,) int64, W (|O|, |Q|)
        float64) for one missing pattern, ``missing`` an (M,) bool NumPy array; the arrays
        on C's device. ẑ_Q = z_O W. One ``solve`` of (C_OO + λ_O I) W = C_OQ, cached."""
        key = np.packbits(missing).tobytes()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        xp = array_module(self.second_moments)
        columns_missing = np.repeat(missing, self.dims)
        observed = xp.asarray(np.flatnonzero(~columns_missing))
        hidden = xp.asarray(np.flatnonzero(columns_missing))
        entry = (observed, hidden, ridge_weights(self.second_moments, observed, hidden,
                                                 self.alpha))
        self._cache[key] = entry
        self._cache_bytes += int(entry[2].nbytes)
        while self._cache_bytes > PATTERN_CACHE_BYTES and len(self._cache) > 1:
            self._cache_bytes -= int(self._cache.popitem(last=False)[1][2].nbytes)
        return entry

    def predict(self, z, mask):
        """Ridge predictions of the missing slots of normalised rows.

        z : (n, D) float32/float64 normalised (values on missing slots are ignored; NaN/inf
        in observed slots raise ``ValueError``); mask : (n, M) bool, True = observed; on C's
        device. Returns (n, D) of z's dtype: ẑ_Q on each row's missing slots, 0 on its
        observed slots. A row observing nothing gets 0 (the training mean) everywhere; a
        missing modality that no training row observed together with the row's observed
        ones gets what the projected C implies, 0 when C needed no projection.

        Per distinct missing pattern of the batch: one cached solve, then z_O W in float64
        by :func:`~ul4m4_gpu.core.tiled.row_tiled_matmul` (fixed-shape row tiles), so each
        row's output is bitwise the same whatever the other rows of the batch.
        """
        dims = check_packed(z, mask, self.dims)
        check_finite_packed(z, mask, dims)
        xp = array_module(z, mask, self.second_moments)
        observed_values = xp.where(expand_mask(mask, dims), z, 0).astype(xp.float64)
        out = xp.zeros(z.shape, dtype=z.dtype)
        patterns, which = _missing_patterns(~mask, np.int64)
        patterns = to_numpy(patterns).astype(bool)
        order = xp.argsort(which)
        bounds = np.concatenate([[0], np.cumsum(to_numpy(xp.bincount(which,
                                                                     minlength=len(patterns))))])
        for u, missing in enumerate(patterns):
            if missing.all() or not missing.any():
                continue
            rows = order[bounds[u]:bounds[u + 1]]
            observed, hidden, w = self.weights(missing)
            inputs = observed_values[rows[:, None], observed[None, :]]
            out[rows[:, None], hidden[None, :]] = row_tiled_matmul(inputs, w).astype(z.dtype)
        return out


def ridge_weights(c, observed, targets, alpha: float):
    """(|O|, |T|) float64 W with ẑ_T = z_O W: the solution of (C_OO + λ I) W = C_OT, λ = α ·
    mean(diag C_OO) (α where that mean is 0). c : (D, D) float64 positive semi-definite;
    observed, targets : column index arrays on c's device. One ``solve``, no inverse."""
    xp = array_module(c)
    gram = c[observed[:, None], observed[None, :]]
    diagonal = xp.arange(observed.size)
    mean_diagonal = gram[diagonal, diagonal].mean()
    gram[diagonal, diagonal] += alpha * xp.where(mean_diagonal > 0, mean_diagonal, 1.0)
    return xp.linalg.solve(gram, c[observed[:, None], targets[None, :]])


_GOLDEN = 0x9E3779B97F4A7C15


def row_folds(row_numbers, n_folds: int, seed: int) -> np.ndarray:
    """(n,) int64 fold in [0, n_folds) of each row from its global row number (a NumPy int
    array) and ``seed`` (an int in [0, 2^32)): splitmix64(row + seed · φ) mod n_folds, so a
    row's fold does not depend on how the rows are batched, streamed or partitioned."""
    with np.errstate(over="ignore"):
        x = (np.asarray(row_numbers, dtype=np.uint64)
             + np.array([seed], dtype=np.uint64) * np.uint64(_GOLDEN))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n_folds)).astype(np.int64)


def fold_moments(z, mask, dims, folds, n_folds: int) -> list:
    """The :class:`CrossMoments` of each fold's rows of one batch: folds (n,) int64 (NumPy)
    from :func:`row_folds`. Lists of disjoint batches add up elementwise."""
    xp = array_module(z, mask)
    folds = xp.asarray(folds)
    return [CrossMoments.of(z[folds == f], mask[folds == f], dims) for f in range(n_folds)]


def fold_second_moments(folds_moments) -> list:
    """The projected (D, D) float64 C of each fold's model: :func:`nearest_psd` of the
    second moments of the total minus the fold's moments (one ``eigh`` each)."""
    total = sum(folds_moments[1:], folds_moments[0])
    return [nearest_psd((total - moments).second_moments()) for moments in folds_moments]


def cross_validation_errors(fold_models, z, mask, dims, held, folds, alphas=ALPHA_GRID) -> list:
    """Held-out mean squared error per dimension of each α (a list of floats, aligned with
    ``alphas``).

    fold_models : the k projected fold C (:func:`fold_second_moments`); z (s, D), mask
    (s, M) bool : the sampled rows (normalised); dims : M ints; held (s,) int64 NumPy :
    the modality each hides; folds (s,) int64 NumPy : each row's fold. Fold f's rows are
    completed by fold f's model (the moments of the other folds). The squared errors of
    the hidden slots are summed over all folds, then divided by the number of hidden slots.

    Every α shares one eigendecomposition per (fold, observed pattern) of the sample: with
    C_OO = V diag(w) Vᵀ, ẑ_h = ((z_O V) / (w + λ)) (Vᵀ C_Oh), the same W as
    :func:`ridge_weights` up to round-off; only the held modality h's columns are
    predicted, for every α in one batched product.
    """
    xp = array_module(z, mask)
    dims = tuple(int(d) for d in dims)
    offsets = np.concatenate([[0], np.cumsum(dims)])
    kept = to_numpy(mask).copy()
    kept[np.arange(kept.shape[0]), held] = False
    groups, group_of_row = np.unique(np.column_stack([folds, kept]), axis=0,
                                     return_inverse=True)
    group_of_row = group_of_row.ravel()
    values = xp.where(expand_mask(mask, dims), z, 0).astype(xp.float64)
    alpha_column = xp.asarray(np.asarray(alphas, dtype=np.float64))[:, None]
    squared = xp.zeros(len(alphas), dtype=xp.float64)
    for g, (fold, *observed_modalities) in enumerate(groups):
        c = fold_models[fold]
        observed = xp.asarray(np.flatnonzero(np.repeat(np.asarray(observed_modalities, bool),
                                                       dims)))
        eigenvalues, vectors = xp.linalg.eigh(c[observed[:, None], observed[None, :]])
        mean_diagonal = eigenvalues.sum() / observed.size
        base = xp.where(mean_diagonal > 0, mean_diagonal, 1.0)
        scale = 1 / (eigenvalues[None, :] + alpha_column * base)          # (A, p)
        index = np.flatnonzero(group_of_row == g)
        for h in np.unique(held[index]):
            rows = xp.asarray(index[held[index] == h])
            target = xp.arange(int(offsets[h]), int(offsets[h + 1]))
            inputs = values[rows[:, None], observed[None, :]] @ vectors      # (n, p)
            outputs = vectors.T @ c[observed[:, None], target[None, :]]      # (p, d_h)
            predicted = (inputs[None, :, :] * scale[:, None, :]) @ outputs   # (A, n, d_h)
            diff = predicted - values[rows[:, None], target[None, :]][None]
            squared += (diff * diff).sum(axis=(1, 2))
    slots = float(np.asarray(dims)[held].sum())
    return [float(e) / slots for e in to_numpy(squared)]


@dataclass
class RidgeFolds:
    """The cross-validation's fold models, for held-out checks of training rows that must
    not see their own values (``completion="auto"``): folds (N,) int64 NumPy, each
    training row's fold; models : one :class:`RidgeCompletion` per fold (the moments of
    the other folds, the chosen α)."""

    folds: np.ndarray
    models: list


def fit_ridge(z, mask, dims, random_state=None, alphas=ALPHA_GRID,
              n_folds: int = DEFAULT_FOLDS, sample_rows: int = CV_SAMPLE_ROWS,
              return_folds: bool = False):
    """Fit the ridge completion of normalised training rows, α chosen by cross-validation.

    z : (N, D) float32/float64 normalised, values on missing slots ignored; mask : (N, M)
    bool; dims : M ints; random_state : None, int or ``RandomState`` (draws the fold seed,
    then the held-out sample); alphas : ascending grid of α; n_folds ≥ 2.

    Cross-validation on the additive moments: row i belongs to fold
    :func:`row_folds` (i); the k fold moments come from one pass; fold f's model is
    (total − fold f), projected once (:func:`fold_second_moments`), so no fold refits over
    rows. Up to ``sample_rows`` rows observing at least two modalities each hide one
    observed modality (:func:`~ul4m4_gpu.core.completion.held_out_sample`), are completed
    by their fold's model for every α, and the α with the lowest mean squared error per
    hidden dimension wins (ties: the smaller α). When no row observes two modalities,
    α = :data:`DEFAULT_ALPHA` with a ``UserWarning``. The returned completion uses the
    moments of all rows; with ``return_folds``, ``(completion, RidgeFolds)``.
    """
    n_folds = check_int("n_folds", n_folds, minimum=2)
    sample_rows = check_int("sample_rows", sample_rows)
    dims = check_packed(z, mask, dims)
    check_ridge_dimension(z.shape[1])
    rng = checked_random_state(random_state)
    folds = row_folds(np.arange(z.shape[0]), n_folds, int(rng.randint(2 ** 32, dtype=np.int64)))
    per_fold = fold_moments(z, mask, dims, folds, n_folds)
    total = sum(per_fold[1:], per_fold[0])
    rows, held = held_out_sample(to_numpy(mask), rng, sample_rows)
    fold_models = fold_second_moments(per_fold) if rows.size or return_folds else []
    if rows.size == 0:
        warnings.warn("completion='ridge': no training row observes two modalities, so none "
                      f"can be held out; using alpha={DEFAULT_ALPHA}", UserWarning, stacklevel=2)
        alpha, errors = DEFAULT_ALPHA, {}
    else:
        index = array_module(z, mask).asarray(rows)
        losses = cross_validation_errors(fold_models, z[index], mask[index], dims, held,
                                         folds[rows], alphas)
        alpha, errors = alphas[int(np.argmin(losses))], dict(zip(alphas, losses))
    model = RidgeCompletion.from_moments(total, alpha, errors)
    if not return_folds:
        return model
    return model, RidgeFolds(folds, [RidgeCompletion(c, dims, float(alpha))
                                     for c in fold_models])
