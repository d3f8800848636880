"""``UL4M4Imputer``: the scikit-learn-style estimator tying the method together.

fit: normalise each modality over its observing rows → k-means++ on the partial distance →
Lloyd to convergence (best of ``n_init``). transform: normalise with the training statistics
→ greedy completion from the centres → de-normalise the imputed slots; observed values come
back bit-for-bit unchanged.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from tqdm.auto import tqdm

from .backend import VALUE_DTYPE, array_module, device_module, resolve_device, to_device, to_numpy
from .completion import CenterPairs, completion_sources, fill_from_sources
from .data import MultiModalArray
from .distances import zero_missing
from .kmeans import PackedRows, lloyd_loop, seed_plusplus
from .model_file import read_model
from .normalise import denormalise, fit_modality_stats, normalise
from .validation import (
    check_finite_modalities,
    check_finite_packed,
    check_int,
    check_tol,
    checked_random_state,
)

MODEL_FORMAT = "ul4m4-imputer/1"
_FITTED_ARRAYS = ("cluster_centers_", "centers_mask_", "mean_", "scale_", "labels_")


def check_initial_centers(init, n_clusters: int, dims, device: str):
    """Validate an explicit ``init=(centers, centers_mask)`` pair and move it to ``device``.

    centers : (K, D) normalised values; centers_mask : (K, M) bool, every centre carrying at
    least one modality, finite values on the modalities it carries. Returns float32 centres
    zeroed where absent, and the mask.
    """
    centers, centers_mask = init
    xp = device_module(device)
    centers = to_device(centers, device).astype(VALUE_DTYPE)
    centers_mask = to_device(centers_mask, device)
    n_mod = len(dims)
    if centers.shape != (n_clusters, sum(dims)):
        raise ValueError(
            f"init centers have shape {tuple(centers.shape)}, expected (n_clusters, D) = "
            f"{(n_clusters, sum(dims))}"
        )
    if centers_mask.shape != (n_clusters, n_mod) or centers_mask.dtype != bool:
        raise ValueError(
            f"init centers_mask must be bool of shape (n_clusters, M) = {(n_clusters, n_mod)}, "
            f"got {centers_mask.dtype} {tuple(centers_mask.shape)}"
        )
    empty = ~centers_mask.any(axis=1)
    if bool(empty.any()):
        raise ValueError(f"init centres {to_numpy(xp.flatnonzero(empty)).tolist()} carry no modality")
    check_finite_packed(centers, centers_mask, dims, "init centers")
    return zero_missing(centers, centers_mask, dims), centers_mask


class UL4M4Imputer(BaseEstimator):
    """Complete missing modalities by clustering with partial centres and greedy completion.

    Parameters
    ----------
    n_clusters : int, default 64
        Number of centres K.
    max_iter : int, default 100
        Maximum number of Lloyd updates per run.
    tol : float, default 1e-6
        Stop when every centre moved less than this (partial distance, normalised space).
    n_init : int, default 1
        Number of k-means++ runs; the one with the lowest inertia is kept. Must be 1 when
        ``init`` is an explicit pair.
    init : "k-means++" or (centers, centers_mask)
        Explicit initial centres: normalised (K, D) values and a (K, M) bool mask.
    random_state : None, int or numpy.random.RandomState
        Seeds k-means++; the same value gives the same result on the same device. The CPU
        and a GPU round sums differently (BLAS vs cuBLAS), so a near-tie in the seeding
        draw can pick another row there; pass ``init`` for identical starts everywhere.
    device : "auto", "cpu" or "cuda"
        Where the arrays live. "auto" uses a GPU when CuPy sees one, else the CPU.
    batch_size : int or None
        Rows processed at once in assignment and completion (bounds the batch × K arrays);
        None chooses about 2^24 / K rows.
    ddof : int, default 0
        Delta degrees of freedom of the per-modality standard deviation.
    verbose : int, default 0
        Show progress bars (Lloyd iterations, completion) when > 0.

    Attributes
    ----------
    cluster_centers_ : (K, D) float32 (float64 for float64 input), normalised; 0 on
        modalities a centre lacks.
    centers_mask_ : (K, M) bool, the modalities each centre carries.
    mean_, scale_ : (D,) float64, per-dimension normalisation statistics.
    labels_ : (N,) int64 training-row clusters (−1: row shares no modality with any centre).
    n_iter_ : int; inertia_ : float, Σ squared partial distances of assigned rows.
    dims_ : tuple of M ints; modality_names_ : tuple of M strings; device_ : "cpu" | "cuda".
    """

    def __init__(self, n_clusters=64, max_iter=100, tol=1e-6, n_init=1, init="k-means++",
                 random_state=None, device="auto", batch_size=None, ddof=0, verbose=0):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.random_state = random_state
        self.device = device
        self.batch_size = batch_size
        self.ddof = ddof
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        check_int("n_clusters", self.n_clusters)
        check_int("max_iter", self.max_iter)
        check_int("n_init", self.n_init)
        check_int("batch_size", self.batch_size, allow_none=True)
        check_int("ddof", self.ddof, minimum=0)
        check_tol("tol", self.tol)
        checked_random_state(self.random_state)
        if isinstance(self.init, str):
            if self.init != "k-means++":
                raise ValueError(
                    f"init must be 'k-means++' or a (centers, centers_mask) pair, got {self.init!r}"
                )
        elif not (isinstance(self.init, (tuple, list)) and len(self.init) == 2):
            raise ValueError("init must be 'k-means++' or a (centers, centers_mask) pair")
        elif self.n_init != 1:
            raise ValueError(f"n_init must be 1 with explicit initial centres, got {self.n_init}")

    def _check_data(self, X, device: str) -> MultiModalArray:
        data = MultiModalArray.coerce(X, device=device).to(device)
        if data.n_samples == 0:
            raise ValueError("empty input: X has 0 rows")
        check_finite_modalities(data.values, data.mask, data.dims, data.names)
        return data

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                "This UL4M4Imputer instance is not fitted yet; call fit(X) before transform"
            )

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Learn normalisation statistics and partial centres from ``X``.

        X : MultiModalArray, or anything :meth:`MultiModalArray.coerce` accepts.
        Returns self.
        """
        self._check_params()
        self.device_ = resolve_device(self.device)
        data = self._check_data(X, self.device_)
        unobserved = ~to_numpy(data.mask).any(axis=0)
        if unobserved.any():
            names = [data.names[m] for m in np.flatnonzero(unobserved)]
            raise ValueError(f"modalities {names} are observed in no training row")
        if self.n_clusters > data.n_samples:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than the number of rows ({data.n_samples})"
            )
        mean, scale = fit_modality_stats(data.values, data.mask, data.dims, self.ddof)
        z = normalise(data.values, data.mask, mean, scale, data.dims)
        rows = PackedRows.build(z, data.mask, data.dims, clean=True)

        if isinstance(self.init, str):
            rng = checked_random_state(self.random_state)
            starts = (seed_plusplus(rows, self.n_clusters, rng)[:2] for _ in range(self.n_init))
        else:
            starts = iter([check_initial_centers(self.init, self.n_clusters, data.dims,
                                                 self.device_)])
        best = None
        for run, (centers, centers_mask) in enumerate(starts):
            result = self._run_lloyd(rows, centers, centers_mask, run)
            if best is None or result.inertia < best.inertia:
                best = result

        self.mean_, self.scale_ = mean, scale
        self.cluster_centers_, self.centers_mask_ = best.centers, best.centers_mask
        self.labels_, self.inertia_, self.n_iter_ = best.labels, best.inertia, best.n_iter
        self.dims_, self.modality_names_ = data.dims, data.names
        self._warn_uncarried()
        return self

    def _run_lloyd(self, rows, centers, centers_mask, run: int):
        if not self.verbose:
            return lloyd_loop(rows, centers, centers_mask, self.max_iter, self.tol, self.batch_size)
        desc = f"k-means run {run + 1}/{self.n_init}"
        with tqdm(total=self.max_iter, desc=desc, unit="iter", leave=False) as bar:
            def report(n_iter, inertia):
                bar.update(1)
                bar.set_postfix(inertia=f"{inertia:.4g}")

            return lloyd_loop(rows, centers, centers_mask, self.max_iter, self.tol,
                              self.batch_size, on_iteration=report)

    def _uncarried(self) -> list[str]:
        carried = to_numpy(self.centers_mask_).any(axis=0)
        return [self.modality_names_[m] for m in np.flatnonzero(~carried)]

    def _warn_uncarried(self) -> None:
        uncarried = self._uncarried()
        if uncarried:
            warnings.warn(
                f"no centre carries modalities {uncarried}; their missing slots will be "
                "filled with the training mean", UserWarning, stacklevel=3,
            )

    # ------------------------------------------------------------------ completion
    def transform(self, X) -> MultiModalArray:
        """Fill every missing modality of ``X``.

        Returns a MultiModalArray on the estimator's device: (N, D) values of ``X``'s dtype
        (float32 from the ``MultiModalArray.from_*`` builders) with the observed values of
        ``X`` unchanged, mask all True, and ``imputed`` (N, M) bool equal
        to the input's ``~mask``; modalities in ``X``'s order. ``X``'s modalities are matched
        to the fitted ones by name (see :func:`~ul4m4_gpu.validation.in_fitted_order`).
        """
        data, sources, given = self._sources(X)
        xp = array_module(data.values)
        missing = ~data.mask
        centers_x = denormalise(self.cluster_centers_.astype(xp.float64), self.mean_, self.scale_,
                                VALUE_DTYPE)
        values = fill_from_sources(data.values.copy(), sources, missing, centers_x,
                                   self.mean_.astype(VALUE_DTYPE), data.dims)
        mean_filled = to_numpy((missing & (sources < 0)).any(axis=0))
        if mean_filled.any():
            names = [data.names[m] for m in np.flatnonzero(mean_filled)]
            warnings.warn(f"modalities {names} were filled with the training mean: no centre "
                          "carries them", UserWarning, stacklevel=2)
        completed = MultiModalArray(values, xp.ones_like(data.mask), data.dims, data.names,
                                    imputed=missing)
        return completed if given == data.names else completed.select(given)

    def imputation_sources(self, X):
        """(N, M) int64 index of the centre each missing slot of ``X`` is copied from; −1 for
        observed slots and for modalities no centre carries (filled with the mean).
        Columns in ``X``'s modality order."""
        data, sources, given = self._sources(X)
        return sources[:, [data.index(name) for name in given]]

    def _sources(self, X):
        """(X in the fitted modality order, its (N, M) sources, X's own modality names)."""
        self._check_fitted()
        data = self._check_data(X, self.device_)
        given = data.names
        data = data.matched_to(self.modality_names_, self.dims_)
        z = normalise(data.values, data.mask, self.mean_, self.scale_, data.dims)
        rows = PackedRows.build(z, data.mask, data.dims, clean=True)
        pairs = CenterPairs.build(self.cluster_centers_, self.centers_mask_, data.dims)
        with tqdm(total=int((~data.mask).any(axis=1).sum()), desc="greedy completion",
                  unit="row", disable=not self.verbose, leave=False) as bar:
            sources = completion_sources(rows, pairs, self.batch_size, progress=bar)
        return data, sources, given

    def fit_transform(self, X, y=None) -> MultiModalArray:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to a plain ``.npz`` (no pickle)."""
        self._check_fitted()
        params = self.get_params()
        arrays = {name: to_numpy(getattr(self, name)) for name in _FITTED_ARRAYS}
        if not isinstance(self.init, str):
            arrays["init_centers"] = to_numpy(self.init[0])
            arrays["init_centers_mask"] = to_numpy(self.init[1])
            params["init"] = "explicit"
        if params["random_state"] is not None and not isinstance(params["random_state"], numbers.Integral):
            params["random_state"] = None
        params = {name: value.item() if isinstance(value, np.generic) else value
                  for name, value in params.items()}
        meta = {
            "format": MODEL_FORMAT, "params": params, "dims": list(self.dims_),
            "modality_names": list(self.modality_names_), "n_iter": int(self.n_iter_),
            "inertia": float(self.inertia_),
        }
        with open(os.fspath(path), "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path, device: str | None = None) -> "UL4M4Imputer":
        """Read a model written by :meth:`save`; ``device`` overrides the saved device.
        Every entry is checked first (:func:`~ul4m4_gpu.model_file.read_model`): raises
        ``FileNotFoundError`` when ``path`` does not exist and ``ValueError``, one line
        naming the file and the entry, when it is not such a model (a data file,
        unreadable, truncated, an entry missing or of the wrong dtype, shape or values)."""
        params, fitted, attributes = read_model(path, cls, MODEL_FORMAT, _FITTED_ARRAYS, device)
        model = cls(**params)
        model.device_ = resolve_device(model.device)
        for name, array in fitted.items():
            setattr(model, name, to_device(array, model.device_))
        model.dims_, model.modality_names_, model.n_iter_, model.inertia_ = attributes
        return model
