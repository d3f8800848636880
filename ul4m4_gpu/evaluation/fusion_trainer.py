"""The deprecated :class:`FusionTrainer`, the fusion estimators' predecessor: the same model
and training for all three tasks, with ``score`` a dict of metrics."""

from __future__ import annotations

import warnings

import numpy as np

from ..core.backend import to_numpy
from .fusion_estimators import FusionTaskEstimator
from .fusion_model import TASK_SCORERS


class FusionTrainer(FusionTaskEstimator):
    """Deprecated (``FutureWarning`` when constructed): use :class:`FusionClassifier`
    (``task="multiclass"`` or ``"multilabel"``) or :class:`FusionRegressor`.

    The same model and training; the differences: ``task`` may also be "regression",
    :func:`~sklearn.base.is_classifier` is False, and :meth:`score` returns a dict of
    metrics rather than a number. Parameters and attributes as in
    :class:`FusionClassifier` (``classes_`` only for the classification tasks).
    """

    def __new__(cls, *args, **kwargs):
        warnings.warn("FusionTrainer is deprecated; use FusionClassifier (task='multiclass' or "
                      "'multilabel') or FusionRegressor, whose score is a number (accuracy, R²); "
                      "FusionTrainer.score's metrics are ul4m4_gpu.classification_scores(y, "
                      "estimator.predict(X)) (multilabel_scores, regression_scores for the "
                      "other tasks)", FutureWarning, stacklevel=2)
        return super().__new__(cls)

    def score(self, X, y) -> dict[str, float]:
        """Metrics of ``predict(X)`` against ``y``: F1-micro, F1-macro and accuracy
        (multiclass; multilabel on the indicator matrix, subset accuracy), or MSE, MAE and
        Pearson r (regression); see :data:`TASK_SCORERS`."""
        return TASK_SCORERS[self.task](np.asarray(to_numpy(y)), self.predict(X))
