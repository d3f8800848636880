"""ul4m4-gpu: UL4M4 completion of missing modalities, on CPU (NumPy) and GPU (CuPy).

UL4M4: "Unsupervised Learning for Missing Modalities in Multimodal Learning",
Ismkhan & Bouchachia, arXiv 2606.15743.
"""

from .completion import greedy_complete
from .data import MultiModalArray
from .datasets import load_mfeat
from .distances import partial_distances
from .estimator import UL4M4Imputer
from .kmeans import kmeans_plusplus, lloyd
from .missing import (
    availability_mask,
    hide_modalities,
    missing_fraction,
    parse_missing_config,
    pattern_groups,
    pattern_groups_mask,
    simulate_missing,
    uniform_missing_mask,
)

__all__ = [
    "MultiModalArray",
    "UL4M4Imputer",
    "availability_mask",
    "greedy_complete",
    "hide_modalities",
    "kmeans_plusplus",
    "lloyd",
    "load_mfeat",
    "missing_fraction",
    "parse_missing_config",
    "partial_distances",
    "pattern_groups",
    "pattern_groups_mask",
    "simulate_missing",
    "uniform_missing_mask",
]
__version__ = "0.1.0"
