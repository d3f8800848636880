"""The one fit (docs/method.md): normalisation statistics → k-means++ on a sample → Lloyd to
convergence (best of ``n_init``) → the completion temperature, over any row source
(:mod:`ul4m4_gpu.core.sources`). ``UL4M4Imputer.fit``, the streamed fit and the Dask fit are
adapters that build a source and call :func:`fit`.

The Lloyd loop is written once, against ``source.assign`` and the array module of the
centres, so NumPy and CuPy, rows in memory, streamed batches and Dask partitions share it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from .progress import tqdm

from .backend import is_cupy_array, to_device
from .completion import (
    DEFAULT_COMPLETION,
    DEFAULT_MAX_DONORS,
    DEFAULT_N_CANDIDATES,
    DEFAULT_N_NEIGHBORS,
    DEFAULT_N_PROBE,
    DEFAULT_TEMPERATURE,
    CenterPairs,
    CompletionRule,
    choose_temperature,
)
from .knn import Donors
from .ridge import fit_ridge
from .rules import NEEDS, choose_blend_weights
from .distances import checked_centers
from .kmeans import PackedRows, center_shift, centers_from_statistics, seed_plusplus
from .sources import ArrayRows, sample_index
from .state import FittedState
from .validation import check_int, check_tol, checked_random_state


#: Smallest default k-means++ sample of the streamed and Dask fits, and rows per centre
#: above that.
MIN_SEED_SAMPLE = 10_000
SEED_SAMPLE_PER_CENTER = 50


def default_seed_sample(n_clusters: int) -> int:
    """Rows the streamed and Dask fits sample for k-means++ by default: max(10000, 50·K).
    A cluster holding a fraction f of the rows is missed with probability (1 − f)^size."""
    return max(MIN_SEED_SAMPLE, SEED_SAMPLE_PER_CENTER * n_clusters)


@dataclass(frozen=True)
class FitParams:
    """The parameters of a fit (those of ``UL4M4Imputer``, which documents them), plus the
    sizes of the samples gathered from the source: ``seed_sample_size`` rows for
    k-means++ and ``temperature_sample_size`` for ``temperature="auto"`` (None: every
    row)."""

    n_clusters: int = 64
    max_iter: int = 100
    tol: float = 1e-6
    n_init: int = 1
    init: object = "k-means++"
    random_state: object = None
    ddof: int = 0
    verbose: int = 0
    completion: str = DEFAULT_COMPLETION
    n_candidates: int = DEFAULT_N_CANDIDATES
    temperature: object = "auto"
    n_neighbors: int = DEFAULT_N_NEIGHBORS
    n_probe: int = DEFAULT_N_PROBE
    max_donors: int = DEFAULT_MAX_DONORS
    seed_sample_size: int | None = None
    temperature_sample_size: int | None = None

    @classmethod
    def of(cls, estimator, **sizes) -> "FitParams":
        """The parameters of an estimator (its ``get_params``), with the sample sizes."""
        params = estimator.get_params(deep=False)
        names = {field.name for field in dataclasses.fields(cls)} - set(sizes)
        return cls(**{name: value for name, value in params.items() if name in names}, **sizes)


@dataclass
class LloydRun:
    """centers (K, D) zero where absent, centers_mask (K, M) bool, on the source's device;
    inertia: Σ squared distances of the assigned rows; n_iter: number of centre updates."""

    centers: object
    centers_mask: object
    inertia: float
    n_iter: int


def lloyd_loop(source, centers, centers_mask, max_iter: int = 100, tol: float = 1e-6,
               on_iteration: Callable[[int, float], None] | None = None,
               label: str = "k-means") -> LloydRun:
    """Lloyd iterations over ``source`` from the given (clean) centres, on the source's
    device, until no label changes, every centre moved less than ``tol``, or ``max_iter``
    updates. ``on_iteration(n_iter, inertia)`` is called after every update. One host
    round trip per iteration (the stop test), plus the inertia when ``on_iteration`` is
    given."""
    source.start_run(label)
    centers = centers.astype(source.dtype, copy=True)
    stats = source.assign(centers, centers_mask)
    n_iter = 0
    while n_iter < max_iter:
        new_centers, new_mask = centers_from_statistics(stats.sums, stats.counts, stats.members,
                                                        centers, centers_mask, source.dims)
        n_iter += 1
        shift = center_shift(source.dims, centers, centers_mask, new_centers, new_mask)
        stats = source.assign(new_centers, new_mask)
        converged = (stats.changed == 0) | (shift.max() < tol)
        centers, centers_mask = new_centers, new_mask
        if on_iteration is not None:
            on_iteration(n_iter, float(stats.inertia))
        if bool(converged):
            break
    return LloydRun(centers, centers_mask, float(stats.inertia), n_iter)


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
    source = ArrayRows.of_packed(rows, batch_size)
    run = lloyd_loop(source, centers, centers_mask, max_iter, tol)
    return KMeansResult(run.centers, run.centers_mask, source.labels(), run.inertia, run.n_iter)


def fit(source, params: FitParams,
        on_iteration: Callable[[int, float], None] | None = None) -> FittedState:
    """Fit UL4M4 on the rows of ``source`` (a :class:`~ul4m4_gpu.core.sources.RowSource`).

    Raises ``ValueError`` for no rows, for a modality observed in no row and for more
    clusters than rows; warns (``UserWarning``) about rows observing no modality (they take
    no part) and modalities no centre carries. ``on_iteration(n_iter, inertia)`` runs after
    every Lloyd update; ``params.verbose`` shows a progress bar per run.
    Returns the :class:`~ul4m4_gpu.core.state.FittedState`, its arrays on the source's
    device (the labels as the source keeps them).
    """
    moments = source.moments()
    names, dims, n_rows = source.names, source.dims, moments.n_rows
    if n_rows == 0:
        raise ValueError(f"empty input: {source.where} has 0 rows")
    unobserved = moments.unobserved()
    if unobserved.size:
        raise ValueError(f"modalities {[names[m] for m in unobserved]} are observed in no "
                         "training row")
    if params.n_clusters > n_rows:
        raise ValueError(f"n_clusters={params.n_clusters} is larger than the number of rows "
                         f"({n_rows})")
    if moments.n_empty:
        warnings.warn(f"{moments.n_empty} rows observe no modality: they take no part in the "
                      "fit (transform fills them with the training mean)", UserWarning,
                      stacklevel=3)
    mean, scale = moments.mean, moments.scale(params.ddof)
    source.normalise(mean, scale)

    rng = checked_random_state(params.random_state)
    if isinstance(params.init, str):
        sample = source.sample(sample_index(n_rows, params.seed_sample_size, rng))
        starts = (seed_plusplus(sample, params.n_clusters, rng)[:2]
                  for _ in range(params.n_init))
    else:
        starts = iter([checked_centers(*params.init, dims, source.dtype, device=source.device,
                                       n_clusters=params.n_clusters, argument="init centers")])
    best = labels = None
    for run, (centers, centers_mask) in enumerate(starts):
        label = f"k-means run {run + 1}/{params.n_init}"
        with tqdm(total=params.max_iter, desc=label, unit="iter", leave=False,
                  disable=not params.verbose) as bar:
            def report(n_iter, inertia):
                bar.update(1)
                bar.set_postfix(inertia=f"{inertia:.4g}")
                if on_iteration is not None:
                    on_iteration(n_iter, inertia)

            result = lloyd_loop(source, to_device(centers, source.device),
                                to_device(centers_mask, source.device), params.max_iter,
                                params.tol, report if params.verbose or on_iteration else None,
                                label)
        if best is None or result.inertia < best.inertia:
            best, labels = result, source.labels()
    state = FittedState(best.centers, best.centers_mask, to_device(mean, source.device),
                        to_device(scale, source.device), dims, names, best.n_iter,
                        best.inertia, labels, CompletionRule(
                            params.completion, params.n_candidates, DEFAULT_TEMPERATURE,
                            params.n_neighbors, params.n_probe))
    uncarried = state.uncarried()
    if uncarried:
        warnings.warn(f"no centre carries modalities {uncarried}; their missing slots will be "
                      "filled with the training mean", UserWarning, stacklevel=3)
    state = dataclasses.replace(state, rule=dataclasses.replace(
        state.rule, temperature=_temperature(source, state, params)))
    return dataclasses.replace(state, **_completion_models(source, state, params))


def _completion_models(source, state: FittedState, params: FitParams) -> dict:
    """What ``completion`` "ridge", "knn" or "auto" learns beyond the centres (the
    :class:`FittedState` fields ``ridge``, ``donors``, ``weights``), from the training rows
    in memory (``{}`` for the centre rules): the ridge completion, α by cross-validation
    (:func:`~ul4m4_gpu.core.ridge.fit_ridge`); up to ``max_donors`` donors with their
    clusters (:meth:`~ul4m4_gpu.core.knn.Donors.sample`); the blend weights
    (:func:`~ul4m4_gpu.core.rules.choose_blend_weights`). Each draw is seeded by
    ``random_state`` afresh."""
    needed = NEEDS.get(params.completion, ())
    if not needed:
        return {}
    if not isinstance(source, ArrayRows):
        raise ValueError(f"completion={params.completion!r} is not yet available when the "
                         f"rows are not in memory ({source.where})")
    rows = source.sample(None)
    models = {}
    if "ridge" in needed:
        models["ridge"], folds = fit_ridge(rows.z, rows.mask, rows.dims,
                                           checked_random_state(params.random_state),
                                           return_folds=True)
    if "donors" in needed:
        models["donors"] = Donors.sample(rows, state.labels, state.n_clusters,
                                         params.max_donors,
                                         checked_random_state(params.random_state))
    if "weights" in needed:
        pairs = CenterPairs.build(state.centers, state.centers_mask, state.dims)
        models["weights"] = choose_blend_weights(
            rows, pairs, state.rule, folds, models["donors"],
            checked_random_state(params.random_state))
    return models


def _temperature(source, state: FittedState, params: FitParams) -> float:
    """The τ of the fit: the given number; for "auto" with a soft fill the choice of
    :func:`~ul4m4_gpu.core.completion.choose_temperature` on a sample of the training rows
    (for "auto", of its nearest-centre fill); :data:`DEFAULT_TEMPERATURE` for a hard pick
    and for "ridge" and "knn" (they have no such weights)."""
    if params.temperature != "auto":
        return float(params.temperature)
    if params.n_candidates == 1 or params.completion in ("ridge", "knn"):
        return DEFAULT_TEMPERATURE
    rng = checked_random_state(params.random_state)
    sample = source.sample(sample_index(source.n_rows, params.temperature_sample_size, rng))
    device = "cuda" if is_cupy_array(sample.z) else "cpu"
    pairs = CenterPairs.build(to_device(state.centers, device),
                              to_device(state.centers_mask, device), state.dims)
    scoring = "nearest" if params.completion == "auto" else params.completion
    return choose_temperature(sample, pairs, scoring, params.n_candidates, params.random_state)
