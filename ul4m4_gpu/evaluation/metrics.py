"""Quality measures: imputation error on hidden true values, and downstream classification,
multi-label classification and regression."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from ..core.backend import to_numpy
from ..io.data import MultiModalArray


def imputation_rmse(truth: MultiModalArray, completed: MultiModalArray, hidden, mean, scale):
    """Root-mean-square imputation error in the normalised space, on hidden slots only.

    Parameters
    ----------
    truth : the complete data before hiding; completed : the imputed data (same shape).
    hidden : (N, M) bool, True on the slots that were hidden and imputed.
    mean, scale : (D,) normalisation statistics (from the training rows).

    Returns
    -------
    overall : float, sqrt of the mean over hidden slots of each slot's mean squared error
        per dimension (every slot weighs the same, whatever its width); NaN if none hidden.
    per_modality : dict name -> float (NaN for a modality with no hidden slot).
    """
    hidden = to_numpy(hidden)
    mean, scale = to_numpy(mean), to_numpy(scale)
    slot_mse = np.zeros(hidden.shape)
    for m in range(truth.n_modalities):
        cols = slice(truth.offsets[m], truth.offsets[m + 1])
        diff = (to_numpy(completed.modality(m)).astype(np.float64)
                - to_numpy(truth.modality(m)).astype(np.float64)) / scale[cols]
        slot_mse[:, m] = (diff * diff).mean(axis=1)
    per_modality = {
        name: float(np.sqrt(slot_mse[hidden[:, m], m].mean())) if hidden[:, m].any() else float("nan")
        for m, name in enumerate(truth.names)
    }
    overall = float(np.sqrt(slot_mse[hidden].mean())) if hidden.any() else float("nan")
    return overall, per_modality


def classification_scores(y_true, y_pred) -> dict[str, float]:
    """F1-micro, F1-macro and accuracy of multi-class predictions (1-D label arrays)."""
    y_true, y_pred = to_numpy(y_true), to_numpy(y_pred)
    return {
        "f1_micro": float(f1_score(y_true, y_pred, average="micro")),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


def multilabel_scores(Y_true, Y_pred) -> dict[str, float]:
    """F1-micro, F1-macro and subset accuracy of multi-label predictions.

    Parameters
    ----------
    Y_true, Y_pred : (N, L) label-indicator matrices of 0/1 (or bool), same shape.

    F1 is computed on the indicator matrix (micro: pooled over every label's true/false
    positives; macro: mean of the L per-label F1 scores, 0 for a label never true nor
    predicted), not on the flattened N·L slots, which would make F1-micro the per-slot
    accuracy. ``accuracy`` is the subset accuracy: the fraction of rows predicted exactly.
    """
    Y_true, Y_pred = _indicator(Y_true, "Y_true"), _indicator(Y_pred, "Y_pred")
    if Y_true.shape != Y_pred.shape:
        raise ValueError(f"Y_true has shape {Y_true.shape} but Y_pred has shape {Y_pred.shape}")
    return {
        "f1_micro": float(f1_score(Y_true, Y_pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(Y_true, Y_pred, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(Y_true, Y_pred)),
    }


def regression_scores(y_true, y_pred) -> dict[str, float]:
    """MSE, MAE and Pearson r of regression predictions.

    ``y_true`` and ``y_pred`` are (N,) or (N, k) arrays of the same shape; multi-output
    targets are flattened, so every target value weighs the same. ``pearson_r`` is NaN when
    either side is constant.
    """
    y_true = np.asarray(to_numpy(y_true), dtype=np.float64)
    y_pred = np.asarray(to_numpy(y_pred), dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has shape {y_pred.shape}")
    y_true, y_pred = y_true.ravel(), y_pred.ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(y_true, y_pred)[0, 1]
    return {
        "mse": float(mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "pearson_r": float(r),
    }


def _indicator(Y, name: str) -> np.ndarray:
    """``Y`` as an (N, L) int array of 0/1, or raise ``ValueError`` naming ``name``."""
    Y = np.asarray(to_numpy(Y))
    if Y.ndim != 2 or not np.isin(Y, (0, 1)).all():
        raise ValueError(
            f"{name} must be an (N, L) label-indicator matrix of 0/1, got shape {Y.shape}"
        )
    return Y.astype(np.int64)
