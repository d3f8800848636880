"""Downstream fusion model: completed (frozen) embeddings → a small Torch transformer.

One linear projection per modality to a common width gives M tokens; a learned modality
embedding is added to each; multi-head self-attention blocks (residual + LayerNorm,
dropout, feed-forward) mix them; the tokens are mean-pooled and an MLP head gives the
outputs. Tasks: ``"multiclass"`` (cross-entropy), ``"multilabel"`` (BCE with logits) and
``"regression"`` (MSE). :class:`FusionClassifier` (multiclass, multilabel) and
:class:`FusionRegressor` fit it as scikit-learn estimators (``score``: accuracy, R²) with
Adam, mini-batches and early stopping on a validation split, on inputs they standardise per
dimension with the training rows' statistics; they take a complete ``MultiModalArray`` or a
plain 2-D array / DataFrame / tensor whose modalities ``modalities`` names.
:class:`FusionTrainer` is their deprecated predecessor (all three tasks, ``score`` a dict).

This module is the import path of all of it; one job per module below it:
:mod:`~ul4m4_gpu.evaluation.fusion_model` (the network, the tasks, their losses and metrics),
:mod:`~ul4m4_gpu.evaluation.fusion_inputs` (the device, the packed tensor, plain inputs and
the modality layout), :mod:`~ul4m4_gpu.evaluation.fusion_estimators` (the scikit-learn
estimators and their training) and :mod:`~ul4m4_gpu.evaluation.fusion_trainer` (the
deprecated trainer).
"""

from .fusion_estimators import FusionClassifier, FusionRegressor
from .fusion_inputs import as_fusion_input, resolve_torch_device
from .fusion_model import TASK_SCORERS, TASKS, FusionModel
from .fusion_trainer import FusionTrainer

__all__ = [
    "TASKS",
    "TASK_SCORERS",
    "FusionClassifier",
    "FusionModel",
    "FusionRegressor",
    "FusionTrainer",
    "as_fusion_input",
    "resolve_torch_device",
]
