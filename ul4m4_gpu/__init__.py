"""ul4m4-gpu: UL4M4 completion of missing modalities, on CPU (NumPy) and GPU (CuPy)."""

from .data import MultiModalArray

__all__ = ["MultiModalArray"]
__version__ = "0.1.0"
