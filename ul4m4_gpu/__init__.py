"""ul4m4-gpu: UL4M4 completion of missing modalities, on CPU (NumPy) and GPU (CuPy).

UL4M4: "Unsupervised Learning for Missing Modalities in Multimodal Learning",
Ismkhan & Bouchachia, arXiv 2606.15743.
"""

from .completion import greedy_complete
from .data import MultiModalArray
from .distances import partial_distances
from .estimator import UL4M4Imputer
from .kmeans import kmeans_plusplus, lloyd

__all__ = [
    "MultiModalArray",
    "UL4M4Imputer",
    "greedy_complete",
    "kmeans_plusplus",
    "lloyd",
    "partial_distances",
]
__version__ = "0.1.0"
