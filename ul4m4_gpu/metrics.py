"""Quality measures: imputation error on hidden true values, and downstream classification."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .backend import to_numpy
from .data import MultiModalArray


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
