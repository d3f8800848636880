"""``UL4M4Imputer``: the scikit-learn-style estimator tying the method together.

fit: normalise each modality over its observing rows → k-means++ on the partial distance →
Lloyd to convergence (best of ``n_init``) → the completion temperature (``"auto"``).
transform: normalise with the training statistics → completion from the centres
(:mod:`ul4m4_gpu.core.completion`) → de-normalise the imputed slots; observed values come back
bit-for-bit unchanged. The method is described in docs/method.md.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import _check_feature_names_in, validate_data

from .core.backend import DEVICES, VALUE_DTYPE, array_module, resolve_device
from .core.completion import (
    BLIND_FILL_WARNING,
    DEFAULT_COMPLETION,
    DEFAULT_N_CANDIDATES,
    CenterPairs,
    BLEND_RULE_NAMES,
    CENTRE_COMPLETIONS,
    DEFAULT_MAX_DONORS,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_N_PROBE,
    CompletionRule,
    CompletionWarning,
    check_completion,
    complete_rows,
)
from .core.rules import complete_by_rule
from .core.fit import FitParams, fit
from .core.kmeans import PackedRows
from .core.progress import tqdm
from .core.normalise import denormalise, normalise
from .core.sources import ArrayRows
from .core.state import FittedState
from .core.validation import (
    check_finite_modalities,
    check_int,
    check_tol,
    checked_random_state,
)
from .io.columns import check_modalities_kind
from .io.data import MultiModalArray
from .io.inputs import (
    INDICATOR_PREFIX,
    OUTPUT_TYPES,
    column_names,
    completed_output,
    read_input,
)
from .io.model_file import read_model, write_model



def _positive_int(name):
    return lambda value: check_int(name, value)


def _init(value) -> None:
    if isinstance(value, str):
        if value != "k-means++":
            raise ValueError(
                f"init must be 'k-means++' or a (centers, centers_mask) pair, got {value!r}")
    elif not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ValueError("init must be 'k-means++' or a (centers, centers_mask) pair")


def _check_bool(name, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_choice(name, value, choices) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _device(value) -> None:
    if value not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {value!r}")


class UL4M4Base(BaseEstimator):
    """What the in-memory and the Dask imputers share: the table of their parameters'
    checks, and the one mapping between a :class:`~ul4m4_gpu.core.state.FittedState` and
    the fitted attributes (``cluster_centers_``, ...)."""

    #: name → check raising ``ValueError`` naming the parameter (scikit-learn's
    #: ``_parameter_constraints`` is the model); subclasses extend it.
    _parameter_checks = {
        "n_clusters": _positive_int("n_clusters"),
        "max_iter": _positive_int("max_iter"),
        "tol": lambda value: check_tol("tol", value),
        "n_init": _positive_int("n_init"),
        "init": _init,
        "random_state": checked_random_state,
        "device": _device,
        "batch_size": lambda value: check_int("batch_size", value, allow_none=True),
        "ddof": lambda value: check_int("ddof", value, minimum=0),
        "verbose": lambda value: None,
        "modalities": check_modalities_kind,
    }

    def _check_params(self) -> None:
        """Every entry of ``_parameter_checks``, then the rules that tie parameters
        together; raises ``ValueError`` naming the parameter."""
        for name, check in self._parameter_checks.items():
            check(getattr(self, name))
        check_completion(self.completion, self.n_candidates, self.temperature,
                         self.n_neighbors, self.n_probe, self.max_donors)
        if not isinstance(self.init, str) and self.n_init != 1:
            raise ValueError(f"n_init must be 1 with explicit initial centres, got {self.n_init}")

    def _apply_state(self, state: FittedState) -> "UL4M4Base":
        """Set the fitted attributes from ``state`` (as it is: arrays where they are)."""
        self.cluster_centers_, self.centers_mask_ = state.centers, state.centers_mask
        self.mean_, self.scale_ = state.mean, state.scale
        self.dims_, self.modality_names_ = tuple(state.dims), tuple(state.names)
        self.n_iter_, self.inertia_ = int(state.n_iter), float(state.inertia)
        self.temperature_ = float(state.rule.temperature)
        self._temperature_chosen_for = (state.rule.completion, state.rule.n_candidates)
        if state.labels is not None:
            self.labels_ = state.labels
        for name, value in (("ridge_", state.ridge), ("donors_", state.donors),
                            ("completion_weights_", state.weights)):
            self.__dict__.pop(name, None)
            if value is not None:
                setattr(self, name, value)
        return self

    def fitted_state(self, labels: bool = True) -> FittedState:
        """The fitted model as a :class:`~ul4m4_gpu.core.state.FittedState` (``labels``:
        with ``labels_``)."""
        self._check_fitted()
        return FittedState(self.cluster_centers_, self.centers_mask_, self.mean_, self.scale_,
                           tuple(self.dims_), tuple(self.modality_names_), self.n_iter_,
                           self.inertia_, getattr(self, "labels_", None) if labels else None,
                           self._completion_rule(), getattr(self, "ridge_", None),
                           getattr(self, "donors_", None),
                           getattr(self, "completion_weights_", None))

    def _completion_rule(self) -> CompletionRule:
        """The rule ``transform`` applies: the completion parameters, with the fitted τ
        where ``temperature="auto"``."""
        temperature = self.temperature_ if self.temperature == "auto" else self.temperature
        return CompletionRule(self.completion, self.n_candidates, float(temperature),
                              self.n_neighbors, self.n_probe)

    def _warn_stale_temperature(self) -> None:
        """Warn, once per completion, when ``temperature="auto"`` chose ``temperature_`` at
        fit for another ``completion`` / ``n_candidates`` than the current ones (changed
        by ``set_params`` since); the fitted τ is used all the same."""
        chosen_for = getattr(self, "_temperature_chosen_for", None)
        if (self.temperature == "auto" and self.n_candidates > 1 and chosen_for is not None
                and chosen_for != (self.completion, self.n_candidates)):
            warnings.warn(
                f"temperature_={self.temperature_:.4g} was chosen at fit for completion="
                f"{chosen_for[0]!r}, n_candidates={chosen_for[1]}, not for the current "
                f"completion={self.completion!r}, n_candidates={self.n_candidates}; fit "
                "again, or set temperature to a number", CompletionWarning, stacklevel=4)

    def _local_params(self) -> dict:
        """The parameters an in-memory ``UL4M4Imputer`` takes, with their values here."""
        return {name: getattr(self, name) for name in UL4M4Imputer._get_param_names()
                if hasattr(self, name)}

    def _check_features(self, features, n_features: int, output_names, reset: bool) -> None:
        """scikit-learn's checks of the feature counts and names (``reset``: fit records
        them). features : what they read from a 2-D input (``ImputerInput.features``), or
        None for an input keyed by modality, whose modalities are matched by name (fit
        records its ``n_features`` = D and no names). output_names : the D names of the
        output's modality columns, recorded by fit for :meth:`get_feature_names_out`."""
        if features is not None:
            validate_data(self, features, reset=reset, skip_check_array=True)
        elif reset:
            self.n_features_in_ = int(n_features)
            self.__dict__.pop("feature_names_in_", None)
        if reset:
            self._feature_names_out = list(output_names)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """(D [+ M],) object array of the output column names: the input's column labels
        (``x<j>`` for an array), or ``<modality>_<j>`` for inputs keyed by modality; then
        ``missingindicator_<modality>`` with ``add_indicator``. ``input_features`` must
        equal ``feature_names_in_`` where it is set."""
        self._check_fitted()
        if input_features is not None:
            _check_feature_names_in(self, input_features)
        names = list(getattr(self, "_feature_names_out", None) or  # else a model file's
                     column_names(self.modality_names_, self.dims_))
        if self.add_indicator:
            names += [INDICATOR_PREFIX + name for name in self.modality_names_]
        return np.asarray(names, dtype=object)

    #: What fit learns of the input's columns; it travels with the fitted state to the
    #: single-machine imputers of ``to_local`` and of the Dask blocks.
    _INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_", "_feature_names_out")

    def _input_attributes(self) -> dict:
        """The :attr:`_INPUT_ATTRIBUTES` this fitted estimator holds."""
        return {name: getattr(self, name) for name in self._INPUT_ATTRIBUTES
                if hasattr(self, name)}

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) before "
                "transform")


class UL4M4Imputer(TransformerMixin, UL4M4Base):
    """Complete missing modalities by clustering with partial centres and completing from
    the centres (docs/method.md).

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
        None chooses about 2^24 / K rows. It changes no result, bit for bit (README,
        "Errors and guarantees").
    ddof : int, default 0
        Delta degrees of freedom of the per-modality standard deviation.
    verbose : int, default 0
        Show progress bars (Lloyd iterations, completion) when > 0.
    completion : "paper", "overlap", "nearest", "ridge", "knn" or "auto", default "nearest"
        How missing modalities are filled (docs/method.md). The centre rules score
        candidates (see :mod:`ul4m4_gpu.core.completion`): the paper's greedy score over
        every centre, the same over the centres sharing an observed modality with the
        row, or the row's partial distance to the candidate's centre. "ridge": a linear
        prediction from the row's observed modalities (:mod:`ul4m4_gpu.core.ridge`, penalty
        by cross-validation at fit); "knn": the mean of the ``n_neighbors`` nearest
        training donors observing the modality (:mod:`ul4m4_gpu.core.knn`); "auto": per
        modality, the blend of the nearest soft fill, ridge, knn and the training mean
        whose weights (``completion_weights_``) reconstruct held-out training modalities
        best (:mod:`ul4m4_gpu.core.rules`). The last three are fitted in memory only.
    n_candidates : int, default 5
        r: each missing modality is the softmax-weighted mean of the r best-scoring
        candidates carrying it; 1 copies the best one.
        ``completion="paper", n_candidates=1`` is the paper's Algorithm 2 exactly.
    temperature : float or "auto", default "auto"
        τ of the weights exp(−(s − s_min)/τ) (r > 1 only). "auto" picks τ at fit time from
        a grid by holding out one observed modality of up to 2,000 training rows (seeded by
        ``random_state``) and keeping the τ that reconstructs it best.
    n_neighbors : int, default 10
        k of ``completion="knn"`` (and of "auto"'s knn part): donors averaged per slot.
    n_probe : int, default 8
        Clusters whose donors the KNN completion searches (capped at K; K: exact KNN).
    max_donors : int, default 20000
        Training rows kept as KNN donors (a seeded uniform sample beyond; in the model).
    modalities : None, list of ints, list of lists of ints, or dict name → columns
        Which columns of a 2-D input (array, tensor, DataFrame of numeric columns) form each
        modality: their widths, their column positions, or a dict of names to columns
        (column labels for a DataFrame; its other columns pass through). None: each column
        is its own modality. A modality is missing in a row when all its columns are NaN.
        Inputs that carry their modalities (MultiModalArray, list columns, dicts) need none.
    add_indicator : bool, default False
        Append the (N, M) missing-modality indicators (1 where the modality was missing)
        to the output, named ``missingindicator_<modality>``.
    output_type : "input", "multimodal", "numpy", "cupy" or "pandas", default "input"
        The type ``transform`` returns: "input" follows the input (NumPy → NumPy, CuPy →
        CuPy, DataFrame → DataFrame with its index and other columns, Arrow → Arrow, torch →
        torch, MultiModalArray → MultiModalArray; :mod:`ul4m4_gpu.io.inputs`); the others
        convert. ``set_output(transform="pandas")`` is honoured (a DataFrame of the imputed
        columns, named by ``get_feature_names_out``).

    Attributes
    ----------
    cluster_centers_ : (K, D) float32 (float64 for float64 input), normalised; 0 on
        modalities a centre lacks.
    centers_mask_ : (K, M) bool, the modalities each centre carries.
    mean_, scale_ : (D,) float64, per-dimension normalisation statistics.
    labels_ : (N,) int64 training-row clusters (−1: row shares no modality with any centre).
    n_iter_ : int; inertia_ : float, Σ squared partial distances of assigned rows.
    dims_ : tuple of M ints; modality_names_ : tuple of M strings; device_ : "cpu" | "cuda".
    temperature_ : float, the τ used by ``transform`` (chosen at fit for the ``completion``
        and ``n_candidates`` of the fit when ``temperature="auto"``; ``transform`` warns
        when ``set_params`` has changed them since).
    n_features_in_ : int, D, the modality columns seen at fit; feature_names_in_ : their
        labels, for a DataFrame with string labels.
    ridge_ : :class:`~ul4m4_gpu.core.ridge.RidgeCompletion` ("ridge", "auto" only; its
        ``alpha`` the chosen penalty); donors_ : :class:`~ul4m4_gpu.core.knn.Donors`
        ("knn", "auto"); completion_weights_ : (M, 4) float64, "auto"'s weight of each of
        ``completion_rules_`` = ("nearest", "ridge", "knn", "mean") per modality.
    """

    #: The rules of ``completion_weights_``'s columns.
    completion_rules_ = BLEND_RULE_NAMES

    def __init__(self, n_clusters=64, max_iter=100, tol=1e-6, n_init=1, init="k-means++",
                 random_state=None, device="auto", batch_size=None, ddof=0, verbose=0,
                 completion=DEFAULT_COMPLETION, n_candidates=DEFAULT_N_CANDIDATES,
                 temperature="auto", n_neighbors=DEFAULT_N_NEIGHBORS, n_probe=DEFAULT_N_PROBE,
                 max_donors=DEFAULT_MAX_DONORS, modalities=None, add_indicator=False,
                 output_type="input"):
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
        self.completion = completion
        self.n_candidates = n_candidates
        self.temperature = temperature
        self.n_neighbors = n_neighbors
        self.n_probe = n_probe
        self.max_donors = max_donors
        self.modalities = modalities
        self.add_indicator = add_indicator
        self.output_type = output_type

    _parameter_checks = {
        **UL4M4Base._parameter_checks,
        "add_indicator": lambda value: _check_bool("add_indicator", value),
        "output_type": lambda value: _check_choice("output_type", value, OUTPUT_TYPES),
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ validation
    def _read(self, X, reset: bool):
        """``X`` read for this imputer (:func:`~ul4m4_gpu.io.inputs.read_input`) on its
        device, with scikit-learn's checks of feature counts and names (``reset``: fit
        sets them)."""
        inp = read_input(X, self.modalities, self.device_)
        data = inp.data
        if data.n_samples == 0:
            raise ValueError("empty input: X has 0 rows")
        check_finite_modalities(data.values, data.mask, data.dims, data.names)
        self._check_features(None if inp.columns is None else inp.features(), inp.n_features,
                             inp.feature_names(), reset)
        return inp

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Learn normalisation statistics and partial centres from ``X`` (the one fit of
        :mod:`ul4m4_gpu.core.fit`, on the rows in memory).

        X : MultiModalArray, or anything :meth:`MultiModalArray.coerce` accepts.
        Returns self.
        """
        self._check_params()
        self.device_ = resolve_device(self.device)
        data = self._read(X, reset=True).data
        source = ArrayRows(data.values, data.mask, data.dims, data.names, self.batch_size)
        return self._apply_state(fit(source, FitParams.of(self)))

    def _uncarried(self) -> list[str]:
        return self.fitted_state(labels=False).uncarried()

    # ------------------------------------------------------------------ completion
    def transform(self, X, return_report: bool = False):
        """Fill every missing modality of ``X``.

        Returns the completion in the type ``output_type`` asks for (by default the input's:
        see :mod:`ul4m4_gpu.io.inputs`), with the observed values of ``X`` bit for bit; for
        a MultiModalArray, one on the estimator's device: (N, D) values, mask all True, and
        ``imputed`` (N, M) bool equal to the input's ``~mask``, modalities in ``X``'s order.
        ``X``'s modalities are matched to the fitted ones by name (see
        :func:`~ul4m4_gpu.core.validation.in_fitted_order`). A row observing no modality
        is filled with the training mean. Warns when a hard pick (``n_candidates=1``) draws
        more than 10 % of its fills from centres sharing no observed modality with the row.
        The estimator is not changed (scikit-learn's rule for ``transform``).

        return_report : also return the
            :class:`~ul4m4_gpu.core.completion.CompletionReport` of this completion, as
            ``(completed, report)`` (like ``return_std`` of scikit-learn's Gaussian
            processes): per modality, the slots filled, the share of their weight drawn
            from centres sharing no observed modality with the row, the share whose best
            score is 0.
        """
        self._check_fitted()
        inp = self._read(X, reset=False)
        data, values, _, given, report = self._complete(inp.data)
        xp = array_module(data.values)
        completed = MultiModalArray(values, xp.ones_like(data.mask), data.dims, data.names,
                                    imputed=~data.mask)
        completed = completed if given == data.names else completed.select(given)
        # scikit-learn's set_output (or set_config) wraps a NumPy result itself
        wrapped = _get_output_config("transform", self)["dense"] != "default"
        output = completed_output(inp, completed, self.add_indicator,
                                  "numpy" if wrapped else self.output_type,
                                  self.get_feature_names_out())
        return (output, report) if return_report else output

    def imputation_sources(self, X):
        """(N, M) int64 index of the best-scoring centre each missing slot of ``X`` is
        filled from (the one it is copied from when ``n_candidates=1``); −1 for observed
        slots, for slots filled with the training mean, and everywhere for the rules that
        do not fill from centres ("ridge", "knn", "auto"). Columns in ``X``'s modality
        order."""
        self._check_fitted()
        data, _, sources, given, _ = self._complete(self._read(X, reset=False).data)
        return sources[:, [data.index(name) for name in given]]

    def _complete(self, data: MultiModalArray):
        """(``data`` in the fitted modality order, its completed (N, D) values, its (N, M)
        sources, ``data``'s own modality names, the completion's
        :class:`~ul4m4_gpu.core.completion.CompletionReport`); warns as the report calls for."""
        self._check_params()
        given = data.names
        data = data.matched_to(self.modality_names_, self.dims_)
        xp = array_module(data.values)
        z = normalise(data.values, data.mask, self.mean_, self.scale_, data.dims)
        rows = PackedRows.build(z, data.mask, data.dims, clean=True)
        pairs = CenterPairs.build(self.cluster_centers_, self.centers_mask_, data.dims)
        centers_x = denormalise(self.cluster_centers_.astype(xp.float64), self.mean_, self.scale_,
                                VALUE_DTYPE)
        values = data.values.copy()
        rule = self._completion_rule()
        if not rule.from_centres:
            report = complete_by_rule(
                rows, pairs, rule, values, self.mean_, self.scale_,
                ridge=getattr(self, "ridge_", None), donors=getattr(self, "donors_", None),
                weights=getattr(self, "completion_weights_", None), batch_size=self.batch_size,
                names=data.names)
            self._warn_completion(report)
            sources = xp.full(data.mask.shape, -1, dtype=xp.int64)
            return data, values, sources, given, report
        with tqdm(total=int((~data.mask).any(axis=1).sum()), desc="completion",
                  unit="row", disable=not self.verbose, leave=False) as bar:
            sources, report = complete_rows(
                rows, pairs, rule, values, centers_x,
                self.mean_.astype(VALUE_DTYPE), self.batch_size, progress=bar,
                names=data.names)
        self._warn_completion(report)
        return data, values, sources, given, report

    def _warn_completion(self, report) -> None:
        """The ``CompletionWarning``s a completion report calls for (and that of a stale
        ``temperature_``)."""
        self._warn_stale_temperature()
        uncarried = self._uncarried() if self.completion in CENTRE_COMPLETIONS else []
        if uncarried and int(report.filled[[self.modality_names_.index(n) for n in uncarried]].sum()):
            warnings.warn(f"modalities {uncarried} were filled with the training mean: no "
                          "centre carries them", CompletionWarning, stacklevel=3)
        if report.rows_without_modality:
            warnings.warn(f"{report.rows_without_modality} rows observe no modality: they were "
                          "filled with the training mean", CompletionWarning, stacklevel=3)
        share = report.overall_blind_share
        if self.n_candidates == 1 and share > BLIND_FILL_WARNING:
            warnings.warn(
                f"{share:.0%} of the fills came from centres that share no observed modality "
                f"with their row (completion={self.completion!r}): such a centre is never "
                "compared with what the row observes. completion='overlap' or 'nearest' "
                "scores candidates on the observed modalities only, and n_candidates > 1 "
                "averages the best few", CompletionWarning, stacklevel=3)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to a plain ``.npz`` (no pickle;
        :func:`~ul4m4_gpu.io.model_file.write_model`), atomically: through a temporary file
        beside ``path``, renamed into place, so a failed or interrupted save leaves no
        partial file and a previous one unchanged. Raises
        :class:`~ul4m4_gpu.io.files.OutputFileError` (a ``ValueError``) naming ``path``
        when it cannot be written (a missing or read-only directory, a full disk)."""
        write_model(path, self.get_params(), self.fitted_state().to("cpu"))

    @classmethod
    def load(cls, path, device: str | None = None) -> "UL4M4Imputer":
        """Read a model written by :meth:`save`; ``device`` overrides the saved device.
        Every entry is checked first (:func:`~ul4m4_gpu.io.model_file.read_model`): raises
        ``FileNotFoundError`` when ``path`` does not exist and ``ValueError``, one line
        naming the file and the entry, when it is not such a model (a data file,
        unreadable, truncated, an entry missing or of the wrong dtype, shape or values)."""
        params, state = read_model(path, cls, device)
        return cls.from_state(state, **params)

    @classmethod
    def from_state(cls, state: FittedState, **params) -> "UL4M4Imputer":
        """A fitted imputer with the parameters ``params`` holding ``state`` on its device
        (``params["device"]``, resolved)."""
        model = cls(**params)
        model.device_ = resolve_device(model.device)
        return model._apply_state(state.to(model.device_))
