"""Baseline imputers a user would reach for, with the same fit/transform shape as
``UL4M4Imputer`` so that the demo and the evaluation compare like with like.

They work in the normalised space of the training statistics and return the observed
values of their input unchanged. They take the inputs ``UL4M4Imputer`` takes, with its
``modalities`` parameter for a 2-D array or DataFrame, and return the input's type
(:mod:`ul4m4_gpu.io.inputs`). As in ``UL4M4Imputer``, ``transform`` matches its input's
modalities to the fitted ones by name (see :func:`~ul4m4_gpu.core.validation.in_fitted_order`)
and returns them in the input's order.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.impute import KNNImputer

from ..core.backend import VALUE_DTYPE, to_device, to_numpy
from ..io.data import MultiModalArray
from ..io.inputs import completed_output, read_input
from ..core.normalise import denormalise, expand_mask, fit_modality_stats, normalise


def _own_device(X) -> str:
    """The device a baseline reads ``X`` on: a MultiModalArray's own, else the host (the
    baselines compute there)."""
    return X.device if isinstance(X, MultiModalArray) else "cpu"


class _NormalisedBaseline(BaseEstimator):
    """Shared shape: statistics from the training rows, completion in normalised space.

    ``modalities``: the column groups of a 2-D input, as ``UL4M4Imputer``'s.
    Fitted attributes: ``mean_``, ``scale_`` (D,) float64 normalisation statistics;
    ``dims_`` (M ints) and ``modality_names_`` (M strings) of the training data.
    """

    def fit(self, X, y=None):
        """Learn the statistics (and the baseline's model) from ``X``; returns self."""
        X = read_input(X, self.modalities, _own_device(X)).data
        self.mean_, self.scale_ = fit_modality_stats(X.values, X.mask, X.dims)
        self.dims_, self.modality_names_ = X.dims, X.names
        self._fit_normalised(self._normalised_with_nan(X))
        return self

    def transform(self, X):
        """``X`` with every missing slot filled, in ``X``'s type; for a MultiModalArray:
        (N, D) float32 values on ``X``'s device, observed values unchanged, mask all True
        and ``imputed`` = ``~X.mask``; modalities in ``X``'s order. Raises
        ``NotFittedError`` before ``fit`` and ``ValueError`` when ``X``'s modality names or
        dims differ from the fitted ones."""
        if not hasattr(self, "mean_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 "call fit(X) before transform")
        inp = read_input(X, self.modalities, _own_device(X))
        X = inp.data
        given = X.names
        X = X.matched_to(self.modality_names_, self.dims_)
        z = self._complete_normalised(self._normalised_with_nan(X))
        missing = to_numpy(expand_mask(~X.mask, X.dims))
        values = to_numpy(X.values).copy()
        values[missing] = denormalise(z, to_numpy(self.mean_), to_numpy(self.scale_))[missing]
        values = to_device(values.astype(VALUE_DTYPE), X.device)
        observed = to_device(np.ones(X.mask.shape, dtype=bool), X.device)
        completed = MultiModalArray(values, observed, X.dims, X.names, imputed=~X.mask)
        completed = completed if given == X.names else completed.select(given)
        return completed_output(inp, completed, False, "input")

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def _normalised_with_nan(self, X: MultiModalArray) -> np.ndarray:
        """(N, D) float64 NumPy: normalised observed values, NaN on missing slots."""
        z = to_numpy(normalise(X.values, X.mask, self.mean_, self.scale_, X.dims, np.float64))
        z[~to_numpy(expand_mask(X.mask, X.dims))] = np.nan
        return z

    def _fit_normalised(self, z: np.ndarray) -> None:
        """Learn from the (N, D) normalised training values (NaN = missing)."""

    def _complete_normalised(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MeanFillImputer(_NormalisedBaseline):
    """Fill a missing modality with its training mean (z = 0)."""

    def __init__(self, modalities=None):
        self.modalities = modalities

    def _complete_normalised(self, z):
        return np.nan_to_num(z, nan=0.0)


class KNNBaselineImputer(_NormalisedBaseline):
    """scikit-learn ``KNNImputer`` (nan-Euclidean neighbours) on the normalised, packed
    features; ``n_neighbors`` as in scikit-learn."""

    def __init__(self, n_neighbors: int = 5, modalities=None):
        self.n_neighbors = n_neighbors
        self.modalities = modalities

    def _fit_normalised(self, z):
        self.knn_ = KNNImputer(n_neighbors=self.n_neighbors, keep_empty_features=True).fit(z)

    def _complete_normalised(self, z):
        return self.knn_.transform(z)


class IterativeBaselineImputer(_NormalisedBaseline):
    """scikit-learn ``IterativeImputer`` (round-robin BayesianRidge regressions) on the
    normalised, packed features. ``n_nearest_features`` and ``max_iter`` bound its cost, which
    otherwise grows with the square of the number of features."""

    def __init__(self, max_iter: int = 5, n_nearest_features: int | None = 20,
                 random_state: int = 0, modalities=None):
        self.max_iter = max_iter
        self.modalities = modalities
        self.n_nearest_features = n_nearest_features
        self.random_state = random_state

    def _fit_normalised(self, z):
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer

        self.iterative_ = IterativeImputer(
            max_iter=self.max_iter, n_nearest_features=self.n_nearest_features,
            random_state=self.random_state, keep_empty_features=True,
        ).fit(z)

    def _complete_normalised(self, z):
        return self.iterative_.transform(z)
