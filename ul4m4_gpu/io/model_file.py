"""The model file of :meth:`UL4M4Imputer.save <ul4m4_gpu.estimator.UL4M4Imputer.save>`: a
plain ``.npz`` (no pickle) holding a JSON ``meta`` entry (format, parameters, modality names
and dims, n_iter, inertia, the completion temperature, the ridge penalty) and the arrays of
a :class:`~ul4m4_gpu.core.state.FittedState`: the centres, statistics and labels, and where
the completion learnt them the ridge second moments (``ridge_second_moments``), the KNN
donors (``donors_values``, ``donors_mask``, ``donors_labels``, ``donors_source``) and the
blend weights (``completion_weights``). Files written before those entries existed read as
before (they hold none, and their completion needs none).

Nothing in the file is trusted: :func:`read_model` checks every entry before a model is
built from it, and every problem is one ``ValueError`` line naming the file and the entry.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import zipfile

import numpy as np

from ..core.backend import DEVICES, VALUE_DTYPE, to_numpy
from ..core.completion import BLEND_RULE_NAMES, DEFAULT_TEMPERATURE, CompletionRule
from ..core.kmeans import PackedRows
from ..core.knn import Donors
from ..core.ridge import RidgeCompletion
from ..core.rules import NEEDS
from ..core.state import FittedState
from ..core.distances import checked_centers, zero_missing
from ..core.normalise import expand_mask
from .files import atomic_write, load_npz_arrays
from ..core.validation import check_finite_packed, check_value_dtype


MODEL_FORMAT = "ul4m4-imputer/1"
#: The file's arrays: the estimator attribute each holds, and the FittedState field.
FITTED_ARRAYS = {"cluster_centers_": "centers", "centers_mask_": "centers_mask",
                 "mean_": "mean", "scale_": "scale", "labels_": "labels"}

#: The donors' arrays in the file (``donors_<name>``) and their :class:`Donors` fields.
DONOR_ARRAYS = {"values": "z", "mask": "mask", "labels": "labels", "source": "source"}
#: Largest deviation of a row of ``completion_weights`` from summing to 1.
WEIGHT_SUM_TOLERANCE = 1e-9

#: Parameters of model files written before they existed: those files used the paper's rule.
LEGACY_PARAMS = {"completion": "paper", "n_candidates": 1, "temperature": DEFAULT_TEMPERATURE}


class _EntryError(ValueError):
    """A problem with one entry of a model file (``entry``: its name)."""

    def __init__(self, entry: str, message: str):
        super().__init__(f"entry {entry!r}: {message}")


def write_model(path, params: dict, state: FittedState) -> None:
    """Write ``state`` (host arrays, with its labels) and the estimator ``params`` to
    ``path``, atomically (:func:`~ul4m4_gpu.io.files.atomic_write`: a temporary file beside
    it, renamed into place, so a failure leaves no partial model and any previous file
    unchanged; a full disk is an ``OutputFileError`` naming ``path``); an explicit ``init``
    pair is saved as two arrays, a random state that is not an int as None."""
    arrays = {name: to_numpy(getattr(state, field)) for name, field in FITTED_ARRAYS.items()}
    params = dict(params)
    if not isinstance(params["init"], str):
        arrays["init_centers"] = to_numpy(params["init"][0])
        arrays["init_centers_mask"] = to_numpy(params["init"][1])
        params["init"] = "explicit"
    if params["random_state"] is not None and not isinstance(params["random_state"],
                                                             numbers.Integral):
        params["random_state"] = None
    params = {name: value.item() if isinstance(value, np.generic) else value
              for name, value in params.items()}
    meta = {"format": MODEL_FORMAT, "params": params, "dims": list(state.dims),
            "modality_names": list(state.names), "n_iter": int(state.n_iter),
            "inertia": float(state.inertia), "temperature": float(state.rule.temperature)}
    if state.ridge is not None:
        arrays["ridge_second_moments"] = to_numpy(state.ridge.second_moments)
        meta["ridge_alpha"] = float(state.ridge.alpha)
    if state.donors is not None:
        for name in DONOR_ARRAYS:
            arrays[f"donors_{name}"] = to_numpy(getattr(state.donors, DONOR_ARRAYS[name]))
    if state.weights is not None:
        arrays["completion_weights"] = np.asarray(state.weights, dtype=np.float64)

    def write(tmp) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    atomic_write(path, write)


def read_model(path, estimator_class, device=None):
    """The estimator parameters and the :class:`~ul4m4_gpu.core.state.FittedState` (NumPy
    arrays) of the model file ``path``, checked for ``estimator_class``
    (:class:`~ul4m4_gpu.estimator.UL4M4Imputer` or a subclass):

    params : the saved parameters (:data:`LEGACY_PARAMS` where a file written before them
        lacks one; ``device`` overriding the saved one when given), an
        explicit ``init`` as its (centers, centers_mask) pair; they pass the estimator's
        ``_check_params``.
    state : ``centers`` (K, D) float32/float64, finite where ``centers_mask`` (K, M) bool
        carries a modality (zeroed where it does not, as fitted centres are), K =
        ``n_clusters``; ``mean`` (D,) float, finite; ``scale`` (D,) float, finite and > 0;
        ``labels`` (N,) integers in [−1, K); dims M ints ≥ 1, names M distinct strings,
        n_iter int ≥ 0, inertia float, finite ≥ 0; ``rule`` the saved completion
        parameters with the temperature, finite > 0 (DEFAULT_TEMPERATURE for files written
        before it).

    Raises ``FileNotFoundError`` when ``path`` does not exist, and ``ValueError``, one line
    naming the file and the entry, for anything else: a file that is not a model (a data
    file, say), unreadable or truncated, an entry missing, of the wrong dtype or shape, or
    holding values the model cannot use.
    """
    where = f"cannot read a UL4M4Imputer model from {path!s}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no such file")
    try:
        arrays = load_npz_arrays(path)
        meta = _meta(arrays, MODEL_FORMAT)
        params = _params(meta, estimator_class, arrays, device)
        dims, names, n_iter, inertia, temperature = _attributes(meta)
        fitted = _fitted(arrays, list(FITTED_ARRAYS), params["n_clusters"], dims)
        models = _completion_models(arrays, meta, params, dims,
                                    fitted["cluster_centers_"].dtype)
    except KeyError as error:
        raise ValueError(f"{where}: it has no entry {error}") from None
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{where}: {' '.join(str(error).split())}") from None
    state = FittedState(**{field: fitted[name] for name, field in FITTED_ARRAYS.items()},
                        dims=dims, names=names, n_iter=n_iter, inertia=inertia,
                        rule=CompletionRule(params["completion"], params["n_candidates"],
                                            temperature, params.get("n_neighbors", 10),
                                            params.get("n_probe", 8)),
                        **models)
    return params, state


def _completion_models(arrays, meta: dict, params: dict, dims, dtype) -> dict:
    """The ridge completion, donors and blend weights the file holds (each checked; those
    its ``completion`` needs must be there), as :class:`FittedState` fields."""
    needed = NEEDS.get(params["completion"], ())
    models = {}
    if "ridge_second_moments" in arrays or "ridge" in needed:
        models["ridge"] = _ridge(arrays["ridge_second_moments"], meta, dims)
    if "donors_values" in arrays or "donors" in needed:
        models["donors"] = _donors({name: arrays[f"donors_{name}"] for name in DONOR_ARRAYS},
                                   params["n_clusters"], dims, dtype)
    if "completion_weights" in arrays or "weights" in needed:
        models["weights"] = _weights(arrays["completion_weights"], dims)
    return models


def _ridge(second_moments, meta: dict, dims) -> RidgeCompletion:
    width = sum(dims)
    _check_shape("ridge_second_moments", second_moments, (width, width))
    if second_moments.dtype != np.float64:
        raise _EntryError("ridge_second_moments", f"must be float64, got {second_moments.dtype}")
    if not np.isfinite(second_moments).all() or not np.array_equal(second_moments,
                                                                     second_moments.T):
        raise _EntryError("ridge_second_moments", "must be finite and symmetric")
    if (np.diag(second_moments) < 0).any():
        raise _EntryError("ridge_second_moments", "has a negative diagonal entry (not the "
                                                  "positive semi-definite moments of a fit)")
    alpha = _field(meta, "ridge_alpha")
    if (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real)
            or not math.isfinite(alpha) or alpha < 0):
        raise _EntryError("meta", f"ridge_alpha must be a finite number >= 0, got {alpha!r}")
    return RidgeCompletion(second_moments, tuple(dims), float(alpha))


def _donors(entries: dict, n_clusters: int, dims, dtype) -> Donors:
    values, mask = entries["values"], entries["mask"]
    n_donors = values.shape[0] if values.ndim == 2 else -1
    _check_shape("donors_values", values, (max(n_donors, 0), sum(dims)))
    if values.dtype != dtype:
        raise _EntryError("donors_values", f"must have the centres' dtype {dtype}, got "
                                           f"{values.dtype}")
    _check_shape("donors_mask", mask, (n_donors, len(dims)))
    if mask.dtype != bool:
        raise _EntryError("donors_mask", f"must be boolean, got dtype {mask.dtype}")
    for name in ("labels", "source"):
        array = entries[name]
        if array.shape != (n_donors,) or array.dtype.kind not in "iu":
            raise _EntryError(f"donors_{name}", f"must be ({n_donors},) integers, got "
                                                f"{array.dtype} {array.shape}")
    labels = entries["labels"].astype(np.int64)
    if n_donors and not ((labels >= -1) & (labels < n_clusters)).all():
        raise _EntryError("donors_labels", f"must lie in [-1, {n_clusters})")
    if n_donors and (labels[1:] < labels[:-1]).any():
        raise _EntryError("donors_labels", "must be sorted (the donors' inverted-file order)")
    if n_donors and (entries["source"] < 0).any():
        raise _EntryError("donors_source", "must be training rows (>= 0)")
    try:
        rows = PackedRows.build(values, mask, dims)
    except ValueError as error:
        raise _EntryError("donors_values", str(error)) from None
    return Donors.build(rows, labels, n_clusters, entries["source"].astype(np.int64))


def _weights(weights, dims) -> np.ndarray:
    _check_shape("completion_weights", weights, (len(dims), len(BLEND_RULE_NAMES)))
    if weights.dtype != np.float64:
        raise _EntryError("completion_weights", f"must be float64, got {weights.dtype}")
    if (not np.isfinite(weights).all() or (weights < 0).any()
            or (np.abs(weights.sum(axis=1) - 1) > WEIGHT_SUM_TOLERANCE).any()):
        raise _EntryError("completion_weights", "each row must be finite weights >= 0 "
                                                f"summing to 1 (rules {BLEND_RULE_NAMES})")
    return weights


def _meta(arrays, model_format: str) -> dict:
    """The ``meta`` entry, a JSON object of the right format."""
    if "meta" not in arrays:
        raise ValueError("it is not a ul4m4 model file (it has no 'meta' entry; a data file?)")
    raw = arrays["meta"]
    if raw.shape != () or raw.dtype.kind != "U":
        raise _EntryError("meta", f"expected a JSON string, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise _EntryError("meta", f"not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != model_format:
        raise ValueError(f"it is not a ul4m4 model file (format {model_format!r})")
    return meta


def _params(meta: dict, estimator_class, arrays, device) -> dict:
    """The saved parameters, checked by building the estimator and calling its
    ``_check_params``; an explicit ``init`` is read from its two arrays and checked like
    one given to ``fit``."""
    params = _field(meta, "params")
    if not isinstance(params, dict):
        raise _EntryError("meta", f"params must be an object, got {params!r}")
    params = {**LEGACY_PARAMS, **params}
    explicit = params.get("init") == "explicit"
    if explicit:
        params["init"] = (arrays["init_centers"], arrays["init_centers_mask"])
    if device is not None:
        params["device"] = device
    elif params.get("device") not in DEVICES:
        raise _EntryError("meta", f"device must be one of {DEVICES}, got "
                                  f"{params.get('device')!r}")
    try:
        estimator_class(**params)._check_params()
    except (TypeError, ValueError) as error:
        raise _EntryError("meta", f"parameters: {error}") from None
    if explicit:
        try:
            checked_centers(*params["init"], _dims(meta), np.float32, n_clusters=params["n_clusters"],
                            argument="init centers")
        except (TypeError, ValueError) as error:
            raise _EntryError("init_centers", str(error)) from None
    return params


def _field(meta: dict, key: str):
    if key not in meta:
        raise _EntryError("meta", f"has no field {key!r}")
    return meta[key]


def _dims(meta: dict) -> tuple[int, ...]:
    dims = _field(meta, "dims")
    if (not isinstance(dims, list) or not dims
            or not all(_is_int(d) and d >= 1 for d in dims)):
        raise _EntryError("meta", f"dims must be a non-empty list of ints >= 1, got {dims!r}")
    return tuple(dims)


def _attributes(meta: dict):
    dims, names = _dims(meta), _field(meta, "modality_names")
    if (not isinstance(names, list) or len(names) != len(dims)
            or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
        raise _EntryError("meta", f"modality_names must be {len(dims)} distinct strings, got "
                                  f"{names!r}")
    n_iter, inertia = _field(meta, "n_iter"), _field(meta, "inertia")
    if not _is_int(n_iter) or n_iter < 0:
        raise _EntryError("meta", f"n_iter must be an int >= 0, got {n_iter!r}")
    if (isinstance(inertia, bool) or not isinstance(inertia, numbers.Real)
            or not math.isfinite(inertia) or inertia < 0):
        raise _EntryError("meta", f"inertia must be a finite number >= 0, got {inertia!r}")
    temperature = meta.get("temperature", DEFAULT_TEMPERATURE)
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not math.isfinite(temperature) or temperature <= 0):
        raise _EntryError("meta", f"temperature must be a finite number > 0, got "
                                  f"{temperature!r}")
    return dims, tuple(names), n_iter, float(inertia), float(temperature)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fitted(arrays, fitted_names, n_clusters: int, dims) -> dict:
    """The fitted arrays, each checked against K = ``n_clusters`` and ``dims``."""
    fitted = {name: arrays[name] for name in fitted_names}
    k, width, n_modalities = n_clusters, sum(dims), len(dims)
    for name, shape in (("cluster_centers_", (k, width)), ("mean_", (width,)),
                        ("scale_", (width,))):
        _check_shape(name, fitted[name], shape)
        try:
            check_value_dtype(fitted[name].dtype, name)
        except TypeError as error:
            raise _EntryError(name, str(error)) from None
    mask = fitted["centers_mask_"]
    _check_shape("centers_mask_", mask, (k, n_modalities))
    if mask.dtype != bool:
        raise _EntryError("centers_mask_", f"must be boolean, got dtype {mask.dtype}")
    try:
        check_finite_packed(fitted["cluster_centers_"], mask, dims, "centres")
    except ValueError as error:
        raise _EntryError("cluster_centers_", f"{error} (where centers_mask_ carries "
                                              "them)") from None
    fitted["cluster_centers_"] = zero_missing(fitted["cluster_centers_"], mask, dims)
    for name in ("mean_", "scale_"):
        if not np.isfinite(fitted[name]).all():
            raise _EntryError(name, "holds NaN or inf at columns "
                                    f"{np.flatnonzero(~np.isfinite(fitted[name]))[:5].tolist()}")
    if not (fitted["scale_"] > 0).all():
        raise _EntryError("scale_", "must be > 0, got "
                                    f"{fitted['scale_'][fitted['scale_'] <= 0][:5].tolist()}")
    _check_output_range(fitted, dims)
    labels = fitted["labels_"]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _EntryError("labels_", f"must be a 1-D integer array, got {labels.dtype} "
                                     f"{labels.shape}")
    if labels.size and not ((labels >= -1) & (labels < k)).all():
        raise _EntryError("labels_", f"must lie in [-1, {k}), got values from "
                                     f"{labels.min()} to {labels.max()}")
    return fitted


#: Relative slack of :func:`_check_output_range` over float32's largest value: a model
#: fitted on values at the edge of float32 de-normalises its centres to the edge give or
#: take the round-off of the normalised centres (float32, 2^-24 relative), far below it.
OUTPUT_RANGE_SLACK = 1e-5


def _check_output_range(fitted: dict, dims) -> None:
    """Raise ``_EntryError`` when a value the model fills with would overflow the output's
    float32: the mean ``mean_`` (a mean fill) or a centre's de-normalised value
    ``cluster_centers_ · scale_ + mean_`` on a modality it carries (every soft fill lies
    between such values), computed in float64, beyond float32's largest value (give or
    take :data:`OUTPUT_RANGE_SLACK`). A fitted model cannot hold such values (its centres
    are means of the training values); an edited one (a ``mean_`` of 1e39, a huge
    ``scale_``) can. The entry named is ``mean_`` for the mean or for a sum that overflows,
    ``scale_`` when the scaled centre alone does."""
    limit = float(np.finfo(VALUE_DTYPE).max) * (1 + OUTPUT_RANGE_SLACK)
    mean, scale = fitted["mean_"].astype(np.float64), fitted["scale_"].astype(np.float64)
    carried = expand_mask(fitted["centers_mask_"], dims)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.where(carried, fitted["cluster_centers_"].astype(np.float64) * scale, 0.0)
        values = scaled + mean
    for name, array in (("mean_", mean), ("scale_", scaled), ("mean_", values)):
        beyond = ~(np.abs(array) <= limit)
        if beyond.any():
            centre, column = (None, int(np.flatnonzero(beyond)[0])) if array.ndim == 1 else (
                int(np.argwhere(beyond)[0][0]), int(np.argwhere(beyond)[0][1]))
            what = (f"holds {mean[column]:.4g} at column {column}" if centre is None else
                    f"centre {centre} de-normalises to cluster_centers_ x scale_ + mean_ = "
                    f"{values[centre, column]:.4g} at column {column}")
            raise _EntryError(name, f"{what}, beyond float32's range "
                                    f"(±{float(np.finfo(VALUE_DTYPE).max):.4g}): the "
                                    "model's fills would overflow")


def _check_shape(name: str, array, shape) -> None:
    if array.shape != shape:
        raise _EntryError(name, f"has shape {array.shape}, expected {shape} for the model's "
                                "n_clusters and dims")
