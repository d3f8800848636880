"""ul4m4-gpu: UL4M4 completion of missing modalities, on CPU (NumPy) and GPU (CuPy).

UL4M4: "Unsupervised Learning for Missing Modalities in Multimodal Learning",
Ismkhan & Bouchachia, arXiv 2606.15743.
"""

import os

# The Numba kernels, scikit-learn and Torch each bring an OpenMP runtime. With the default
# active wait their idle threads spin, which on small machines starves the threads doing the
# work (measured on the 2-core CI machine: 50 Torch Adam steps 4.8 s, 0.7 s with PASSIVE).
# Only a default: an explicit setting wins; it reaches runtimes loaded after this import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .core.backend import to_numpy
from .core.completion import greedy_complete
from .core.version import __version__
from .io.data import MultiModalArray
from .io.files import read_table, write_table
from .datasets import load_mfeat
from .core.distances import partial_distances
from .estimator import UL4M4Imputer
from .core.fit import lloyd
from .core.kmeans import kmeans_plusplus
from .evaluation.baselines import KNNBaselineImputer, MeanFillImputer
from .evaluation.metrics import (
    classification_scores,
    imputation_rmse,
    multilabel_scores,
    regression_scores,
)
from .evaluation.missing import (
    availability_mask,
    hide_modalities,
    lead_drop_mask,
    missing_fraction,
    parse_missing_config,
    pattern_groups,
    pattern_groups_mask,
    simulate_missing,
    uniform_missing_mask,
)

__all__ = [
    "KNNBaselineImputer",
    "MeanFillImputer",
    "imputation_rmse",
    "to_numpy",
    "FusionClassifier",
    "FusionModel",
    "FusionRegressor",
    "FusionTrainer",
    "MultiModalArray",
    "UL4M4Imputer",
    "availability_mask",
    "classification_scores",
    "greedy_complete",
    "hide_modalities",
    "kmeans_plusplus",
    "lead_drop_mask",
    "lloyd",
    "load_mfeat",
    "missing_fraction",
    "multilabel_scores",
    "parse_missing_config",
    "partial_distances",
    "pattern_groups",
    "pattern_groups_mask",
    "read_table",
    "regression_scores",
    "simulate_missing",
    "uniform_missing_mask",
    "write_table",
]

_LAZY = dict.fromkeys(("FusionClassifier", "FusionModel", "FusionRegressor", "FusionTrainer"),
                      "evaluation.fusion")


def __getattr__(name):
    """Import the Torch-based pieces on first use, so the imputer and CLI load without Torch."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
